"""The xenstore port: the hierarchical key-value store through which the toolstack, the guest's
frontend and this backend negotiate.

Semantics follow xenstored: absolute paths, writes create missing parents with empty values,
`rm` removes a subtree, a watch fires once when set and again for every change at or below its
path, and a transaction either commits all its changes or fails with a conflict (the caller
retries, a bounded number of times).

Permissions are xenstored's: a node has an owner, who (like dom0) may do anything with it, a
default access for every other domain, and per-domain exceptions; a node created inherits its
parent's permissions (a guest owns what it creates). A guest can only write where it may, so a
directory meant for the guest must be given to it before the guest may look at it.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntFlag
from typing import Protocol, TypeVar

# Limits of the xenstore wire protocol (xen/include/public/io/xs_wire.h).
PATH_MAX = 3072
VALUE_MAX = 4096
TX_ATTEMPTS = 16

_PATH = re.compile(r"(/[A-Za-z0-9_@\-.]+)+|/|@[A-Za-z]+")

T = TypeVar("T")


class XenStoreError(OSError):
    """A store operation failed; `errno` is the xenstored error (ENOENT, EACCES, EAGAIN, ...)."""

    def __init__(self, code: int, path: str, message: str = "") -> None:
        super().__init__(code, message or errno.errorcode.get(code, str(code)), path)


class Access(IntFlag):
    """XS_PERM_* (xenstore_lib.h)."""

    NONE = 0
    READ = 1
    WRITE = 2


_ACCESS_LETTERS = {
    "n": Access.NONE,
    "r": Access.READ,
    "w": Access.WRITE,
    "b": Access.READ | Access.WRITE,
}
_PERMISSION = re.compile(r"([nrwb])([0-9]{1,5})")


@dataclass(frozen=True, slots=True)
class Permission:
    """One entry of a node's permission list. The first entry of a list names the owner and
    the access every domain not listed after it gets; later entries are per-domain."""

    domid: int
    access: Access = Access.NONE

    def __str__(self) -> str:
        """xenstore-chmod's form: n0, r5, w5, b5."""
        letter = next(k for k, v in _ACCESS_LETTERS.items() if v == self.access)
        return f"{letter}{self.domid}"

    @classmethod
    def parse(cls, text: str) -> Permission:
        m = _PERMISSION.fullmatch(text)
        if m is None or int(m[2]) > 0xFFFF:
            raise ValueError(f"not a xenstore permission: {text[:16]!r} (n0, r5, w5 or b5)")
        return cls(int(m[2]), _ACCESS_LETTERS[m[1]])


def permissions(*texts: str) -> tuple[Permission, ...]:
    """A permission list from xenstore-chmod's words: permissions("n0", "r5")."""
    return tuple(Permission.parse(t) for t in texts)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    path: str  # the node that changed (or the watched path when the watch is first set)
    token: str


class StoreOps(Protocol):
    """The node operations, available on the store itself and inside a transaction."""

    def read(self, path: str) -> str | None:
        """The node's value, None when it does not exist."""
        ...

    def write(self, path: str, value: str) -> None: ...

    def rm(self, path: str) -> None:
        """Remove the node and everything below it; absent nodes are not an error."""
        ...

    def list(self, path: str) -> list[str] | None:
        """Child names, sorted; None when the node does not exist."""
        ...

    def mkdir(self, path: str) -> None:
        """Create the node (empty) and missing parents; an existing node is left as it is."""
        ...

    def set_permissions(self, path: str, perms: Sequence[Permission]) -> None:
        """Replace the node's permission list (ENOENT when absent, EACCES when not ours)."""
        ...


class Transaction(StoreOps, Protocol):
    def commit(self) -> bool:
        """Apply every change at once; False when a concurrent change conflicts."""
        ...

    def abort(self) -> None: ...


class XenStore(StoreOps, Protocol):
    def transaction(self) -> Transaction: ...

    def watch(self, path: str, token: str) -> None: ...

    def unwatch(self, path: str, token: str) -> None: ...

    def next_event(self, timeout: float | None = 0.0) -> WatchEvent | None:
        """The next pending watch event, waiting up to `timeout` seconds (None: forever, or
        until `wake`)."""
        ...

    def wake(self) -> None:
        """Make a `next_event` waiting now, or the next one to wait, return at once (None when
        no event is pending). Safe from any thread, and after `close`."""
        ...

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when an event is pending, when there is one."""
        ...


def check_path(path: str) -> str:
    """`path` when it is a well-formed absolute path or special watch name; else EINVAL."""
    if len(path) > PATH_MAX or not _PATH.fullmatch(path) or "//" in path:
        raise XenStoreError(errno.EINVAL, path[:80], "malformed xenstore path")
    return path


def check_value(path: str, value: str) -> str:
    if len(value.encode("utf-8", "surrogateescape")) > VALUE_MAX:
        raise XenStoreError(errno.E2BIG, path, f"value longer than {VALUE_MAX} bytes")
    return value


def join(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *names])


def run_transaction(store: XenStore, body: Callable[[Transaction], T]) -> T:
    """Run `body` in a transaction, retrying on conflict at most TX_ATTEMPTS times."""
    for _ in range(TX_ATTEMPTS):
        tx = store.transaction()
        try:
            result = body(tx)
        except BaseException:
            tx.abort()
            raise
        if tx.commit():
            return result
    raise XenStoreError(errno.EAGAIN, "", f"transaction conflicted {TX_ATTEMPTS} times")
