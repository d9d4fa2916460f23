"""`layout NAME "why" { .. }`: a structure the runtime reads that no block describes, named for
the code (generated/names.py) and held to a block's rules where they apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.compiler.build import Builder
from pciback.compiler.diagnostics import Diagnostics, Pos
from pciback.compiler.elaborate import elaborate
from pciback.compiler.emit import NAMES
from pciback.compiler.model import NameRef, Num
from pciback.compiler.parse import parse
from pciback.compiler.pipeline import analyse, compile_paths
from pciback.compiler.report import report
from pciback.generated import names
from pciback.tables import Bits
from tests.compiler.conftest import CheckRun, FlagsRun

LINK = """\
const base = 0x04 "where the record's body starts"

layout link "a record's link, which no block may cover" {
    const first = 0x40  "where the records start"
    register id @0x00 u8
    register next @0x01 u8 "the next record"
    register word @base u32 {
        kind    [3:0]  "what follows"
        _       [7:4]
        next    [31:8]
    }
    register pad @0x02 u16
}
"""


def test_a_layout_parses_into_registers_fields_and_constants() -> None:
    diags = Diagnostics()
    tree = parse(LINK, "link.pci", diags)
    assert tree is not None and not diags
    src = Builder("link.pci", diags).source(tree, LINK)
    (layout,) = src.layouts
    assert (layout.name, layout.reason, layout.pos) == (
        "link",
        "a record's link, which no block may cover",
        Pos("link.pci", 3, 8),
    )
    assert [(c.name, c.value, c.reason) for c in layout.consts] == [
        ("first", Num(0x40, Pos("link.pci", 4, 19)), "where the records start")
    ]
    assert [(r.name, r.width, r.reason, r.pos) for r in layout.registers] == [
        ("id", 1, "", Pos("link.pci", 5, 14)),
        ("next", 1, "the next record", Pos("link.pci", 6, 14)),
        ("word", 4, "", Pos("link.pci", 7, 14)),
        ("pad", 2, "", Pos("link.pci", 12, 14)),
    ]
    word = layout.registers[2]
    assert word.offset == NameRef("base", Pos("link.pci", 7, 20))
    assert [(f.name, f.msb, f.lsb, f.reason, f.pos, f.bits_pos) for f in word.fields] == [
        ("kind", 3, 0, "what follows", Pos("link.pci", 8, 9), Pos("link.pci", 8, 17)),
        ("_", 7, 4, "", Pos("link.pci", 9, 9), Pos("link.pci", 9, 17)),
        ("next", 31, 8, "", Pos("link.pci", 10, 9), Pos("link.pci", 10, 17)),
    ]
    assert not src.blocks and not src.groups


def _names(text: str, tmp_path: Path) -> dict[str, object]:
    """The generated names.py of `text`, run."""
    path = tmp_path / "link.pci"
    path.write_text(text, encoding="utf-8")
    (out,) = [o for o in compile_paths([path]) if o.name == NAMES]
    namespace: dict[str, object] = {}
    exec(compile(out.text, out.name, "exec"), namespace)
    return namespace


def test_a_layout_is_named_as_a_block_is_and_makes_no_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # sources are shown relative to the working directory
    path = tmp_path / "link.pci"
    path.write_text(LINK, encoding="utf-8")
    assert [o.name for o in compile_paths([path])] == ["__init__.py", NAMES]  # no module
    space = _names(LINK, tmp_path)["LINK"]
    assert space.__doc__ == ("layout link (link.pci:3): a record's link, which no block may cover")
    assert vars(space)["length"] == 8  # the registers' extent
    assert vars(space)["FIRST"] == 0x40
    offsets = {
        name: (vars(reg)["offset"], vars(reg)["width"])
        for name, reg in vars(space).items()
        if isinstance(reg, type)
    }
    assert offsets == {"ID": (0, 1), "NEXT": (1, 1), "WORD": (4, 4), "PAD": (2, 2)}
    word = vars(space)["WORD"]
    assert vars(word)["KIND"] == Bits(mask=0x0000000F, shift=0, width=4)
    assert vars(word)["NEXT"] == Bits(mask=0xFFFFFF00, shift=8, width=24)
    assert "_" not in vars(word)
    assert not [n for n in vars(vars(space)["ID"]) if n.isupper()]  # one value: no fields


def test_a_layout_of_constants_only_has_no_length(tmp_path: Path) -> None:
    text = 'layout lists "where they lie" {\n    const start = 0x40\n    const end = 0x100\n}\n'
    space = _names(text, tmp_path)["LISTS"]
    assert (vars(space)["START"], vars(space)["END"]) == (0x40, 0x100)
    assert "length" not in vars(space)


def test_the_policy_s_layouts_say_what_the_specification_says() -> None:
    """Typed from the specification, not from dsl/layout.pci: a wrong line there fails here."""
    assert (names.CAPABILITY_HEADER.ID.offset, names.CAPABILITY_HEADER.NEXT.offset) == (0, 1)
    assert names.CAPABILITY_HEADER.length == 2
    header = names.EXTENDED_CAPABILITY_HEADER.HEADER
    assert (header.offset, header.width, names.EXTENDED_CAPABILITY_HEADER.length) == (0, 4, 4)
    assert (header.ID.mask, header.VERSION.mask, header.NEXT.mask) == (
        0x0000FFFF,
        0x000F0000,
        0xFFF00000,
    )
    lists = names.CAPABILITY_LISTS
    assert (lists.STANDARD_START, lists.STANDARD_END) == (0x40, 0x100)
    assert (lists.EXTENDED_START, lists.EXTENDED_END) == (0x100, 0x1000)
    entry = names.MSIX_TABLE_ENTRY
    assert entry.length == 16
    assert (entry.MESSAGE_DATA.offset, entry.VECTOR_CONTROL.offset) == (8, 12)
    assert entry.VECTOR_CONTROL.MASK.mask == 0x1
    memory = names.MEMORY_BAR
    assert (memory.LOWER.IO_SPACE.mask, memory.LOWER.PREFETCHABLE.mask) == (0x1, 0x8)
    assert (memory.LOWER.TYPE.mask, memory.TYPE_32, memory.TYPE_64) == (0x6, 0, 2)
    assert (memory.LOWER.ADDRESS.mask, memory.UPPER.ADDRESS.mask) == (0xFFFFFFF0, 0xFFFFFFFF)
    assert (names.IO_BAR.BAR.IO_SPACE.mask, names.IO_BAR.BAR.ADDRESS.mask) == (0x1, 0xFFFFFFFC)
    rom = names.EXPANSION_ROM.BAR
    assert (rom.ENABLE.mask, rom.ADDRESS.mask) == (0x1, 0xFFFFF800)


def test_a_layout_is_listed_in_the_report_after_the_blocks(tmp_path: Path) -> None:
    path = tmp_path / "link.pci"
    path.write_text(LINK, encoding="utf-8")
    text = report(elaborate(analyse([path])))
    section = text[text.index("## layout link") :]
    assert "Length: 0x8 bytes." in section
    assert "- `first` = 0x40: where the records start" in section
    assert "| 0x01 | next | 7:0 | *register* | the next record |" in section
    assert "| 0x04 | word | 3:0 | kind | what follows |" in section


def test_a_constant_only_a_layout_uses_is_used(check_flags: FlagsRun) -> None:
    status, diagnostics, _ = check_flags(LINK, "--werror")
    assert (status, diagnostics) == (0, [])


# -- what the checker refuses, each at its place ----------------------------------------------
def _layout(body: str, name: str = "l") -> str:
    return f'layout {name} "why" {{\n{body}}}\n'


CASES = [
    (
        "duplicate layout",
        _layout("    register a @0x00 u8\n") + _layout("    register a @0x00 u8\n"),
        ["4:8: error: duplicate layout 'l' (first defined at policy.pci:1:8)"],
    ),
    (
        "a block's name",
        "capability l id 0x09 {\n    register a @0x02 u16 { x [15:0] hw ro }\n}\n"
        + _layout("    register a @0x00 u8\n"),
        [
            "4:8: error: layout 'l' and capability 'l' (at policy.pci:1:12) would have one"
            " name, L, in generated/names.py"
        ],
    ),
    (
        "duplicate register",
        _layout("    register a @0x00 u8\n    register a @0x01 u8\n"),
        ["3:14: error: duplicate register 'a' (first at policy.pci:2:14)"],
    ),
    (
        "duplicate constant",
        _layout("    const c = 1\n    const c = 2\n"),
        ["3:11: error: duplicate constant 'c' in layout 'l' (first at policy.pci:2:11)"],
    ),
    (
        "a constant and a register of one name",
        _layout("    const next = 1\n    register NEXT @0x00 u8\n"),
        [
            "3:14: error: register 'NEXT' and constant 'next' (at policy.pci:2:11) would have"
            " one name, NEXT, in generated/names.py"
        ],
    ),
    (
        "overlapping registers",
        _layout("    register a @0x00 u16\n    register b @0x01 u8\n"),
        ["3:17: error: register 'b' overlaps register 'a' at byte 0x1"],
    ),
    (
        "misaligned",
        _layout("    register a @0x00 u16\n    register b @0x03 u16\n"),
        [
            "1:8: error: byte 0x2 of layout 'l' (between registers 'a' and 'b') is covered by no"
            " register: describe it, or declare it reserved (a register of `_ [..]` fields)",
            "3:17: error: register 'b' at 0x3 is not aligned to its width",
        ],
    ),
    (
        "a gap",
        _layout("    register a @0x00 u8\n    register b @0x04 u32\n"),
        [
            "1:8: error: bytes 0x1..0x3 of layout 'l' (between registers 'a' and 'b') are"
            " covered by no register: describe them, or declare them reserved (a register of"
            " `_ [..]` fields)"
        ],
    ),
    (
        "beyond 4 KiB",
        _layout("    register a @0x1000 u8\n"),
        ["2:17: error: register 'a' at 0x1000 lies outside the 0x1000 bytes a layout may span"],
    ),
    (
        "field outside its register",
        _layout("    register a @0x00 u8 {\n        x [8:0]\n    }\n"),
        ["3:11: error: bit 8 is outside the 8-bit register 'a'"],
    ),
    (
        "overlapping fields",
        _layout("    register a @0x00 u8 {\n        x [4:0]\n        y [7:4]\n    }\n"),
        ["4:11: error: bit 4 of register 'a' is covered twice (also by field 'x')"],
    ),
    (
        "bits no field covers",
        _layout("    register a @0x00 u8 {\n        x [3:0]\n    }\n"),
        ["2:14: error: bits 7:4 of register 'a' are not covered by any field"],
    ),
    (
        "backwards",
        _layout("    register a @0x00 u8 {\n        x [0:7]\n    }\n"),
        ["3:11: error: bit range [0:7] runs backwards"],
    ),
    (
        "duplicate field",
        _layout("    register a @0x00 u8 {\n        x [3:0]\n        x [7:4]\n    }\n"),
        ["4:9: error: duplicate field 'x' in register 'a' (first at policy.pci:3:9)"],
    ),
    (
        "unknown constant",
        "const base = 4\n" + _layout("    register a @bsae u8\n    const c = nothing\n"),
        [
            "3:17: error: unknown constant 'bsae' (did you mean 'base'?)",
            "4:15: error: unknown constant 'nothing'",
        ],
    ),
    (
        "an unplaced register leaves no gap to report",
        "const base = 4\n" + _layout("    register a @bsae u8\n    register b @0x01 u8\n"),
        ["3:17: error: unknown constant 'bsae' (did you mean 'base'?)"],
    ),
    (
        "its own constant in an expression",
        _layout("    const at = 0\n    register a @at u8\n"),
        [
            "3:17: error: 'at' is a constant of the layout: a name for the code, not for the"
            " policy's expressions (a `const` of its own is)"
        ],
    ),
    (
        "a device field",
        _layout("    register a @hdr.size u8\n"),
        ["2:17: error: an offset cannot depend on a device field: a layout is every device's"],
    ),
    (
        "empty",
        _layout(""),
        ["1:8: error: layout 'l' is empty: it names nothing"],
    ),
    (
        "no reason",
        "layout l {\n    register a @0x00 u8\n}\n",
        ["1:10: error: syntax error: unexpected '{', expected a quoted reason"],
    ),
    (
        "a backing",
        _layout("    register a @0x00 u8 {\n        x [7:0] hw ro\n    }\n"),
        [
            "3:17: error: syntax error: unexpected 'hw', expected one of '}', a name,"
            " a quoted reason"
        ],
    ),
]


@pytest.mark.parametrize(("source", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_layout_error_is_reported_at_its_place(
    check_source: CheckRun, source: str, expected: list[str]
) -> None:
    status, errors, _ = check_source(source)
    assert status == 1
    assert errors == [f"policy.pci:{e}" for e in expected]
