"""One op, from its snapshot to its result: find the device, check every field, run it.

Checks follow the Linux driver's answers: an address that names no exported device is
dev_not_found (checked before the command, as Linux does), an unknown command not_implemented,
a config access that is not 1, 2 or 4 bytes, naturally aligned and inside the device's config
space invalid_offset. Nothing a guest sends may raise out of here.

Unlike mainline Linux, enable_multi_msi (the op pcifront sends for more than one MSI vector) is
served rather than answered not_implemented.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pciback.errors import PciOpError, XenPciError
from pciback.ports.bus import PhysicalDevice
from pciback.protocol.abi import SH_INFO_MAX_VEC, Cmd
from pciback.protocol.interrupts import InterruptControl, MsiRefused
from pciback.protocol.ops import OpRequest, OpResult
from pciback.ratelimit import RateLimit, log_limited

log = logging.getLogger(__name__)

#: The value mask of each access size a config op may have; a size not here is refused.
ACCESS_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
_SUCCESS = XenPciError.SUCCESS


# For a failure no device can be blamed for (the lookup itself failed): shared, as it is rare.
_UNATTRIBUTED = RateLimit()


def _log_limited(
    dev: ExportedDevice | None,
    level: int,
    message: str,
    *args: object,
    exc_info: bool | BaseException = False,
) -> None:
    """A line about an op for `dev`, under its guest's limit, with the guest's domid and the
    physical device as fields (the message names the guest-visible address); under the shared
    limit when no device can be blamed. Consulted only when a line is to be logged: the
    success path of an op never comes here."""
    if dev is None:
        log_limited(log, _UNATTRIBUTED, level, message, *args, exc_info=exc_info)
        return
    extra = {"domid": dev.irq.domid, "device": dev.physical.address}
    log_limited(log, dev.log_limit, level, message, *args, exc_info=exc_info, extra=extra)


class ConfigView(Protocol):
    """The guest's view of one device's config space (pciback.engine builds the real one)."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...

    def capability_offset(self, cap_id: int) -> int | None: ...


@dataclass(slots=True)
class ExportedDevice:
    guest_address: str
    physical: PhysicalDevice
    view: ConfigView
    irq: InterruptControl
    # The guest's log limit: shared by every device of one connection (SimDataPath._export).
    log_limit: RateLimit = field(default_factory=RateLimit)
    # The physical device's, taken once: every config op checks against it, and a port's
    # property would cost a Python call per op.
    config_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.config_size = self.physical.config_size


class DeviceLookup(Protocol):
    def lookup(self, domain: int, bus: int, devfn: int) -> ExportedDevice | None:
        """The exported device at this guest-visible address, if any."""
        ...


def dispatch(req: OpRequest, devices: DeviceLookup) -> OpResult:
    try:
        if req.domain > 0xFFFF or req.bus > 0xFF or req.devfn > 0xFF:
            return OpResult(XenPciError.DEV_NOT_FOUND, req.value)
        dev = devices.lookup(req.domain, req.bus, req.devfn)
        if dev is None:
            return OpResult(XenPciError.DEV_NOT_FOUND, req.value)
        handler = _HANDLERS.get(req.cmd)
        if handler is None:
            return OpResult(XenPciError.NOT_IMPLEMENTED, req.value)
        return handler(req, dev)
    except Exception as error:
        return failed(req, devices, error)


def failed(req: OpRequest, devices: DeviceLookup, error: Exception) -> OpResult:
    """The answer to an op that raised `error`: the error a PciOpError carries, else op_failed
    and a line with the traceback (a bug of ours, never the guest's fault)."""
    if isinstance(error, PciOpError):
        return OpResult(error.err, 0)
    _log_limited(
        _device_of(req, devices),
        logging.ERROR,
        "op %d failed inside the backend",
        req.cmd,
        exc_info=error,
    )
    return OpResult(XenPciError.OP_FAILED, 0)


def _device_of(req: OpRequest, devices: DeviceLookup) -> ExportedDevice | None:
    """The device whose op failed, for its guest's limit: looked up again here rather than
    remembered on the way in, which would cost every op a store for the rare failure."""
    try:
        return devices.lookup(req.domain, req.bus, req.devfn)
    except Exception:
        return None


