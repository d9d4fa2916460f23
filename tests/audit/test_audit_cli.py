"""`pciback audit` on the command line: its formats and output file, and a bad path, dump or
tree reported in one line (never a traceback)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pciback.cli import main

from .support import qemu, qemu_dumps

needs_fixtures = pytest.mark.skipif(not qemu_dumps(), reason="../shared/fixtures/qemu is absent")
DUMP = "nvme-1b36-0010.bin"


@needs_fixtures
@pytest.mark.parametrize("fmt", ["text", "json", "svg", "html"])
def test_each_format_to_a_file(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"audit.{fmt}"
    assert main(["audit", str(qemu(DUMP)), "--format", fmt, "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    if fmt == "json":
        assert json.loads(text)["size"] == 4096
    elif fmt == "svg":
        ET.fromstring(text)
    elif fmt == "html":
        assert "<svg" in text and "</html>" in text
    else:
        assert "== capability msix 0x11 @0x40" in text


@needs_fixtures
def test_hide_cap_and_permissive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(qemu(DUMP)), "--hide-cap", "msix", "--format", "svg"]) == 0
    svg = capsys.readouterr().out
    assert "capability msix 0x11 @0x40, hidden" in svg
    assert main(["audit", str(qemu(DUMP)), "--permissive", "--format", "svg"]) == 0
    assert "guest access in permissive mode" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.bin"], "missing.bin: cannot read: No such file or directory"),
        (["short.bin"], "short.bin: 10 bytes; a config space has 64 to 4096"),
        (["."], ".: is a directory, not a dump"),
        (["0000:03:00.0", "--socket", "none.sock"], "0000:03:00.0: "),
        (["ok.bin", "--policy", "nowhere"], "nowhere: not a directory"),
        (["ok.bin", "--diff", ".", "nowhere"], ".: neither *.pci policy files"),
        (["ok.bin", "-o", "no/such/dir/out.txt"], "cannot write: No such file or directory"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.bin").write_bytes(bytes(10))
    (tmp_path / "ok.bin").write_bytes(bytes.fromhex("86800e10") + bytes(60))
    assert main(["audit", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pciback audit: ")
    assert message in err
