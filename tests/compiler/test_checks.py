"""Every compiler check, on a source that breaks it: file, line, column and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.compiler.cli import main
from tests.compiler.conftest import CheckRun

HEADER = "header h type 0 {{\n{body}}}\n"
HOLE_HINT = (
    ': describe them, or declare them reserved (a register of `_ [..] hw rsvdp "why"` fields)'
)
BYTE_HINT = HOLE_HINT.replace("them", "it")

CASES: list[tuple[str, str, str]] = [
    (
        "syntax error names what was expected",
        "header h type 0 {\n    register r @0x00 u16 {\n        f [15:0] hw maybe\n    }\n}\n",
        "3:21: error: syntax error: unexpected 'maybe', expected an access class"
        " (ro, rw, rw1c, rsvdp, rsvdz)",
    ),
    (
        "unexpected end of file",
        "header h type 0 {\n    register r @0x00 u16 {\n",
        "2:26: error: syntax error: unexpected end of file, expected one of '}', a name",
    ),
    (
        "stray character",
        "header h type 0 { $ }\n",
        "1:19: error: syntax error: unexpected character '$',"
        " expected one of 'chain', 'policy', 'register', 'rest', 'section', 'seize', 'use', '}'",
    ),
    (
        "unknown constant",
        HEADER.format(body="    register r @0x00 u8 {\n        f [7:0] const(NOPE) ro\n    }\n"),
        "3:23: error: unknown constant 'NOPE'",
    ),
    (
        "duplicate register",
        HEADER.format(
            body="    register r @0x00 u8 { f [7:0] hw ro }\n"
            "    register r @0x01 u8 { f [7:0] hw ro }\n"
        ),
        "3:14: error: duplicate register 'r' (first at policy.pci:2:14)",
    ),
    (
        "duplicate field",
        HEADER.format(
            body="    register r @0x00 u8 {\n        f [3:0] hw ro\n        f [7:4] hw ro\n    }\n"
        ),
        "4:9: error: duplicate field 'f' in register 'r' (first at policy.pci:3:9)",
    ),
    (
        "duplicate constant",
        "const A = 1\nconst A = 2\n",
        "2:7: error: duplicate constant 'A' (first defined at policy.pci:1:7)",
    ),
    (
        "duplicate hook",
        'hook on_read h(value)\nhook on_read h(value) "again"\n',
        "2:14: error: duplicate hook 'h' (first declared at policy.pci:1:14)",
    ),
    (
        "duplicate block",
        "capability a id 1 { }\ncapability a id 2 { }\n",
        "2:12: error: duplicate capability 'a' (first defined at policy.pci:1:12)",
    ),
    (
        "one name in generated/names.py for two kinds of block",
        "capability a id 1 { }\nextended_capability a id 2 { }\n",
        "2:21: error: extended capability 'a' and capability 'a' (at policy.pci:1:12) would have"
        " one name, A, in generated/names.py",
    ),
    (
        "one name in generated/names.py for fields that differ in case",
        HEADER.format(body="    register r @0x00 u8 { f [3:0] hw ro  F [7:4] hw ro }\n"),
        "2:42: error: field 'F' and field 'f' (at policy.pci:2:27) would have one name, F,"
        " in generated/names.py",
    ),
    (
        "overlapping registers",
        HEADER.format(
            body="    register a @0x00 u16 { f [15:0] hw ro }\n"
            "    register b @0x01 u8 { f [7:0] hw ro }\n"
        ),
        "3:17: error: register 'b' overlaps register 'a' at byte 0x1",
    ),
    (
        "bits not covered",
        HEADER.format(
            body="    register a @0x00 u16 {\n        f [3:0] hw ro\n"
            "        g [15:8] hw ro\n    }\n"
        ),
        "2:14: error: bits 7:4 of register 'a' are not covered by any field",
    ),
    (
        "bits covered twice",
        HEADER.format(
            body="    register a @0x00 u8 {\n        f [3:0] hw ro\n        g [7:3] hw ro\n    }\n"
        ),
        "4:11: error: bit 3 of register 'a' is covered twice (also by field 'f')",
    ),
    (
        "bit outside the register",
        HEADER.format(body="    register a @0x00 u8 { f [8:0] hw ro }\n"),
        "2:29: error: bit 8 is outside the 8-bit register 'a'",
    ),
    (
        "bit range backwards",
        HEADER.format(body="    register a @0x00 u8 { f [0:7] hw ro }\n"),
        "2:29: error: bit range [0:7] runs backwards",
    ),
    (
        "shadow value does not fit",
        HEADER.format(
            body="    register a @0x00 u8 {\n        f [1:0] shadow(5) rw\n"
            "        g [7:2] hw ro\n    }\n"
        ),
        "3:24: error: value 0x5 does not fit the 2-bit field 'f'",
    ),
    (
        "match value does not fit",
        "quirk q match vendor=0x12345 {\n}\n",
        "1:22: error: value 0x12345 does not fit the 16-bit vendor",
    ),
    (
        "header type value does not fit",
        "quirk q match header_type=0x81 {\n}\n",
        "1:27: error: value 0x81 does not fit the 7-bit header_type",
    ),
    (
        "capability ID does not fit",
        "capability c id 0x100 {\n}\n",
        "1:17: error: capability ID does not fit 8 bits: 0x100",
    ),
    (
        "misaligned register",
        HEADER.format(body="    register a @0x01 u16 { f [15:0] hw ro }\n"),
        "2:17: error: register 'a' at 0x1 is not aligned to its width",
    ),
    (
        "standard capability out of range",
        "capability c id 0x10 {\n    register a @0xc0 u32 { f [31:0] hw ro }\n}\n",
        "2:17: error: register 'a' at 0xc0 lies outside the 0xc0 bytes a capability may use",
    ),
    (
        "extended capability out of range",
        "extended_capability e id 0x1 {\n    register a @0xf00 u32 { f [31:0] hw ro }\n}\n",
        "2:17: error: register 'a' at 0xf00 lies outside the 0xf00 bytes"
        " an extended capability may use",
    ),
    (
        "register over the chain link",
        "capability c id 0x10 {\n    register a @0x00 u16 { f [15:0] hw ro }\n}\n",
        "2:17: error: register 'a' at 0x0 covers the capability's ID and next pointer"
        " (the first 2 bytes), which the runtime owns",
    ),
    (
        "undeclared hook",
        HEADER.format(
            body="    register a @0x00 u8 {\n        f [7:0] hw rw on_write nothere\n    }\n"
        ),
        "3:32: error: undeclared hook 'nothere'",
    ),
    (
        "hook used as the wrong kind",
        "hook on_read shown(value)\n"
        + HEADER.format(
            body="    register a @0x00 u8 {\n        f [7:0] hw rw on_write shown\n    }\n"
        ),
        "4:32: error: hook 'shown' is declared on_read but used on_write",
    ),
    (
        "hook signature",
        "hook on_write changed(value)\n",
        "1:15: error: on_write hook 'changed' must take (old, new), not (value)",
    ),
    (
        "condition on an unknown register",
        "capability c id 0x05 {\n    register a @0x04 u16 if ctrl.wide { f [15:0] hw ro }\n}\n",
        "2:29: error: unknown register 'ctrl'",
    ),
    (
        "condition on an unknown field",
        "capability c id 0x05 {\n    register ctrl @0x02 u16 { x [15:0] hw ro }\n"
        "    register a @0x04 u16 if ctrl.wide { f [15:0] hw ro }\n}\n",
        "3:29: error: unknown field 'wide' in register 'ctrl'",
    ),
    (
        "moving register overlaps in one layout",
        "capability c id 0x05 {\n    register ctrl @0x02 u16 {\n        wide [0] hw ro\n"
        "        _ [15:1] hw ro\n    }\n    register a @0x04 u32 { f [31:0] hw ro }\n"
        "    register b @(0x04 + 4*ctrl.wide) u16 { f [15:0] hw ro }\n}\n",
        "7:18: error: register 'b' overlaps register 'a' at byte 0x4",
    ),
    (
        "a cached field cannot be written",
        HEADER.format(body="    register a @0x00 u8 { f [7:0] cached rw }\n"),
        "2:27: error: field 'f' is cached: a guest write cannot change it, so it cannot be rw",
    ),
    (
        "header cannot be hidden",
        "header h type 0 {\n    policy hide\n}\n",
        "2:12: error: only a capability can be hidden",
    ),
    # A capability's registers fill it: none past its length, no byte between them undescribed
    # (an undescribed byte follows the device's default policy, which permissive mode opens).
    (
        "register past the length",
        "capability c id 0x09 length 8 {\n    register a @0x02 u16 { f [15:0] hw ro }\n"
        "    register b @0x04 u32 { f [31:0] hw ro }\n"
        "    register c @0x08 u16 { f [15:0] hw ro }\n}\n",
        "4:17: error: register 'c' at 0x8 ends at byte 0x9, past the capability's length 0x8"
        " (declared at policy.pci:1:29)",
    ),
    (
        "register past the length in one layout",
        "capability c id 0x05 length 8 + 4 * ctrl.wide {\n"
        "    register ctrl @0x02 u16 {\n        wide [0] hw ro\n        _ [15:1] hw ro\n    }\n"
        "    register a @0x04 u32 { f [31:0] hw ro }\n"
        "    register b @0x08 u32 if ctrl.wide { f [31:0] hw ro }\n"
        "    register c @(0x08 + 4 * ctrl.wide) u16 { f [15:0] hw ro }\n}\n",
        "8:18: error: register 'c' at 0x8 ends at byte 0x9, past the capability's length 0x8"
        " when ctrl.wide = 0 (declared at policy.pci:1:29)",
    ),
    (
        "register past an extended capability's length",
        "extended_capability e id 0x1 length 0x8 {\n    register a @0x04 u32 { f [31:0] hw ro }\n"
        "    register b @0x08 u16 { f [15:0] hw ro }\n}\n",
        "3:17: error: register 'b' at 0x8 ends at byte 0x9, past the extended capability's"
        " length 0x8 (declared at policy.pci:1:37)",
    ),
    (
        "hole between registers",
        "capability c id 0x09 {\n    register a @0x02 u16 { f [15:0] hw ro }\n"
        "    register b @0x08 u32 { f [31:0] hw ro }\n}\n",
        "1:12: error: bytes 0x4..0x7 of capability 'c' (between registers 'a' and 'b')"
        " are covered by no register" + HOLE_HINT,
    ),
    (
        "hole up to the length",
        "capability c id 0x09 length 5 {\n    register a @0x02 u16 { f [15:0] hw ro }\n}\n",
        "1:12: error: byte 0x4 of capability 'c' (after register 'a') is covered by no register"
        + BYTE_HINT,
    ),
    (
        "hole after an extended capability's header",
        "extended_capability e id 0x1 {\n    register a @0x08 u32 { f [31:0] hw ro }\n}\n",
        "1:21: error: bytes 0x4..0x7 of extended capability 'e' (before register 'a')"
        " are covered by no register" + HOLE_HINT,
    ),
    (
        "hole in one layout",
        "capability c id 0x05 length 8 {\n"
        "    register ctrl @0x02 u16 {\n        wide [0] hw ro\n        _ [15:1] hw ro\n    }\n"
        "    register a @(0x04 + 2 * ctrl.wide) u16 { f [15:0] hw ro }\n"
        "    register b @0x06 u16 if not ctrl.wide { f [15:0] hw ro }\n}\n",
        "1:12: error: bytes 0x4..0x5 of capability 'c' (between registers 'ctrl' and 'a')"
        " are covered by no register when ctrl.wide = 1" + HOLE_HINT,
    ),
    (
        "duplicate capability ID",
        "capability a id 0x05 { }\nconst MSI = 5\ncapability b id MSI { }\n",
        "3:17: error: duplicate capability ID 0x5 of 'b' (first defined by 'a' at policy.pci:1:17)",
    ),
    (
        "duplicate header type",
        "header a type 0 { }\nheader b type 0 { }\n",
        "2:15: error: duplicate header type 0 of 'b' (first defined by 'a' at policy.pci:1:15)",
    ),
    (
        "quirk without match keys is refused by the grammar",
        "quirk q { }\n",
        "1:9: error: syntax error: unexpected '{', expected 'match'",
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_check_reports_position_and_message(
    check_source: CheckRun, source: str, expected: str
) -> None:
    status, errors, _ = check_source(source)
    assert status == 1
    assert errors == [f"policy.pci:{expected}"]


def test_all_errors_of_a_file_in_one_run(check_source: CheckRun) -> None:
    source = (
        "header h type 0 {\n"
        "    register a @0x01 u16 { f [15:0] hw ro }\n"
        "    register b @0x04 u8 { f [7:0] const(MISSING) ro }\n"
        "    register c @0x08 u8 { f [7:0] hw rw on_write ghost }\n"
        "}\n"
    )
    status, errors, _ = check_source(source)
    assert status == 1
    assert errors == [
        "policy.pci:2:17: error: register 'a' at 0x1 is not aligned to its width",
        "policy.pci:3:41: error: unknown constant 'MISSING'",
        "policy.pci:4:50: error: undeclared hook 'ghost'",
    ]


def test_clean_source_passes(check_source: CheckRun, capsys: pytest.CaptureFixture[str]) -> None:
    status, errors, _ = check_source(
        "const LOW = 0x3\n"
        'hook on_write changed(old, new) "a side effect"\n'
        "capability msi id 0x05 length 10 + 4*ctrl.wide {\n"
        "    register ctrl @0x02 u16 {\n"
        "        wide [7] hw ro\n"
        "        rest [15:8] hw rsvdp\n"
        "        low [6:0] shadow(LOW) rw on_rising changed\n"
        "    }\n"
        '    register gap @0x04 u32 { _ [31:0] hw rsvdp "a deliberate hole" }\n'
        "    register data @(0x08 + 4*ctrl.wide) u16 { d [15:0] shadow(0) rw }\n"
        "    register upper @0x08 u32 if ctrl.wide { a [31:0] shadow(0) rw }\n"
        "}\n"
    )
    assert (status, errors) == (0, [])


def test_register_groups_are_shared_and_checked_where_used(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "registers ids {\n"
        "    register vendor @0x00 u16 { v [15:0] cached ro }\n"
        "}\n"
        "header a type 0 {\n    use ids\n}\n"
        "header b type 1 {\n    use ids\n    register more @0x00 u8 { v [7:0] hw ro }\n}\n"
        "capability c id 5 {\n    use nothing\n}\n"
        "registers ids { }\n"
    )
    assert status == 1
    assert errors == [
        "policy.pci:9:20: error: register 'more' overlaps register 'vendor' at byte 0x0",
        "policy.pci:12:9: error: unknown register group 'nothing'",
        "policy.pci:14:11: error: duplicate register group 'ids' (first at policy.pci:1:11)",
    ]


def test_duplicate_capability_id_across_files_names_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Caught when compiled, not when the runtime loads the two tables."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "msi.pci").write_text("capability msi id 0x05 { }\n", encoding="utf-8")
    (tmp_path / "vendor.pci").write_text(
        "# a second description of MSI\n\ncapability msi_again id 0x05 { }\n", encoding="utf-8"
    )
    assert main(["check", "msi.pci", "vendor.pci"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "vendor.pci:3:25: error: duplicate capability ID 0x5 of 'msi_again'"
        " (first defined by 'msi' at msi.pci:1:19)",
        "1 error",
    ]


def test_declared_holes_pass(check_source: CheckRun) -> None:
    """A range left unused on purpose is a register of reserved fields, with its reason; a
    hidden capability is blocked whole and needs no description."""
    status, errors, _ = check_source(
        "capability c id 0x09 length 12 {\n"
        "    register a @0x02 u16 { f [15:0] hw ro }\n"
        '    register reserved @0x04 u32 { _ [31:0] hw rsvdp "reserved by the spec" }\n'
        "    register b @0x08 u16 { f [15:0] hw ro }\n"
        '    register tail @0x0a u8 { _ [7:0] hw rsvdp "reserved" }\n'
        '    register vendor @0x0b u8 { v [7:0] hw ro permissive rw "the driver\'s own" }\n'
        "}\n"
        'capability hidden id 0x0a length 0x10 { policy hide "nothing of it is offered" }\n'
    )
    assert (status, errors) == (0, [])
