"""A real dom0 for the daemon: the ports on Xen, opened together, or one message naming
everything that is missing."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pciback.control.ownership import Ownership
from pciback.control.stub import StubPool
from pciback.daemon.config import CONFIG_READS
from pciback.daemon.datapath import SimDataPath
from pciback.ports.domain import DomainError, DomainResources
from pciback.ports.hostbus import HostBus
from pciback.ports.hypervisor import HypervisorPort
from pciback.ports.uevents import NetlinkUevents, UeventSource
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.xen import atomic, evtchn, gnttab, physdev, xenctrl, xenstore
from pciback.xen._loader import DEV_XEN, PROC_XEN, XenUnavailable, missing_nodes
from pciback.xen.domctl import XenDomainResources
from pciback.xen.ecam import EcamMap
from pciback.xen.evtchn import XenEventPort
from pciback.xen.gnttab import GrantTable
from pciback.xen.sysfs import DEFAULT_ROOT, SysfsBus, SysfsError
from pciback.xen.xenctrl import XenHypervisor
from pciback.xen.xenstore import XenStoreClient

log = logging.getLogger(__name__)

DEFAULT_LINGER_NS = 2_000_000

LIBRARIES: dict[str, Callable[[], Any]] = {
    "libxenstore": xenstore.library,
    "libxengnttab": gnttab.gnttab_library,
    "libxenevtchn": evtchn.library,
    "libxenctrl": xenctrl.library,
    "libxencall": physdev.library,
    "libatomic": atomic.library,
}


class _Closable(Protocol):
    def close(self) -> None: ...


class _XenChannel(EventChannel):
    """The backend end alone: the frontend's end lives in the guest."""

    def __init__(self, port: XenEventPort) -> None:  # no doorbells: no super().__init__
        self.backend = port
        self.frontend = port
        self._port = port

    def close(self) -> None:
        self._port.close()


class _XenGrants:
    """The grant port (pciback.ports.grants) answered by mapping and binding for real; what one
    connect produced is collected in `fresh` for the data path to release later."""

    def __init__(self, table: GrantTable, bind: Callable[[int, int], XenEventPort]) -> None:
        self.table = table
        self.bind_port = bind
        self.fresh: list[_Closable] = []

    def map(self, domid: int, ref: int) -> SharedPage:
        page = self.table.map_page(domid, ref)
        self.fresh.append(page)
        return page

    def channel(self, domid: int, port: int) -> EventChannel:
        channel = _XenChannel(self.bind_port(domid, port))
        self.fresh.append(channel)
        return channel

    def take(self) -> list[_Closable]:
        taken, self.fresh = self.fresh, []
        return taken


class XenDataPath(SimDataPath):
    """SimDataPath over granted pages and bound ports, unmapping and unbinding on disconnect:
    what a connection serves is decided in one place, whichever host it runs on."""

    # A guest's next op in a burst comes within microseconds on hardware and within about a
    # millisecond under emulation; waking up for it costs more (pciback.protocol.linger).
    linger_ns = DEFAULT_LINGER_NS

    def __init__(
        self,
        table: GrantTable,
        bus: HostBus,
        hypervisor: HypervisorPort,
        pool: StubPool,
        ownership: Ownership,
        bind: Callable[[int, int], XenEventPort] = XenEventPort,
    ) -> None:
        self._xen = _XenGrants(table, bind)
        super().__init__(self._xen, bus, hypervisor, pool, ownership)
        self._held: dict[tuple[int, int], list[_Closable]] = {}
        self._connect_lock = threading.Lock()

    def connect(self, domid: int, devid: int, gnt_ref: int, evtchn: int) -> None:
        with self._connect_lock:
            self._xen.take()
            try:
                super().connect(domid, devid, gnt_ref, evtchn)
            except BaseException:
                _close_all(self._xen.take())
                raise
            self._held[(domid, devid)] = self._xen.take()

    def disconnect(self, domid: int, devid: int) -> None:
        super().disconnect(domid, devid)  # the service thread has stopped: safe to unmap
        _close_all(self._held.pop((domid, devid), []))

    def suspend(self, domid: int, devid: int) -> None:
        # The guest keeps its page and its end of the channel; the next daemon maps and binds
        # them again (a closed interdomain channel leaves the guest's port unbound for us).
        super().suspend(domid, devid)
        _close_all(self._held.pop((domid, devid), []))


