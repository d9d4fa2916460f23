"""The stub pool: devices taken from the host and kept clean for guests.

Seize: unbind the host driver, enable the device on the host (decode on, its INTx pin routed to
the IRQ guests are shown), let the hypervisor prepare its MSI-X table, save the config space,
reset the function, restore the saved state and disable the device (an endpoint: bus mastering
and MSI/MSI-X off), as Linux does when it binds; the saved bytes are the device's clean state
for its whole stay in the pool. Unlike Linux, the device stays enabled on the host until it
leaves the pool: Linux disables it and enables it again when the guest turns decoding on, but
user space cannot enable a device under the guest's feet as the kernel can, and Xen needs
memory decoding whenever it touches the MSI-X table.
Release from a guest: reset, restore the clean state, disable, unregister the owner.
Unseize: hand the device back to the driver it came from.

The operator's knobs are the Linux driver's sysfs attributes as Python calls: new_slot,
remove_slot, slots, permissive, allow_interrupt_control, quirks, irq_handlers,
irq_handler_state. Unlike Linux, a quirk field stays until the device leaves the pool (Linux
drops it at the device's next release), and permissive and allow_interrupt_control stay until
the device leaves the pool (Linux keeps them with the device's pciback data likewise).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pciback.control.claimed import Claimed
from pciback.control.hide import (
    MAX_PATTERNS,
    HidePattern,
    QuirkSpec,
    parse_device,
    parse_hide,
    parse_quirk,
    parse_slot,
)
from pciback.control.ownership import Ownership
from pciback.control.state import StateStore
from pciback.engine.chain import walk
from pciback.engine.settings import DeviceSettings
from pciback.generated.names import COMMON_HEADER, MSI, MSIX, TYPE0, TYPE1
from pciback.ports.bus import PhysicalDevice
from pciback.ports.hostbus import STUB_DRIVER, HostBus
from pciback.ports.hypervisor import HypervisorError, HypervisorPort

if TYPE_CHECKING:
    from pciback.audit.restore import RestoreSpan

COMMAND = COMMON_HEADER.COMMAND
HEADER_TYPE = COMMON_HEADER.HEADER_TYPE
MAX_QUIRKS_PER_DEVICE = 64

log = logging.getLogger("pciback.stub")


class StubError(ValueError):
    """A control-plane request the pool refuses; the message says why."""


class ClaimError(StubError):
    pass


@dataclass(slots=True)
class StubDevice:
    address: str
    saved: bytes
    host_driver: str | None
    # The operator's permissive and interrupt-control flags (Linux's allow_interrupt_control,
    # for device models that drive the capability themselves): the one copy, which the
    # device's guest views hold too.
    settings: DeviceSettings = field(default_factory=DeviceSettings)
    quirks: list[QuirkSpec] = field(default_factory=list)
    # The guest's reach for the restore (see `_guest_reach`), for the quirks it was made with:
    # building it runs the policy over the saved bytes, tens of ms natively, seconds under
    # emulation.
    reach: tuple[tuple[QuirkSpec, ...], list[RestoreSpan]] | None = None
    isr_on: bool = False  # the shared-INTx helper handler (irq_handler_state)
    ack_intr: bool = True
    handled: int = 0


def find_capability(device: PhysicalDevice, cap_id: int) -> int | None:
    """The device's own chain, walked by the engine's bounded walker."""
    chains = walk(device.read, device.config_size)
    return next((c.offset for c in chains.standard if c.ident == cap_id), None)


def header_layout(device: PhysicalDevice) -> int:
    """The header type, 0 (normal) or 1 (bridge), without the multi-function bit."""
    return HEADER_TYPE.LAYOUT.get(device.read(HEADER_TYPE.offset, HEADER_TYPE.width))


def save_config(device: PhysicalDevice) -> bytes:
    size = min(device.config_size, 4096)
    return b"".join(device.read(off, 4).to_bytes(4, "little") for off in range(0, size, 4))


def _fits(saved: bytes, device: PhysicalDevice) -> bool:
    """A saved config space read back from the (untrusted) state database is this device's:
    the size `save_config` takes, and the same vendor and device IDs."""
    size = min(device.config_size, 4096)
    ids = device.read(COMMON_HEADER.VENDOR_ID.offset, 4).to_bytes(4, "little")
    return len(saved) == len(range(0, size, 4)) * 4 and saved[:4] == ids


def _valid_quirks(rows: list[tuple[str, int, int, int]]) -> list[QuirkSpec]:
    """Quirk fields read back from the state database, each checked as an operator's would be."""
    quirks = []
    for address, offset, size, mask in rows:
        try:
            quirks.append(parse_quirk(f"{address}-{offset:x}:{size:x}:{mask:x}"))
        except ValueError as exc:
            log.error("state database: quirk %.64r dropped: %s", address, exc)
    return quirks


