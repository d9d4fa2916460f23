"""Feedback for a policy author: "did you mean" on unknown names and misspelt keywords, values
that do not fit 64 bits, and warnings (unused declarations, reasons), with the flags that
control them. Each diagnostic is pinned by file, line, column and message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pciback.compiler.build import MAX_EXPR_DEPTH
from pciback.compiler.cli import main
from tests.compiler.conftest import CheckRun, FlagsRun

ROOT = Path(__file__).resolve().parents[2]
HEADER = "header h type 0 {{\n{body}}}\n"
CTRL = "    register ctrl @0x02 u16 {\n        wide [0] hw ro\n        _ [15:1] hw ro\n    }\n"

SUGGESTIONS: list[tuple[str, str, str]] = [
    (
        "constant",
        "const LOW = 3\n"
        + HEADER.format(body="    register a @0x00 u8 { f [7:0] const(LWO) ro }\n"),
        "3:41: error: unknown constant 'LWO' (did you mean 'LOW'?)",
    ),
    (
        "constant in another constant",
        "const LIMIT = 4\nconst TWICE = 2 * LIMTI\n",
        "2:19: error: unknown constant 'LIMTI' (did you mean 'LIMIT'?)",
    ),
    (
        "constant whatever its case",
        "const PCIE_ROOT_PORT = 4\ncapability c id pcie_root_port { }\n",
        "2:17: error: unknown constant 'pcie_root_port' (did you mean 'PCIE_ROOT_PORT'?)",
    ),
    (
        "nothing close: no suggestion",
        "const LOW = 3\ncapability c id ZZZ { }\n",
        "2:17: error: unknown constant 'ZZZ'",
    ),
    (
        "constant used before its definition",
        "const TWICE = 2 * LIMIT\nconst LIMIT = 4\n",
        "1:19: error: constant 'LIMIT' is used before its definition at policy.pci:2:7",
    ),
    (
        "hook",
        "hook on_write bar_write(old, new)\n"
        + HEADER.format(
            body="    register a @0x00 u8 {\n        f [7:0] hw rw on_write bar_wirte\n    }\n"
        ),
        "4:32: error: undeclared hook 'bar_wirte' (did you mean 'bar_write'?)",
    ),
    (
        "hook of the kind used first",
        "hook on_write bar_write(old, new)\nhook on_read bar_read(value)\n"
        + HEADER.format(body="    register a @0x00 u8 { f [7:0] hw ro on_read bar_raed }\n"),
        "4:49: error: undeclared hook 'bar_raed' (did you mean 'bar_read'?)",
    ),
    (
        "register group",
        "registers common { }\n" + HEADER.format(body="    use comon\n"),
        "3:9: error: unknown register group 'comon' (did you mean 'common'?)",
    ),
    (
        "register in a condition",
        "capability c id 0x05 {\n"
        + CTRL
        + "    register a @0x04 u16 if ctlr.wide { f [15:0] hw ro }\n}\n",
        "6:29: error: unknown register 'ctlr' (did you mean 'ctrl'?)",
    ),
    (
        "field in a condition",
        "capability c id 0x05 {\n"
        + CTRL
        + "    register a @0x04 u16 if ctrl.wdie { f [15:0] hw ro }\n}\n",
        "6:29: error: unknown field 'wdie' in register 'ctrl' (did you mean 'wide'?)",
    ),
    (
        "field in an offset",
        "capability c id 0x05 {\n"
        + CTRL
        + "    register a @(0x04 + 4 * ctrl.wdie) u16 { f [15:0] hw ro }\n}\n",
        "6:29: error: unknown field 'wdie' in register 'ctrl' (did you mean 'wide'?)",
    ),
    (
        "register in a length",
        "capability c id 0x05 length 8 + 4 * ctlr.wide {\n" + CTRL + "}\n",
        "1:37: error: unknown register 'ctlr' (did you mean 'ctrl'?)",
    ),
    (
        "a bare field name where a device field may stand",
        "capability c id 0x05 length 8 + 4 * wide {\n" + CTRL + "}\n",
        "1:37: error: unknown constant 'wide' (did you mean 'ctrl.wide'?)",
    ),
    (
        "a misspelt bare field name in a condition",
        "capability c id 0x05 {\n"
        + CTRL
        + "    register a @0x04 u16 if wdie { f [15:0] hw ro }\n}\n",
        "6:29: error: unknown constant 'wdie' (did you mean 'ctrl.wide'?)",
    ),
    (
        "no field is suggested where a device field cannot stand",
        "capability c id 0x05 {\n"
        + CTRL
        + "    register a @0x04 u16 { f [15:0] shadow(wide) rw }\n}\n",
        "6:44: error: unknown constant 'wide'",
    ),
    # Misspelt keywords, where the parser meets them.
    (
        "block item keyword",
        HEADER.format(body="    regsiter a @0x00 u8 { f [7:0] hw ro }\n"),
        "2:5: error: syntax error: unexpected 'regsiter', expected one of 'chain', 'policy',"
        " 'register', 'rest', 'section', 'seize', 'use', '}' (did you mean 'register'?)",
    ),
    (
        "block keyword",
        "capabilty c id 5 { }\n",
        "1:1: error: syntax error: unexpected 'capabilty', expected one of 'capability', 'const',"
        " 'extended_capability', 'header', 'hook', 'layout', 'quirk', 'registers', end of file"
        " (did you mean 'capability'?)",
    ),
    (
        "backing",
        HEADER.format(body="    register a @0x00 u8 { f [7:0] shadw(0) rw }\n"),
        "2:35: error: syntax error: unexpected 'shadw', expected one of 'cached', 'const', 'hw',"
        " 'shadow' (did you mean 'shadow'?)",
    ),
    (
        "access class",
        HEADER.format(body="    register a @0x00 u8 { f [7:0] hw rwc1 }\n"),
        "2:38: error: syntax error: unexpected 'rwc1', expected an access class"
        " (ro, rw, rw1c, rsvdp, rsvdz) (did you mean 'rw1c'?)",
    ),
    (
        "permissive access class",
        HEADER.format(body="    register a @0x00 u8 { f [7:0] hw ro permissive rw1 }\n"),
        "2:52: error: syntax error: unexpected 'rw1', expected an access class"
        " (ro, rw, rw1c, rsvdp, rsvdz) (did you mean 'rw1c'?)",
    ),
    (
        "width",
        HEADER.format(body="    register a @0x00 u61 { f [7:0] hw ro }\n"),
        "2:22: error: syntax error: unexpected 'u61', expected a width (u8, u16, u32)"
        " (did you mean 'u16'?)",
    ),
    (
        "policy",
        "capability c id 5 {\n    policy hid\n}\n",
        "2:12: error: syntax error: unexpected 'hid', expected a policy (expose, hide)"
        " (did you mean 'hide'?)",
    ),
    (
        "match key",
        "quirk q match vendr = 0x8086 { }\n",
        "1:15: error: syntax error: unexpected 'vendr', expected a match key (vendor, device,"
        " subsystem_vendor, subsystem_device, class) (did you mean 'vendor'?)",
    ),
    (
        "a keyword is a whole word",
        "capability c id 5 {\n" + CTRL + "    register a @0x04 u16 iff ctrl.wide { }\n}\n",
        "6:26: error: syntax error: unexpected 'iff', expected one of 'if', '{', a quoted reason"
        " (did you mean 'if'?)",
    ),
    (
        "permissive misspelt reads as the next field's name",
        HEADER.format(body="    register a @0x00 u8 { f [7:0] hw ro permisive rw }\n"),
        "2:51: error: syntax error: unexpected 'rw', expected '['"
        " ('permisive' was read as a field name: did you mean 'permissive'?)",
    ),
    (
        "hook keyword misspelt reads as the next field's name",
        HEADER.format(body="    register a @0x00 u8 { f [7:0] hw rw on_wirte changed }\n"),
        "2:50: error: syntax error: unexpected 'changed', expected '['"
        " ('on_wirte' was read as a field name: did you mean 'on_write'?)",
    ),
    (
        "what may follow an offset, and nothing else",
        HEADER.format(body="    register a @0x10 U8 { f [7:0] hw ro }\n"),
        "2:22: error: syntax error: unexpected 'U8', expected a width (u8, u16, u32)"
        " (did you mean 'u8'?)",
    ),
]

VALUES: list[tuple[str, str, str]] = [
    (
        "a huge shift in a constant",
        "const HUGE = 1 << 1000000\ncapability c id HUGE { }\n",
        "1:14: error: 0x1 << 1000000 does not fit 64 bits",
    ),
    (
        "a shift by a negative count",
        "const ODD = 1 << (0 - 1)\ncapability c id ODD { }\n",
        "1:13: error: 0x1 << -1: a shift count cannot be negative",
    ),
    (
        "a number literal over 64 bits",
        "capability c id 0x1_0000_0000_0000_0000 { }\n",
        "1:17: error: number 0x1_0000_0000_0000_0000 does not fit 64 bits",
    ),
    (
        "a decimal literal of thousands of digits",
        "capability c id " + "9" * 5000 + " { }\n",
        "1:17: error: number 9999999999999999999999999999999999999... does not fit 64 bits",
    ),
    (
        "a literal with no digits",
        "capability c id 0x_ { }\n",
        "1:17: error: number 0x_ has no digits",
    ),
    (
        "a product over 64 bits, where it is computed",
        "const BIG = 1 << 63\nconst SQUARED = BIG * BIG\ncapability c id SQUARED { }\n",
        "2:17: error: 0x8000000000000000 * 0x8000000000000000 does not fit 64 bits",
    ),
    (
        "a sum over 64 bits",
        "capability c id 5 length 0xffff_ffff_ffff_ffff + 1 { }\n",
        "1:26: error: 0xffffffffffffffff + 0x1 does not fit 64 bits",
    ),
    (
        "an offset that overflows in one layout only",
        "capability c id 0x05 {\n"
        + CTRL
        + "    register a @(0x04 + (ctrl.wide << 64)) u8 { f [7:0] hw ro }\n}\n",
        "6:26: error: 0x1 << 64 does not fit 64 bits",
    ),
    (
        "a length that overflows for some field value",
        "capability c id 0x05 length 8 + (ctrl.wide << 70) {\n" + CTRL + "}\n",
        "1:34: error: 0x1 << 70 does not fit 64 bits",
    ),
    (
        "a length that depends on too many field values",
        "capability c id 0x05 length 8 + ctrl.all {\n"
        "    register ctrl @0x02 u16 { all [15:0] hw ro }\n}\n",
        "1:12: error: the length depends on 65536 field values; at most 4096 can be checked",
    ),
    (
        "an expression nested too deeply",
        "capability c id "
        + "(1 + " * (MAX_EXPR_DEPTH + 1)
        + "1"
        + ")" * (MAX_EXPR_DEPTH + 1)
        + " { }\n",
        f"1:{18 + 5 * (MAX_EXPR_DEPTH - 1)}: error: expression nested too deeply"
        f" (more than {MAX_EXPR_DEPTH} levels)",
    ),
    (
        "a chain of operations too long",
        "capability c id " + " + ".join(["1"] * (MAX_EXPR_DEPTH + 2)) + " { }\n",
        f"1:17: error: expression nested too deeply (more than {MAX_EXPR_DEPTH} levels)",
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"),
    [(c[1], c[2]) for c in SUGGESTIONS + VALUES],
    ids=[c[0] for c in SUGGESTIONS + VALUES],
)
def test_error_with_position_and_message(
    check_source: CheckRun, source: str, expected: str
) -> None:
    status, errors, _ = check_source(source)
    assert status == 1
    assert errors == [f"policy.pci:{expected}"]


def test_parentheses_alone_nest_freely(check_source: CheckRun) -> None:
    status, errors, _ = check_source("capability c id " + "(" * 5000 + "5" + ")" * 5000 + " { }\n")
    assert (status, errors) == (0, [])


def test_shifts_parse_and_values_up_to_64_bits_pass(check_source: CheckRun) -> None:
    """`<<` was once lexed as two `<`; the largest 64-bit values are fine."""
    status, errors, _ = check_source(
        "const TOP = (1 << 63) + ((1 << 63) - 1)\n"
        "const NEAR = 0xffff_ffff_ffff_ffff - TOP\n"
        "const SMALL = 1 < 2\n"
        "capability c id (NEAR + SMALL) << 2 { }\n"
    )
    assert (status, errors) == (0, [])


def test_a_constant_in_error_is_reported_once(check_source: CheckRun) -> None:
    """Uses of a constant whose own value is in error add nothing."""
    status, errors, _ = check_source(
        "const HUGE = 1 << 100\nconst MORE = HUGE + 1\ncapability c id HUGE { }\n"
    )
    assert status == 1
    assert errors == ["policy.pci:1:14: error: 0x1 << 100 does not fit 64 bits"]


# -- warnings ------------------------------------------------------------------------------------
UNUSED = (
    "const USED = 1\n"
    "const SPARE = 2\n"
    "hook on_write changed(old, new)\n"
    "hook on_read shown(value)\n"
    "registers ids { register vendor @0x00 u16 { v [15:0] cached ro } }\n"
    "registers spare { }\n"
    "header h type 0 {\n"
    "    use ids\n"
    '    register a @0x02 u8 { f [7:0] shadow(USED) rw on_write changed "the guest\'s" }\n'
    "}\n"
)


def test_unused_declarations_are_warnings(check_flags: FlagsRun) -> None:
    status, lines, summary = check_flags(UNUSED)
    assert status == 0
    assert lines == [
        "policy.pci:2:7: warning: constant 'SPARE' is never used",
        "policy.pci:4:14: warning: hook 'shown' is declared but no field uses it",
        "policy.pci:6:11: warning: register group 'spare' is never used by a block",
    ]
    assert summary == "3 warnings"


def test_werror_fails_on_warnings(check_flags: FlagsRun) -> None:
    status, lines, summary = check_flags(UNUSED, "--werror")
    assert status == 1
    assert len(lines) == 3
    assert summary == "3 warnings (--werror: warnings fail the check)"


def test_werror_passes_a_clean_source(
    check_flags: FlagsRun, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, summary = check_flags("capability c id 5 { }\n", "--werror")
    assert (status, lines, summary) == (0, [], "")


def test_errors_and_warnings_are_counted_apart(check_flags: FlagsRun) -> None:
    status, lines, summary = check_flags("hook on_read shown(value)\ncapability c id NOPE { }\n")
    assert status == 1
    assert lines == [
        "policy.pci:1:14: warning: hook 'shown' is declared but no field uses it",
        "policy.pci:2:17: error: unknown constant 'NOPE'",
    ]
    assert summary == "1 error, 1 warning"


def test_a_hook_used_only_in_a_group_is_used(check_flags: FlagsRun) -> None:
    status, lines, _ = check_flags(
        "hook on_write changed(old, new)\n"
        "registers g { register a @0x00 u8 { f [7:0] hw rw on_write changed } }\n"
        "header h type 0 { use g }\n"
    )
    assert (status, lines) == (0, [])


REASONS = (
    "hook on_write changed(old, new)\n"
    "header h type 0 {\n"
    "    register a @0x00 u16 {\n"
    "        plain    [0]     hw ro\n"
    "        kept     [1]     hw rsvdp\n"
    "        written  [2]     shadow(0) rw\n"
    "        cleared  [3]     hw rw1c\n"
    "        loose    [4]     hw ro  permissive rw\n"
    "        watched  [5]     hw ro  on_rising changed\n"
    '        said     [6]     shadow(0) rw  "the guest\'s own bit"\n'
    '        blank    [7]     shadow(0) rw  " "\n'
    "        _        [15:8]  hw rsvdz\n"
    "    }\n"
    "}\n"
)


def test_reasons_are_not_asked_for_by_default(check_flags: FlagsRun) -> None:
    assert check_flags(REASONS) == (0, [], "")


def test_strict_reasons_asks_every_policy_decision_for_one(check_flags: FlagsRun) -> None:
    status, lines, summary = check_flags(REASONS, "--strict-reasons")
    assert status == 0
    what = "warning: field '{}' of register 'a' is not read-only ({}) but gives no reason"
    assert lines == [
        "policy.pci:6:9: " + what.format("written", "rw"),
        "policy.pci:7:9: " + what.format("cleared", "rw1c"),
        "policy.pci:8:9: " + what.format("loose", "permissive rw"),
        "policy.pci:9:9: " + what.format("watched", "on_rising changed"),
        "policy.pci:11:9: " + what.format("blank", "rw"),
    ]
    assert summary == "5 warnings"
    status, _, _ = check_flags(REASONS, "--strict-reasons", "--werror")
    assert status == 1


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_hooks: None) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "prelude.pci").write_text(
        "hook on_write changed(old, new)\nhook on_read shown(value)\n", encoding="utf-8"
    )
    (tmp_path / "p" / "a.pci").write_text(
        "capability a id 5 { register r @0x02 u8 { f [7:0] hw rw on_write changed } }\n",
        encoding="utf-8",
    )
    (tmp_path / "p" / "b.pci").write_text(
        "capability b id 6 { register r @0x02 u8 { f [7:0] hw ro on_read shown } }\n",
        encoding="utf-8",
    )
    return tmp_path


def test_unused_is_judged_only_over_a_whole_directory(
    policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checking one file reads its directory's prelude, whose other users are not in the run."""
    assert main(["check", "--werror", "p/a.pci"]) == 0
    assert main(["check", "--werror", "p/a.pci", "p/b.pci"]) == 0
    capsys.readouterr()
    (policy_dir / "p" / "b.pci").write_text("capability b id 6 { }\n", encoding="utf-8")
    assert main(["check", "p/a.pci", "p/b.pci"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "p/prelude.pci:2:14: warning: hook 'shown' is declared but no field uses it",
        "1 warning",
    ]
    # A file of the directory that does not parse leaves usage unknown: no warning then.
    (policy_dir / "p" / "a.pci").write_text("capability a id 5 {\n", encoding="utf-8")
    assert main(["check", "p/a.pci", "p/b.pci"]) == 1
    assert ": warning: " not in capsys.readouterr().err


def test_compile_prints_warnings_and_succeeds(
    policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (policy_dir / "p" / "b.pci").write_text("capability b id 6 { }\n", encoding="utf-8")
    assert main(["compile", "--dsl", "p", "-o", "out"]) == 0
    captured = capsys.readouterr()
    assert "p/prelude.pci:2:14: warning: hook 'shown' is declared but no field uses it" in (
        captured.err
    )
    assert (policy_dir / "out" / "a.py").exists()


def test_the_real_policy_is_warning_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(ROOT / "dsl", tmp_path / "dsl")
    monkeypatch.chdir(tmp_path)
    sources = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "dsl").glob("*.pci"))
    assert main(["check", "--werror", *sources]) == 0
    assert capsys.readouterr().err == ""


def test_a_group_no_block_uses_is_still_checked(check_flags: FlagsRun) -> None:
    """It is compiled all the same, so its errors cannot wait for a block to use it."""
    status, lines, summary = check_flags(
        "registers spare {\n    register a @0x1 u16 { f [7:0] const(NOPE) ro }\n}\n"
    )
    assert status == 1
    assert lines == [
        "policy.pci:1:11: warning: register group 'spare' is never used by a block",
        "policy.pci:2:14: error: bits 15:8 of register 'a' are not covered by any field",
        "policy.pci:2:17: error: register 'a' at 0x1 is not aligned to its width",
        "policy.pci:2:41: error: unknown constant 'NOPE'",
    ]
    assert summary == "3 errors, 1 warning"
