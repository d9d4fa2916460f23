"""MSI in its four layouts: registers where the control bits put them, the message the host's,
and the enable bit changed only through the op (or with interrupt control allowed)."""

from __future__ import annotations

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.chain import CAP_NEXT
from pciback.engine.registers import RegisterInstance
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER, MSI

from .builders import CAP_MSI, CapView, allow_interrupt_control, endpoint

CONTROL = MSI.CONTROL.offset
COMMAND_INTX_DISABLE = COMMON_HEADER.COMMAND.INTX_DISABLE.mask

# (addr64, masking) -> register name by offset from the capability, and the capability length
LAYOUTS = {
    (False, False): ({4: "address", 8: "data"}, 10),
    (True, False): ({4: "address", 8: "address_upper", 0xC: "data"}, 14),
    (False, True): ({4: "address", 8: "data", 0xA: "reserved", 0xC: "mask", 0x10: "pending"}, 20),
    (True, True): (
        {
            4: "address",
            8: "address_upper",
            0xC: "data",
            0xE: "reserved",
            0x10: "mask",
            0x14: "pending",
        },
        24,
    ),
}


def msi_device(
    addr64: bool = True, masking: bool = True, permissive: bool = False, **kw: int
) -> CapView:
    b = endpoint(command=kw.get("command", 0x0006))
    b.pm()
    pos = b.msi(addr64=addr64, masking=masking, mmc=kw.get("mmc", 3))
    b.vendor_cap()
    space, dev = b.space(permissive=permissive)
    return space, dev, pos


def register_at(space: ConfigSpace, offset: int) -> str | None:
    slot = space.slot_at(offset)
    return slot.reg.name if isinstance(slot, RegisterInstance) else None


@pytest.mark.parametrize(("addr64", "masking"), sorted(LAYOUTS))
def test_registers_sit_where_the_control_bits_put_them(addr64: bool, masking: bool) -> None:
    space, _, pos = msi_device(addr64, masking)
    names, length = LAYOUTS[(addr64, masking)]
    assert register_at(space, pos + CONTROL) == "control"
    for rel, name in names.items():
        assert register_at(space, pos + rel) == name
    placed = {i.reg.name for i in space.registers if i.block == "msi"}
    assert placed == {"control", *names.values()}
    last = max(i.end for i in space.registers if i.block == "msi")
    assert last - pos <= length
    assert not space.problems


@pytest.mark.parametrize(("addr64", "masking"), sorted(LAYOUTS))
@pytest.mark.parametrize("permissive", [False, True])
def test_the_message_never_takes_a_guest_write(
    addr64: bool, masking: bool, permissive: bool
) -> None:
    space, dev, pos = msi_device(addr64, masking, permissive)
    _, length = LAYOUTS[(addr64, masking)]
    address = pos + MSI.ADDRESS.offset
    dev.config[address : address + 4] = (0xFEE01000).to_bytes(4, "little")
    for rel in range(MSI.ADDRESS.offset, length - length % 4, 4):
        space.write(pos + rel, 4, 0xFFFFFFFF)
    if length % 4:
        space.write(pos + length - 2, 2, 0xFFFF)
    assert [w for w in dev.writes if pos <= w[0] < pos + length] == []
    assert space.read(address, MSI.ADDRESS.width) == 0xFEE01000


def test_extended_message_data_has_a_register_when_capable() -> None:
    b = endpoint()
    pos = b.msi(addr64=False, masking=False)
    b.poke(pos + CONTROL, 2, 0x0200)  # extended message data capable
    b.cap(0x09, b"\x05\x00\x00", at=pos + 12)
    space, dev = b.space()
    assert register_at(space, pos + MSI.EXT_DATA.offset(control_addr64=0)) == "ext_data"
    assert not space.problems
    space.write(pos + MSI.DATA.offset(control_addr64=0), 4, 0xFFFFFFFF)  # data and ext data
    assert dev.writes == []


def test_enable_is_refused_without_interrupt_control() -> None:
    space, dev, pos = msi_device()
    with pytest.raises(PciOpError) as info:
        space.write(pos + CONTROL, 2, dev.read(pos + CONTROL, 2) | 1)
    assert info.value.err is XenPciError.ACCESS_DENIED
    assert dev.writes == []


def test_enable_set_by_the_op_reads_back_and_rewriting_it_is_harmless() -> None:
    space, dev, pos = msi_device(command=0x0406)
    dev.enable_msi(1)
    dev.writes.clear()
    control = space.read(pos + CONTROL, 2)
    assert control & 1
    space.write(pos + CONTROL, 2, control)  # a read-modify-write that changes nothing
    space.write(pos, 4, control << 16)  # also as a dword over the ID and next pointer
    assert dev.writes == []
    with pytest.raises(PciOpError):
        space.write(pos + CONTROL, 2, control & ~1)
    assert dev.read(pos + CONTROL, 2) & 1


def test_with_interrupt_control_enable_reaches_the_device_when_intx_is_off() -> None:
    space, dev, pos = msi_device(command=0x0406)
    allow_interrupt_control(space)
    space.write(pos + CONTROL, 2, dev.read(pos + CONTROL, 2) | 1)
    assert dev.read(pos + CONTROL, 2) & 1
    space.write(pos + CONTROL, 2, dev.read(pos + CONTROL, 2) & ~1)
    assert not dev.read(pos + CONTROL, 2) & 1


def test_with_interrupt_control_enable_is_taken_while_intx_is_in_use() -> None:
    # Linux's own start-up order (and current xen-pciback's): MSI on first, INTx off after;
    # a function with MSI on does not use INTx.
    space, dev, pos = msi_device(command=0x0006)
    allow_interrupt_control(space)
    space.write(pos + CONTROL, 2, dev.read(pos + CONTROL, 2) | 1)
    assert dev.read(pos + CONTROL, 2) & 1


def test_permissive_mode_does_not_open_the_enable_bit() -> None:
    space, dev, pos = msi_device(command=0x0406, permissive=True)
    with pytest.raises(PciOpError):
        space.write(pos + CONTROL, 2, dev.read(pos + CONTROL, 2) | 1)
    assert not dev.read(pos + CONTROL, 2) & 1


def test_multiple_message_enable_is_the_ops_and_guest_changes_are_ignored() -> None:
    space, dev, pos = msi_device()
    space.write(pos + CONTROL, 2, dev.read(pos + CONTROL, 2) | 0x0030)
    assert dev.writes == []
    assert space.read(pos + CONTROL, 2) & 0x70 == 0
    assert space.read(pos + CONTROL, 2) & 0x0E == 3 << 1  # capable: 8 vectors


def test_the_next_pointer_follows_the_32_bit_layout() -> None:
    space, _, pos = msi_device(addr64=False, masking=False)
    assert space.read(pos, 1) == CAP_MSI
    nxt = space.read(pos + CAP_NEXT, 1)
    assert nxt == pos + 12  # the vendor capability the builder placed right after