def _close_all(items: list[_Closable]) -> None:
    for item in reversed(items):
        item.close()


class NoDomainControl:
    """The DomainResources port where none was opened: every call says so."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any) -> Any:
            raise DomainError(f"{name}: no domain-control interface was opened", errno.ENOSYS)

        return refuse


class XenEnvironment:
    """The ports of a real dom0: sysfs, xenstore, grant table, hypervisor."""

    backend: ClassVar[str] = "xen"

    def __init__(
        self,
        bus: SysfsBus,
        store: XenStoreClient,
        grants: GrantTable,
        hypervisor: XenHypervisor,
        domains: DomainResources | None = None,
        uevents: Callable[[], UeventSource] = NetlinkUevents,
    ) -> None:
        """`uevents` opens the kernel's uevent source (a queue in tests)."""
        self.bus = bus
        self._open_uevents = uevents
        self.store = store
        self.grants = grants
        self.hypervisor = hypervisor
        # The toolstack role's hypercalls (attach, detach); without them those requests fail.
        self.domains: DomainResources = domains if domains is not None else NoDomainControl()

    def make_datapath(self, pool: StubPool, ownership: Ownership) -> XenDataPath:
        return XenDataPath(self.grants, self.bus, self.hypervisor, pool, ownership)

    def connect_store(self) -> XenStoreClient:
        return self.store

    def open_uevents(self) -> UeventSource:
        """The kernel's uevents (OSError where netlink refuses, e.g. without the right)."""
        return self._open_uevents()

    def release(self, client: Any) -> None:
        """The daemon stops: close every handle (the kernel drops what a process held anyway,
        but a daemon started again in-process must not inherit them)."""
        self.store.close()
        self.grants.close()
        self.hypervisor.close()
        if isinstance(self.domains, XenDomainResources):
            self.domains.close()


def open_environment(
    sysfs_root: Path = DEFAULT_ROOT,
    proc_xen: Path = PROC_XEN,
    dev_xen: Path = DEV_XEN,
    config_reads: str = "ecam",
) -> XenEnvironment:
    """Open every port on this dom0, or raise XenUnavailable listing all that is missing.
    `config_reads`: "ecam" reads a device's config space through its ECAM page where that
    works (pciback.xen.ecam), "sysfs" always through sysfs."""
    missing = missing_nodes(proc_xen, dev_xen)
    for name, loader in LIBRARIES.items():
        try:
            loader()
        except XenUnavailable as exc:
            missing.append(f"{name}: {exc}")
    if missing:
        raise XenUnavailable("missing " + "; ".join(missing))
    try:
        if config_reads not in CONFIG_READS:
            raise ValueError(f"config_reads = {config_reads!r}: expected one of {CONFIG_READS}")
        ecam = EcamMap.from_system() if config_reads == "ecam" else None
        if ecam is not None and ecam.regions:
            log.info("config reads by ECAM where a page reads as sysfs: %s", ecam.describe())
        elif ecam is not None:
            log.info("config reads by sysfs for every function: %s", ecam.describe())
            ecam = None
        bus = SysfsBus(sysfs_root, writable=True, ecam=ecam)
    except SysfsError as exc:
        raise XenUnavailable(f"the host PCI bus cannot be driven: {exc}") from None
    opened: list[_Closable] = []
    try:
        store = XenStoreClient()
        opened.append(store)
        grants = GrantTable()
        opened.append(grants)
        calls = physdev.PhysdevCalls()
        opened.append(calls)
        hypervisor = XenHypervisor(
            table_base=lambda a: xenctrl.msix_table_base(a, sysfs_root), physdev=calls
        )
        opened.append(hypervisor)
        domains = XenDomainResources()
    except BaseException:
        _close_all(opened)
        raise
    return XenEnvironment(bus, store, grants, hypervisor, domains)
