"""The xenstore port over libxenstore (xs_open and friends).

One handle serves the daemon: libxenstore serialises requests on it and, once `xs_fileno` has
been asked for, reads watch events on a thread of its own, so `next_event` can poll the fd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from collections.abc import Sequence
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.ports.xenstore import (
    Permission,
    WatchEvent,
    XenStoreError,
    check_path,
    check_value,
)
from pciback.xen._loader import XenUnavailable, load

XBT_NULL = 0
XS_WATCH_PATH = 0
XS_WATCH_TOKEN = 1
MAX_CHILDREN = 65536  # a directory listing longer than this is not one the backend asked for
MAX_PERMS = 16

TYPEDEFS = {"xs_transaction_t": "uint32_t"}
OPAQUE = ("struct xs_handle",)
STRUCTS = ("struct xs_permissions { unsigned int id; unsigned int perms; };",)
DECLS = (
    "struct xs_handle *xs_open(unsigned long flags);",
    "void xs_close(struct xs_handle *xsh);",
    "void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len);",
    "bool xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data,"
    " unsigned int len);",
    "bool xs_rm(struct xs_handle *h, xs_transaction_t t, const char *path);",
    "bool xs_mkdir(struct xs_handle *h, xs_transaction_t t, const char *path);",
    "bool xs_set_permissions(struct xs_handle *h, xs_transaction_t t, const char *path,"
    " struct xs_permissions *perms, unsigned int num_perms);",
    "char **xs_directory(struct xs_handle *h, xs_transaction_t t, const char *path,"
    " unsigned int *num);",
    "bool xs_watch(struct xs_handle *h, const char *path, const char *token);",
    "bool xs_unwatch(struct xs_handle *h, const char *path, const char *token);",
    "int xs_fileno(struct xs_handle *h);",
    "char **xs_check_watch(struct xs_handle *h);",
    "char **xs_read_watch(struct xs_handle *h, unsigned int *num);",
    "xs_transaction_t xs_transaction_start(struct xs_handle *h);",
    "bool xs_transaction_end(struct xs_handle *h, xs_transaction_t t, bool abort);",
)
HEADERS = ("xenstore.h",)
CONSTANTS = {
    "XBT_NULL": XBT_NULL,
    "XS_WATCH_PATH": XS_WATCH_PATH,
    "XS_WATCH_TOKEN": 1,
    # struct xs_permissions as declared above, and the access bits Permission carries
    "sizeof(struct xs_permissions)": 8,
    "offsetof(struct xs_permissions, id)": 0,
    "offsetof(struct xs_permissions, perms)": 4,
    "XS_PERM_NONE": 0,
    "XS_PERM_READ": 1,
    "XS_PERM_WRITE": 2,
}

ffi = FFI()
ffi.cdef(
    "\n".join(
        [f"typedef {t} {n};" for n, t in TYPEDEFS.items()]
        + [f"{s};" for s in OPAQUE]
        + list(STRUCTS)
        + list(DECLS)
        + ["void free(void *ptr);"]  # the C library's: libxenstore returns malloc'ed memory
    )
)


def library() -> Any:
    return load(ffi, "xenstore", ("libxenstore.so.4", "libxenstore.so.3.0"), "libxenstore4")


def _libc() -> Any:
    return ffi.dlopen(None)


def _encode(path: str) -> bytes:
    return check_path(path).encode("ascii")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class _Ops:
    """read/write/rm/list against one transaction id (XBT_NULL: none)."""

    def __init__(self, store: XenStoreClient, tx: int) -> None:
        self._store = store
        self._tx = tx

    def _fail(self, path: str, what: str) -> XenStoreError:
        code = ffi.errno or errno.EIO
        return XenStoreError(code, path, f"{what}: {errno.errorcode.get(code, code)}")

    def read(self, path: str) -> str | None:
        raw = _encode(path)
        length = ffi.new("unsigned int *")
        ffi.errno = 0
        value = self._store.lib.xs_read(self._store.handle(), self._tx, raw, length)
        if value == ffi.NULL:
            if ffi.errno == errno.ENOENT:
                return None
            raise self._fail(path, "xs_read")
        try:
            return _decode(bytes(ffi.buffer(value, length[0])))
        finally:
            self._store.libc.free(value)

    def write(self, path: str, value: str) -> None:
        raw = _encode(path)
        data = check_value(path, value).encode("utf-8", "surrogateescape")
        ffi.errno = 0
        if not self._store.lib.xs_write(self._store.handle(), self._tx, raw, data, len(data)):
            raise self._fail(path, "xs_write")

    def rm(self, path: str) -> None:
        raw = _encode(path)
        ffi.errno = 0
        if not self._store.lib.xs_rm(self._store.handle(), self._tx, raw) and (
            ffi.errno != errno.ENOENT
        ):
            raise self._fail(path, "xs_rm")

    def mkdir(self, path: str) -> None:
        raw = _encode(path)
        ffi.errno = 0
        if not self._store.lib.xs_mkdir(self._store.handle(), self._tx, raw):
            raise self._fail(path, "xs_mkdir")

    def set_permissions(self, path: str, perms: Sequence[Permission]) -> None:
        raw = _encode(path)
        if not 0 < len(perms) <= MAX_PERMS:
            raise XenStoreError(errno.EINVAL, path, f"1 to {MAX_PERMS} permission entries")
        array = ffi.new("struct xs_permissions[]", len(perms))
        for i, perm in enumerate(perms):
            array[i].id = perm.domid
            array[i].perms = int(perm.access)
        ffi.errno = 0
        if not self._store.lib.xs_set_permissions(
            self._store.handle(), self._tx, raw, array, len(perms)
        ):
            raise self._fail(path, "xs_set_permissions")

    def list(self, path: str) -> list[str] | None:
        raw = _encode(path)
        num = ffi.new("unsigned int *")
        ffi.errno = 0
        names = self._store.lib.xs_directory(self._store.handle(), self._tx, raw, num)
        if names == ffi.NULL:
            if ffi.errno == errno.ENOENT:
                return None
            raise self._fail(path, "xs_directory")
        try:  # one allocation holds the array and the strings
            if num[0] > MAX_CHILDREN:
                raise XenStoreError(errno.E2BIG, path, f"{num[0]} children")
            return sorted(_decode(ffi.string(names[i])) for i in range(num[0]))
        finally:
            self._store.libc.free(names)


class XenTransaction(_Ops):
    def __init__(self, store: XenStoreClient, tx: int) -> None:
        super().__init__(store, tx)
        self._done = False

    def commit(self) -> bool:
        self._finish()
        ffi.errno = 0
        if self._store.lib.xs_transaction_end(self._store.handle(), self._tx, False):
            return True
        if ffi.errno == errno.EAGAIN:
            return False
        raise self._fail("", "xs_transaction_end")

    def abort(self) -> None:
        if not self._done:
            self._finish()
            self._store.lib.xs_transaction_end(self._store.handle(), self._tx, True)

    def _finish(self) -> None:
        if self._done:
            raise XenStoreError(errno.EINVAL, "", "transaction already ended")
        self._done = True


class XenStoreClient(_Ops):
    """A connection to xenstored (or the xenbus device); implements the XenStore port."""

    def __init__(self, lib: Any = None, flags: int = 0) -> None:
        self.lib = lib if lib is not None else library()
        self.libc = _libc()
        self._lock = threading.Lock()
        ffi.errno = 0
        handle = self.lib.xs_open(flags)
        if handle == ffi.NULL:
            code = ffi.errno or errno.ENOENT
            raise XenUnavailable(
                f"xs_open failed ({errno.errorcode.get(code, code)}): is xenstored running and "
                "/dev/xen/xenbus or /run/xenstored/socket reachable?"
            )
        self._handle: Any = handle
        # Rung by wake(): a wait for watch events sleeps on it too, so a daemon stopping does
        # not wait for an event or a timeout to notice.
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        super().__init__(self, XBT_NULL)

    def handle(self) -> Any:
        if self._handle is None:
            raise XenStoreError(errno.EBADF, "", "xenstore connection closed")
        return self._handle

    def transaction(self) -> XenTransaction:
        ffi.errno = 0
        tx = int(self.lib.xs_transaction_start(self.handle()))
        if tx == XBT_NULL:
            raise self._fail("", "xs_transaction_start")
        return XenTransaction(self, tx)

    def watch(self, path: str, token: str) -> None:
        raw = _encode(path)
        ffi.errno = 0
        if not self.lib.xs_watch(self.handle(), raw, token.encode("utf-8")):
            raise self._fail(path, "xs_watch")

    def unwatch(self, path: str, token: str) -> None:
        raw = _encode(path)
        ffi.errno = 0
        if not self.lib.xs_unwatch(self.handle(), raw, token.encode("utf-8")):
            raise self._fail(path, "xs_unwatch")

    def fileno(self) -> int | None:
        fd = int(self.lib.xs_fileno(self.handle()))
        return fd if fd >= 0 else None

    def next_event(self, timeout: float | None = 0.0) -> WatchEvent | None:
        """Waiting forever (None) is a poll too, not xs_read_watch: a call blocked inside
        libxenstore could not be woken."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        fd = self.fileno()
        if fd is None:
            raise self._fail("", "xs_fileno")
        # poll, not select: select refuses a descriptor above 1023, which a dom0 serving many
        # guests (an event channel and a page each) reaches.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        while True:
            # Events already read off the fd by libxenstore do not make it readable again.
            event = self._check()
            if event is not None:
                return event
            left = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            ready = {ready_fd for ready_fd, _ in poller.poll(left)}
            if self._wake_fd in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_fd, 8)
                return self._check()
            if deadline is not None or not ready:
                return self._check() if ready else None
            # Waiting forever and the fd was readable without a whole event: wait again.

    def wake(self) -> None:
        with self._lock:
            if self._handle is not None:
                with contextlib.suppress(BlockingIOError):  # a saturated counter still wakes
                    os.write(self._wake_fd, (1).to_bytes(8, "little"))

    def _check(self) -> WatchEvent | None:
        ffi.errno = 0
        vec = self.lib.xs_check_watch(self.handle())
        if vec == ffi.NULL and ffi.errno == errno.EAGAIN:
            return None
        return self._event(vec, "xs_check_watch")

    def _event(self, vec: Any, what: str) -> WatchEvent:
        if vec == ffi.NULL:
            raise self._fail("", what)
        try:
            return WatchEvent(
                _decode(ffi.string(vec[XS_WATCH_PATH])), _decode(ffi.string(vec[XS_WATCH_TOKEN]))
            )
        finally:
            self.libc.free(vec)

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
            if handle is not None:
                os.close(self._wake_fd)
        if handle is not None:
            self.lib.xs_close(handle)