def restore_config(device: PhysicalDevice, saved: bytes, reach: Sequence[RestoreSpan] = ()) -> None:
    """Write back what a guest can have changed: first the spans of `reach` past the header
    (pciback.audit.restore), then the saved header, last dword first as the PCI core does;
    each only where it differs. The IDs (dword 0) are read-only and skipped."""
    dwords: dict[int, int] = {}  # each dword the spans need, read once: sysfs reads are dear
    for span in reach:
        end = span.offset + span.width
        if end > len(saved) or end > device.config_size:
            continue
        at = span.offset & ~3
        if end > at + 4:  # the policy's registers are naturally aligned; this is not
            current = device.read(span.offset, span.width)
        else:
            if at not in dwords:
                dwords[at] = device.read(at, 4)
            shift = 8 * (span.offset - at)
            current = (dwords[at] >> shift) & ((1 << (8 * span.width)) - 1)
        value = span.write_value(current, int.from_bytes(saved[span.offset : end], "little"))
        if value is not None:
            device.write(span.offset, span.width, value)
            dwords.pop(at, None)  # read again if another span of it follows
    for index in range(15, 0, -1):
        off = 4 * index
        want = int.from_bytes(saved[off : off + 4], "little")
        if device.read(off, 4) != want:
            device.write(off, 4, want)


def _guest_reach(stub: StubDevice) -> list[RestoreSpan]:
    """The bits past the header a guest can have changed on the device (its quirk fields
    included); none when the policy cannot be applied to the saved bytes, and then only the
    header is restored."""
    from pciback.audit.restore import guest_reach  # loads the generated tables
    from pciback.control.quirks import quirk_register

    quirks = tuple(stub.quirks)
    if stub.reach is not None and stub.reach[0] == quirks:
        return stub.reach[1]
    try:
        reach = guest_reach(stub.address, stub.saved, [quirk_register(q) for q in quirks])
    except Exception:  # a bug here must not keep the device from going back to the pool
        log.exception("%s: only the header is restored", stub.address)
        return []
    stub.reach = (quirks, reach)
    return reach


def _reset(device: PhysicalDevice) -> None:
    """The best reset the device offers; a function with none (no FLR, no power-management
    reset, nothing for a bus reset, as QEMU's xHCI) keeps going with only its saved state
    restored, as Linux's backend does when its reset fails."""
    try:
        device.reset()
    except OSError as exc:
        log.warning(
            "%s: not reset (%s): only its saved config space is restored", device.address, exc
        )


