"""The daemon: wires the ports (simulated, or a real dom0's), the stub pool, ownership, the
xenbus backends and the control socket, and runs the watch loop.

Stopping (SIGTERM) stops servicing, writes what the state writer still holds and closes the
state database; it releases nothing a guest holds: ownership, device state and xenstore stay as
they are for the next start to resume. `kill` is what a crash leaves instead
(pciback.control.state says what that can lose).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pciback.control.hide import HideSyntaxError, parse_device, parse_quirk
from pciback.control.ownership import Ownership
from pciback.control.reconcile import reconcile
from pciback.control.state import StateStore
from pciback.control.state_dir import StateDirLock, check_file
from pciback.control.stub import StubError, StubPool, save_config
from pciback.daemon.aer_events import AerEvents, channel_state
from pciback.daemon.audit_journal import AuditJournal
from pciback.daemon.changes import ChangeAudit
from pciback.daemon.config import Config
from pciback.daemon.control import ControlError, ControlServer
from pciback.daemon.datapath import SimDataPath
from pciback.daemon.environment import Environment
from pciback.daemon.quirks import quirk_ignored
from pciback.ports.bus import PhysicalDevice
from pciback.ports.xenstore import WatchEvent, XenStore
from pciback.protocol.abi import ChannelState
from pciback.protocol.connection import AerAborted
from pciback.toolstack import requests as toolstack_requests
from pciback.toolstack.attach import RELEASE_TOKEN, Toolstack
from pciback.trace.limits import DEFAULT_MAX_OPS, MAX_OPS
from pciback.xenbus.manager import DOMID_MAX, MAX_EVENTS_PER_PUMP, XenbusBackends

log = logging.getLogger("pciback.daemon")

TRACE_OPS = frozenset({"trace_start", "trace_read", "trace_stop"})


class DaemonError(RuntimeError):
    pass


def _state_of(device: Callable[[str], PhysicalDevice], address: str) -> ChannelState:
    """`channel_state` of the function; one that cannot even be read is gone."""
    try:
        return channel_state(device(address))
    except (OSError, KeyError, ValueError):
        return ChannelState.IO_PERM_FAILURE


def check_policy() -> None:
    """The compiled tables (generated/) and the hooks they name (pciback/hooks) agree, or a
    DaemonError saying where they do not: refused at start-up, not at a guest's first attach."""
    from pciback.engine.policy import PolicyError
    from pciback.policy import default_policy

    try:
        default_policy()
    except PolicyError as exc:
        raise DaemonError(str(exc)) from None


# What the daemon runs on: the environment itself, or how to open it from the configuration
# (pciback.backend's, which knows the simulated host and the Xen adapters; this room knows
# neither), called where the environment was opened before: after the policy check and the
# state directory's lock, inside the clean-up of a failed start.
EnvironmentSource = Environment | Callable[[Config], Environment]


