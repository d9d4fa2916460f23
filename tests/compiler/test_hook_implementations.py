"""A hook the policy declares must be implemented in pciback/hooks, as declared: `pciback-dsl
check` says so at the declaration, and the daemon refuses to start without it (one line), where
before both passed and the first guest attach failed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pciback import hooks
from pciback.cli import main as pciback_main
from pciback.compiler.cli import main
from pciback.engine.hookapi import HookContext, write_hook
from pciback.policy import default_policy
from tests.compiler.conftest import CheckRun

ROOT = Path(__file__).resolve().parents[2]
USE = "header h type 0 {{\n    register a @0x00 u8 {{ f [7:0] hw rw on_write {name} }}\n}}\n"


@write_hook("swapped")
def _swapped(ctx: HookContext, new: int, old: int) -> bool:
    return True


def test_a_declared_hook_without_implementation(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        'hook on_write never_written(old, new) "nowhere in pciback/hooks"\n'
        + USE.format(name="never_written")
    )
    assert status == 1
    assert errors == [
        "policy.pci:1:15: error: on_write hook 'never_written' is not implemented"
        ' (no @write_hook("never_written") in pciback/hooks)'
    ]


def test_a_hook_implemented_as_the_other_kind(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        'hook on_write bar_read(old, new) "a read hook of pciback/hooks"\n'
        + USE.format(name="bar_read")
    )
    assert status == 1
    assert errors == [
        "policy.pci:1:15: error: on_write hook 'bar_read' is implemented as an on_read hook"
        ' (pciback.hooks.header.bar_read), not with @write_hook("bar_read")'
    ]


def test_a_hook_implemented_with_other_parameters(
    check_source: CheckRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks, "HOOKS", hooks.HOOKS.including(_swapped))
    status, errors, _ = check_source(
        'hook on_write swapped(old, new) "old and new the wrong way round"\n'
        + USE.format(name="swapped")
    )
    assert status == 1
    assert errors == [
        "policy.pci:1:15: error: on_write hook 'swapped' has an implementation that does not"
        " take (ctx, old, new): tests.compiler.test_hook_implementations._swapped(ctx, new, old)"
    ]


@pytest.fixture
def real_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """dsl/ copied to a scratch directory, which is the working directory."""
    shutil.copytree(ROOT / "dsl", tmp_path / "dsl")
    monkeypatch.chdir(tmp_path)
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "dsl").glob("*.pci"))


def test_the_real_policy_is_implemented(
    real_policy: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", *real_policy]) == 0
    assert capsys.readouterr().err == ""


def test_check_fails_when_the_prelude_declares_a_hook_pciback_lacks(
    real_policy: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hooks, "HOOKS", hooks.HOOKS.without("bist_start"))
    assert main(["check", *real_policy]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "dsl/prelude.pci:12:15: error: on_write hook 'bist_start' is not implemented"
        ' (no @write_hook("bist_start") in pciback/hooks)',
        "1 error",
    ]


@pytest.fixture
def fresh_policy() -> Iterator[None]:
    """default_policy() is cached: loaded again here, and again after the test."""
    default_policy.cache_clear()
    yield
    default_policy.cache_clear()


def test_the_daemon_refuses_to_start_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fresh_policy: None,
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "pciback.toml"
    config.write_text(f'backend = "sim"\nstate_dir = "{state}"\n', encoding="utf-8")
    monkeypatch.setattr(hooks, "HOOKS", hooks.HOOKS.without("bist_start"))
    assert pciback_main(["daemon", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "pciback: cannot start: the compiled policy names hooks pciback/hooks does not provide:"
        " dsl/prelude.pci:12: on_write hook 'bist_start' is not implemented"
        ' (no @write_hook("bist_start") in pciback/hooks)'
    ]
    assert not state.exists()  # refused before anything was touched
