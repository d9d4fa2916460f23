"""`pciback audit` of every QEMU dump, in text and as an SVG bit map, and what it must say
about the registers reviewers ask about."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pciback.audit.bitmap import COLOURS, render_html, render_svg
from pciback.audit.model import Audit, Category, FieldAudit
from pciback.audit.summary import reach
from pciback.audit.text import render_json, render_text
from pciback.policy import default_policy
from pciback.tables import Access

from .support import CAP_MSI, audit_of, qemu, qemu_dumps

DUMPS = qemu_dumps()
needs_fixtures = pytest.mark.skipif(not DUMPS, reason="../shared/fixtures/qemu is absent")
SVG = "{http://www.w3.org/2000/svg}"
ENDPOINT = "e1000e-8086-10d3.bin"  # PM, MSI, PCIe, MSI-X; AER and DSN


@needs_fixtures
@pytest.mark.parametrize("dump", DUMPS, ids=[d.name for d in DUMPS])
def test_every_byte_is_audited_and_renders(dump: Path) -> None:
    result = audit_of(dump)
    # Rows tile the space: every byte is in exactly one row, every bit in one field.
    pos = 0
    for row in result.rows:
        assert row.offset == pos
        covered = 0
        for fld in row.fields:
            assert not covered & fld.mask
            covered |= fld.mask
            assert fld.source  # a DSL line, or where the backend decides it
        assert covered == (1 << (8 * row.width)) - 1
        pos = row.end
    assert pos == result.size

    text = render_text(result, dump.name)
    assert "vendor_id" in text and "[dsl/prelude.pci:29]" in text
    assert "what the guest can change on the device (normal mode)" in text

    svg = ET.fromstring(render_svg(result, dump.name))
    titles = [t.text or "" for t in svg.iter(f"{SVG}title")]
    assert any(t.startswith("0x004 command[2] bus_master") for t in titles)
    # One tooltip per field of every row, each ending in its DSL line.
    assert len(titles) == sum(len(r.fields) for r in result.rows)
    assert all(t.splitlines()[-1] == f.source for t, f in zip(titles, _fields(result), strict=True))
    legend = [t.text for t in svg.iter(f"{SVG}text")]
    for category in Category:
        assert category.value in legend


def _fields(result: Audit) -> list[FieldAudit]:
    return [f for row in result.rows for f in row.fields]


@needs_fixtures
def test_an_endpoint_command_register() -> None:
    result = audit_of(qemu(ENDPOINT))
    command = result.find("command", "header")
    io, memory, master = (command.field_at(bit) for bit in (0, 1, 2))
    assert (io.name, memory.name, master.name) == ("io_space", "memory_space", "bus_master")
    # Decode is the guest's own view, taken in normal mode, and its hook enables the device.
    for decode in (io, memory):
        assert decode.category(False) is Category.RW
        assert decode.hook == "on_write decode_enable (change)"
    # Bus mastering reaches the device through its hook in normal mode, directly in permissive.
    assert master.category(False) is Category.RO and master.hook == "on_write bus_master (change)"
    assert master.category(True) is Category.RW
    normal = {r.row.register: r for r in reach(result, permissive=False)}
    assert {f.name for f in normal["command"].hooked} >= {"io_space", "memory_space", "bus_master"}
    assert normal["command"].direct_mask == 0  # no command bit goes straight to the device
    permissive = {r.row.register: r for r in reach(result, permissive=True)}
    assert permissive["command"].direct_mask & 0x0004
    text = render_text(result, ENDPOINT)
    assert "bus_master via on_write bus_master (change)" in text
    assert "command: who may change what is the XSA-120 question [dsl/prelude.pci:35]" in text
    assert "same as io_space: turning decode off under the host caused XSA-120" in text


@needs_fixtures
def test_the_msix_table_offset_is_read_only_in_both_modes() -> None:
    result = audit_of(qemu(ENDPOINT))
    table = result.find("table", "capability msix")
    assert table.offset == 0xA4
    offset = table.field_at(3)
    assert offset.name == "offset"
    assert offset.category(False) is Category.RO and offset.category(True) is Category.RO
    assert offset.source.startswith("dsl/msix.pci:")
    assert table.reason  # hardware-initialised, validated at seize


@needs_fixtures
def test_a_hidden_capability_is_shown_hidden() -> None:
    result = audit_of(qemu(ENDPOINT), hide=[CAP_MSI])
    body = result.row_at(0xD0)
    assert body.region == "capability msi 0x05 @0xd0, hidden"
    assert body.fields[0].category(False) is Category.HIDDEN
    assert body.fields[0].category(True) is Category.HIDDEN
    assert not any(r.register == "control" and r.offset == 0xD2 for r in result.rows)
    svg = render_svg(result, ENDPOINT)
    assert f'fill="{COLOURS[Category.HIDDEN]}"' in svg.split("</g>", 1)[1]
    line = next(x for x in render_text(result, ENDPOINT).splitlines() if x.startswith("0x0d0-"))
    assert line.split()[:6] == ["0x0d0-0x0dd", "hidden", "14B", "(hidden)", "hidden", "hidden"]
    # Unhidden, the same bytes are MSI's registers.
    assert audit_of(qemu(ENDPOINT)).row_at(0xD2).register == "control"


@needs_fixtures
def test_permissive_mode_opens_what_the_policy_says() -> None:
    result = audit_of(qemu(ENDPOINT), permissive=True)
    tables = {
        (reg.source, f.name): f
        for block in default_policy().headers.values()
        for reg in block.registers
        for f in reg.fields
    }
    compared = 0
    for row in result.rows:
        for fld in row.fields:
            if fld.source.startswith("dsl/") and (row.source, fld.name) in tables:
                policy = tables[(row.source, fld.name)]
                assert fld.normal == policy.access.value
                assert fld.permissive == (policy.permissive or policy.access).value
                compared += 1
    assert compared > 30
    special = result.find("command", "header").field_at(3)
    assert (special.normal, special.permissive) == ("ro", "rw")
    # Bytes no table describes: dropped in normal mode, to the device in permissive mode.
    gap = result.row_at(0x40)
    assert gap.register == "undescribed"
    assert gap.fields[0].category(False) is Category.RO
    assert gap.fields[0].category(True) is Category.RW
    assert Access(special.permissive) is Access.RW
    # The bit map draws the mode asked for.
    svg = render_svg(result, ENDPOINT)
    assert "guest access in permissive mode" in svg


@needs_fixtures
def test_json_and_html_carry_the_same_rows() -> None:
    import json

    result = audit_of(qemu(ENDPOINT))
    doc = json.loads(render_json(result, ENDPOINT))
    assert len(doc["rows"]) == len(result.rows)
    command = next(r for r in doc["rows"] if r["register"] == "command")
    assert command["reason"] == "who may change what is the XSA-120 question"
    normal = {c["register"]: c for c in doc["guest_can_change"]["normal"]}
    assert normal["command"]["hooked"]["bus_master"] == "on_write bus_master (change)"
    html = render_html(result, ENDPOINT)
    assert html.startswith("<!doctype html>") and "<svg" in html
    # The register's reason once, on its own row: not lent to fields that give none.
    assert html.count("<td>who may change what is the XSA-120 question</td>") == 1
    assert "same as io_space: turning decode off under the host caused XSA-120" in html
