"""The data path of the simulated backend: grant-mapped shared pages and event channels, and the
exported devices each connection serves (issue 4's transport, dispatcher and interrupts over the
engine's config-space view).

What a guest holds survives a daemon restart through the state store (pciback.control.state): each
exported view's virtual state (shadow registers, BAR sizing latches) and each device's mapped
PIRQs. No op waits for the disk (Linux's pcifront gives an op 2 s, then fails it):

- Before a map hypercall its intent is recorded, and the PIRQs it mapped before the device is
  programmed; both go to the interrupt journal (a write(2), no fsync), so a crash of the daemon
  at any point loses neither. A restarted daemon adopts the recorded PIRQs of the guests it
  resumes and unmaps the others'; for an intent left over (a crash between the hypercall and
  the record) it unmaps whatever the hypervisor shows mapped for that domain and device beyond
  the adopted record, if the hypervisor port can tell (SimHypervisor can; the Xen adapter
  cannot yet, and then the PIRQs are logged as stranded until the domain is destroyed).
- A view is marked after the ops that changed it; the state writer takes its snapshot (under
  the connection's serving lock, between two ops) and writes it behind, at most FLUSH_DELAY
  (0.5 s) plus the disk's time later, at once on a clean stop (`suspend`, `Daemon.stop`) and
  when a device is given back (`set_devices`, `disconnect`). So a crash loses the view changes
  of that window, and the guest then sees those registers as they were before.

Records are read back as untrusted: what fails validation is logged and the device is shown as
it is.

Lock order: a connection's `serving`, then its `lock`, then the state writer's. The writer takes
`serving` and `lock` only for a snapshot, holding nothing else; so nobody waits for the writer
(`flush`) while holding a connection's locks.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pciback.control.hide import QuirkSpec, parse_address
from pciback.control.ownership import Ownership
from pciback.control.quirks import quirk_register
from pciback.control.state import Record, StateError
from pciback.control.stub import StubError, StubPool
from pciback.daemon.config_ops import config_ops
from pciback.daemon.serving_gate import ServingGate
from pciback.errors import XenPciError
from pciback.ports.grants import GrantPort
from pciback.ports.hostbus import HostBus
from pciback.ports.hypervisor import HypervisorError, HypervisorPort, PirqLookup
from pciback.protocol.abi import ChannelState, Cmd
from pciback.protocol.aer import DEFAULT_TIMEOUT, AerOutcome, recover
from pciback.protocol.connection import AerTarget, BackendConnection
from pciback.protocol.dispatch import ExportedDevice, dispatch
from pciback.protocol.interrupts import InterruptControl, InterruptStateError, unmap_saved
from pciback.protocol.neighbours import Neighbours
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.ratelimit import RateLimit
from pciback.trace.format import DeviceInfo, op_line
from pciback.trace.recording import Recording

if TYPE_CHECKING:
    from pciback.engine.space import ConfigSpace

_CONF_WRITE = Cmd.CONF_WRITE
_SUCCESS = XenPciError.SUCCESS

log = logging.getLogger("pciback.datapath")


class _GuestDevices:
    """The DeviceLookup of one connection: guest devfn -> exported device."""

    def __init__(self) -> None:
        # Around each of the service thread's ops, and held by whoever drops devices or reads
        # a view: an op that looked a device up finishes before the device can be torn down
        # and given back, so nothing of it lands on a device the guest no longer holds.
        # Entered before `lock`, never while holding it. No lock per op (see the module).
        self.serving = ServingGate()
        self.lock = threading.Lock()
        self.by_guest: dict[str, tuple[str, ExportedDevice]] = {}
        self.by_devfn: dict[tuple[int, int, int], ExportedDevice] = {}
        self.spaces: dict[str, ConfigSpace] = {}  # physical address -> the view exported
        self.dirty: set[str] = set()  # physical addresses a conf write reached since queued
        self.saved: dict[str, str] = {}  # physical address -> the view state last snapshotted
        self.log_limit = RateLimit()  # this guest's lines, whatever another guest logs
        # The short way for config ops; it marks the views it writes in `dirty`, which is why
        # that set is cleared, never replaced.
        self.config_ops = config_ops(self.serving, self.by_devfn, self, self.dirty)

    def lookup(self, domain: int, bus: int, devfn: int) -> ExportedDevice | None:
        # Called by the service thread inside `serving` (`_serve_in_gate`), and every change of
        # `by_devfn` holds `serving`: no other lock is needed for the table to stay put.
        return self.by_devfn.get((domain, bus, devfn))


class _Link:
    def __init__(self, connection: BackendConnection, devices: _GuestDevices) -> None:
        self.connection = connection
        self.devices = devices


class _Links:
    """The live connections by (domid, devid), and by domain: a guest's death, its recording
    and its AER recovery ask for one domain's links, which must not cost a pass over every
    guest's (a dom0 serves hundreds). Guarded by the data path's lock."""

    def __init__(self) -> None:
        self._all: dict[tuple[int, int], _Link] = {}
        self._by_domain: dict[int, dict[int, _Link]] = {}

    def add(self, domid: int, devid: int, link: _Link) -> None:
        self._all[(domid, devid)] = link
        self._by_domain.setdefault(domid, {})[devid] = link

    def get(self, domid: int, devid: int) -> _Link | None:
        return self._all.get((domid, devid))

    def pop(self, domid: int, devid: int) -> _Link | None:
        link = self._all.pop((domid, devid), None)
        if link is not None:
            of_domain = self._by_domain[domid]
            del of_domain[devid]
            if not of_domain:
                del self._by_domain[domid]
        return link

    def of_domain(self, domid: int) -> list[_Link]:
        return list(self._by_domain.get(domid, {}).values())

    def domains(self) -> list[tuple[int, _Link]]:
        return [(domid, link) for (domid, _), link in self._all.items()]

    def addresses(self) -> list[tuple[int, int]]:
        return list(self._all)

    def take_all(self) -> list[_Link]:
        links = list(self._all.values())
        self._all.clear()
        self._by_domain.clear()
        return links


class _TracedOps:
    """A connection's handler while its domain is recorded: the handler it wraps serves the
    op, then the op and its answer go to the recording. Only a recorded connection pays for
    this; the others keep their handler untouched."""

    def __init__(
        self, inner: Callable[[OpRequest], OpResult], devices: _GuestDevices, recording: Recording
    ) -> None:
        self.inner = inner
        self.devices = devices
        self.recording = recording

    def __call__(self, req: OpRequest) -> OpResult:
        lookup = self.devices.lookup
        before = lookup(req.domain, req.bus, req.devfn)
        result = self.inner(req)
        # The device the op reached: the same before and after, or the guest's devices changed
        # under it (a hot unplug) and the op is kept without one.
        after = lookup(req.domain, req.bus, req.devfn)
        device = before.physical.address if before is not None and before is after else None
        try:
            self.recording.add(req, result, device)
        except Exception:  # the guest's answer matters more than the recording: it ends
            log.exception("dom%d: recording an op failed; recording ended", self.recording.domid)
            self.recording.end("lost")
        return result


class SimDataPath:
    # The longest look for a guest's next op before its service thread sleeps (nanoseconds;
    # pciback.protocol.linger). None in the simulation: its guests are threads of this process,
    # and a service thread spinning on the page would hold the interpreter they need.
    linger_ns = 0

    def __init__(
        self,
        grants: GrantPort[SharedPage, EventChannel],
        bus: HostBus,
        hypervisor: HypervisorPort,
        pool: StubPool,
        ownership: Ownership,
    ) -> None:
        self.grants = grants
        self.bus = bus
        self.hypervisor = hypervisor
        self.pool = pool
        self.ownership = ownership
        self._links = _Links()
        self._aer_stopped = False  # set once, by `abort_aer`
        self._neighbours = Neighbours()  # every guest's page, for the lingering threads
        self._lock = threading.Lock()
        self._traces: dict[int, Recording] = {}  # domid -> its recording (pciback.trace)
        self._trace_ids = itertools.count(1)

    def connect(self, domid: int, devid: int, gnt_ref: int, evtchn: int) -> None:
        page = self.grants.map(domid, gnt_ref)
        channel = self.grants.channel(domid, evtchn)
        self.disconnect(domid, devid)
        devices = _GuestDevices()
        connection = BackendConnection(
            domid,
            page,
            channel.backend,
            devices,
            # Partials: no Python frame of their own between the connection and the gate.
            handler=partial(devices.serving.serve, partial(self._serve_in_gate, devices)),
            after_batch=partial(self._queue_views, domid, devices),
            linger_ns=self.linger_ns,
            neighbours=self._neighbours,
        )
        connection.config_ops = devices.config_ops
        with self._lock:
            link = _Link(connection, devices)
            self._links.add(domid, devid, link)
            recording = self._traces.get(domid)
            if recording is not None:  # armed before the guest connected: from its first op
                self._trace_link(link, recording)
        connection.start()
        log.info(
            "dom%d/%d: serving the shared page (gref %d, port %d)", domid, devid, gnt_ref, evtchn
        )

    def set_devices(self, domid: int, devid: int, devices: dict[str, str]) -> None:
        with self._lock:
            link = self._links.get(domid, devid)
        if link is None:
            return
        table = link.devices
        dropped = False
        with table.serving, table.lock:
            for guest, (physical, exported) in list(table.by_guest.items()):
                if devices.get(guest) != physical:
                    self._drop(table, physical, exported)
                    dropped = True
                    del table.by_guest[guest]
                    domain, bus, slot, function = parse_address(guest)
                    table.by_devfn.pop((domain, bus, slot << 3 | function), None)
            for guest, physical in devices.items():
                if guest in table.by_guest:
                    continue
                exported = self._export(domid, guest, physical, table)
                table.by_guest[guest] = (physical, exported)
                domain, bus, slot, function = parse_address(guest)
                table.by_devfn[(domain, bus, slot << 3 | function)] = exported
        if dropped:
            self._flush()  # a device given back leaves no record behind, even after a crash

    def _export(
        self, domid: int, guest: str, physical: str, table: _GuestDevices
    ) -> ExportedDevice:
        from pciback.policy import build_config_space  # loads the generated tables

        owner = self.ownership.owner(physical)
        if owner != domid:  # interrupts are mapped for the registered owner and no one else
            raise ValueError(f"{physical} is owned by domain {owner}, not {domid}")
        device = self.bus.device(physical)
        _, quirks = self.pool.policy(physical)
        view = build_config_space(
            device,
            settings=self.pool.settings(physical),  # the operator's changes reach the view at once
            extra_registers=[quirk_register(q) for q in quirks],
        )

        def record(state: dict[str, Any]) -> None:
            self._save_interrupts(physical, owner, state)

        def intend(intent: dict[str, Any]) -> None:
            self._save_intent(physical, owner, intent)

        irq = InterruptControl(
            owner, device, self.hypervisor, view, on_change=record, before_map=intend
        )
        view.interrupts = irq  # a guest's MSI/MSI-X control writes go through it
        self._restore(domid, physical, view, irq, table)
        table.spaces[physical] = view
        return ExportedDevice(guest, device, view, irq, table.log_limit)

    # -- what survives a restart -------------------------------------------------------------
    def _restore(
        self,
        domid: int,
        physical: str,
        view: ConfigSpace,
        irq: InterruptControl,
        table: _GuestDevices,
    ) -> None:
        """Adopt what a previous daemon saved for this device and guest. Whatever does not
        validate is logged and dropped: the guest then sees the device as the device is."""
        from pciback.engine.snapshot import import_state

        state = self.pool.state
        if state is None:
            return
        saved_view = state.views().get(physical)
        if saved_view is not None:
            saved_domid, text = saved_view
            try:
                if saved_domid != domid:
                    raise ValueError(f"saved for domain {saved_domid}")
                # The record's flags are not adopted: the operator's current settings win.
                skipped = import_state(view, json.loads(text), settings=False)
            except Exception as exc:  # untrusted input: whatever fails costs only this record
                log.error(
                    "%s: saved view state for domain %d unusable (%s); the guest sees the "
                    "device as it is now",
                    physical,
                    domid,
                    exc,
                )
                state.forget_view(physical)
            else:
                for problem in skipped:
                    log.warning("%s: saved view state: %s", physical, problem)
                table.saved[physical] = text
                log.info("%s: view state of domain %d restored", physical, domid)
        self._restore_interrupts(domid, physical, irq)
        intent = state.intents().get(physical)
        if intent is not None:
            adopted = (*irq.msi_pirqs, *(pirq for _, pirq in irq.msix_pirqs))
            self._resolve_intent(physical, intent, adopted if intent[0] == domid else ())

    def _restore_interrupts(self, domid: int, physical: str, irq: InterruptControl) -> None:
        state = self.pool.state
        assert state is not None
        saved_irq = state.interrupts().get(physical)
        if saved_irq is None:
            return
        saved_domid, text = saved_irq
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            log.error("%s: saved interrupt state unreadable (%s); dropped", physical, exc)
            state.forget_interrupts(physical)
            return
        try:
            if saved_domid != domid:
                raise InterruptStateError(f"saved for domain {saved_domid}, not {domid}")
            irq.import_state(data)
        except InterruptStateError as exc:
            log.error("%s: saved interrupt state not adopted: %s", physical, exc)
            self._unmap_record(physical, saved_domid, data)
        else:
            log.info("%s: interrupts of domain %d adopted: %s", physical, domid, text)

    def _resolve_intent(self, physical: str, intent: Record, adopted: tuple[int, ...]) -> None:
        """A map was under way when the previous daemon died, and its PIRQs never made it to a
        record: unmap what the hypervisor shows mapped for that domain and device beyond the
        `adopted` record (the device was not programmed for them: that comes after the
        record)."""
        domid, text = intent
        state = self.pool.state
        assert state is not None
        if isinstance(self.hypervisor, PirqLookup):
            stray = [p for p in self.hypervisor.mapped_pirqs(domid, physical) if p not in adopted]
            for pirq in stray:
                with contextlib.suppress(HypervisorError):  # gone with its domain already
                    self.hypervisor.unmap_pirq(domid, pirq)
            log.warning(
                "%s: a map for domain %d was under way when the daemon stopped (%.200s); "
                "PIRQs unmapped: %s",
                physical,
                domid,
                text,
                stray or "none",
            )
        else:
            log.error(
                "%s: a map for domain %d was under way when the daemon stopped (%.200s); the "
                "hypervisor cannot list what it mapped, so any PIRQ it made stays until the "
                "domain is destroyed",
                physical,
                domid,
                text,
            )
        state.forget_intent(physical, domid)

    def _unmap_record(self, physical: str, domid: int, data: object) -> None:
        state = self.pool.state
        try:
            pirqs = unmap_saved(self.hypervisor, domid, data)
        except InterruptStateError as exc:
            log.error(
                "%s: saved interrupt state of domain %d is malformed (%s); whatever PIRQs it "
                "named stay mapped until the domain is destroyed",
                physical,
                domid,
                exc,
            )
        else:
            if pirqs:
                log.warning("%s: unmapped PIRQs %s of domain %d", physical, list(pirqs), domid)
        if state is not None:
            state.forget_interrupts(physical)

    def sweep_saved(self) -> list[str]:
        """After start-up: records no connection adopted belong to guests that went away (or
        never came back); unmap their PIRQs and drop them. Returns the addresses swept."""
        state = self.pool.state
        if state is None:
            return []
        held = self.held()
        swept = []
        for physical, (domid, text) in state.interrupts().items():
            if (physical, domid) in held:
                continue
            try:
                data: object = json.loads(text)
            except (ValueError, RecursionError):
                data = None
            self._unmap_record(physical, domid, data)
            swept.append(physical)
        for physical, intent in state.intents().items():
            if (physical, intent[0]) not in held:
                self._resolve_intent(physical, intent, ())
                swept.append(physical)
        for physical, (domid, _) in state.views().items():
            if (physical, domid) not in held:
                state.forget_view(physical)
        return sorted(set(swept))

    def held(self) -> set[tuple[str, int]]:
        """(physical address, domain) of every device a connection serves now."""
        with self._lock:
            links = self._links.domains()
        pairs = set()
        for domid, link in links:
            with link.devices.lock:
                pairs |= {(p, domid) for p, _ in link.devices.by_guest.values()}
        return pairs

    def _save_interrupts(self, physical: str, domid: int, data: dict[str, Any]) -> None:
        state = self.pool.state
        if state is None:
            return
        try:
            if data["msi"] or data["msix"]:
                state.save_interrupts(physical, domid, json.dumps(data))
            else:
                state.forget_interrupts(physical, domid)
        except (OSError, StateError):
            # The guest's op goes on; the mapping is only at risk across a restart.
            log.exception("%s: saving the interrupt state failed", physical)

    def _save_intent(self, physical: str, domid: int, intent: dict[str, Any]) -> None:
        state = self.pool.state
        if state is None:
            return
        try:
            state.intend_interrupts(physical, domid, json.dumps(intent))
        except (OSError, StateError):
            # As above: only a crash before the PIRQs are recorded would strand them.
            log.exception("%s: recording the intent to map failed", physical)

    @staticmethod
    def _serve_in_gate(devices: _GuestDevices, req: OpRequest) -> OpResult:
        result = dispatch(req, devices)
        if req.cmd == _CONF_WRITE and result.err == _SUCCESS:
            exported = devices.lookup(req.domain, req.bus, req.devfn)
            if exported is not None:
                # No lock: only this thread adds to `dirty` and hands it on (`_queue_views`),
                # and a device's entry is discarded only inside the gate, never during an op.
                devices.dirty.add(exported.physical.address)
        return result

    def _queue_views(self, domid: int, devices: _GuestDevices) -> None:
        """After a batch of ops: the views they changed are queued for the state writer, which
        takes their snapshots when it gets to them (the op path only marks them)."""
        if not devices.dirty:  # most batches are reads; only this thread adds to `dirty`
            return
        with devices.lock:
            dirty = set(devices.dirty)
            devices.dirty.clear()
            state = self.pool.state if dirty else None
            if state is None:
                return
            for physical in dirty:
                state.save_view_later(physical, partial(self._snapshot, domid, devices, physical))

    @staticmethod
    def _snapshot(domid: int, devices: _GuestDevices, physical: str) -> Record | None:
        """The view's state between two ops; None when it is gone or unchanged since the last
        snapshot. Called by the state writer."""
        from pciback.engine.snapshot import export_state

        with devices.serving, devices.lock:
            space = devices.spaces.get(physical)
            if space is None:  # dropped: its record was forgotten, it must stay so
                return None
            text = json.dumps(export_state(space), sort_keys=True)
            if devices.saved.get(physical) == text:
                return None
            devices.saved[physical] = text
        return domid, text

    def _save_all_views(self, domid: int, devices: _GuestDevices) -> None:
        """Queue every view as it is now (its service thread stopped), then wait for them."""
        from pciback.engine.snapshot import export_state

        with devices.serving, devices.lock:
            state = self.pool.state if devices.spaces else None
            if state is None:
                return
            for physical, space in devices.spaces.items():
                text = json.dumps(export_state(space), sort_keys=True)
                if devices.saved.get(physical) == text:
                    continue
                try:
                    state.save_view(physical, domid, text)
                except StateError:
                    log.exception("%s: saving the view state failed", physical)
                    continue
                devices.saved[physical] = text
        self._flush()

    def _flush(self) -> None:
        """Wait for the state writer; only where no connection's lock is held."""
        state = self.pool.state
        if state is not None and not state.flush():
            log.error("the saved state could not be written; a crash now would lose it")

    def _drop(self, devices: _GuestDevices, physical: str, exported: ExportedDevice) -> None:
        """The guest lets the device go: its interrupts and its saved view go with it.
        Called with the table's lock held."""
        exported.irq.teardown()
        devices.spaces.pop(physical, None)
        devices.saved.pop(physical, None)
        devices.dirty.discard(physical)
        state = self.pool.state
        if state is not None:
            state.forget_view(physical)

    def apply_quirk(self, spec: QuirkSpec) -> list[int]:
        """An operator's new quirk field: the views of the device already exported take it at
        once (between two ops); returns the domains whose view has it now."""
        with self._lock:
            links = self._links.domains()
        applied = []
        for domid, link in links:
            with link.devices.serving, link.devices.lock:
                space = link.devices.spaces.get(spec.address)
                if space is None:
                    continue
                problem = space.add_quirk(quirk_register(spec))
            if problem is None:
                applied.append(domid)
            else:  # checked on a copy first (quirk_ignored): the live view moved since
                log.warning(
                    "%s: dom%d's view keeps its old fields: %s", spec.address, domid, problem
                )
        return applied

    def disconnect(self, domid: int, devid: int) -> None:
        with self._lock:
            link = self._links.pop(domid, devid)
        if link is None:
            return
        link.connection.close()
        self._end_trace_of(domid)
        with link.devices.serving, link.devices.lock:
            dropped = bool(link.devices.by_guest)
            for physical, exported in link.devices.by_guest.values():
                self._drop(link.devices, physical, exported)
            link.devices.by_guest.clear()
            link.devices.by_devfn.clear()
        if dropped:
            self._flush()

    # -- recording a domain's ops (pciback.trace) ----------------------------------------------
    def start_trace(self, domid: int, device: str | None, max_ops: int) -> Recording:
        """Record `domid`'s ops (only those reaching `device`, if given) from now on, or from
        its connection when it has none yet. One recording per domain; one its recorder no
        longer reads gives way."""
        from pciback.trace.identity import installed_identity

        policy = installed_identity()
        with self._lock:
            old = self._traces.get(domid)
            if old is not None:
                if old.ended is None and not old.expired():
                    raise ValueError(f"domain {domid} is being recorded already")
                old.end("expired")
            links = self._links.of_domain(domid)
            recording = Recording(
                next(self._trace_ids), domid, device, max_ops, policy, from_connect=not links
            )
            self._traces[domid] = recording
            for link in links:
                self._trace_link(link, recording)
        log.info(
            "dom%d: recording ops%s (at most %d)",
            domid,
            f" of {device}" if device else "",
            max_ops,
        )
        return recording

    def read_trace(self, domid: int, ident: int) -> dict[str, Any]:
        """What the recording holds that its recorder has not taken yet (a bounded batch)."""
        recording = self._recording(domid, ident)
        batch = recording.take()
        if batch.ended is not None:
            with self._lock:
                if self._traces.get(domid) is recording:
                    del self._traces[domid]
            log.info("dom%d: recording ended (%s), %d ops", domid, batch.ended, batch.count)
        return {
            "devices": [self._device_info(p, g).line() for p, g in batch.devices],
            "ops": [op_line(op) for op in batch.ops],
            "ended": batch.ended,
            "count": batch.count,
        }

    def stop_trace(self, domid: int, ident: int) -> None:
        """No op is recorded from now on; what was recorded stays to be read."""
        self._recording(domid, ident).end("stopped")

    def _recording(self, domid: int, ident: int) -> Recording:
        with self._lock:
            recording = self._traces.get(domid)
        if recording is None or recording.ident != ident:
            raise ValueError(f"no recording {ident} of domain {domid}")
        return recording

    def _trace_link(self, link: _Link, recording: Recording) -> None:
        connection = link.connection
        inner = connection.handler
        traced = _TracedOps(inner, link.devices, recording)

        untraced_config_ops = connection.config_ops

        def unwrap() -> None:
            if connection.handler is traced:
                connection.handler = inner
                connection.config_ops = untraced_config_ops

        connection.handler = traced  # and no short way for config ops, which would skip it
        if not recording.on_end(unwrap):
            unwrap()

    def _end_trace_of(self, domid: int) -> None:
        """The domain's connection went: so does its recording (kept until it is read)."""
        with self._lock:
            recording = self._traces.get(domid)
            gone = not self._links.of_domain(domid)
        if recording is not None and gone:
            recording.end("disconnected")

    def _device_info(self, physical: str, guest: str) -> DeviceInfo:
        try:
            settings = self.pool.settings(physical)
            _, quirks = self.pool.policy(physical)
            permissive, control = settings.guest_permissive, settings.interrupt_control
        except StubError:  # left the pool since: its flags went with it
            permissive, quirks, control = False, (), False
        names = tuple(f"{q.address}-{q.offset:x}:{q.size}:{q.mask:x}" for q in quirks)
        try:
            device = self.bus.device(physical)
            host_irq: int | None = device.host_irq()
            sizes = tuple((bar.index, bar.size) for bar in device.bars() if bar.size)
        except (KeyError, OSError, ValueError):  # gone, or unreadable: guessed as from a dump
            host_irq, sizes = None, ()
        return DeviceInfo(physical, guest, permissive, control, names, host_irq, sizes)

    # -- what the host side asks of a live connection -----------------------------------------
    def connection(self, domid: int, devid: int = 0) -> BackendConnection | None:
        with self._lock:
            link = self._links.get(domid, devid)
        return None if link is None else link.connection

    def exported(
        self, domid: int, physical: str
    ) -> tuple[BackendConnection, ExportedDevice] | None:
        """The connection serving `physical` to `domid`, and the device as exported there."""
        with self._lock:
            links = self._links.of_domain(domid)
        for link in links:
            with link.devices.lock:
                for p, exported in link.devices.by_guest.values():
                    if p == physical:
                        return link.connection, exported
        return None

    def recover_aer(
        self, physical: str, state: ChannelState, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[int, AerOutcome]:
        """An uncorrectable error on `physical`: recover it with its owner's frontend, or kill
        the owner (its interrupts go with it) and reset the device. Returns (owner, outcome);
        a killed owner is the toolstack's to reap, which releases the device."""
        owner = self.ownership.owner(physical)
        found = None if owner is None else self.exported(owner, physical)
        if owner is None or found is None:
            raise ValueError(f"{physical} is not in use by a connected guest")
        connection, exported = found
        domain, bus, slot, function = parse_address(exported.guest_address)

        def still_theirs() -> bool:
            """The recovery waits for the guest, maybe minutes: the device may be detached or
            given to another guest meanwhile, or the daemon stop. Then the device is not the
            recovery's to reset, nor is the former owner's death its to cause."""
            if self._aer_stopped or self.ownership.owner(physical) != owner:
                return False
            now = self.exported(owner, physical)
            return now is not None and now[0] is connection

        def reset_device() -> None:
            exported.physical.reset()
            exported.irq.restore()  # what a slot reset's state restore gives back

        def kill_guest() -> None:
            self.hypervisor.kill_domain(owner)
            with self._lock:
                links = self._links.of_domain(owner)
            for link in links:
                with link.devices.serving, link.devices.lock:
                    for _, dev in link.devices.by_guest.values():
                        dev.irq.teardown()

        target = AerTarget(domain, bus, slot << 3 | function)
        outcome = recover(
            connection,
            target,
            state,
            reset_device=reset_device,
            kill_guest=kill_guest,
            timeout=timeout,
            still_wanted=still_theirs,
        )
        return owner, outcome

    def abort_aer(self) -> None:
        """End every AER recovery under way (AerAborted in its thread), and refuse new ones:
        the daemon stops, and no guest may be killed, nor device reset, once it has."""
        self._aer_stopped = True
        with self._lock:
            links = [link for _, link in self._links.domains()]
        for link in links:
            link.connection.abort_aer()

    def suspend(self, domid: int, devid: int) -> None:
        with self._lock:
            link = self._links.pop(domid, devid)
        if link is not None:
            link.connection.close()
            self._save_all_views(domid, link.devices)

    def close(self) -> None:
        for domid, devid in self._links.addresses():
            self.disconnect(domid, devid)

    def abandon(self, timeout: float = 0.2) -> None:
        """The daemon is killed: the service threads stop (one stuck in an op is not waited
        for beyond `timeout`), and nothing is saved, dropped or given back."""
        with self._lock:
            links = self._links.take_all()
        for link in links:
            link.connection.close(timeout)
            # A dead daemon's wake-ups die with it: the kick meant for a thread stuck in an op
            # must not wake the next daemon's connection on the same channel before it has
            # its devices.
            link.connection.port.wait(0)
