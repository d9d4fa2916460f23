"""A capability's block names its seize-time checks and actions (`seize check NAME "why"`);
`pciback-dsl check` and the daemon's start report a name pciback/hooks does not implement, and
Python no block names (it would never run), as they do for write and read hooks."""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pciback import hooks
from pciback.cli import main as pciback_main
from pciback.compiler.cli import main
from pciback.engine.hookapi import capability_check
from pciback.hooks import msi
from pciback.policy import default_policy
from pciback.ports.bus import PhysicalDevice
from tests.compiler.conftest import CheckRun

ROOT = Path(__file__).resolve().parents[2]
CAPABILITY = (
    "capability c id 0x09 length 4 {{\n{body}    register a @0x02 u16 {{ x [15:0] hw ro }}\n}}\n"
)


@capability_check("orphan")
def _orphan(device: PhysicalDevice, offset: int) -> str | None:
    return None


def test_a_named_check_without_implementation(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        CAPABILITY.format(body='    seize check nowhere "in no module"\n')
    )
    assert status == 1
    assert errors == [
        "policy.pci:2:17: error: seize check 'nowhere' is not implemented"
        ' (no @capability_check("nowhere") in pciback/hooks)'
    ]


def test_a_check_named_as_an_action(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        CAPABILITY.format(body='    seize action msix_layout "the wrong role"\n')
    )
    assert status == 1
    assert errors == [
        "policy.pci:2:18: error: seize action 'msix_layout' is implemented as a seize check"
        ' (pciback.hooks.msi.msix_layout), not with @seize_action("msix_layout")'
    ]


def test_a_block_names_a_check_once_with_its_reason(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        CAPABILITY.format(
            body='    seize check msix_layout "once"\n'
            "    seize check msix_layout\n"
            "    seize action pme_off\n"
        )
    )
    assert status == 1
    assert errors == [
        "policy.pci:3:17: error: seize check 'msix_layout' named twice (first at policy.pci:2:17)",
        "policy.pci:4:18: error: seize action 'pme_off' needs a reason:"
        ' `seize action pme_off "why"`',
    ]


def test_only_a_capability_names_what_runs_at_seize(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "header h type 0 {\n"
        '    seize action pme_off "no capability to act on"\n'
        "    register a @0x00 u8 { f [7:0] hw ro }\n"
        "}\n"
    )
    assert status == 1
    assert errors == [
        "policy.pci:2:18: error: seize action 'pme_off' in a header: only a capability's block"
        " names what runs on it at seize"
    ]


def test_check_and_action_are_no_reserved_words_inside_a_register(
    check_source: CheckRun,
) -> None:
    status, errors, _ = check_source(
        "capability c id 0x09 length 4 {\n"
        "    register a @0x02 u16 { check [7:0] hw ro  action [14:8] hw ro  seize [15] hw ro }\n"
        "}\n"
    )
    assert (status, errors) == (0, [])


@pytest.fixture
def real_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """dsl/ copied to a scratch directory, which is the working directory."""
    shutil.copytree(ROOT / "dsl", tmp_path / "dsl")
    monkeypatch.chdir(tmp_path)
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "dsl").glob("*.pci"))


def _defined_at(fn: object) -> str:
    _, line = inspect.getsourcelines(fn)  # type: ignore[arg-type]
    return f"{inspect.getsourcefile(fn)}:{line}:1"  # type: ignore[arg-type]


def test_check_fails_on_a_check_no_block_of_the_policy_names(
    real_policy: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hooks, "HOOKS", hooks.HOOKS.including(_orphan))
    assert main(["check", *real_policy]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{_defined_at(_orphan)}: error: seize check 'orphan' is named by no capability of the"
        " policy, so it would never run: name it in its capability's block"
        ' (`seize check orphan "why"`) or remove it',
        "1 error",
    ]
    # A part of the policy checked alone says nothing of what other parts name.
    assert main(["check", "dsl/type0.pci"]) == 0


def test_check_fails_when_the_msix_block_no_longer_names_its_check(
    real_policy: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    msix = tmp_path / "dsl" / "msix.pci"
    text = msix.read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if "seize check msix_layout" not in line]
    assert len(kept) == len(text.splitlines()) - 1
    msix.write_text("\n".join(kept) + "\n", encoding="utf-8")
    assert main(["check", *real_policy]) == 1
    (error, summary) = capsys.readouterr().err.splitlines()
    assert error.startswith(f"{_defined_at(msi.msix_layout)}: error: seize check 'msix_layout'")
    assert summary == "1 error"


@pytest.fixture
def fresh_policy() -> Iterator[None]:
    """default_policy() is cached: loaded again here, and again after the test."""
    default_policy.cache_clear()
    yield
    default_policy.cache_clear()


def test_the_daemon_refuses_to_start_with_a_check_no_table_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fresh_policy: None,
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "pciback.toml"
    config.write_text(f'backend = "sim"\nstate_dir = "{state}"\n', encoding="utf-8")
    monkeypatch.setattr(hooks, "HOOKS", hooks.HOOKS.including(_orphan))
    assert pciback_main(["daemon", "--config", str(config)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "pciback: cannot start: pciback/hooks implements what no table of the compiled policy"
        " names, so it would never run: seize check 'orphan'"
        " (tests.compiler.test_seize_declarations._orphan)"
    ]
    assert not state.exists()


def test_the_daemon_refuses_to_start_without_the_pm_action(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fresh_policy: None,
) -> None:
    config = tmp_path / "pciback.toml"
    config.write_text(f'backend = "sim"\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    monkeypatch.setattr(hooks, "HOOKS", hooks.HOOKS.without("pme_off"))
    assert pciback_main(["daemon", "--config", str(config)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "pciback: cannot start: the compiled policy names hooks pciback/hooks does not provide:"
        " dsl/pm.pci:"
    )
    assert line.endswith(
        ": seize action 'pme_off' is not implemented (no @seize_action(\"pme_off\") in"
        " pciback/hooks)"
    )
