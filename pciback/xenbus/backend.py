"""One guest's PCI backend device: the Linux driver's state machine over xenstore.

Backend directory (written by the toolstack, read here):  frontend, frontend-id, online, state,
num_devs, dev-N, state-N; written here: state, vdev-N, state-N, root_num, root-N.
Frontend directory (written by the guest): state, pci-op-ref, event-channel, magic.

Where this differs from Linux it is on purpose:
- a frontend reporting Connected moves the backend to Connected only from Reconfigured (Linux
  does it from any state, so a guest could skip the handshake);
- a removed device's state-N becomes Closed, so a second reconfiguration does not fail on it;
- a failed setup releases the devices it had claimed at once instead of at teardown;
- a backend found already set up (a daemon restart) is resumed from xenstore, not reset;
- the device list is read by the rule of directory.py: a list not complete yet (a toolstack
  writing across several transactions) is waited for at the next watch event, not an error;
- a device listed while the backend is Initialised and the guest has not connected yet is
  exported too: libxl writes one transaction per device when it creates a domain with several;
- a frontend that starts over after Closed while the device stays online (Initialising, or
  Initialised with a new page: pcifront reloaded, a kexec'd kernel) is set up again, as blkback
  does; its devices stayed with the guest meanwhile, as they do across Closed in Linux;
- a backend that goes away writes Closed where its directory is still there, as Linux's xenbus
  does for a driver that cannot rebind: libxl waits for it when it destroys a domain.
"""

from __future__ import annotations

import errno
import logging

from pciback.ports.xenstore import Transaction, XenStore, XenStoreError, join, run_transaction
from pciback.protocol.abi import XEN_PCI_MAGIC
from pciback.xenbus.directory import Listed, NotYet, read_devices
from pciback.xenbus.interfaces import DataPath, DeviceBroker
from pciback.xenbus.parse import (
    XenbusConfigError,
    parse_bdf,
    protocol_bdf,
    read_bdf,
    read_required,
    read_uint,
)
from pciback.xenbus.states import XenbusState, state_or_unknown
from pciback.xenbus.topology import Topology, TopologyError, make_topology

BACKEND_ROOT = "/local/domain/0/backend/pci"
ERROR_ROOT = "/local/domain/0/error/backend/pci"
MAX_ROOTS = 256
U32 = 0xFFFFFFFF

log = logging.getLogger("pciback.xenbus")


class BackendFailed(Exception):
    """The guest's backend went to Closing with an error already reported in xenstore."""


