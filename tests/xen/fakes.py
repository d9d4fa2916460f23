"""Stand-ins for the Xen libraries, called exactly as cffi calls the real ones (cdata in, cdata
or ints out, failures as NULL/-1/false with errno set), recording every call."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from typing import Any

from pciback.protocol.abi import PAGE_SIZE
from pciback.xen import evtchn, gnttab, physdev, xenctrl, xenstore


def _s(arg: Any) -> str:
    """A char * argument: cffi hands Python bytes through as they are."""
    return (arg if isinstance(arg, bytes) else xenstore.ffi.string(arg)).decode()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.handle = object()  # an opaque handle; never NULL


class FakeXenctrl(Recorder):
    def __init__(self, pirq: int = 77, fail: dict[str, int] | None = None) -> None:
        super().__init__()
        self.pirq = pirq
        self.fail = fail or {}

    def _rc(self, name: str) -> int:
        if name in self.fail:
            xenctrl.ffi.errno = self.fail[name]
            return -1
        return 0

    def xc_interface_open(self, logger: Any, dombuild: Any, flags: int) -> Any:
        return self.handle

    def xc_interface_close(self, xch: Any) -> int:
        self.calls.append(("close",))
        return 0

    def xc_physdev_map_pirq_msi(
        self,
        xch: Any,
        domid: int,
        index: int,
        pirq: Any,
        devfn: int,
        bus: int,
        entry: int,
        table_base: int,
    ) -> int:
        self.calls.append(("map", domid, index, int(pirq[0]), devfn, bus, entry, table_base))
        rc = self._rc("map")
        if rc == 0:
            pirq[0] = self.pirq
        return rc

    def xc_physdev_unmap_pirq(self, xch: Any, domid: int, pirq: int) -> int:
        self.calls.append(("unmap", domid, pirq))
        return self._rc("unmap")

    def xc_domain_irq_permission(self, xch: Any, domid: int, pirq: int, allow: bool) -> int:
        self.calls.append(("irq_permission", domid, pirq, allow))
        return self._rc("irq_permission")

    def xc_domain_shutdown(self, xch: Any, domid: int, reason: int) -> int:
        self.calls.append(("shutdown", domid, reason))
        return self._rc("shutdown")

    def xc_domain_destroy(self, xch: Any, domid: int) -> int:
        self.calls.append(("destroy", domid))
        return self._rc("destroy")


class FakeGnttab(Recorder):
    """Grants are pages of this process; `pages[(domid, ref)]` is what the guest sees."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: dict[tuple[int, int], Any] = {}

    def xengnttab_open(self, logger: Any, flags: int) -> Any:
        return self.handle

    def xengnttab_close(self, xgt: Any) -> int:
        self.calls.append(("close",))
        return 0

    def xengnttab_map_grant_ref(self, xgt: Any, domid: int, ref: int, prot: int) -> Any:
        self.calls.append(("map", domid, ref, prot))
        if (domid, ref) not in self.pages:
            gnttab.ffi.errno = errno.EINVAL
            return gnttab.ffi.NULL
        return gnttab.ffi.cast("void *", self.pages[(domid, ref)])

    def xengnttab_unmap(self, xgt: Any, address: Any, count: int) -> int:
        self.calls.append(("unmap", int(gnttab.ffi.cast("uintptr_t", address)), count))
        return 0

    def grant(self, domid: int, ref: int) -> Any:
        self.pages[(domid, ref)] = gnttab.ffi.new(f"char[{PAGE_SIZE}]")
        return self.pages[(domid, ref)]


_write = os.write  # the kernel's, not to be counted with the system calls a test counts


class _EvtHandle:
    """One handle's port as dom0's kernel keeps it: an event is delivered (the fd becomes
    readable) and masks the port; one sent while it is masked is held, and delivered when the
    port is unmasked."""

    def __init__(self, port: int) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.port = port
        self.lock = threading.Lock()
        self.masked = False
        self.held = False

    def send(self) -> None:
        with self.lock:
            if self.masked:
                self.held = True
            else:
                self._deliver()

    def unmask(self) -> None:
        with self.lock:
            self.masked = False
            if self.held:
                self.held = False
                self._deliver()

    def _deliver(self) -> None:
        self.masked = True
        _write(self.fd, (1).to_bytes(8, "little"))