def disable(device: PhysicalDevice) -> None:
    """What xen_pcibk_reset_device does: an endpoint loses its interrupts and bus mastering; a
    bridge only memory-write-and-invalidate, since it forwards the DMA and interrupts of the
    devices behind it."""
    command = device.read(COMMAND.offset, COMMAND.width)
    if header_layout(device) != TYPE0.header_type:
        if command & COMMAND.MWI_ENABLE.mask:
            device.write(COMMAND.offset, COMMAND.width, command & ~COMMAND.MWI_ENABLE.mask)
        return
    msi = find_capability(device, MSI.id)
    control = MSI.CONTROL
    if msi is not None and device.read(msi + control.offset, control.width) & control.ENABLE.mask:
        device.disable_msi()
    msix = find_capability(device, MSIX.id)
    control_x = MSIX.CONTROL
    if (
        msix is not None
        and device.read(msix + control_x.offset, control_x.width) & control_x.ENABLE.mask
    ):
        device.disable_msix()
    # Disabling MSI may have changed INTx disable: the command register is read again.
    command = device.read(COMMAND.offset, COMMAND.width)
    if command & COMMAND.BUS_MASTER.mask:
        device.write(COMMAND.offset, COMMAND.width, command & ~COMMAND.BUS_MASTER.mask)


