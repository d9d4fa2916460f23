"""`pciback-dsl report`: every field of every block, one Markdown row each."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.compiler.cli import main

SOURCE = """
hook on_write changed(old, new)
capability msi id 0x05 length 10 + 4*control.wide "Message Signalled Interrupts" {
    policy hide "not for this guest | ever"
    register control @0x02 u16 {
        enable [0]    shadow(0) rw  on_rising changed  "through the op only"
        rest   [6:1]  hw ro
        wide   [7]    hw ro
        _      [15:8] hw rsvdp  permissive ro
    }
    register upper @0x08 u32 if control.wide { a [31:0] const(0) ro }
}
"""


def test_report_has_a_row_per_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "msi.pci").write_text(SOURCE, encoding="utf-8")
    assert main(["report", "-o", "report.md"]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## capability msi (ID 0x5)" in text
    assert "**Hidden**: unlinked from the chain and unreachable by offset" in text
    assert "offset (not for this guest | ever)." in text
    assert "Length: `(0xa + (4 * control.wide))`." in text
    assert (
        "| 0x02 | control | 0 | enable | shadow(0x0) | rw |  | on_rising changed |"
        " through the op only |" in text
    )
    assert "| 0x02 | control | 15:8 | _ | hw | rsvdp | ro |  |  |" in text
    assert "| 0x08 | upper (if `control.wide`) | 31:0 | a | const(0x0) | ro |  |  |  |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 0x")]
    assert len(rows) == 5


def test_report_refuses_a_broken_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "bad.pci").write_text("capability x id 0x100 { }\n", encoding="utf-8")
    assert main(["report"]) == 1
    assert "dsl/bad.pci:1:17: error: capability ID does not fit 8 bits" in capsys.readouterr().err


REASONED = """
capability msi id 0x05 "Message Signalled Interrupts" {
    register control @0x02 u16 { rest [15:0] hw ro }
    register address @0x04 u32 "the host's interrupt window (XSA-128)" {
        address [31:0] hw ro  "no write reaches it"
    }
}
"""


def test_report_keeps_register_reasons_and_the_line_of_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reviewers look for the XSA a register answers: the register's own reason has a row.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "msi.pci").write_text(REASONED, encoding="utf-8")
    assert main(["report", "-o", "report.md"]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (
        "| 0x04 | address | 31:0 | *register* |  |  |  |  |"
        " the host's interrupt window (XSA-128) | dsl/msi.pci:4 |" in text
    )
    assert (
        "| 0x04 | address | 31:0 | address | hw | ro |  |  | no write reaches it |"
        " dsl/msi.pci:5 |" in text
    )
    rows = [line for line in text.splitlines() if line.startswith("| 0x")]
    assert all(line.rstrip(" |").rsplit("| ", 1)[1].startswith("dsl/msi.pci:") for line in rows)


def test_the_committed_report_carries_the_register_reasons() -> None:
    # `make check-generated` keeps it current; this keeps what it must say.
    text = (Path(__file__).resolve().parents[2] / "docs" / "policy-report.md").read_text(
        encoding="utf-8"
    )
    assert (
        "| 0x04 | command | 15:0 | *register* |  |  |  |  |"
        " who may change what is the XSA-120 question | dsl/prelude.pci:35 |" in text
    )
    assert "Xen owns the per-vector masks (XSA-129) | dsl/msi.pci:" in text
