"""The backend end of an interdomain event channel through libxenevtchn.

Each connection binds its port on a handle of its own, so the handle's fd (and
`xenevtchn_pending`) concern that port alone. The kernel masks a port when it delivers an event
to user space and keeps it masked until user space unmasks it; an event that arrives while it
is masked is kept pending and delivered at the unmask.

An event costs a poll(2) that returns, and then xenevtchn_pending (read(2)) and
xenevtchn_unmask (write(2)). Those two are made at the next `wait`, before it sleeps, rather
than when the wake-up returns: the ops the wake-up finds are answered first, so the guest,
which waits for each op, no longer waits for two system calls (each one a trip through the
hypervisor in a PV dom0) on every op. The port stays masked only while they are served; an
op the guest posts meanwhile is found by the service loop (it tests the active bit after
every op) or, its event having been kept pending, wakes the next poll as soon as the port is
unmasked.
"""

from __future__ import annotations

import errno
import select
import threading
import time
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.protocol.transport import Doorbell, EventPort, wait_while
from pciback.xen._loader import XenUnavailable, check_domid, load

TYPEDEFS = {
    "evtchn_port_t": "uint32_t",
    "xenevtchn_port_or_error_t": "int",
    "xenevtchn_handle": "struct xenevtchn_handle",
}
OPAQUE = ("struct xenevtchn_handle", "struct xentoollog_logger")
DECLS = (
    "xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags);",
    "int xenevtchn_close(xenevtchn_handle *xce);",
    "int xenevtchn_fd(xenevtchn_handle *xce);",
    "int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);",
    "xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,"
    " evtchn_port_t remote_port);",
    "int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);",
    "xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);",
    "int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);",
)
HEADERS = ("xenevtchn.h",)
CONSTANTS: dict[str, int] = {}

ffi = FFI()
ffi.cdef("\n".join([f"{s};" for s in OPAQUE] + [f"typedef {t} {n};" for n, t in TYPEDEFS.items()]))
ffi.cdef("\n".join(DECLS))

# Event channel ports are below 2^17 with the FIFO ABI (and 4096 with the 2-level one).
MAX_PORT = (1 << 17) - 1


def library() -> Any:
    return load(ffi, "xenevtchn", ("libxenevtchn.so.1",), "libxenevtchn1")


def _error(what: str) -> OSError:
    code = ffi.errno or errno.EIO
    return OSError(code, f"{what}: {errno.errorcode.get(code, code)}")


class XenEventPort(EventPort):
    """The local end bound to a frontend's unbound port; an EventPort for BackendConnection."""

    def __init__(self, domid: int, remote_port: int, lib: Any = None) -> None:
        check_domid(domid)
        if not isinstance(remote_port, int) or not 0 < remote_port <= MAX_PORT:
            raise ValueError(f"event channel port {remote_port!r} out of range")
        self.lib = lib if lib is not None else library()
        ffi.errno = 0
        handle = self.lib.xenevtchn_open(ffi.NULL, 0)
        if handle == ffi.NULL:
            code = ffi.errno or errno.ENOENT
            raise XenUnavailable(
                f"xenevtchn_open failed ({errno.errorcode.get(code, code)}): "
                "is /dev/xen/evtchn there?"
            )
        ffi.errno = 0
        local = int(self.lib.xenevtchn_bind_interdomain(handle, domid, remote_port))
        if local < 0:
            exc = _error(f"binding port {remote_port} of domain {domid}")
            self.lib.xenevtchn_close(handle)
            raise exc
        self._handle: Any = handle
        self.domid = domid
        self.local_port = local
        self._fd = int(self.lib.xenevtchn_fd(handle))
        self._kick = Doorbell()  # close() and OPS_PER_WAKEUP wake the thread through this
        # One poll object for the life of the port: no fd lists built per wake-up.
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._poll.register(self._kick.fileno(), select.POLLIN)
        self._lock = threading.Lock()  # one close at a time
        # One entry per notify under way, whatever its thread, and one per wait (list.append
        # and list.pop are each one step under the GIL): `close` frees the handle only once
        # both are empty.
        self._notifying: list[None] = []
        self._sleeping: list[None] = []
        self._unacknowledged = False  # an event was delivered and is not yet taken

    @property
    def closed(self) -> bool:
        return self._handle is None

    def notify(self) -> None:
        # Every answer comes here: no lock, which in CPython 3.11 would read the clock, a
        # system call in a PV dom0 (see pciback.daemon.serving_gate). The notify announces
        # itself before it reads the handle, and `close` clears the handle before it looks
        # for notifies under way: one of the two sees the other.
        notifying = self._notifying
        notifying.append(None)
        try:
            handle = self._handle
            if handle is None:
                return
            # No errno reset first (ffi.errno is a Python property): ioctl(2), which this is,
            # sets errno whenever it fails.
            if self.lib.xenevtchn_notify(handle, self.local_port) < 0:
                raise _error(f"notifying dom{self.domid} on port {self.local_port}")
        finally:
            notifying.pop()

    def wait(self, timeout: float | None) -> bool:
        # No lock, as in `notify`, and for the same reason: each would read the clock, and a
        # wake-up already makes three system calls. The sleeper announces itself before it
        # reads the handle, and `close` clears the handle before it waits for sleepers to go:
        # one of the two sees the other. Only the service thread waits on a port.
        sleeping = self._sleeping
        sleeping.append(None)
        try:
            handle = self._handle
            if handle is None:
                return False
            if self._unacknowledged:
                self._unacknowledged = False
                self._acknowledge(handle)
            self.slept_ns = time.perf_counter_ns()
            ready = self._poll.poll(None if timeout is None else max(0.0, timeout * 1000))
            self.woke_ns = time.perf_counter_ns()
            if self._handle is None:
                return False
            for fd, _ in ready:
                if fd == self._fd:
                    self._unacknowledged = True  # taken at the next wait, see the module
                else:
                    self._kick.drain()
            return bool(ready)
        finally:
            sleeping.pop()

    def _acknowledge(self, handle: Any) -> None:
        """Take the delivered event and unmask its port: one read(2), one write(2). Only a port
        the kernel delivered, and so masked, is unmasked. No errno reset first (ffi.errno is a
        Python property): read(2) of the device returns a whole port or fails with errno.
        `handle`: the one the caller read, which `close` frees only once the caller left."""
        port = int(self.lib.xenevtchn_pending(handle))
        if port < 0 and ffi.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise _error("xenevtchn_pending")
        if port >= 0:
            self.lib.xenevtchn_unmask(handle, port)

    def kick_self(self) -> None:
        self._kick.ring()

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Unbind and close, after waking a thread asleep in `wait` and letting it leave (its
        poll must not outlive the fd, which the next open may reuse) and after every notify
        under way has returned (none may use a freed handle)."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            # A sleeper that read the handle before it was cleared leaves its poll at this
            # ring (or finds it pending), and it and notifies under way finish first.
            self._kick.ring()
            wait_while(self._sleeping.__len__)
            wait_while(self._notifying.__len__)
            self.lib.xenevtchn_unbind(handle, self.local_port)
            self.lib.xenevtchn_close(handle)
        self._kick.close()
