"""A capability table with a match describes its capability in the matching devices only."""

from __future__ import annotations

from pathlib import Path

from pciback.engine import ConfigSpace
from pciback.engine.registers import RegisterInstance

from .support import MemoryDevice, compile_policy

POLICY = """
header type0 type 0 {
    register vendor_id @0x00 u16 { vendor [15:0] cached ro }
    register device_id @0x02 u16 { device [15:0] cached ro }
}
capability generic id 0x09 {
    register word @0x02 u16 { data [15:0] hw ro }
}
capability acme id 0x09 match vendor = 0xacde, device = 0x1000 / 0xff00 {
    register word @0x02 u16 { data [15:0] cached ro }
}
"""


def device(vendor: int, device_id: int) -> MemoryDevice:
    dev = MemoryDevice()
    dev.poke(0x00, 2, vendor)
    dev.poke(0x02, 2, device_id)
    dev.poke(0x06, 2, 0x10)  # a capability list
    dev.poke(0x34, 1, 0x40)
    dev.poke(0x40, 4, 0xBEEF0009)
    return dev


def test_the_matching_device_gets_the_variant_the_others_the_unmatched_table(
    tmp_path: Path,
) -> None:
    policy = compile_policy(POLICY, tmp_path)
    for vendor, device_id, backed_by_device in (
        (0xACDE, 0x1042, False),
        (0xACDE, 0x2042, True),  # outside the device mask
        (0x8086, 0x1042, True),
    ):
        dev = device(vendor, device_id)
        view = ConfigSpace(dev, policy)
        slot = view.slot_at(0x42)
        assert isinstance(slot, RegisterInstance)
        assert view.read(0x42, 2) == 0xBEEF
        dev.poke(0x42, 2, 0x1234)
        assert view.read(0x42, 2) == (0x1234 if backed_by_device else 0xBEEF)