class FakeEvtchn(Recorder):
    """Each open is a handle with an eventfd the test writes to as the hypervisor would; bound
    local ports count up from `local_port`."""

    def __init__(self, local_port: int = 40, bind_errno: int = 0) -> None:
        super().__init__()
        self.next_port = local_port
        self.bind_errno = bind_errno
        self.handles: dict[int, _EvtHandle] = {}  # by local port
        self.notified: list[int] = []

    def deliver(self, port: int) -> None:
        self.handles[port].send()

    def xenevtchn_open(self, logger: Any, flags: int) -> Any:
        handle = _EvtHandle(self.next_port)
        self.next_port += 1
        return handle

    def xenevtchn_close(self, xce: _EvtHandle) -> int:
        self.calls.append(("close", xce.port))
        os.close(xce.fd)
        return 0

    def xenevtchn_fd(self, xce: _EvtHandle) -> int:
        return xce.fd

    def xenevtchn_bind_interdomain(self, xce: _EvtHandle, domid: int, remote: int) -> int:
        self.calls.append(("bind", domid, remote))
        if self.bind_errno:
            evtchn.ffi.errno = self.bind_errno
            return -1
        self.handles[xce.port] = xce
        return xce.port

    def xenevtchn_unbind(self, xce: _EvtHandle, port: int) -> int:
        assert port == xce.port
        self.calls.append(("unbind", port))
        return 0

    def xenevtchn_notify(self, xce: _EvtHandle, port: int) -> int:
        assert port == xce.port
        self.notified.append(port)
        return 0

    def xenevtchn_pending(self, xce: _EvtHandle) -> int:
        try:
            os.read(xce.fd, 8)
        except BlockingIOError:
            evtchn.ffi.errno = errno.EAGAIN
            return -1
        return xce.port

    def xenevtchn_unmask(self, xce: _EvtHandle, port: int) -> int:
        self.calls.append(("unmask", port))
        xce.unmask()
        return 0


