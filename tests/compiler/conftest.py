from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pciback import hooks
from pciback.compiler.cli import main
from pciback.engine.hookapi import HookContext, read_hook, write_hook

CheckRun = Callable[[str], tuple[int, list[str], Path]]
FlagsRun = Callable[..., tuple[int, list[str], str]]


@write_hook("changed")
def _changed(ctx: HookContext, old: int, new: int) -> bool:
    return True


@read_hook("shown")
def _shown(ctx: HookContext, value: int) -> int:
    return value


@pytest.fixture
def test_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Implementations of the hooks the test policies declare, `changed` (on_write) and `shown`
    (on_read), for the test's duration: `pciback-dsl check` verifies every declared hook
    against pciback/hooks."""
    monkeypatch.setattr(hooks, "HOOKS", hooks.HOOKS.including(_changed, _shown))


@pytest.fixture
def check_source(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    test_hooks: None,
) -> CheckRun:
    """Run `pciback-dsl check` on one source; returns (exit status, error lines, file)."""
    monkeypatch.chdir(tmp_path)

    def run(text: str) -> tuple[int, list[str], Path]:
        path = tmp_path / "policy.pci"
        path.write_text(text, encoding="utf-8")
        status = main(["check", "policy.pci"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if ": error: " in line]
        return status, lines, path

    return run


@pytest.fixture
def check_flags(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    test_hooks: None,
) -> FlagsRun:
    """Run `pciback-dsl check [FLAGS] policy.pci` on one source; returns (exit status, every
    diagnostic line, errors and warnings, in order, and the summary line)."""
    monkeypatch.chdir(tmp_path)

    def run(text: str, *flags: str) -> tuple[int, list[str], str]:
        (tmp_path / "policy.pci").write_text(text, encoding="utf-8")
        status = main(["check", *flags, "policy.pci"])
        lines = capsys.readouterr().err.splitlines()
        diagnostics = [line for line in lines if ": error: " in line or ": warning: " in line]
        rest = [line for line in lines if line not in diagnostics]
        assert len(rest) <= 1, rest
        return status, diagnostics, rest[0] if rest else ""

    return run
