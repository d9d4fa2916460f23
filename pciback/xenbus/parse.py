"""Strict, bounded parsing of the values a backend reads from xenstore.

Values come from the toolstack and from the guest; either may be wrong, the guest may be hostile.
Every reader here names the node and what it expected, so the per-guest error is actionable.
"""

from __future__ import annotations

import re

from pciback.control.hide import format_address
from pciback.ports.xenstore import StoreOps
from pciback.xenbus.states import XenbusState

MAX_DEVS = 256  # a virtual bus has 32 slots of 8 functions; passthrough lists no more
_BDF = re.compile(r"([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-9a-fA-F]{1,2})")
_UINT = re.compile(r"[0-9]{1,10}")


class XenbusConfigError(ValueError):
    """Xenstore holds something the backend cannot accept for this guest."""

    def __init__(self, path: str, problem: str, code: int = 22) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.code = code  # the errno written to the error node (EINVAL unless said otherwise)


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def read_required(store: StoreOps, path: str) -> str:
    value = store.read(path)
    if value is None:
        raise XenbusConfigError(path, "missing", code=2)
    return value


def parse_uint(path: str, text: str, limit: int) -> int:
    """A decimal unsigned number no greater than `limit`."""
    text = text.strip()
    if not _UINT.fullmatch(text):
        raise XenbusConfigError(path, f"expected a decimal number, found {_show(text)}")
    value = int(text)
    if value > limit:
        raise XenbusConfigError(path, f"{value} is above the limit {limit}")
    return value


def read_uint(store: StoreOps, path: str, limit: int) -> int:
    return parse_uint(path, read_required(store, path), limit)


def parse_state(path: str, text: str) -> XenbusState:
    """A state node the toolstack wrote: strict, unlike `state_or_unknown` for the guest's."""
    return XenbusState(parse_uint(path, text, XenbusState.RECONFIGURED))


def parse_bdf(path: str, text: str) -> str:
    """`D:B:S.F` in hex as the toolstack and the protocol write it (function may be `%02x`);
    returned canonical `DDDD:BB:DD.F`."""
    m = _BDF.fullmatch(text.strip())
    if m is None:
        raise XenbusConfigError(path, f"expected DDDD:BB:DD.F, found {_show(text)}")
    domain, bus, slot, function = (int(g, 16) for g in m.groups())
    if slot > 0x1F or function > 7:
        raise XenbusConfigError(path, f"device {slot:#x} or function {function} out of range")
    return format_address(domain, bus, slot, function)


def read_bdf(store: StoreOps, path: str) -> str:
    return parse_bdf(path, read_required(store, path))


def protocol_bdf(address: str) -> str:
    """The form the PV protocol publishes in vdev-N: the function as two hex digits."""
    return f"{address[:-1]}{int(address[-1], 16):02x}"