class FakeXenstore(Recorder):
    """A flat dict of nodes; results are cffi allocations kept alive until `free`."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, bytes] = {}
        self.perms: dict[str, list[tuple[int, int]]] = {}
        self.watches: list[tuple[str, str]] = []
        self.events: list[tuple[str, str]] = []
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.live: dict[int, Any] = {}
        self.tx_conflicts = 0
        self.next_tx = 5

    ffi = xenstore.ffi

    def _keep(self, obj: Any) -> Any:
        self.live[int(self.ffi.cast("uintptr_t", obj))] = obj
        return obj

    def free(self, ptr: Any) -> None:
        address = int(self.ffi.cast("uintptr_t", ptr))
        del self.live[address]
        self.live.pop(-address, None)  # the strings an array pointed to

    def _fail(self, code: int, null: bool = True) -> Any:
        self.ffi.errno = code
        return self.ffi.NULL if null else False

    def fire(self, path: str, token: str) -> None:
        self.events.append((path, token))
        os.write(self.fd, (1).to_bytes(8, "little"))

    def xs_open(self, flags: int) -> Any:
        return self.handle

    def xs_close(self, h: Any) -> None:
        self.calls.append(("close",))
        os.close(self.fd)

    def xs_read(self, h: Any, t: int, path: bytes, length: Any) -> Any:
        key = _s(path)
        if key not in self.nodes:
            return self._fail(errno.ENOENT)
        length[0] = len(self.nodes[key])
        return self.ffi.cast("void *", self._keep(self.ffi.new("char[]", self.nodes[key])))

    def xs_write(self, h: Any, t: int, path: bytes, data: Any, length: int) -> bool:
        key = _s(path)
        if key.startswith("/denied"):
            return bool(self._fail(errno.EACCES, null=False))
        self.nodes[key] = bytes(data[:length])
        self.calls.append(("write", t, key))
        return True

    def xs_rm(self, h: Any, t: int, path: bytes) -> bool:
        key = _s(path)
        if key not in self.nodes:
            return bool(self._fail(errno.ENOENT, null=False))
        for k in [k for k in self.nodes if k == key or k.startswith(key + "/")]:
            del self.nodes[k]
        return True

    def xs_mkdir(self, h: Any, t: int, path: bytes) -> bool:
        self.nodes.setdefault(_s(path), b"")
        self.calls.append(("mkdir", t, _s(path)))
        return True

    def xs_set_permissions(self, h: Any, t: int, path: bytes, perms: Any, num: int) -> bool:
        key = _s(path)
        if key not in self.nodes:
            return bool(self._fail(errno.ENOENT, null=False))
        self.perms[key] = [(perms[i].id, perms[i].perms) for i in range(num)]
        self.calls.append(("chmod", t, key))
        return True

    def xs_directory(self, h: Any, t: int, path: bytes, num: Any) -> Any:
        key = _s(path)
        if key not in self.nodes:
            return self._fail(errno.ENOENT)
        names = sorted(
            {k[len(key) + 1 :].split("/")[0] for k in self.nodes if k.startswith(key + "/")},
            reverse=True,
        )
        strings = [self.ffi.new("char[]", n.encode()) for n in names]
        array = self._keep(self.ffi.new("char *[]", strings))
        self.live[-int(self.ffi.cast("uintptr_t", array))] = strings
        num[0] = len(names)
        return array

    def xs_watch(self, h: Any, path: bytes, token: bytes) -> bool:
        self.watches.append((_s(path), _s(token)))
        return True

    def xs_unwatch(self, h: Any, path: bytes, token: bytes) -> bool:
        pair = (_s(path), _s(token))
        if pair not in self.watches:
            return bool(self._fail(errno.ENOENT, null=False))
        self.watches.remove(pair)
        return True

    def xs_fileno(self, h: Any) -> int:
        return self.fd

    def _event(self) -> Any:
        path, token = self.events.pop(0)
        strings = [self.ffi.new("char[]", path.encode()), self.ffi.new("char[]", token.encode())]
        vec = self._keep(self.ffi.new("char *[]", strings))
        self.live[-int(self.ffi.cast("uintptr_t", vec))] = strings
        return vec

    def xs_check_watch(self, h: Any) -> Any:
        if not self.events:
            return self._fail(errno.EAGAIN)
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        return self._event()

    def xs_read_watch(self, h: Any, num: Any) -> Any:
        num[0] = 2
        return self._event()

    def xs_transaction_start(self, h: Any) -> int:
        self.next_tx += 1
        return self.next_tx

    def xs_transaction_end(self, h: Any, t: int, abort: bool) -> bool:
        self.calls.append(("end", t, abort))
        if not abort and self.tx_conflicts:
            self.tx_conflicts -= 1
            return bool(self._fail(errno.EAGAIN, null=False))
        return True


class FakeXencall(Recorder):
    """libxencall: hypercall buffers are plain memory here; each hypercall is recorded with the
    bytes its buffer held."""

    def __init__(self, fail: int = 0) -> None:
        super().__init__()
        self.fail = fail
        self._buffers: list[Any] = []

    def xencall_open(self, logger: Any, flags: int) -> Any:
        return self.handle

    def xencall_close(self, xcall: Any) -> int:
        self.calls.append(("close",))
        return 0

    def xencall_alloc_buffer(self, xcall: Any, size: int) -> Any:
        buffer = physdev.ffi.new("char[]", size)
        self._buffers.append(buffer)
        return buffer

    def xencall_free_buffer(self, xcall: Any, pointer: Any) -> None:
        self.calls.append(("free",))

    def xencall2(self, xcall: Any, op: int, arg1: int, arg2: int) -> int:
        device = physdev.ffi.cast("struct physdev_pci_device *", arg2)
        self.calls.append(("call", op, arg1, int(device.seg), int(device.bus), int(device.devfn)))
        if self.fail:
            physdev.ffi.errno = self.fail
            return -1
        return 0
