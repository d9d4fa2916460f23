from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pciback.compiler.cli import main

CheckRun = Callable[[str], tuple[int, list[str], Path]]


@pytest.fixture
def check_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
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
