"""PCI-X 2.0 ECC registers (capability ID 0x07), on functions built by the test helper
(tests/model/builders.py). The real PCI-X parts of tests/fixtures/lkml (a BCM5703X NIC, two
AMD-8131 bridges; tests/model/test_pcix_dump.py) are PCI-X 1.0, version 0, which has no ECC
registers: ECC can only be tested on functions built here.

Layout (PCI-X 2.0a 7.2; Linux's pci_regs.h sizes the function's capability 8 bytes for version
0 and 24 for versions 1 and 2): the version in bits 13:12 of the command register (a bridge's
secondary status); with a version other than 0, the ECC control and status, the first and
second address and the attribute follow, from +0x08 in a function, from +0x10 in a bridge.
In the ECC control and status, bit 29 is reserved. Written here independently of dsl/.
"""

from __future__ import annotations

import struct

import pytest

from pciback.engine.registers import RegisterInstance

from .builders import ConfigBuilder, endpoint

ECC = struct.pack("<IIII", 0xFFFFFFFF, 0x12345678, 0x9ABCDEF0, 0x0000FFFF)
ECC_CONTROL_READ = 0xDFFFFFFF  # bit 29 reserved


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_helper_built_pci_x_2_function_ecc_registers_are_the_hosts(permissive: bool) -> None:
    b = endpoint()
    pos = b.cap(0x07, struct.pack("<HI", 0x1000, 0x00000000) + ECC)  # version 1
    view, sim = b.space(permissive=permissive)
    assert not view.problems
    for rel in range(0x08, 0x18, 4):
        assert isinstance(view.slot_at(pos + rel), RegisterInstance), f"{rel:#x}"
    assert view.read(pos + 0x08, 4) == ECC_CONTROL_READ
    assert [view.read(pos + rel, 4) for rel in (0x0C, 0x10, 0x14)] == [
        0x12345678,
        0x9ABCDEF0,
        0x0000FFFF,
    ]
    before = bytes(sim.config)
    for rel in range(0x08, 0x18, 4):
        for value in (0xFFFFFFFF, 0):  # acknowledging, disabling ECC, clearing the log
            view.write(pos + rel, 4, value)
    assert sim.writes == []
    assert bytes(sim.config) == before


def test_helper_built_pci_x_ecc_log_is_read_from_the_device_each_time() -> None:
    b = endpoint()
    pos = b.cap(0x07, struct.pack("<HI", 0x2000, 0x00000000) + bytes(16))  # version 2
    view, sim = b.space()
    assert view.read(pos + 0x0C, 4) == 0
    sim.config[pos + 0x0C : pos + 0x10] = (0xFEDC0000).to_bytes(4, "little")
    sim.config[pos + 0x08] = 0x84  # an error corrected, another correctable one
    assert view.read(pos + 0x0C, 4) == 0xFEDC0000
    assert view.read(pos + 0x08, 1) == 0x84


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_helper_built_pci_x_1_function_ends_before_the_ecc_registers(permissive: bool) -> None:
    # Version 0: no ECC registers; what follows is no part of the capability, the engine default.
    b = endpoint()
    pos = b.cap(0x07, struct.pack("<HI", 0x0000, 0x00000000) + ECC)
    view, sim = b.space(permissive=permissive)
    assert not isinstance(view.slot_at(pos + 0x08), RegisterInstance)
    view.write(pos + 0x08, 4, 0)
    assert sim.writes == ([(pos + 0x08, 4, 0)] if permissive else [])


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_helper_built_pci_x_2_bridge_ecc_registers_follow_the_split_controls(
    permissive: bool,
) -> None:
    b = ConfigBuilder(header_type=1, class_code=0x060400)
    body = struct.pack("<HIII", 0x2000, 0, 0, 0) + ECC  # secondary status: version 2
    pos = b.cap(0x07, body)
    view, sim = b.space(permissive=permissive)
    assert not view.problems
    names = {r.offset - pos: r.reg.name for r in view.registers if r.block == "pcix_bridge"}
    assert [names.get(rel) for rel in (0x10, 0x14, 0x18, 0x1C)] == [
        "ecc_control_status",
        "ecc_first_address",
        "ecc_second_address",
        "ecc_attribute",
    ]
    assert view.read(pos + 0x10, 4) == ECC_CONTROL_READ
    for rel in range(0x10, 0x20, 4):
        view.write(pos + rel, 4, 0)
    view.write(pos + 0x10, 1, 0x01)  # select the other side's log: the host's too
    assert sim.writes == []
