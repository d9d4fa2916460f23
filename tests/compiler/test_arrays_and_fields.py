"""Arrays of registers, the `/ >> &` operators, min/max, and fields of another capability:
what the compiler makes of them, and every misuse reported with its position."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.compiler.cli import main
from pciback.compiler.diagnostics import Pos
from pciback.compiler.evaluate import EvalError, evaluate
from pciback.compiler.model import Binary, Num
from pciback.compiler.pipeline import analyse
from pciback.engine import Policy
from pciback.tables import Block, Register
from tests.compiler.conftest import CheckRun
from tests.engine.support import compile_policy

# A capability whose fields other blocks read: its link capabilities hold a 6-bit width, read
# once at seize; its `live` field is not.
PCIE = """
capability pcie id 0x10 length 0x0c + 8 * (caps.version >= 2) {
    register caps @0x02 u16 { version [3:0] cached ro  live [15:4] hw ro }
    register devcap @0x04 u32 { x [31:0] hw ro }
    register devctl @0x08 u32 { x [31:0] hw ro }
    register linkcap @0x0c u32 if caps.version >= 2 {
        _ [3:0] hw ro
        max_width [9:4] cached ro
        _ [31:10] hw ro
    }
    register linkctl @0x10 u32 if caps.version >= 2 { x [31:0] hw ro }
}
"""

LANES = (
    PCIE
    + """
extended_capability sec id 0x19 length 0x0c + 2 * min(pcie.linkcap.max_width, 32) {
    register lc3 @0x04 u32 { x [31:0] hw ro }
    register les @0x08 u32 { x [31:0] hw ro }
    register lane[min(pcie.linkcap.max_width, 32)] @0x0c u16 "one entry per lane" {
        preset [15:0] hw ro
    }
}
"""
)

SPLIT = """
extended_capability rebar id 0x15 length 4 + 8 * max(1, min(control0.count, 6)) {
    register caps0 @0x04 u32 { sizes [31:0] cached ro }
    register control0 @0x08 u32 { _ [4:0] hw ro  count [7:5] cached ro  _ [31:8] hw ro }
    register caps[1 .. min(control0.count, 6)] @0x04 u32 stride 8 { sizes [31:0] cached ro }
    register control[1 .. min(control0.count, 6)] @0x08 u32 stride 8 { x [31:0] hw ro }
}
"""


def _block(policy: Policy, name: str) -> Block:
    return next(
        b for b in (*policy.capabilities.values(), *policy.extended.values()) if b.name == name
    )


def _registers(block: Block) -> dict[str, Register]:
    return {r.name: r for r in block.registers}


class Fields:
    """A lookup for a table's expressions: the block's own fields and other capabilities'."""

    def __init__(self, own: dict[tuple[str, str], int], other: dict[tuple[str, str, str], int]):
        self.own, self.other = own, other

    def __call__(self, register: str, field: str) -> int:
        return self.own[(register, field)]

    def of(self, block: str, register: str, field: str) -> int:
        return self.other[(block, register, field)]


def test_an_array_is_one_register_per_instance_named_by_its_index(tmp_path: Path) -> None:
    policy = compile_policy(LANES, tmp_path)
    regs = _registers(_block(policy, "sec"))
    lanes = [name for name in regs if name.startswith("lane")]
    assert lanes == [f"lane{i}" for i in range(32)]  # min(.., 32): the widest a count reaches
    for i in range(32):
        reg = regs[f"lane{i}"]
        assert reg.offset == 0x0C + 2 * i and reg.width == 2 and reg.reason == "one entry per lane"
        assert reg.present is not None
        for width in (0, 1, 4, 16, 32, 63):
            lookup = Fields({}, {("pcie", "linkcap", "max_width"): width})
            assert reg.present(lookup) == (i < min(width, 32))
    length = _block(policy, "sec").length
    assert callable(length)
    assert length(Fields({}, {("pcie", "linkcap", "max_width"): 63})) == 0x0C + 64