class Daemon:
    def __init__(
        self,
        config: Config,
        env: EnvironmentSource,
        *,
        control: bool = True,
        state_lock: StateDirLock | None = None,
    ) -> None:
        """`control` False: no control socket (the simulated host drives the daemon in-process).
        `env`: the environment, or its opener (pciback.backend.Daemon: the one the
        configuration's backend names); backend = "xen" takes a Xen environment only.
        `state_lock`: the state directory's lock already taken (the CLI takes it before
        logging starts); otherwise it is taken here."""
        check_policy()
        self.config = config
        # First of all, before the environment, the state or any device is touched: a second
        # daemon on this state directory would reset the devices the first one's guests hold.
        if state_lock is None and config.state_dir is not None:
            state_lock = StateDirLock.acquire(config.state_dir)
        self.state_lock = state_lock
        self.journal: AuditJournal | None = None
        try:
            # A link or a foreign file where the socket goes is refused now, not after start-up
            # has reconciled the devices (the control server checks again when it binds).
            if control and config.control_socket is not None:
                check_file(config.control_socket, socket=True)
            self._build(env, control)
        except BaseException:
            state: StateStore | None = getattr(self, "state", None)
            if state is not None:
                state.close()
            if self.journal is not None:
                self.journal.close()
            if self.state_lock is not None:
                self.state_lock.release()
            raise

    def _build(self, env: EnvironmentSource, control: bool) -> None:
        config = self.config
        self.env: Environment = env(config) if callable(env) else env
        if config.backend == "xen" and self.env.backend != "xen":
            raise DaemonError(f'backend = "xen": given the {self.env.backend} environment')
        self.lock = threading.RLock()
        self.state = StateStore(config.state_dir)
        self.ownership = Ownership(self.state)
        self.pool = StubPool(
            self.env.bus,
            self.ownership,
            self.state,
            config.permissive_all,
            hypervisor=self.env.hypervisor,
        )
        self.datapath: SimDataPath = self.env.make_datapath(self.pool, self.ownership)
        if config.op_linger_us is not None:
            self.datapath.linger_ns = config.op_linger_us * 1000
        self.xs: XenStore = self.env.connect_store()
        self.backends = XenbusBackends(self.xs, self.pool, self.datapath, config.topology)
        self.toolstack = Toolstack(
            self.xs,
            self.env.domains,
            self.env.bus,
            self.pool,
            self.ownership,
            self.backends,
            self.state,
            self.lock,
        )
        if config.toolstack_timeout_s is not None:
            self.toolstack.timeout = config.toolstack_timeout_s
        socket_path = config.control_socket if control else None
        self.control: ControlServer | None = None
        if socket_path is not None:
            # Changes through the socket are journaled where the state is; without a state
            # directory (persist = false) they are still described back to the operator.
            if config.state_dir is not None:
                self.journal = AuditJournal(config.state_dir)
            audit = ChangeAudit(self.journal)
            self.control = ControlServer(socket_path, self.handle, audit=audit)
        self.stopped = threading.Event()
        self.aer_events: AerEvents | None = None  # from start

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        with self.lock:
            self.pool.load()
            seized = self.pool.hide(self.config.hide)
            for device in self.config.permissive:
                self._apply(lambda d=device: self.pool.set_permissive(d))
            for device in self.config.interrupt_control:
                self._apply(lambda d=device: self.pool.set_interrupt_control(d))
            for quirk in self.config.quirks:
                self._apply(lambda q=quirk: self.pool.add_quirk(q))
            self.backends.start()
            self.toolstack.start()
            self.backends.pump()
            # A real xenstore may not have delivered the watch's first event yet; what follows
            # releases whatever no backend resumed, so every backend must have been looked at.
            self.backends.scan()
            # Attachments a previous daemon left half done are finished or undone, and those of
            # guests that died meanwhile cleaned up, before stale ownership is released below.
            self.toolstack.reconcile()
            # Guests resumed above adopted their saved interrupts; the rest are unmapped here.
            swept = self.datapath.sweep_saved()
            released = reconcile(self.ownership, self.pool, self.backends)
            self.state.flush()  # what start-up resolved is on disk before it is reported
            log.info(
                "started: %d device(s) in the pool (%d newly seized), %d guest backend(s), "
                "%d stale registration(s) released, %d orphaned interrupt record(s) swept",
                len(self.pool.devices),
                len(seized),
                len(self.backends.backends),
                len(released),
                len(swept),
            )
        if self.control is not None:
            self.control.start()
        self.aer_events = self._open_aer_events()

    def _open_aer_events(self) -> AerEvents | None:
        """Recovery of the errors the kernel announces for held functions (uevents)."""
        try:
            source = self.env.open_uevents()
        except OSError as exc:
            log.warning("kernel uevents cannot be read (%s): PCIe errors will not be seen", exc)
            return None
        bus = self.env.bus
        events = AerEvents(
            source,
            held=lambda: list(self.ownership.all()),
            upstream=bus.upstream,
            state=lambda address: _state_of(bus.device, address),
            recover=self._recover_aer,
        )
        events.start()
        return events

    def _recover_aer(self, address: str, state: ChannelState) -> None:
        try:
            owner, outcome = self.datapath.recover_aer(address, state)
        except ValueError:  # no longer held by a connected guest
            log.info("%s: not in use by a connected guest any more; nothing to recover", address)
            return
        except AerAborted as exc:
            log.warning(
                "%s: recovery abandoned, nothing more done to guest or device: %s", address, exc
            )
            return
        if outcome.killed:
            log.error("%s: dom%d could not recover it: killed, the device reset", address, owner)
        else:
            log.info("%s: dom%d recovered it (%d steps)", address, owner, len(outcome.steps))

    @staticmethod
    def _apply(action: Any) -> None:
        try:
            action()
        except (StubError, HideSyntaxError) as exc:
            log.error("configuration: %s", exc)

    def step(self, timeout: float | None = None) -> int:
        """Wait for one watch event (outside the lock; None: until one comes or the store is
        woken), then handle everything pending."""
        event = self.xs.next_event(timeout)
        if event is None:
            return 0
        with self.lock:
            self._dispatch(event)
            return 1 + self._drain()

    def pump(self) -> int:
        """Handle every pending watch event without waiting; returns how many. For a caller
        that drives the daemon in-process instead of running its loop on a thread."""
        with self.lock:
            return self._drain()

    def _dispatch(self, event: WatchEvent) -> None:
        # The toolstack role's own @releaseDomain watch; every other event is the backends'.
        if event.token == RELEASE_TOKEN:
            self.toolstack.reap()
        else:
            self.backends.handle(event)
            self.toolstack.settle()  # a guest letting go late finishes its pending detach

    def _drain(self) -> int:
        """XenbusBackends.pump, with the toolstack role's events routed to it."""
        handled = 0
        event = self.xs.next_event(0.0)
        while event is not None and handled < MAX_EVENTS_PER_PUMP:
            self._dispatch(event)
            handled += 1
            event = self.xs.next_event(0.0)
        return handled

    def run(self, stop: threading.Event) -> None:
        """The watch loop until `stop` is set, from any thread or a signal handler. It sleeps
        until a watch event comes, with no polling interval: setting `stop` wakes the wait."""
        waker = threading.Thread(
            target=self._wake_when, args=(stop,), name="pciback-stop", daemon=True
        )
        waker.start()
        while not stop.is_set():
            self.step(None)

    def _wake_when(self, stop: threading.Event) -> None:
        stop.wait()
        self.xs.wake()

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.datapath.abort_aer()  # no guest killed nor device reset from here on
        if self.aer_events is not None:
            self.aer_events.stop()
        if self.control is not None:
            self.control.stop()
        if self.journal is not None:
            self.journal.close()
        with self.lock:
            self.toolstack.stop()
            self.backends.stop()
            self.env.release(self.xs)
            self.state.close()
            if self.state_lock is not None:
                self.state_lock.release()
        log.info("stopped; guests keep their devices (%d owned)", len(self.ownership.all()))

    def kill(self) -> None:
        """What SIGKILL or a crash leaves behind (the simulated host's crash_daemon): nothing
        more reaches the state directory, servicing stops where it is, nothing is saved,
        released or given back."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.datapath.abort_aer()
        if self.aer_events is not None:
            self.aer_events.stop()
        self.state.abandon()
        if self.control is not None:
            self.control.stop()
        if self.journal is not None:
            self.journal.close()  # its lines were write(2)s: a crash keeps what was written
        self.datapath.abandon()
        self.env.release(self.xs)
        if self.state_lock is not None:
            self.state_lock.release()  # what the kernel does when a daemon dies
        log.warning("killed; %d device(s) owned", len(self.ownership.all()))

    # -- control requests --------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op in toolstack_requests.OPS:
            # Not under the lock: attach and detach wait for the guest, and serving it needs
            # the watch loop, which needs the lock. They take it step by step.
            return toolstack_requests.serve(self.toolstack, request)
        if op in TRACE_OPS:
            return self._trace(op, request)
        arg = request.get("arg")
        with self.lock:
            if op == "list":
                return self.status()
            if op == "slots":
                return self.pool.slots()
            if op == "permissive":
                return self.pool.permissive()
            if op == "interrupt_control":
                return self.pool.interrupt_control()
            if op == "quirks":
                return self.pool.quirks()
            if op == "irq_handlers":
                return self.pool.irq_handlers()
            if not isinstance(arg, str) or len(arg) > 4096:
                raise ControlError(f"{op}: needs a string argument")
            if op == "new_slot":
                return self.pool.add_slot(arg)
            if op == "remove_slot":
                removed = self.pool.remove_slot(arg)
                return {
                    "removed": removed,
                    "in_pool": [a for a in removed if a in self.pool.devices],
                }
            if op in ("permissive_add", "permissive_remove"):
                # The device's views hold the pool's settings: they follow at once.
                return self.pool.set_permissive(arg, op == "permissive_add")
            if op in ("interrupt_control_add", "interrupt_control_remove"):
                return self.pool.set_interrupt_control(arg, op == "interrupt_control_add")
            if op == "quirk_add":
                spec = parse_quirk(arg)
                ignored = quirk_ignored(self.env.bus, self.pool, spec)
                if ignored:
                    # Stored, it would show in `quirk list` while the guest's view ignores it.
                    raise ControlError(
                        f"{arg[:64]}: not added, the view would ignore it: {ignored}"
                    )
                spec = self.pool.add_quirk(spec)
                return {
                    "quirk": f"{spec.address}-{spec.offset:x}:{spec.size}:{spec.mask:x}",
                    "live": self.datapath.apply_quirk(spec),
                }
            if op == "irq_handler_state":
                return self.pool.toggle_irq_handler(arg)
            if op == "unseize":
                self.pool.unseize(arg)
                return None
            if op == "config":
                return self.config_of(arg)
        raise ControlError(f"unknown request {op!r}")

    def _trace(self, op: str, request: dict[str, Any]) -> Any:
        """`pciback trace record`: start a recording, take what it holds, stop it. Not under
        the daemon's lock: the recorder polls, and the watch loop must not wait for it."""
        domid = request.get("domid")
        if type(domid) is not int or not 0 < domid <= DOMID_MAX:
            raise ControlError(f"{op}: domid must be a guest's domain number")
        if op == "trace_start":
            device = request.get("device")
            if device is not None:
                if not isinstance(device, str) or len(device) > 64:
                    raise ControlError("trace_start: device must be DDDD:BB:DD.F")
                try:
                    device = parse_device(device)
                except HideSyntaxError as exc:
                    raise ControlError(f"trace_start: {exc}") from None
            max_ops = request.get("max_ops", DEFAULT_MAX_OPS)
            if type(max_ops) is not int or not 0 < max_ops <= MAX_OPS:
                raise ControlError(f"trace_start: max_ops must be 1 to {MAX_OPS}")
            recording = self.datapath.start_trace(domid, device, max_ops)
            return {"id": recording.ident, "header": recording.header.line()}
        ident = request.get("id")
        if type(ident) is not int:
            raise ControlError(f"{op}: id must be the number trace_start gave")
        if op == "trace_read":
            return self.datapath.read_trace(domid, ident)
        self.datapath.stop_trace(domid, ident)
        return None

    def config_of(self, device: str) -> dict[str, Any]:
        """A seized device's config space as it reads now, and what its guest view is built
        with: what `pciback audit DEVICE` lays the tables over. Reads only."""
        address = parse_device(device)
        permissive, quirks = self.pool.policy(address)
        return {
            "address": address,
            "config": save_config(self.env.bus.device(address)).hex(),
            "permissive": permissive,
            "interrupt_control": self.pool.allows_interrupt_control(address),
            "quirks": [f"{q.address}-{q.offset:x}:{q.size}:{q.mask:x}" for q in quirks],
        }

    def status(self) -> dict[str, Any]:
        devices = []
        for address in self.env.bus.addresses():
            stub = self.pool.devices.get(address)
            devices.append(
                {
                    "address": address,
                    "driver": self.env.bus.driver(address),
                    "owner": self.ownership.owner(address),
                    "permissive": bool(stub and stub.settings.permissive),
                    "interrupt_control": bool(stub and stub.settings.interrupt_control),
                    "quirks": len(stub.quirks) if stub else 0,
                }
            )
        guests = [
            {
                "domid": domid,
                "devid": devid,
                "topology": backend.mode,
                "state": backend.state().name,
                "devices": backend.topology.devices(),
                "error": backend.error,
                "ops": self._op_stats(domid, devid),
            }
            for (domid, devid), backend in sorted(self.backends.backends.items())
        ]
        return {"devices": devices, "guests": guests, "attachments": self.toolstack.listing()}

    def _op_stats(self, domid: int, devid: int) -> dict[str, Any] | None:
        """How long the guest's ops took inside the daemon (pciback.protocol.opstats); None
        while no connection serves it."""
        connection = self.datapath.connection(domid, devid)
        if connection is None:
            return None
        stats = connection.stats.as_dict()
        stats["thread_cpu_ns_total"] = connection.thread_cpu_ns()
        stats["linger"] = connection.linger.as_dict()
        stats["answer_events"] = connection.events.as_dict()
        return stats