# The config ops are most of what a guest sends (its PCI scan, lspci, drivers): they check the
# access in line rather than through the shared rule (pciback.ports.bus.config_access_fits), a
# Python call per op less; tests/test_access_rule.py holds the two to the same answers.
def _conf_read(req: OpRequest, dev: ExportedDevice) -> OpResult:
    size, offset = req.size, req.offset
    mask = ACCESS_MASK.get(size)
    if mask is None or offset < 0 or offset % size or offset + size > dev.config_size:
        raise PciOpError(XenPciError.INVALID_OFFSET, f"bad access {offset}/{size}")
    return OpResult(_SUCCESS, dev.view.read(offset, size) & mask)


def _conf_write(req: OpRequest, dev: ExportedDevice) -> OpResult:
    size, offset = req.size, req.offset
    mask = ACCESS_MASK.get(size)
    if mask is None or offset < 0 or offset % size or offset + size > dev.config_size:
        raise PciOpError(XenPciError.INVALID_OFFSET, f"bad access {offset}/{size}")
    dev.view.write(offset, size, req.value & mask)
    return OpResult(_SUCCESS, req.value)


def _enable_msi(req: OpRequest, dev: ExportedDevice) -> OpResult:
    try:
        pirq = dev.irq.enable_msi(1)
    except MsiRefused as e:
        _log_limited(dev, logging.INFO, "%s: enable MSI refused: %s", dev.guest_address, e)
        return OpResult(e.err, 0)
    _log_limited(dev, logging.INFO, "%s: MSI enabled, PIRQ %d", dev.guest_address, pirq)
    return OpResult(XenPciError.SUCCESS, pirq)


def _enable_multi_msi(req: OpRequest, dev: ExportedDevice) -> OpResult:
    # `info` carries the count in and, on refusal, the count worth retrying with.
    try:
        return OpResult(XenPciError.SUCCESS, dev.irq.enable_msi(req.info), info=req.info)
    except MsiRefused as e:
        _log_limited(dev, logging.INFO, "%s: enable multi-MSI refused: %s", dev.guest_address, e)
        return OpResult(e.err, 0, info=e.info if e.info is not None else 0)


def _disable_msi(req: OpRequest, dev: ExportedDevice) -> OpResult:
    # Interrupt set-up is rare and decides whether the guest's driver works: worth a line.
    _log_limited(dev, logging.INFO, "%s: disable MSI (%s)", dev.guest_address, _irq_mode(dev))
    if dev.irq.msix_enabled and not dev.irq.msi_enabled:
        # Linux 6.1 guests tear MSI-X down with this op: pci_msix_shutdown clears the device's
        # msix_enabled before the frontend is asked, which then picks disable_msi. Either way
        # the guest wants its vectors gone; left mapped, no later enable could succeed (Linux's
        # backend keeps them, and refuses every later enable: -EALREADY, -ENXIO).
        return OpResult(XenPciError.SUCCESS, dev.irq.disable_msix())
    return OpResult(XenPciError.SUCCESS, dev.irq.disable_msi())


def _irq_mode(dev: ExportedDevice) -> str:
    if dev.irq.msix_enabled:
        return "MSI-X was on"
    return "MSI was on" if dev.irq.msi_enabled else "nothing was on"


def _enable_msix(req: OpRequest, dev: ExportedDevice) -> OpResult:
    count = req.value
    if count > SH_INFO_MAX_VEC:
        return OpResult(XenPciError.OP_FAILED, 0)
    entries = [entry for entry, _ in req.msix_entries(count)]
    try:
        pirqs = dev.irq.enable_msix(entries)
    except MsiRefused as e:
        _log_limited(dev, logging.INFO, "%s: enable MSI-X refused: %s", dev.guest_address, e)
        return OpResult(e.err, 0)
    _log_limited(dev, logging.INFO, "%s: MSI-X enabled, PIRQs %s", dev.guest_address, pirqs)
    return OpResult(XenPciError.SUCCESS, 0, vectors=tuple(pirqs))


def _disable_msix(req: OpRequest, dev: ExportedDevice) -> OpResult:
    _log_limited(dev, logging.INFO, "%s: disable MSI-X (%s)", dev.guest_address, _irq_mode(dev))
    return OpResult(XenPciError.SUCCESS, dev.irq.disable_msix())


_HANDLERS: dict[int, Callable[[OpRequest, ExportedDevice], OpResult]] = {
    Cmd.CONF_READ: _conf_read,
    Cmd.CONF_WRITE: _conf_write,
    Cmd.ENABLE_MSI: _enable_msi,
    Cmd.DISABLE_MSI: _disable_msi,
    Cmd.ENABLE_MSIX: _enable_msix,
    Cmd.DISABLE_MSIX: _disable_msix,
    Cmd.ENABLE_MULTI_MSI: _enable_multi_msi,
}