def test_an_array_may_start_past_zero_and_has_its_stride(tmp_path: Path) -> None:
    policy = compile_policy(SPLIT, tmp_path)
    regs = _registers(_block(policy, "rebar"))
    # instances in index order, each array's in turn: caps1..5, then control1..5
    assert list(regs) == ["caps0", "control0"] + [
        f"{kind}{i}" for kind in ("caps", "control") for i in range(1, 6)
    ]
    assert [regs[f"caps{i}"].offset for i in range(1, 6)] == [0x04 + 8 * i for i in range(1, 6)]
    assert [regs[f"control{i}"].offset for i in range(1, 6)] == [0x08 + 8 * i for i in range(1, 6)]
    for count in range(8):
        present = {
            name
            for name, reg in regs.items()
            if reg.present is None or reg.present(Fields({("control0", "count"): count}, {}))
        }
        entries = max(1, min(count, 6))
        assert present == {f"{kind}{i}" for kind in ("caps", "control") for i in range(entries)}


def test_an_array_in_a_group_is_expanded_once_for_every_block_using_it(tmp_path: Path) -> None:
    policy = compile_policy(
        "registers body {\n"
        "    register n @0x04 u32 { c [1:0] cached ro  _ [31:2] hw ro }\n"
        "    register w[n.c] @0x08 u32 { x [31:0] hw ro }\n}\n"
        "extended_capability a id 2 length 8 + 4 * n.c { use body }\n"
        "extended_capability b id 9 length 8 + 4 * n.c { use body }\n",
        tmp_path,
    )
    for name in ("a", "b"):
        regs = _registers(_block(policy, name))
        assert [(n, r.offset) for n, r in regs.items()] == [
            ("n", 4),
            ("w0", 8),
            ("w1", 12),
            ("w2", 16),
        ]
        assert regs["w2"].present is not None
        assert regs["w2"].present(Fields({("n", "c"): 3}, {}))
        assert not regs["w2"].present(Fields({("n", "c"): 2}, {}))


def test_a_constant_count_makes_unconditional_instances(tmp_path: Path) -> None:
    policy = compile_policy(
        "extended_capability e id 0x1 length 0x10 {\n"
        "    register w[3] @0x04 u32 { x [31:0] hw ro }\n}\n",
        tmp_path,
    )
    regs = _registers(_block(policy, "e"))
    assert {n: (r.offset, r.present) for n, r in regs.items()} == {
        "w0": (0x04, None),
        "w1": (0x08, None),
        "w2": (0x0C, None),
    }


@pytest.mark.parametrize(
    ("op", "left", "right", "value"),
    [
        ("/", 7, 2, 3),
        ("/", -7, 2, -4),  # rounds down, as Python's //
        (">>", 0x1F0, 4, 0x1F),
        (">>", -1, 8, -1),
        ("&", 0x1FF, 0xF0, 0xF0),
        ("&", -1, 0xFF, 0xFF),  # a negative value's two's complement: (0 - 1) & 0xff
    ],
)
def test_the_new_operators_compute_integers(op: str, left: int, right: int, value: int) -> None:
    pos = Pos("t", 1, 1)
    expr = Binary(op, Binary("-", Num(0, pos), Num(-left, pos), pos), Num(right, pos), pos)
    assert evaluate(expr, {}) == value


def test_division_by_zero_and_a_negative_right_shift_are_refused() -> None:
    pos = Pos("t", 1, 1)
    with pytest.raises(EvalError, match="division by zero"):
        evaluate(Binary("/", Num(8, pos), Num(0, pos), pos), {})
    minus = Binary("-", Num(0, pos), Num(1, pos), pos)
    with pytest.raises(EvalError, match="cannot be negative"):
        evaluate(Binary(">>", Num(8, pos), minus, pos), {})


