"""The xenstore port: the hierarchical key-value store through which the toolstack, the guest's
frontend and this backend negotiate.

Semantics follow xenstored: absolute paths, writes create missing parents with empty values,
`rm` removes a subtree, a watch fires once when set and again for every change at or below its
path, and a transaction either commits all its changes or fails with a conflict (the caller
retries, a bounded number of times).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from dataclasses import dataclass
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
        """The next pending watch event, waiting up to `timeout` seconds (None: forever)."""
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
