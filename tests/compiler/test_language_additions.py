"""The language of issue 13 item 5: conditions on wide fields, `length auto`,
`match device in (...)`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.compiler.cli import main
from pciback.engine import Policy
from pciback.tables import Block
from tests.compiler.conftest import CheckRun
from tests.engine.support import compile_policy


class Fields:
    """A lookup for a table's expressions over the block's own fields."""

    def __init__(self, own: dict[tuple[str, str], int]) -> None:
        self.own = own

    def __call__(self, register: str, field: str) -> int:
        return self.own[(register, field)]

    def of(self, block: str, register: str, field: str) -> int:
        raise KeyError((block, register, field))


def _block(policy: Policy, name: str) -> Block:
    return next(
        b
        for b in (*policy.capabilities.values(), *policy.extended.values(), *policy.quirks)
        if b.name == name
    )


# -- conditions on wide fields -------------------------------------------------------------------
WIDE = """
extended_capability e id 0x23 {
    register hdr @0x04 u32 { vendor [15:0] cached ro  id [31:16] cached ro }
    register intel @0x08 u32 if hdr.vendor == 0x8086 { x [31:0] hw ro }
    register late @0x0c u32 if hdr.vendor == 0x8086 and not hdr.id < 0x100 { x [31:0] hw ro }
}
extended_capability f id 0x24 {
    register word @0x04 u32 { value [31:0] cached ro }
    register magic @0x08 u32 if word.value == 0x12345678 or word.value > 0xfffffff0 {
        x [31:0] hw ro
    }
}
"""


def test_a_condition_may_read_a_16_or_32_bit_field(tmp_path: Path) -> None:
    policy = compile_policy(WIDE, tmp_path)
    regs = {r.name: r for b in ("e", "f") for r in _block(policy, b).registers}
    cases = [
        ((0x8086, 0x100, 0), {"intel", "late"}),
        ((0x8086, 0xFF, 0), {"intel"}),
        ((0x8087, 0x100, 0x12345678), {"magic"}),
        ((0, 0, 0xFFFFFFF1), {"magic"}),
        ((0, 0, 0xFFFFFFF0), set()),
    ]
    for (vendor, ident, value), present in cases:
        lookup = Fields({("hdr", "vendor"): vendor, ("hdr", "id"): ident, ("word", "value"): value})
        shown = {
            name
            for name in ("intel", "late", "magic")
            if (test := regs[name].present) is not None and test(lookup)
        }
        assert shown == present


def test_a_wide_field_is_checked_in_every_layout_it_makes(check_source: CheckRun) -> None:
    # The hole is there only when the vendor is 0x8086: found although the field has 65536
    # values, with the value that makes it.
    source = (
        "extended_capability e id 0x23 length 0x10 {\n"
        "    register hdr @0x04 u32 { vendor [15:0] cached ro  id [31:16] cached ro }\n"
        "    register a @0x08 u32 if hdr.vendor != 0x8086 { x [31:0] hw ro }\n"
        "    register b @0x0c u32 { x [31:0] hw ro }\n"
        "}\n"
    )
    status, errors, _ = check_source(source)
    assert status == 1
    assert errors == [
        "policy.pci:1:21: error: bytes 0x8..0xb of extended capability 'e' (between registers"
        " 'hdr' and 'b') are covered by no register when hdr.vendor = 32902: describe them, or"
        ' declare them reserved (a register of `_ [..] hw rsvdp "why"` fields)'
    ]


def test_a_32_bit_field_read_otherwise_than_compared_is_refused_where_it_is_read(
    check_source: CheckRun,
) -> None:
    source = (
        "extended_capability e id 0x23 {\n"
        "    register hdr @0x04 u32 { id [31:0] cached ro }\n"
        "    register odd @0x08 u32 if hdr.id & 1 { x [31:0] hw ro }\n"
        "}\n"
    )
    status, errors, _ = check_source(source)
    assert status == 1
    assert errors == [
        "policy.pci:3:31: error: register offsets and conditions depend on the 32-bit field"
        " 'hdr.id' through `(hdr.id & 1)`: a field wider than 16 bits can only be compared"
        " with a constant (==, !=, <, <=, >, >=) here"
    ]


@pytest.mark.parametrize("width", [16, 32])
def test_a_wide_array_count_is_still_refused(check_source: CheckRun, width: int) -> None:
    # A count takes every value of its field: no class of values to try.
    source = (
        "extended_capability e id 0x23 {\n"
        f"    register n @0x04 u32 {{ count [{width - 1}:0] cached ro"
        + (f"  _ [31:{width}] hw ro" if width < 32 else "")
        + " }\n"
        "    register w[n.count] @0x08 u8 { x [7:0] hw ro }\n"
        "}\n"
    )
    status, errors, _ = check_source(source)
    assert status == 1 and len(errors) == 1
    assert "the array count depends" in errors[0]


# -- length auto ---------------------------------------------------------------------------------
AUTO = """
const ROOT = 4
capability c id 0x10 length auto {
    register caps @0x02 u16 { version [3:0] cached ro  kind [7:4] cached ro  _ [15:8] hw ro }
    register dev @0x04 u32 { x [31:0] hw ro }
    register link @0x08 u32 if caps.version >= 2 or caps.kind != 9 { x [31:0] hw ro }
    register root @0x0c u32 if caps.version >= 2 or caps.kind == ROOT { x [31:0] hw ro }
    register root2 @0x10 u16 if caps.version >= 2 or caps.kind == ROOT { x [15:0] hw ro }
    register v2 @0x12 u16 if caps.version >= 2 { x [15:0] hw ro }
}
extended_capability e id 0x20 length auto {
    register a @0x04 u32 { x [31:0] hw ro }
    register b @0x08 u16 { x [15:0] hw ro }
    register c @0x0a u16 { x [15:0] hw ro }
}
"""


def test_length_auto_is_the_extent_of_the_registers_present(tmp_path: Path) -> None:
    policy = compile_policy(AUTO, tmp_path)
    c = _block(policy, "c")
    assert callable(c.length) and c.length_text.startswith("auto = max(8, ")
    expected = {(1, 9): 0x08, (1, 0): 0x0C, (1, 4): 0x12, (2, 9): 0x14, (2, 4): 0x14}
    for (version, kind), length in expected.items():
        assert c.length(Fields({("caps", "version"): version, ("caps", "kind"): kind})) == length
    e = _block(policy, "e")  # registers at fixed offsets: a number
    assert (e.length, e.length_text) == (0x0C, "auto = 0xc")


def test_length_auto_needs_registers(check_source: CheckRun) -> None:
    status, errors, _ = check_source('capability c id 0x20\n    length auto "empty" { }\n')
    assert status == 1
    assert errors == [
        "policy.pci:2:12: error: `length auto` of capability 'c' that describes no register:"
        " write its length"
    ]


def test_auto_is_a_word_of_the_length_only(check_source: CheckRun) -> None:
    # Elsewhere `auto` is a name as any other; after `length`, an expression cannot start
    # with it.
    status, errors, _ = check_source("const auto = 8\ncapability c id 0x20 length auto + 4 { }\n")
    assert status == 1 and errors[0].startswith("policy.pci:2:34: error: syntax error")
    status, errors, _ = check_source(
        "const auto = 8\ncapability c id 0x20 length (auto) {\n"
        "    register r @0x02 u16 { x [15:0] hw ro }\n"
        "    register s @0x04 u32 { x [31:0] hw ro }\n}\n"
    )
    assert (status, errors) == (0, [])


# -- match KEY in (...) --------------------------------------------------------------------------
LISTED = """
const BE3 = 0x0221
quirk nic match vendor = 0x19a2, device in (0x0211, BE3, 0x0710) "three devices" {
    register r @0xfc u32 { x [31:0] hw rw "the vendor's" }
}
"""


def test_a_listed_match_accepts_any_of_its_values(tmp_path: Path) -> None:
    (vendor, device) = _block(compile_policy(LISTED, tmp_path), "nic").matches
    assert (device.key, device.value, device.mask, device.alternatives) == (
        "device",
        0x0211,
        0xFFFF,
        (0x0221, 0x0710),
    )
    assert [device.accepts(d) for d in (0x0211, 0x0221, 0x0710, 0x0700, -1)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert vendor.accepts(0x19A2) and vendor.alternatives == ()


def test_the_report_and_the_names_show_the_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quirks.pci").write_text(LISTED, encoding="utf-8")
    assert main(["report", "--dsl", "."]) == 0
    assert "Matches: vendor = 0x19a2, device in (0x211, 0x221, 0x710)." in capsys.readouterr().out


LISTED_ERRORS = [
    (
        "a value listed twice",
        "quirk q match device in (0x0211, 0x0221, 0x211) {\n",
        ["2:42: error: device 0x211 is listed twice (first at policy.pci:2:26)"],
    ),
    (
        "a value too wide for its key",
        "quirk q match vendor in (0x8086, 0x18086) {\n",
        ["2:34: error: value 0x18086 does not fit the 16-bit vendor"],
    ),
    (
        "a key listed and matched",
        "quirk q match device = 1, device in (2, 3) {\n",
        ["2:27: error: duplicate match key 'device'"],
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"),
    [c[1:] for c in LISTED_ERRORS],
    ids=[c[0] for c in LISTED_ERRORS],
)
def test_listed_match_misuse_is_reported_with_its_position(
    check_source: CheckRun, source: str, expected: list[str]
) -> None:
    status, errors, _ = check_source(
        "# misuse\n" + source + "    register r @0xfc u32 { x [31:0] hw ro }\n}\n"
    )
    assert status == 1
    assert errors == [f"policy.pci:{line}" for line in expected]


def test_an_empty_list_is_a_syntax_error(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "quirk q match device in () {\n    register r @0xfc u32 { x [31:0] hw ro }\n}\n"
    )
    assert status == 1 and errors[0].startswith("policy.pci:1:26: error: syntax error")


# -- linux notes ---------------------------------------------------------------------------------
NOTED = """
extended_capability e id 0x23 length 8 {
    register a @0x04 u16 "the link's" linux undescribed { x [15:0] hw ro }
    register b @0x06 u16 {
        x [3:0] hw rw linux ro "drivers tune it"
        y [15:4] hw ro permissive rw linux ro "only in permissive mode"
    }
}
"""


def test_linux_notes_are_listed_with_their_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.pci").write_text(NOTED, encoding="utf-8")
    assert main(["linux", "--dsl", "."]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 0x")]
    assert rows == [
        "| 0x04 | a | 15:0 | *register* | ro | undescribed | the link's | e.pci:3 |",
        "| 0x06 | b | 3:0 | x | rw | ro | drivers tune it | e.pci:5 |",
        "| 0x06 | b | 15:4 | y | ro (permissive rw) | ro | only in permissive mode | e.pci:6 |",
    ]
    assert "## extended capability e (`e.pci`)" in out
    assert main(["report", "--dsl", "."]) == 0
    assert "| (Linux: ro) drivers tune it |" in capsys.readouterr().out


LINUX_ERRORS = [
    (
        "a register note without a reason",
        "    register a @0x04 u32 linux undescribed { x [31:0] hw ro }\n",
        [
            "3:26: error: syntax error: unexpected 'linux', expected one of 'if', '{', a quoted"
            ' reason (a register\'s `linux` note follows its reason: `"why" linux WORD`)'
        ],
    ),
    (
        "a field note without a reason",
        "    register a @0x04 u32 { x [31:0] hw rw linux ro }\n",
        [
            "3:49: error: `linux ro` on field 'x' says how Linux differs but not why: give the"
            " field (or its register) a reason"
        ],
    ),
    (
        "a note that is no difference",
        '    register a @0x04 u32 { x [31:0] hw ro linux ro "as Linux" }\n',
        ["3:49: error: field 'x' is ro as in Linux: `linux ro` states no difference"],
    ),
    (
        "an unknown treatment",
        '    register a @0x04 u32 { x [31:0] hw ro linux writable "why" }\n',
        [
            "3:49: error: syntax error: unexpected 'writable', expected how Linux treats it"
            " (ro, rw, rw1c, rsvdp, rsvdz, undescribed, refused)"
        ],
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"),
    [c[1:] for c in LINUX_ERRORS],
    ids=[c[0] for c in LINUX_ERRORS],
)
def test_linux_note_misuse_is_reported_with_its_position(
    check_source: CheckRun, source: str, expected: list[str]
) -> None:
    status, errors, _ = check_source(
        "# misuse\nextended_capability e id 0x23 length 8 {\n" + source + "}\n"
    )
    assert status == 1
    assert errors == [f"policy.pci:{line}" for line in expected]
