"""The sysfs host bus: read-only against the real devices present, writes on a fake tree."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from pciback.control.ownership import Ownership
from pciback.control.stub import StubPool
from pciback.generated.names import COMMON_HEADER, MSIX, PM, TYPE0
from pciback.ports.bus import BarKind
from pciback.sim.fixtures import fixture
from pciback.xen.sysfs import SysfsBus, SysfsError

REAL = Path("/sys/bus/pci/devices")
VENDOR_ID, DEVICE_ID = COMMON_HEADER.VENDOR_ID, COMMON_HEADER.DEVICE_ID
COMMAND, REVISION_ID = COMMON_HEADER.COMMAND, COMMON_HEADER.REVISION_ID
INTERRUPT_LINE = TYPE0.INTERRUPT_LINE


@pytest.mark.skipif(not REAL.is_dir() or not any(REAL.iterdir()), reason="no PCI devices")
def test_real_bus_read_only() -> None:
    bus = SysfsBus()
    addresses = bus.addresses()
    assert addresses
    for address in addresses[:16]:
        dev = bus.device(address)
        directory = REAL / address
        assert dev.read(VENDOR_ID.offset, VENDOR_ID.width) == int(
            (directory / "vendor").read_text(), 16
        )
        assert dev.read(DEVICE_ID.offset, DEVICE_ID.width) == int(
            (directory / "device").read_text(), 16
        )
        # the revision ID and the three class bytes above it
        assert dev.read(REVISION_ID.offset, 4) >> 8 == int((directory / "class").read_text(), 16)
        assert len(dev.bars()) == 7
        assert bus.driver(address) is None or isinstance(bus.driver(address), str)
        with pytest.raises(SysfsError, match="read-only"):
            dev.write(INTERRUPT_LINE.offset, INTERRUPT_LINE.width, 0)
        with pytest.raises(SysfsError, match="read-only"):
            bus.bind(address, "pci-stub")
    with pytest.raises(SysfsError, match="PCIBACK_ALLOW_SYSFS_WRITES"):
        SysfsBus(writable=True)


def fake_tree(root: Path) -> str:
    address = "0000:03:00.0"
    dev = root / "devices" / address
    dev.mkdir(parents=True)
    (dev / "config").write_bytes(fixture("virtio-net-1af4-1041.bin").read_bytes())
    (dev / "resource").write_text(
        "0x0000004000100000 0x000000400017ffff 0x0000000000140204\n"  # mem64, not prefetchable
        + "0x0000000000000000 0x0000000000000000 0x0000000000000000\n" * 3
        + "0x000000000000c000 0x000000000000c01f 0x0000000000040101\n"
        + "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
        + "0x00000000fe000000 0x00000000fe03ffff 0x0000000000046200\n"
    )
    (dev / "irq").write_text("23\n")
    for name in ("reset", "driver_override"):
        (dev / name).write_text("")
    (dev / "enable").write_text("0\n")
    (dev / "irq").write_text("23\n")  # dom0's routing; the config byte says 0x0b
    for driver in ("virtio-pci", "pci-stub"):
        (root / "drivers" / driver).mkdir(parents=True)
        for name in ("bind", "unbind"):
            (root / "drivers" / driver / name).write_text("")
    os.symlink("../../drivers/virtio-pci", dev / "driver")
    return address


def test_fake_tree_reads_and_bars(tmp_path: Path) -> None:
    address = fake_tree(tmp_path)
    bus = SysfsBus(tmp_path)
    assert bus.addresses() == [address]
    dev = bus.device(address)
    assert dev.read(VENDOR_ID.offset, 4) == 0x10411AF4  # and the device ID
    bars = dev.bars()
    assert (bars[0].kind, bars[0].size, bars[0].prefetchable) == (BarKind.MEM64, 0x80000, False)
    assert bars[1].kind == BarKind.MEM64_UPPER
    assert (bars[4].kind, bars[4].size) == (BarKind.IO, 0x20)
    assert (bars[6].kind, bars[6].size) == (BarKind.ROM, 0x40000)
    # Where the host placed them: what the toolstack role grants a guest.
    assert [b.start for b in bars] == [0x4000100000, 0, 0, 0, 0xC000, 0, 0xFE000000]
    assert dev.host_irq() == 23
    (tmp_path / "devices" / address / "irq").write_text("-1\n")
    with pytest.raises(SysfsError, match="unexpected irq"):
        dev.host_irq()
    assert bus.driver(address) == "virtio-pci"
    with pytest.raises(KeyError):
        bus.device("../../etc")


def test_fake_tree_write_paths(tmp_path: Path) -> None:
    address = fake_tree(tmp_path)
    bus = SysfsBus(tmp_path, writable=True)
    dev = bus.device(address)
    dev.write(INTERRUPT_LINE.offset, INTERRUPT_LINE.width, 0x0B)
    assert dev.read(INTERRUPT_LINE.offset, INTERRUPT_LINE.width) == 0x0B
    pool = StubPool(bus, Ownership())
    assert pool.add_slot(address) == [address]
    assert (tmp_path / "drivers/virtio-pci/unbind").read_text() == address
    assert (tmp_path / "devices" / address / "reset").read_text() == "1"
    assert (tmp_path / "devices" / address / "enable").read_text().startswith("1")
    assert dev.host_irq() == 23
    # the fake symlink still points at virtio-pci, so no bind was attempted; force one:
    os.unlink(tmp_path / "devices" / address / "driver")
    bus.bind(address, "pciback")
    assert (tmp_path / "devices" / address / "driver_override").read_text() == "pci-stub"
    assert (tmp_path / "drivers/pci-stub/bind").read_text() == address
    with pytest.raises(ValueError, match="not a driver name"):
        bus.bind(address, "../x")


def test_a_device_given_back_is_bound_to_its_host_driver(tmp_path: Path) -> None:
    """`assignable-remove -r` (xl pci-assignable-remove -r) on the fake tree: out of the stub,
    the stub's driver_override cleared, bound to the driver it was taken from; without -r it
    is left with no driver, and its override cleared too, so that another driver can take it
    (the lab's xl pci-assignable-add could not while it named pci-stub). The kernel's moves of
    the `driver` link are played by the test."""
    address = fake_tree(tmp_path)
    dev_dir = tmp_path / "devices" / address
    bus = SysfsBus(tmp_path, writable=True)
    for rebind, expected in ((True, address), (False, "")):
        pool = StubPool(bus, Ownership())
        assert pool.add_slot(address) == [address]
        assert pool.devices[address].host_driver == "virtio-pci"
        os.unlink(dev_dir / "driver")  # the kernel unbinds virtio-pci and binds the stub
        os.symlink("../../drivers/pci-stub", dev_dir / "driver")
        (dev_dir / "driver_override").write_text("pci-stub")  # as the stub's bind set it
        (tmp_path / "drivers/virtio-pci/bind").write_text("")
        pool.unseize(address, rebind=rebind)
        assert (tmp_path / "drivers/pci-stub/unbind").read_text() == address
        assert (tmp_path / "drivers/virtio-pci/bind").read_text() == expected
        assert (dev_dir / "driver_override").read_text() == "\n"
        assert address not in pool.devices
        os.unlink(dev_dir / "driver")  # the kernel's rebind, so that the next round seizes
        os.symlink("../../drivers/virtio-pci", dev_dir / "driver")


def test_fake_tree_power_state_keeps_a_pending_pme(tmp_path: Path) -> None:
    # PME status (PMCSR bit 15) is write-1-to-clear: a D-state change must not echo the 1 it
    # read, or it acknowledges the host's pending PME.
    address = fake_tree(tmp_path)
    config = bytearray((tmp_path / "devices" / address / "config").read_bytes())
    pm, pointer = 0xC0, TYPE0.CAPABILITIES_POINTER.offset  # a PM capability added at 0xc0
    config[pm : pm + 8] = bytes([PM.id, config[pointer], 0x03, 0x06, 0x00, 0x80, 0x00, 0x00])
    config[pointer] = pm  # PM (D1 and D2 supported), PME pending, in D0
    (tmp_path / "devices" / address / "config").write_bytes(bytes(config))
    dev = SysfsBus(tmp_path, writable=True).device(address)
    dev.set_power_state(3)
    assert dev.read(pm + PM.PMCSR.offset, PM.PMCSR.width) == 0x0003


def test_fake_tree_msix_enable_is_dom0s_part_only(tmp_path: Path) -> None:
    """After Xen mapped the PIRQs and wrote the table, dom0 sets MSI-X enable, clears the
    function mask and masks INTx; disabling undoes the three. Nothing else is written."""
    address = fake_tree(tmp_path)
    path = tmp_path / "devices" / address / "config"
    dev = SysfsBus(tmp_path, writable=True).device(address)
    cap = dev.capability(MSIX.id)
    control, width = cap + MSIX.CONTROL.offset, MSIX.CONTROL.width
    enable, function_mask = MSIX.CONTROL.ENABLE.mask, MSIX.CONTROL.FUNCTION_MASK.mask
    intx_disable = COMMAND.INTX_DISABLE.mask
    dev.write(control, width, (dev.read(control, width) & ~enable) | function_mask)  # off, masked
    dev.write(
        COMMAND.offset, COMMAND.width, dev.read(COMMAND.offset, COMMAND.width) & ~intx_disable
    )
    before = bytearray(path.read_bytes())
    dev.enable_msix((0, 1))
    after = bytearray(path.read_bytes())
    changed = [i for i in range(len(after)) if after[i] != before[i]]
    # INTx disable (bit 10) and the control's high byte
    assert changed == [COMMAND.offset + 1, control + 1]
    assert dev.read(control, width) & (enable | function_mask) == enable
    assert dev.read(COMMAND.offset, COMMAND.width) & intx_disable
    with pytest.raises(ValueError, match="entries"):
        dev.enable_msix((0x7FF,))
    dev.disable_msix()
    assert dev.read(control, width) & (enable | function_mask) == 0
    assert not dev.read(COMMAND.offset, COMMAND.width) & intx_disable


def test_fake_tree_keeps_one_open_config_file(tmp_path: Path) -> None:
    address = fake_tree(tmp_path)
    bus = SysfsBus(tmp_path)
    assert bus.device(address) is bus.device(address)
    dev = bus.device(address)
    dev.read(VENDOR_ID.offset, 4)
    fd = dev._fd
    dev.read(COMMAND.offset, 4)
    assert fd is not None and dev._fd == fd
    dev.close()
    assert dev._fd is None and dev.read(VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4


def test_a_function_without_a_reset_method_is_seized_all_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QEMU's xHCI has no reset method in sysfs (no FLR, no PM reset): as Linux, the device is
    taken with only its saved state restored, and the other devices are not held up."""
    address = fake_tree(tmp_path)
    os.unlink(tmp_path / "devices" / address / "reset")
    bus = SysfsBus(tmp_path, writable=True)
    pool = StubPool(bus, Ownership())
    with caplog.at_level(logging.WARNING, logger="pciback.stub"):
        assert pool.add_slot(address) == [address]
    assert any("not reset" in r.getMessage() for r in caplog.records)
    os.unlink(tmp_path / "devices" / address / "enable")  # now the bus fails for it
    pool.unseize(address, rebind=False)
    with caplog.at_level(logging.ERROR, logger="pciback.stub"):
        assert pool.add_slot(address) == []  # one failing device is logged, not raised
    assert any("not seized" in r.getMessage() for r in caplog.records)
