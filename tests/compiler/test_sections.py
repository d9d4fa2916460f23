"""Named register sections: `section NAME if COND "why" { registers }` gives every register in
it the section's condition, and-ed before its own (issue 13, item 5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pciback.compiler.cli import main
from pciback.compiler.elaborate import Block, Register, elaborate
from pciback.compiler.pipeline import analyse, policy_sources
from pciback.tables import Block as TableBlock
from tests.compiler.conftest import CheckRun
from tests.engine.support import compile_policy

SECTIONED = """
capability demo id 0x09 length auto {
    register head @0x02 u16 { version [3:0] cached ro  kind [7:4] cached ro  _ [15:8] hw rsvdp }
    section late if head.version >= 2 or head.kind == 4 "version 1 stops before these" {
        register a @0x04 u16 { x [15:0] hw ro }
        register lane[2] @0x06 u16 { x [15:0] hw ro }
        register b @0x0a u16 if head.kind != 5 "only some kinds" { x [15:0] hw ro }
    }
}
"""

FLAT = """
capability demo id 0x09 length auto {
    register head @0x02 u16 { version [3:0] cached ro  kind [7:4] cached ro  _ [15:8] hw rsvdp }
    register a @0x04 u16 if head.version >= 2 or head.kind == 4 { x [15:0] hw ro }
    register lane[2] @0x06 u16 if head.version >= 2 or head.kind == 4 { x [15:0] hw ro }
    register b @0x0a u16 if (head.version >= 2 or head.kind == 4) and head.kind != 5
        "only some kinds" { x [15:0] hw ro }
}
"""


def _elaborated(text: str, directory: Path) -> Block:
    directory.mkdir()
    (directory / "demo.pci").write_text(text, encoding="utf-8")
    model = elaborate(analyse(policy_sources(directory)))
    (block,) = model.files[0].blocks
    return block


def _without_places(reg: Register) -> Register:
    """The register as the tables see it: no source lines, no section name."""
    fields = tuple(dataclasses.replace(f, source="", line=0) for f in reg.fields)
    return dataclasses.replace(reg, source="", file="", section=None, fields=fields)


def test_a_section_gives_its_registers_what_writing_its_condition_on_each_would(
    tmp_path: Path,
) -> None:
    sectioned = _elaborated(SECTIONED, tmp_path / "sectioned")
    flat = _elaborated(FLAT, tmp_path / "flat")
    assert [_without_places(r) for r in sectioned.shown] == [_without_places(r) for r in flat.shown]
    assert sectioned.length == flat.length
    by_name = {r.name: r for r in sectioned.shown}
    assert by_name["b"].condition is not None
    assert by_name["b"].condition.text == (
        "(((head.version >= 2) or (head.kind == 4)) and (head.kind != 5))"
    )
    assert [r.section for r in sectioned.shown] == [None, "late", "late", "late"]
    (section,) = sectioned.sections
    assert (section.name, section.condition.text, section.reason, section.registers) == (
        "late",
        "((head.version >= 2) or (head.kind == 4))",
        "version 1 stops before these",
        ("a", "lane", "b"),
    )
    assert section.source.endswith("demo.pci:4")


class _Fields:
    def __init__(self, version: int, kind: int) -> None:
        self.values = {("head", "version"): version, ("head", "kind"): kind}

    def __call__(self, register: str, field: str) -> int:
        return self.values[(register, field)]

    def of(self, block: str, register: str, field: str) -> int:
        raise KeyError((block, register, field))


@pytest.mark.parametrize(
    ("version", "kind", "present"),
    [
        (1, 0, {"head"}),
        (2, 0, {"head", "a", "b", "lane0", "lane1"}),
        (2, 5, {"head", "a", "lane0", "lane1"}),
        (1, 4, {"head", "a", "b", "lane0", "lane1"}),
    ],
)
def test_the_tables_hold_a_register_of_a_section_only_where_its_condition_holds(
    tmp_path: Path, version: int, kind: int, present: set[str]
) -> None:
    policy = compile_policy(SECTIONED, tmp_path)
    block = policy.capabilities[0x09]
    assert isinstance(block, TableBlock)
    fields = _Fields(version, kind)
    shown = {r.name for r in block.registers if r.present is None or r.present(fields)}
    assert shown == present


def test_an_empty_section_is_an_error_at_its_name(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "capability c id 0x09 {\n"
        "    register a @0x02 u16 { x [15:0] hw ro }\n"
        '    section nothing if a.x == 1 "why" {\n'
        "    }\n"
        "}\n"
    )
    assert status == 1
    assert errors == ["policy.pci:3:13: error: section 'nothing' is empty: it holds no register"]


def test_a_section_inside_a_section_is_an_error_at_the_inner_one(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "capability c id 0x09 {\n"
        "    register a @0x02 u16 { x [15:0] cached ro }\n"
        "    section outer if a.x >= 1 {\n"
        "        register b @0x04 u16 { x [15:0] hw ro }\n"
        "        section inner if a.x >= 2 {\n"
        "            register c @0x06 u16 { x [15:0] hw ro }\n"
        "        }\n"
        "    }\n"
        "}\n"
    )
    assert status == 1
    assert errors == [
        "policy.pci:5:17: error: section 'inner' stands inside section 'outer': sections do not"
        " nest (give its registers their own condition, or close 'outer' first)"
    ]


def test_a_section_name_is_used_once_in_a_block(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "capability c id 0x09 {\n"
        "    register a @0x02 u16 { x [15:0] cached ro }\n"
        "    section late if a.x >= 1 { register b @0x04 u16 { x [15:0] hw ro } }\n"
        "    section late if a.x >= 2 { register c @0x06 u16 { x [15:0] hw ro } }\n"
        "}\n"
        "capability d id 0x0a {\n"
        "    register a @0x02 u16 { x [15:0] cached ro }\n"
        "    section late if a.x >= 1 { register b @0x04 u16 { x [15:0] hw ro } }\n"
        "}\n"
    )
    assert status == 1
    assert errors == ["policy.pci:4:13: error: duplicate section 'late' (first at policy.pci:3:13)"]


def test_a_section_condition_is_checked_where_it_is_written(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "capability c id 0x09 {\n"
        "    register a @0x02 u16 { x [15:0] cached ro }\n"
        "    section late if a.y >= 1 {\n"
        "        register b @0x04 u16 { x [15:0] hw ro }\n"
        "        register c @0x06 u16 { x [15:0] hw ro }\n"
        "    }\n"
        "}\n"
    )
    assert status == 1
    assert len(errors) == 1  # once, not once per register
    assert errors[0].startswith("policy.pci:3:21: error: ")
    assert "'y'" in errors[0]


def test_section_is_no_reserved_word_inside_a_register(check_source: CheckRun) -> None:
    status, errors, _ = check_source(
        "capability c id 0x09 {\n    register a @0x02 u16 { section [15:0] cached ro }\n}\n"
    )
    assert (status, errors) == (0, [])


def test_the_report_names_each_section_and_its_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "demo.pci").write_text(SECTIONED, encoding="utf-8")
    assert main(["report", "-o", "report.md"]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert (
        "Section late (if `((head.version >= 2) or (head.kind == 4))`): version 1 stops before"
        " these. Registers: a, lane, b. dsl/demo.pci:4"
    ) in text
    assert "| 0x04 | a (section late) (if `((head.version >= 2) or (head.kind == 4))`) |" in text


def test_the_pcie_capability_writes_each_shared_condition_once() -> None:
    model = elaborate(analyse([Path("dsl/pcie.pci")]))
    (block,) = [b for f in model.files for b in f.blocks if b.name == "pcie"]
    sections = {s.name: s.registers for s in block.sections}
    assert sections == {
        "link": ("linkcap", "linkctl", "linksta"),
        "slot": ("slotcap", "slotctl", "slotsta"),
        "root": ("rootctl", "rootcap", "rootsta"),
        "version2": (
            "devcap2", "devctl2", "devsta2", "linkcap2", "linkctl2", "linksta2",
            "slotcap2", "slotctl2", "slotsta2",
        ),
    }  # fmt: skip
    conditions = {r.name: r.condition.text for r in block.shown if r.condition is not None}
    assert conditions["linksta"] == (
        "((caps.version >= 2) or (caps.port_type != PCIE_RC_INTEGRATED_ENDPOINT))"
    )
    assert conditions["slotsta2"] == "(caps.version >= 2)"
