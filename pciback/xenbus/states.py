"""Xenbus device states (xen/include/public/io/xenbus.h)."""

from __future__ import annotations

from enum import IntEnum


class XenbusState(IntEnum):
    UNKNOWN = 0
    INITIALISING = 1
    INIT_WAIT = 2
    INITIALISED = 3
    CONNECTED = 4
    CLOSING = 5
    CLOSED = 6
    RECONFIGURING = 7
    RECONFIGURED = 8


def state_or_unknown(text: str | None) -> XenbusState:
    """A state node's value; absent, malformed or out-of-range reads as UNKNOWN, as in Linux."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 2:
        return XenbusState.UNKNOWN
    value = int(text)
    return XenbusState(value) if value <= XenbusState.RECONFIGURED else XenbusState.UNKNOWN