class StubPool:
    def __init__(
        self,
        bus: HostBus,
        ownership: Ownership,
        state: StateStore | None = None,
        permissive_all: bool = False,
        hypervisor: HypervisorPort | None = None,
    ) -> None:
        """`hypervisor`: prepares and releases MSI-X tables (None: nothing to tell one)."""
        self.bus = bus
        self.hypervisor = hypervisor
        self.ownership = ownership
        self.state = state
        # The module parameter `permissive` of the Linux driver: every device, not one.
        self.permissive_all = permissive_all
        if permissive_all:
            log.warning("permissive config-space writes enabled for every device (unsafe)")
        self._lock = threading.RLock()
        # Concrete addresses in the order added (Linux lists them that way); a dict, not a list,
        # so that a membership test does not grow with the slot list.
        self._slots: dict[str, None] = {}
        self.devices: dict[str, StubDevice] = {}

    # -- start-up ----------------------------------------------------------------------------
    def load(self) -> None:
        """Re-adopt what a previous daemon had: slots, seized devices, their clean state and
        knobs. A device a guest owns is adopted as it is, never reset."""
        if self.state is None:
            return
        with self._lock:
            self._slots = dict.fromkeys(self.state.slots()[: MAX_PATTERNS * 8])
            permissive = self.state.permissive()
            interrupt_control = self.state.interrupt_control()
            quirks = _valid_quirks(self.state.quirks())
            # A device stays seized until unseized, whatever became of the slot that named it
            # (as Linux): a slot removed while it was held must not lose it at a restart. One
            # the host took back meanwhile (a reboot: no longer bound to the stub, no owner)
            # is the host's again, as Linux would not take it without a slot either (a stale
            # owner of it is then released by the reconciliation).
            seized = set(self.state.seized())
            for address in self.bus.addresses():
                if address not in self._slots:
                    if address not in seized:
                        continue
                    if not self._still_held(address):
                        self._forget(address)
                        log.info(
                            "%s: no slot names it and the host has it back; forgotten", address
                        )
                        continue
                saved = self.state.saved_config(address)
                device = self.bus.device(address)
                if saved is None or not _fits(saved, device):
                    if self.ownership.owner(address) is None:
                        self._seize(address)
                        continue
                    # A guest holds it: no reset under the guest. Its present header is the
                    # best clean state left, and far better than bytes that do not fit.
                    log.error("%s: no usable saved config space; its current one is kept", address)
                    saved = save_config(device)
                    self.state.save_config(address, saved)
                driver = self.bus.driver(address)
                if driver not in (None, STUB_DRIVER):
                    self.bus.unbind(address)
                if self.bus.driver(address) is None:
                    self.bus.bind(address, STUB_DRIVER)
                # Both are no-ops when the previous daemon did them; after a host reboot they
                # are needed again (the hypervisor forgot the MSI-X table too).
                device.enable()
                self._prepare_msix(device)
                taken_from = self.state.host_driver(address)
                if taken_from is None and driver not in (None, STUB_DRIVER):
                    taken_from = driver  # from a daemon that did not record it
                stub = StubDevice(
                    address,
                    saved,
                    taken_from,
                    DeviceSettings(
                        permissive=address in permissive,
                        interrupt_control=address in interrupt_control,
                        permissive_all=self.permissive_all,
                    ),
                )
                stub.quirks = [q for q in quirks if q.address == address]
                self.devices[address] = stub
                log.info(
                    "re-adopted %s (owner %s)%s",
                    address,
                    self.ownership.owner(address),
                    "" if address in self._slots else "; no slot names it any more",
                )

    def _still_held(self, address: str) -> bool:
        return self.bus.driver(address) == STUB_DRIVER  # what the pool binds while it holds one

    def _forget(self, address: str) -> None:
        """Drop what the state says of a device the pool no longer holds."""
        assert self.state is not None
        self.state.forget_config(address)
        self.state.set_host_driver(address, None)
        self.state.clear_quirks(address)
        self.state.set_permissive(address, False)
        self.state.set_interrupt_control(address, False)

    # -- slots (new_slot / remove_slot / slots) ----------------------------------------------
    def hide(self, text: str) -> list[str]:
        """Apply a xen-pciback.hide list: each group becomes slots; returns seized devices."""
        seized: list[str] = []
        for pattern in parse_hide(text):
            seized += self.add_slot(pattern)
        return seized

    def add_slot(self, slot: str | HidePattern) -> list[str]:
        pattern = parse_slot(slot) if isinstance(slot, str) else slot
        with self._lock:
            for address in pattern.addresses():
                if address in self._slots:
                    continue
                if len(self._slots) >= MAX_PATTERNS * 8:
                    raise StubError("slot list is full")
                self._slots[address] = None
                if self.state:
                    self.state.add_slot(address)
            seized = []
            wanted = set(pattern.addresses())  # at most 256: cheaper than matching each
            for address in self.bus.addresses():
                if address in wanted and address not in self.devices:
                    try:
                        self._seize(address)
                        seized.append(address)
                    except StubError as exc:
                        log.error("%s", exc)
                    except OSError as exc:  # the bus failed for one device, not the list
                        log.error("%s: not seized: %s", address, exc)
            return seized

    def device_added(self, address: str) -> bool:
        """A function appeared on the bus (hotplug): seize it if a slot names it, as the Linux
        driver's probe does. True when it was seized."""
        with self._lock:
            if address in self.devices or address not in self._slots:
                return False
            self._seize(address)
            return True

    def remove_slot(self, slot: str | HidePattern) -> list[str]:
        """Forget matching slots; seized devices stay in the pool until unseized (as Linux).
        Returns the slots forgotten."""
        pattern = parse_slot(slot) if isinstance(slot, str) else slot
        with self._lock:
            gone = [a for a in self._slots if pattern.matches(a)]
            if not gone:
                raise StubError(f"no slot matches {pattern}")
            for address in gone:
                del self._slots[address]
                if self.state:
                    self.state.remove_slot(address)
            return gone

    def slots(self) -> list[str]:
        with self._lock:
            return list(self._slots)

    # -- seizing -----------------------------------------------------------------------------
    def _seize(self, address: str) -> StubDevice:
        device = self.bus.device(address)
        header = header_layout(device)
        if header not in (TYPE0.header_type, TYPE1.header_type):
            raise StubError(f"{address}: header type {header} is neither normal (0) nor bridge (1)")
        driver = self.bus.driver(address)
        if driver == STUB_DRIVER:
            driver = None
        elif driver is not None:
            self.bus.unbind(address)
        device.enable()
        self._prepare_msix(device)
        saved = save_config(device)
        stub = StubDevice(
            address, saved, driver, DeviceSettings(permissive_all=self.permissive_all)
        )
        _reset(device)
        restore_config(device, saved, _guest_reach(stub))  # what the host had set, as Linux
        disable(device)
        if self.bus.driver(address) is None:
            self.bus.bind(address, STUB_DRIVER)
        if self.state:
            self.state.save_config(address, saved)
            self.state.set_host_driver(address, driver)
            stub.settings.permissive = address in self.state.permissive()
            stub.settings.interrupt_control = address in self.state.interrupt_control()
        self.devices[address] = stub
        log.info("seized %s from %s", address, driver or "no driver")
        return stub

    def unseize(self, address: str, rebind: bool = True) -> None:
        """Return a device nobody owns to the host driver it was taken from (with `rebind`
        False, leave it bound to no driver, as `xl pci-assignable-remove` without -r)."""
        with self._lock:
            stub = self._stub(address)
            owner = self.ownership.owner(address)
            if owner is not None:
                raise StubError(f"{address} is in use by domain {owner}; detach it first")
            del self.devices[address]
            if self.state:
                self._forget(address)
            self._release_msix(self.bus.device(address))
            self.bus.unbind(address)
            driver = stub.host_driver if rebind else None
            if driver is not None:
                self.bus.bind(address, driver)
            log.info("returned %s to %s", address, driver or "no driver")

    def _prepare_msix(self, device: PhysicalDevice) -> None:
        """As Linux's pciback when it takes a device: without it, Xen maps no MSI-X vector for
        a guest the device is assigned to. A failure costs the guest MSI-X, not the device."""
        if self.hypervisor is None or find_capability(device, MSIX.id) is None:
            return
        try:
            self.hypervisor.prepare_msix(device.address)
        except HypervisorError as exc:
            if exc.code == errno.EBUSY:  # prepared before (a restarted daemon re-adopting it)
                return
            log.warning(
                "%s: MSI-X preparation failed (%s); MSI-X will be refused", device.address, exc
            )

    def _release_msix(self, device: PhysicalDevice) -> None:
        if self.hypervisor is None or find_capability(device, MSIX.id) is None:
            return
        try:
            self.hypervisor.release_msix(device.address)
        except HypervisorError as exc:
            log.warning("%s: MSI-X release failed: %s", device.address, exc)

    # -- the broker the xenbus backend uses --------------------------------------------------
    def claim(self, address: str, domid: int) -> Claimed:
        with self._lock:
            if address not in self.devices:
                raise ClaimError(
                    f"{address} is not assignable: not in the pciback pool "
                    "(hide it or add a slot first)"
                )
            self.ownership.claim(address, domid)
            device = self.bus.device(address)
            # A bridge by its header, as Linux's vpci decides: a host, ISA or "other" bridge
            # function has a normal header and is placed like any endpoint.
            if header_layout(device) != TYPE1.header_type:
                return Claimed(address, False)
            buses = (
                device.read(TYPE1.SECONDARY_BUS.offset, TYPE1.SECONDARY_BUS.width),
                device.read(TYPE1.SUBORDINATE_BUS.offset, TYPE1.SUBORDINATE_BUS.width),
            )
            return Claimed(address, True, buses)

    def release(self, address: str, domid: int) -> None:
        """Back to the pool in its clean state; the per-guest state goes with the owner."""
        with self._lock:
            stub = self.devices.get(address)
            if self.ownership.owner(address) != domid:
                return
            if stub is not None:
                device = self.bus.device(address)
                reach = _guest_reach(stub)
                _reset(device)
                restore_config(device, stub.saved, reach)
                disable(device)
                stub.isr_on, stub.ack_intr, stub.handled = False, True, 0
            self.ownership.release(address, domid)

    # -- permissive / quirks / irq handlers --------------------------------------------------
    def _stub(self, address: str) -> StubDevice:
        stub = self.devices.get(address)
        if stub is None:
            raise StubError(f"{address} is not in the pciback pool")
        return stub

    def _set_flag(self, device: str, flag: str, on: bool, warning: str) -> str:
        """A per-device flag (the driver's sysfs attributes): kept, persisted, warned when on;
        the device's guest views follow at once (they hold the same settings)."""
        with self._lock:
            address = parse_device(device)
            settings = self._stub(address).settings
            if on and not getattr(settings, flag):
                log.warning("%s: %s", address, warning)
            setattr(settings, flag, on)
            if self.state:
                getattr(self.state, f"set_{flag}")(address, on)
            return address

    def set_permissive(self, device: str, on: bool = True) -> str:
        return self._set_flag(
            device, "permissive", on, "permissive config-space writes enabled (unsafe)"
        )

    def permissive(self) -> list[str]:
        with self._lock:
            return sorted(a for a, s in self.devices.items() if s.settings.permissive)

    def set_interrupt_control(self, device: str, on: bool = True) -> str:
        """Linux's per-device allow_interrupt_control attribute (default off)."""
        return self._set_flag(
            device, "interrupt_control", on, "guest interrupt control through config writes allowed"
        )

    def interrupt_control(self) -> list[str]:
        with self._lock:
            return sorted(a for a, s in self.devices.items() if s.settings.interrupt_control)

    def allows_interrupt_control(self, address: str) -> bool:
        with self._lock:
            return self._stub(address).settings.interrupt_control

    def settings(self, address: str) -> DeviceSettings:
        """The device's settings, for its guest views to hold (they follow every change)."""
        with self._lock:
            return self._stub(address).settings

    def add_quirk(self, quirk: str | QuirkSpec) -> QuirkSpec:
        spec = parse_quirk(quirk) if isinstance(quirk, str) else quirk
        with self._lock:
            stub = self._stub(spec.address)
            kept = [q for q in stub.quirks if q.offset != spec.offset]
            if len(kept) >= MAX_QUIRKS_PER_DEVICE:
                raise StubError(f"{spec.address}: more than {MAX_QUIRKS_PER_DEVICE} quirk fields")
            stub.quirks = sorted([*kept, spec], key=lambda q: q.offset)
            if self.state:
                self.state.add_quirk(spec.address, spec.offset, spec.size, spec.mask)
            return spec

    def quirks(self) -> list[str]:
        """The `quirks` attribute's listing: the device, then `offset:size:mask` per field."""
        lines: list[str] = []
        with self._lock:
            for address, stub in sorted(self.devices.items()):
                if not stub.quirks:
                    continue
                dev = self.bus.device(address)
                ids = tuple(
                    dev.read(reg.offset, reg.width)
                    for reg in (
                        COMMON_HEADER.VENDOR_ID,
                        COMMON_HEADER.DEVICE_ID,
                        TYPE0.SUBSYSTEM_VENDOR_ID,
                        TYPE0.SUBSYSTEM_ID,
                    )
                )
                lines.append(address[5:])
                lines.append("\t" + ":".join(f"{v:04x}" for v in ids))
                lines += [f"\t\t{q.offset:08x}:{q.size:01x}:{q.mask:08x}" for q in stub.quirks]
        return lines

    def irq_handlers(self) -> list[str]:
        with self._lock:
            return [
                f"{a}:{'on' if s.isr_on else 'off'}:{'ack' if s.ack_intr else 'not ack'}ing:"
                f"{s.handled}"
                for a, s in sorted(self.devices.items())
            ]

    def toggle_irq_handler(self, device: str) -> bool:
        with self._lock:
            stub = self._stub(parse_device(device))
            stub.isr_on = not stub.isr_on
            if stub.isr_on:
                stub.ack_intr = True
            return stub.isr_on

    def policy(self, address: str) -> tuple[bool, tuple[QuirkSpec, ...]]:
        """What the config-space view of this device needs: permissive flag, quirk fields."""
        with self._lock:
            stub = self._stub(address)
            return stub.settings.guest_permissive, tuple(stub.quirks)