def test_operators_bind_as_in_python(tmp_path: Path) -> None:
    # `&` below `+` and the shifts, above a comparison; `/` with `*`, left to right; min, max
    values = {
        "A": ("1 + 0xff & 0x0f", (1 + 0xFF) & 0x0F),
        "B": ("0x100 >> 4 / 2", (0x100 >> 4) // 2),
        "C": ("6 & 3 == 2", int((6 & 3) == 2)),
        "D": ("max(1, min(9, 4), 2 * 3 / 4)", 4),
        "E": ("(0 - 1) & 0xff", 0xFF),
    }
    path = tmp_path / "ops.pci"
    path.write_text(
        "".join(f"const {name} = {text}\n" for name, (text, _) in values.items())
        + "extended_capability e id A + B + C + D + E { }\n",
        encoding="utf-8",
    )
    program = analyse([path])
    assert {name: program.consts[name] for name in values} == {
        name: value for name, (_, value) in values.items()
    }


def test_a_match_mask_still_follows_a_slash(tmp_path: Path) -> None:
    policy = compile_policy(
        "capability v id 0x09 match class = 0x060400 / 0xffff00, device = (0x20 / 2) { }\n",
        tmp_path,
    )
    (variant,) = policy.variants
    assert [(m.key, m.value, m.mask) for m in variant.matches] == [
        ("class", 0x060400, 0xFFFF00),
        ("device", 0x10, 0xFFFF),
    ]


def test_the_report_shows_an_array_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "p.pci").write_text(LANES, encoding="utf-8")
    assert main(["report", "--dsl", str(tmp_path / "dsl")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "lane" in line]
    source = tmp_path / "dsl" / "p.pci"
    line = LANES.splitlines().index(next(x for x in LANES.splitlines() if "register lane" in x)) + 1
    assert rows == [
        "| 0x0c + 2*i | lane[i] (array, `i < min(pcie.linkcap.max_width, 0x20)`: lane0 to lane31)"
        f" | 15:0 | {field} | {backing} | {access} |  |  | {reason} | {source}:{at} |"
        for field, backing, access, reason, at in (
            ("*register*", "", "", "one entry per lane", line),
            ("preset", "hw", "ro", "", line + 1),
        )
    ]


# -- misuse: every error with its position ---------------------------------------------------
ERRORS: list[tuple[str, str, list[str]]] = [
    (
        "unknown capability",
        "extended_capability e id 1 length 4 + pcei.linkcap.max_width { }\n",
        ["2:39: error: unknown capability 'pcei' (did you mean 'pcie'?)"],
    ),
    (
        "unknown register of another capability",
        "extended_capability e id 1 length 4 + pcie.linkcaps.max_width { }\n",
        ["2:39: error: unknown register 'linkcaps' in capability 'pcie' (did you mean 'linkcap'?)"],
    ),
    (
        "unknown field of another capability",
        "extended_capability e id 1 length 4 + pcie.linkcap.width { }\n",
        [
            "2:39: error: unknown field 'width' in register 'linkcap' of capability 'pcie'"
            " (did you mean 'max_width'?)"
        ],
    ),
    (
        "a field that is not cached",
        "extended_capability e id 1 length 4 + pcie.caps.live { }\n",
        [
            "2:39: error: 'pcie.caps.live' is not cached: another block may read only a field"
            " the device fixes, read once at seize (backing `cached`)"
        ],
    ),
    (
        "a block naming itself",
        "extended_capability e id 1 length 8 + e.r.f {\n"
        "    register r @0x04 u32 { f [31:0] cached ro }\n}\n",
        ["2:39: error: 'e' is this block: name its field 'r.f'"],
    ),
    (
        "a table with a match",
        "capability v id 9 match vendor = 0x1af4 length 4 {\n"
        "    register r @2 u16 { f [15:0] cached ro } }\n"
        "extended_capability e id 1 length 4 + v.r.f { }\n",
        [
            "4:39: error: 'v' is a capability with a match: only a capability table without a"
            " match can be read from another block"
        ],
    ),
    (
        "a header",
        "header h type 0 { register r @0 u16 { f [15:0] cached ro } }\n"
        "extended_capability e id 1 length 4 + h.r.f { }\n",
        [
            "3:39: error: 'h' is a header: only a capability table without a match can be read"
            " from another block"
        ],
    ),
    (
        "a cycle through two capabilities' conditions",
        "capability a id 0x20 {\n"
        "    register r @0x04 u32 if b.s.g { f [0] cached ro  _ [31:1] hw ro }\n"
        "    register pad @0x02 u16 { _ [15:0] hw rsvdp }\n}\n"
        "capability b id 0x21 {\n"
        "    register s @0x04 u32 if a.r.f { g [0] cached ro  _ [31:1] hw ro }\n"
        "    register pad @0x02 u16 { _ [15:0] hw rsvdp }\n}\n",
        [
            "7:29: error: reading 'a.r.f' comes back to itself: 'b.s.g' -> 'a.r.f'"
            " (each field's register is placed by a condition that reads the next)",
        ],
    ),
    (
        "division by zero for one field value",
        "extended_capability e id 1 length 8 + 16 / pcie.linkcap.max_width { }\n",
        ["2:44: error: division by zero: 0x10 / 0 when pcie.linkcap.max_width = 0"],
    ),
    (
        "an unknown function",
        "extended_capability e id 1 length mn(4, 8) { }\n",
        ["2:35: error: unknown function 'mn' (did you mean 'min'?): the functions are max and min"],
    ),
    (
        "an array with no bound it can be compiled to",
        "capability c id 0x20 length 4 {\n"
        "    register n @0x02 u16 { count [15:0] cached ro }\n"
        "    register w[n.count] @0x04 u32 { x [31:0] hw ro }\n}\n",
        ["2:12: error: the array count depends on 65536 field values; at most 4096 can be checked"],
    ),
    (
        "an array over 256 instances",
        "extended_capability e id 1 length 4 {\n"
        "    register w[300] @0x04 u8 { x [7:0] hw ro }\n}\n",
        [
            "3:16: error: array 'w' can have 300 instances; at most 256 (bound the count, with"
            " min() for instance)"
        ],
    ),
    (
        "a stride of 0",
        "extended_capability e id 1 {\n"
        "    register w[2] @0x04 u32 stride 0 { x [31:0] hw ro }\n}\n",
        ["3:36: error: an array's stride must be positive, not 0"],
    ),
    (
        "a stride that depends on the device",
        "extended_capability e id 1 {\n"
        "    register n @0x04 u32 { s [3:0] cached ro  _ [31:4] hw ro }\n"
        "    register w[2] @0x08 u32 stride n.s { x [31:0] hw ro }\n}\n",
        ["4:36: error: an array's stride cannot depend on a device field"],
    ),
    (
        "an instance named as another register",
        "extended_capability e id 1 {\n"
        "    register w1 @0x04 u32 { x [31:0] hw ro }\n"
        "    register w[2] @0x08 u32 { x [31:0] hw ro }\n}\n",
        ["4:14: error: duplicate register 'w1' (first at policy.pci:3:14)"],
    ),
    (
        "an array in a register group counted by a field outside it",
        "registers g { register w[n.c] @0x08 u8 { x [7:0] hw ro } }\n"
        "extended_capability e id 1 {\n"
        "    register n @0x04 u32 { c [1:0] cached ro  _ [31:2] hw ro }\n"
        "    use g\n}\n",
        [
            "2:26: error: unknown register 'n' (an array in a register group is counted by the"
            " group's own fields)"
        ],
    ),
    (
        "an array instance read by a condition",
        "extended_capability e id 1 {\n"
        "    register n @0x04 u32 { c [1:0] cached ro  _ [31:2] hw ro }\n"
        "    register w[n.c] @0x08 u32 { x [1:0] cached ro  _ [31:2] hw ro }\n"
        "    register z @0x14 u32 if w1.x { x [31:0] hw ro }\n}\n",
        [
            "5:29: error: condition refers to 'w1.x', whose register is itself conditional or"
            " movable"
        ],
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_misuse_is_reported_with_its_position(
    check_source: CheckRun, source: str, expected: list[str]
) -> None:
    # line 1 a comment, the case from line 2, the capability it reads after it
    status, errors, _ = check_source("# misuse\n" + source + PCIE)
    assert status == 1
    assert errors == [f"policy.pci:{line}" for line in expected]


def test_fields_too_many_to_combine_are_enumerated_by_what_tells_them_apart(
    check_source: CheckRun,
) -> None:
    # 2048 x 4 values of the two fields: more than can be combined, but the layout sees the
    # size only through min(size + 1, 64) and the location only through location == 1; the
    # division by zero found is the one a full enumeration would find first.
    source = (
        "extended_capability t id 0x17\n"
        "    length 0x0c + 2 * (caps.location == 1) * min(caps.size + 1, 64) {\n"
        "    register caps @0x04 u32 {\n"
        "        location [1:0] cached ro  _ [15:2] hw ro  size [26:16] cached ro"
        "  _ [31:27] hw ro\n    }\n"
        "    register control @0x08 u32 { x [31:0] hw ro }\n"
        "    register table[(caps.location == 1) * min(caps.size + 1, 64)] @0x0c u16"
        " { x [15:0] hw ro }\n"
        "}\n"
    )
    status, errors, _ = check_source(source)
    assert (status, errors) == (0, [])
    status, errors, _ = check_source(
        source.replace("length 0x0c +", "length 0x0c + 8 / (caps.size - 5) +")
    )
    assert errors == [
        "policy.pci:2:24: error: division by zero: 0x8 / 0 when caps.location = 0, caps.size = 5"
    ]


def test_a_file_checked_alone_is_checked_with_the_capabilities_it_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pcie.pci").write_text(PCIE, encoding="utf-8")
    (tmp_path / "sec.pci").write_text(LANES.replace(PCIE, ""), encoding="utf-8")
    (tmp_path / "broken.pci").write_text("capability x id 0x100 { }\n", encoding="utf-8")
    assert main(["check", "sec.pci"]) == 0  # pcie.pci read for it; broken.pci not needed
    assert "ok: 2 file(s), 2 block(s)" in capsys.readouterr().out


REST_ERRORS: list[tuple[str, str, str]] = [
    (
        "a header's rest",
        "header h type 0 {\n    rest ro\n}\n",
        "2:10: error: only a capability has a rest: its bytes up to the next capability",
    ),
    (
        "a rest a guest could write",
        'capability c id 0x20 {\n    rest rw "tables"\n}\n',
        "2:10: error: a capability's rest is read from the device and never written: `rest ro`,"
        " not `rest rw`",
    ),
    (
        "two rests",
        "capability c id 0x20 {\n    rest ro\n    rest ro\n}\n",
        "3:10: error: duplicate rest (a capability has one)",
    ),
    (
        "a rest whose condition reads an unknown register",
        "capability c id 0x20 {\n    rest ro if t.offset != 0\n}\n",
        "2:16: error: unknown register 't'",
    ),
]


@pytest.mark.parametrize(
    ("source", "expected"), [c[1:] for c in REST_ERRORS], ids=[c[0] for c in REST_ERRORS]
)
def test_a_rest_is_a_capabilitys_and_read_only(
    check_source: CheckRun, source: str, expected: str
) -> None:
    status, errors, _ = check_source(source)
    assert status == 1
    assert errors == [f"policy.pci:{expected}"]


def test_the_report_says_what_a_rest_covers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "p.pci").write_text(
        "extended_capability v id 2 length 8 {\n"
        "    register t @0x04 u32 { offset [7:0] cached ro  _ [31:8] hw rsvdp }\n"
        '    rest ro if t.offset != 0 "the arbitration tables"\n}\n',
        encoding="utf-8",
    )
    assert main(["report", "--dsl", str(tmp_path / "dsl")]) == 0
    assert (
        "Rest (if `(t.offset != 0)`): every byte up to the next capability that no register"
        " describes is read from the device and never written, in any mode (the arbitration"
        " tables)." in capsys.readouterr().out
    )