class PciBackend:
    def __init__(
        self,
        store: XenStore,
        domid: int,
        devid: int,
        broker: DeviceBroker,
        datapath: DataPath,
        frontend: str,
        default_mode: str = "vpci",
    ) -> None:
        """`frontend`: the frontend path, already checked by directory.read_frontend."""
        self.store = store
        self.domid = domid
        self.devid = devid
        self.broker = broker
        self.datapath = datapath
        self.nodename = f"{BACKEND_ROOT}/{domid}/{devid}"
        self.error_node = f"{ERROR_ROOT}/{domid}/{devid}/error"
        self.mode = self._read_mode(default_mode)
        self.topology: Topology = make_topology(self.mode)
        self.exported: dict[int, str] = {}  # dev index -> physical address, see _follow_indices
        self.connected = False
        self.error: str | None = None
        self.frontend = frontend
        self.waiting: str | None = None  # what the device list lacks; logged once per wait
        self.listed = -1  # num_devs when the list was last set up in full
        self.restarts = 0  # frontend cycles after the first

    # -- xenstore helpers --------------------------------------------------------------------
    def node(self, name: str) -> str:
        return join(self.nodename, name)

    def state(self) -> XenbusState:
        return state_or_unknown(self.store.read(self.node("state")))

    def frontend_state(self) -> XenbusState:
        return state_or_unknown(self.store.read(join(self.frontend, "state")))

    def switch_state(self, state: XenbusState) -> None:
        if self.state() != state:
            self.store.write(self.node("state"), str(int(state)))
            log.log(self._level(), "dom%d/%d backend -> %s", self.domid, self.devid, state.name)

    def _level(self) -> int:
        # A guest restarting its frontend in a loop must not flood the log: the first restart
        # is told, the ones after it only at debug level.
        return logging.INFO if self.restarts <= 1 else logging.DEBUG

    def fatal(self, code: int, message: str) -> None:
        """Report in the error node, as xenbus_dev_fatal does, and close this backend only."""
        self.error = message
        log.error("dom%d/%d: %s", self.domid, self.devid, message)
        try:
            self.store.write(self.error_node, f"{code} {message}"[:1024])
            self.switch_state(XenbusState.CLOSING)
        except XenStoreError as exc:
            log.error("dom%d/%d: could not report the error: %s", self.domid, self.devid, exc)

    def _read_mode(self, default: str) -> str:
        # Not a Linux node: lets one daemon serve both topologies; absent means the default.
        mode = self.store.read(self.node("topology"))
        return default if mode is None else mode.strip()

    def _list_devices(self) -> tuple[Listed, ...] | None:
        """The devices the directory lists, or None while it is not complete (logged once)."""
        found = read_devices(self.store, self.nodename)
        if isinstance(found, NotYet):
            if self.waiting is None:
                log.info("dom%d/%d: waiting for %s", self.domid, self.devid, found.missing)
            self.waiting = found.missing
            return None
        self.waiting = None
        self._follow_indices(found)
        return found

    def _follow_indices(self, devices: tuple[Listed, ...]) -> None:
        """Key the devices held by the index the directory lists them at now: libxl renumbers
        the ones after a removed device, and a device added later takes a freed index."""
        held = set(self.exported.values())
        live = [e for e in devices if e.state != XenbusState.CLOSED]
        at = {e.physical: e.index for e in live if e.physical in held}
        spare = range(len(devices), len(devices) + len(held))  # unlisted: above every index
        self.exported = {i: p for p, i in at.items()}
        self.exported.update(zip(spare, sorted(held - at.keys()), strict=False))

    # -- entry points ------------------------------------------------------------------------
    def probe(self) -> str | None:
        """First sight of this (complete) backend directory; returns why it should go at once,
        as frontend_changed does."""
        state = self.state()
        if state in (XenbusState.UNKNOWN, XenbusState.INITIALISING, XenbusState.INIT_WAIT):
            self.switch_state(XenbusState.INIT_WAIT)
            self.backend_changed()
        elif state not in (XenbusState.CLOSING, XenbusState.CLOSED):
            self.resume()
        return self.frontend_changed()

    def backend_changed(self) -> None:
        """The toolstack (or this backend) wrote in the directory: what waited may go on."""
        state = self.state()
        if state == XenbusState.INIT_WAIT or self._listed_before_connect(state):
            self.setup()
        elif state == XenbusState.RECONFIGURING and self._reconfiguration_waits():
            self.reconfigure()

    def _listed_before_connect(self, state: XenbusState) -> bool:
        return state == XenbusState.INITIALISED and not self.connected and self._list_grew()

    def _reconfiguration_waits(self) -> bool:
        return self.waiting is not None and self.frontend_state() == XenbusState.RECONFIGURING

    def _list_grew(self) -> bool:
        # This backend's own writes fire the same watch: one read tells them from a device
        # the toolstack added, instead of reading the whole list again for each.
        if self.waiting is not None:
            return True
        text = self.store.read(self.node("num_devs"))
        return text is None or text.strip() != str(self.listed)

    def frontend_changed(self) -> str | None:
        """React to the frontend's state; returns why this backend should go, if it should."""
        fe = self.frontend_state()
        if fe in (XenbusState.INITIALISING, XenbusState.INITIALISED) and self._may_start_over():
            self.start_over()
        if fe == XenbusState.INITIALISED:
            self.attach()
        elif fe == XenbusState.RECONFIGURING:
            self.reconfigure()
        elif fe == XenbusState.CONNECTED:
            if self.state() == XenbusState.RECONFIGURED:
                self.switch_state(XenbusState.CONNECTED)
        elif fe == XenbusState.CLOSING:
            self.disconnect()
            self.switch_state(XenbusState.CLOSING)
        elif fe == XenbusState.CLOSED:
            self.disconnect()
            self.switch_state(XenbusState.CLOSED)
            if not self.online():
                return "the frontend closed"
        elif fe == XenbusState.UNKNOWN and self.store.read(self.frontend) is None:
            return "the frontend is gone"
        return None

    def _may_start_over(self) -> bool:
        return self.state() == XenbusState.CLOSED and self.error is None and self.online()

    def start_over(self) -> None:
        """The frontend begins a new cycle after Closed: InitWait and set-up again, keeping the
        devices and their guest addresses (the toolstack did not take them away)."""
        self.restarts += 1
        log.log(self._level(), "dom%d/%d: the frontend starts over", self.domid, self.devid)
        self.listed = -1
        self.switch_state(XenbusState.INIT_WAIT)
        self.setup()

    def online(self) -> bool:
        text = self.store.read(self.node("online"))
        return text is not None and text.strip() == "1"

    # -- the handshake -----------------------------------------------------------------------
    def setup(self) -> None:
        """Export every device listed that is not being removed (at InitWait, and again for a
        device listed later but before the guest connected), then Initialised."""
        try:
            devices = self._list_devices()
            if devices is None:
                return
            for entry in devices:
                if entry.state == XenbusState.CLOSING and entry.physical in self._held():
                    self.hot_remove(entry.index)
                elif entry.state not in (XenbusState.CLOSING, XenbusState.CLOSED):
                    self._keep_or_export(entry)
            self.publish_roots()
        except (XenbusConfigError, TopologyError, ValueError) as exc:
            self.release_all()
            self.fatal(getattr(exc, "code", errno.EINVAL), f"setting up devices: {exc}")
            return
        self.listed = len(devices)
        self.switch_state(XenbusState.INITIALISED)
        self.attach()

    def _held(self) -> set[str]:
        return set(self.exported.values())

    def _keep_or_export(self, entry: Listed) -> None:
        if entry.physical not in self._held():
            self.export(entry.physical, entry.index)
        if entry.state != XenbusState.INITIALISED:
            self.store.write(self.node(f"state-{entry.index}"), str(int(XenbusState.INITIALISED)))

    def export(self, physical: str, index: int, guest: str | None = None) -> str:
        claimed = self.broker.claim(physical, self.domid)
        try:
            placed = self.topology.add(physical, claimed.is_bridge, guest, claimed.bridged_buses)
        except TopologyError:
            self.broker.release(physical, self.domid)
            raise
        self.exported[index] = physical
        self.store.write(self.node(f"vdev-{index}"), protocol_bdf(placed))
        log.info("dom%d: exported %s as %s (%s)", self.domid, physical, placed, self.mode)
        return placed

    def publish_roots(self) -> None:
        count = 0
        if self.store.read(self.node("root_num")) is not None:
            count = read_uint(self.store, self.node("root_num"), MAX_ROOTS)
        published: set[tuple[int, int]] = set()
        for j in range(count):
            text = read_required(self.store, self.node(f"root-{j}"))
            domain_text, _, bus_text = text.strip().partition(":")
            try:
                published.add((int(domain_text[:8], 16), int(bus_text[:8], 16)))
            except ValueError:
                raise XenbusConfigError(self.node(f"root-{j}"), "expected DDDD:BB") from None
        for root in self.topology.roots():
            if root in published:
                continue
            if count >= MAX_ROOTS:
                raise XenbusConfigError(self.node("root_num"), "too many root buses")
            self.store.write(self.node(f"root-{count}"), f"{root[0]:04x}:{root[1]:02x}")
            count += 1
            self.store.write(self.node("root_num"), str(count))
            published.add(root)

    def attach(self) -> None:
        if self.state() != XenbusState.INITIALISED:
            return
        if self.frontend_state() != XenbusState.INITIALISED:
            return
        try:
            gnt_ref, evtchn = self.read_frontend_config()
            self.datapath.connect(self.domid, self.devid, gnt_ref, evtchn)
            self.connected = True
            self.datapath.set_devices(self.domid, self.devid, self.topology.devices())
        except XenbusConfigError as exc:
            self.fatal(exc.code, f"reading configuration from frontend: {exc}")
            return
        except (OSError, ValueError) as exc:
            self.disconnect()
            self.fatal(errno.EIO, f"connecting to the frontend: {exc}")
            return
        self.switch_state(XenbusState.CONNECTED)

    def read_frontend_config(self) -> tuple[int, int]:
        gnt_ref = read_uint(self.store, join(self.frontend, "pci-op-ref"), U32)
        evtchn = read_uint(self.store, join(self.frontend, "event-channel"), U32)
        magic = read_required(self.store, join(self.frontend, "magic"))
        if magic != XEN_PCI_MAGIC:
            shown = magic[:16]
            raise XenbusConfigError(
                join(self.frontend, "magic"),
                f"version mismatch ({shown!r}/{XEN_PCI_MAGIC!r}) with pcifront",
                code=errno.EFAULT,
            )
        return gnt_ref, evtchn

    def reconfigure(self) -> None:
        if self.state() != XenbusState.RECONFIGURING:
            return
        try:
            devices = self._list_devices()
            if devices is None:
                return  # the rest of the toolstack's change comes with a later watch event
            for entry in devices:
                if entry.state == XenbusState.INITIALISING:
                    self.export(entry.physical, entry.index)
                    self.publish_roots()
                    self.store.write(
                        self.node(f"state-{entry.index}"), str(int(XenbusState.INITIALISED))
                    )
                elif entry.state == XenbusState.CLOSING:
                    self.hot_remove(entry.index)
        except (XenbusConfigError, TopologyError, ValueError) as exc:
            self.fatal(getattr(exc, "code", errno.EINVAL), f"reconfiguring: {exc}")
            return
        if self.connected:
            self.datapath.set_devices(self.domid, self.devid, self.topology.devices())
        self.switch_state(XenbusState.RECONFIGURED)

    def hot_remove(self, index: int) -> None:
        guest = read_bdf(self.store, self.node(f"vdev-{index}"))
        physical = self.topology.physical_of(guest)
        if physical is None:
            raise XenbusConfigError(self.node(f"vdev-{index}"), f"{guest} is not this guest's")
        self.topology.remove(physical)
        self.exported = {i: p for i, p in self.exported.items() if p != physical}
        if self.connected:
            self.datapath.set_devices(self.domid, self.devid, self.topology.devices())
        self.broker.release(physical, self.domid)
        self.store.write(self.node(f"state-{index}"), str(int(XenbusState.CLOSED)))
        log.info("dom%d: hot-removed %s (%s)", self.domid, physical, guest)

    # -- restart -----------------------------------------------------------------------------
    def resume(self) -> None:
        """Rebuild from xenstore what a previous daemon had set up, keeping guest addresses."""
        try:
            # An entry the toolstack is still writing is not the guest's yet: its
            # reconfiguration reads the list again, by the whole rule.
            devices = read_devices(self.store, self.nodename, skip_unfinished=True)
            if isinstance(devices, NotYet):  # num_devs: there when the manager looked
                raise XenbusConfigError(self.node(devices.missing), "missing", code=errno.ENOENT)
            for entry in devices:
                if entry.state not in (XenbusState.INITIALISED, XenbusState.CLOSING):
                    continue
                vdev_node = self.node(f"vdev-{entry.index}")
                vdev = self.store.read(vdev_node)
                guest = None if vdev is None else parse_bdf(vdev_node, vdev)
                self.export(entry.physical, entry.index, guest)
            if self.state() in (
                XenbusState.CONNECTED,
                XenbusState.RECONFIGURING,
                XenbusState.RECONFIGURED,
            ):
                gnt_ref, evtchn = self.read_frontend_config()
                self.datapath.connect(self.domid, self.devid, gnt_ref, evtchn)
                self.connected = True
                self.datapath.set_devices(self.domid, self.devid, self.topology.devices())
            log.info("dom%d/%d resumed with %s", self.domid, self.devid, sorted(self.exported))
        except (XenbusConfigError, TopologyError, OSError, ValueError) as exc:
            self.fatal(getattr(exc, "code", errno.EINVAL), f"resuming after restart: {exc}")

    # -- teardown ----------------------------------------------------------------------------
    def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            self.datapath.disconnect(self.domid, self.devid)

    def release_all(self) -> None:
        for physical in list(self.exported.values()):
            self.topology.remove(physical)
            self.broker.release(physical, self.domid)
        self.exported.clear()

    def free(self) -> None:
        """The backend device goes away: nothing of this guest stays claimed."""
        self.disconnect()
        self.release_all()

    def mark_closed(self) -> None:
        """Closed in the directory, if the directory is still there: checked and written in one
        transaction, so a directory the toolstack just removed is not created again."""

        def body(tx: Transaction) -> None:
            if state_or_unknown(tx.read(self.node("state"))) not in (
                XenbusState.UNKNOWN,
                XenbusState.CLOSED,
            ):
                tx.write(self.node("state"), str(int(XenbusState.CLOSED)))

        run_transaction(self.store, body)
