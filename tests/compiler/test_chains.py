"""`chain NAME[COUNT] @START next STEP { registers }`: records of varying length one after
another (Enhanced Allocation's entries), compiled into a table the runtime walks, and the
checks that keep that walk safe, each reported at the position that causes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.compiler.cli import main
from pciback.engine import Policy
from pciback.tables import Block, Chain
from tests.compiler.conftest import CheckRun
from tests.engine.support import compile_policy


class Fields:
    """A lookup over one record's (or block's) own fields."""

    def __init__(self, own: dict[tuple[str, str], int]) -> None:
        self.own = own

    def __call__(self, register: str, field: str) -> int:
        return self.own[(register, field)]

    def of(self, block: str, register: str, field: str) -> int:
        raise KeyError((block, register, field))


RECORDS = """
capability c id 0x30 "records" {
    register head @0x02 u16 { n [3:0] cached ro  _ [15:4] hw rsvdp }
    chain rec[head.n] @0x04 next (4 * (1 + max(h.size, 1 + h.wide))) "a record" {
        register h @0x00 u32 "its header" {
            size [2:0] cached ro  wide [3] cached ro  _ [31:4] hw ro
        }
        register lo @0x04 u32 { v [31:0] cached ro }
        register hi @0x08 u32 if h.wide { v [31:0] cached ro }
        register tail[max(h.size - 1 - h.wide, 0)] @(0x08 + 4 * h.wide) u32 { v [31:0] hw ro }
    }
}
"""


def _block(policy: Policy, name: str) -> Block:
    return next(b for b in policy.capabilities.values() if b.name == name)


def _chain(tmp_path: Path, text: str = RECORDS) -> Chain:
    (chain,) = _block(compile_policy(text, tmp_path), "c").chains
    return chain


def test_a_chain_compiles_into_records_whose_layout_reads_their_own_fields(
    tmp_path: Path,
) -> None:
    chain = _chain(tmp_path)
    assert (chain.name, chain.start, chain.most, chain.count_text) == ("rec", 4, 15, "head.n")
    assert callable(chain.count) and chain.count(Fields({("head", "n"): 7})) == 7
    names = [r.name for r in chain.registers]
    # the array in the record becomes one register per instance it can reach (size up to 7)
    assert names == ["h", "lo", "hi", "tail0", "tail1", "tail2", "tail3", "tail4", "tail5"]
    by_name = {r.name: r for r in chain.registers}
    for size, wide, step, tails in ((0, 0, 8, 0), (1, 1, 12, 0), (5, 1, 24, 3), (7, 0, 32, 6)):
        fields = Fields({("h", "size"): size, ("h", "wide"): wide})
        assert chain.next(fields) == step
        present = [
            r.name
            for r in chain.registers
            if r.name.startswith("tail") and (r.present is None or r.present(fields))
        ]
        assert len(present) == tails
        hi = by_name["hi"]
        assert hi.present is not None and bool(hi.present(fields)) == bool(wide)
        tail0 = by_name["tail0"].offset
        assert callable(tail0) and tail0(fields) == 8 + 4 * wide


def test_the_report_names_and_linux_doc_show_a_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "policy.pci").write_text(
        RECORDS.replace('"its header" {', '"its header" linux undescribed {'), encoding="utf-8"
    )
    assert main(["report", "--dsl", "dsl", "-o", "report.md"]) == 0
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (
        "Chain rec (dsl/policy.pci:4): a record. Records rec0, rec1, ... while i < `head.n`"
        in report
    )
    assert "| rec[i] + 0x04 | rec[i].lo | 31:0 | v | cached | ro |" in report
    assert "rec[i].tail[i] (array, `i < max" in report
    assert main(["linux", "--dsl", "dsl", "-o", "linux.md"]) == 0
    linux = (tmp_path / "linux.md").read_text(encoding="utf-8")
    assert "| rec[i] + 0x00 | rec[i].h | 31:0 | *register* |" in linux
    assert main(["compile", "--dsl", "dsl", "-o", "out"]) == 0
    names = (tmp_path / "out" / "names.py").read_text(encoding="utf-8")
    assert "class C_REC:" in names and "class TAIL0:" in names


def _errors(check_source: CheckRun, body: str, head: str = "head.n") -> list[str]:
    text = (
        'capability c id 0x30 "records" {\n'
        "    register head @0x02 u16 { n [3:0] cached ro  _ [15:4] hw rsvdp }\n"
        f"    chain rec[{head}] {body}\n"
        "}\n"
    )
    status, errors, _ = check_source(text)
    assert status == 1
    return errors


RECORD = "{ register h @0x00 u32 { size [2:0] cached ro  _ [31:3] hw ro } }"


def test_records_that_would_overlap_are_refused_at_the_step(check_source: CheckRun) -> None:
    errors = _errors(check_source, f"@0x04 next (4 * h.size) {RECORD}")
    assert errors == [
        "policy.pci:3:35: error: chain 'rec' next is 0, but its record ends at 0x4"
        " when h.size = 0: records would overlap"
    ]


def test_a_misaligned_step_is_refused(check_source: CheckRun) -> None:
    errors = _errors(check_source, f"@0x04 next (4 + h.size) {RECORD}")
    assert errors == [
        "policy.pci:3:35: error: chain 'rec' next is 5, not a multiple of 4 when h.size = 1:"
        " the next record's registers would be misaligned"
    ]


def test_a_chain_starts_after_the_blocks_registers_on_its_alignment(
    check_source: CheckRun,
) -> None:
    assert _errors(check_source, f"@0x02 next 4 {RECORD}") == [
        "policy.pci:3:24: error: chain 'rec' starts at 0x2, before register 'head' ends:"
        " a chain follows the block's registers"
    ]
    assert _errors(check_source, f"@0x06 next 4 {RECORD}") == [
        "policy.pci:3:24: error: chain 'rec' starts at 0x6, not on the 4-byte alignment"
        " its registers need"
    ]


def test_a_record_reads_only_its_own_fixed_fields(check_source: CheckRun) -> None:
    # the block's fields are not the record's; a movable register places nothing
    errors = _errors(
        check_source,
        "@0x04 next 8 { register h @0x00 u32 { s [31:0] hw ro }"
        " register m @(4 * head.n) u32 { v [31:0] hw ro } }",
    )
    assert errors[0] == "policy.pci:3:95: error: unknown register 'head'"


def test_the_count_must_be_bounded(check_source: CheckRun) -> None:
    errors = _errors(check_source, f"@0x04 next 4 {RECORD}", head="head.n * 100")
    assert errors == [
        "policy.pci:3:15: error: chain 'rec' can have 1500 records; at most 1024"
        " (bound the count, with min() for instance)"
    ]


def test_a_record_is_checked_as_a_block(check_source: CheckRun) -> None:
    errors = _errors(
        check_source,
        "@0x04 next 8 { register h @0x00 u32 { s [15:0] hw ro }"
        " register h @0x04 u32 { s [31:0] hw ro } }",
    )
    assert errors == [
        "policy.pci:3:47: error: bits 31:16 of register 'h' are not covered by any field",
        "policy.pci:3:87: error: duplicate register 'h' (first at policy.pci:3:47)",
    ]


def test_a_chain_is_named_once_in_its_block(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        'capability c id 0x30 "records" {\n'
        "    register head @0x02 u16 { n [3:0] cached ro  _ [15:4] hw rsvdp }\n"
        f"    chain head[head.n] @0x04 next 4 {RECORD}\n"
        "}\n"
    )
    assert status == 1
    assert errors == ["policy.pci:3:11: error: chain 'head' is named as 'head' at policy.pci:2:14"]


def test_a_sound_chain_checks(check_source: CheckRun) -> None:
    status, errors, _ = check_source(RECORDS)
    assert (status, errors) == (0, [])


def test_a_records_namespace_is_one_name_in_generated_names(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        RECORDS + 'capability c_rec id 0x31 "clash" { register r @0x02 u16 { v [15:0] hw ro } }\n'
    )
    assert status == 1
    assert errors == [
        "policy.pci:13:12: error: capability 'c_rec' and chain 'c_rec' (at policy.pci:4:11)"
        " would have one name, C_REC, in generated/names.py"
    ]


def test_constants_used_only_by_a_chain_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy.pci").write_text(
        "const STEP = 8\n" + RECORDS.replace("@0x04 next (", "@0x04 next (STEP - 8 + "),
        encoding="utf-8",
    )
    assert main(["check", "policy.pci"]) == 0
    assert "never used" not in capsys.readouterr().err
