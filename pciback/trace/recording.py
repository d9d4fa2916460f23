"""A recording inside the daemon: the ops one domain sends, with their answers, held in memory
until the recorder (`pciback trace record`) takes them over the control socket.

The op path only appends a tuple of integers under a lock; formatting and the disk are the
recorder's, on its side of the socket. The recording stops at `max_ops` rather than keeping
the last ones in a ring: a replay needs the stream from its start, since every answer may
depend on what the guest wrote before. A recorder that stops asking for ops (killed, hung)
loses its recording after LEASE_S, so nothing it left behind grows or slows the guest for
long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from pciback.protocol.ops import OpRequest, OpResult
from pciback.trace.format import CONFIG_CMDS, Header, TraceOp, guest_address

LEASE_S = 30.0
# What one answer holds: an op is one unit (at most ~200 bytes of JSON), a device ten (its
# quirks can take ~1.8 KB): under the control socket's 64 KiB.
READ_BATCH = 256
DEVICE_UNITS = 10
_WRITE = 1  # Cmd.CONF_WRITE, without the enum lookup

# seq, cmd, device, domain, bus, devfn, offset, size, value asked, err, value answered
_Raw = tuple[int, int, str | None, int, int, int, int, int, int, int, int]


class _New(NamedTuple):
    """A device reached for the first time, queued before its first op."""

    physical: str
    guest: str


@dataclass(frozen=True, slots=True)
class Batch:
    devices: list[tuple[str, str]]  # (physical, guest address) first seen since the last batch
    ops: list[TraceOp]
    ended: str | None  # the end reason, once the recording is over and everything was taken
    count: int  # ops recorded so far


class Recording:
    def __init__(
        self,
        ident: int,
        domid: int,
        device: str | None,
        max_ops: int,
        policy: str,
        from_connect: bool,
        *,
        lease_s: float = LEASE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ident = ident
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.header = Header(domid, device, policy, started, max_ops, from_connect)
        self.lease_s = lease_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: list[_Raw | _New] = []
        self._count = 0
        self._seen: set[str] = set()
        self._unwrap: list[Callable[[], None]] = []
        self._read_at = clock()
        self.ended: str | None = None

    @property
    def domid(self) -> int:
        return self.header.domid

    # -- the op path -----------------------------------------------------------------------------
    def add(self, req: OpRequest, result: OpResult, device: str | None) -> None:
        """One op served to the domain; `device` is the physical function it reached."""
        if self.header.device is not None and device != self.header.device:
            return
        now = self._clock()
        with self._lock:
            if self.ended is not None:
                return
            if now - self._read_at > self.lease_s:
                expired = True
            else:
                expired = False
                if device is not None and device not in self._seen:
                    self._seen.add(device)
                    address = guest_address(req.domain, req.bus, req.devfn) or ""
                    self._pending.append(_New(device, address))
                seq = self._count
                self._count += 1
                self._pending.append(
                    (seq, req.cmd, device, req.domain, req.bus, req.devfn, req.offset,
                     req.size, req.value, int(result.err), result.value)
                )  # fmt: skip
                full = self._count >= self.header.max_ops
        if expired:
            self.end("expired")
        elif full:
            self.end("limit")

    # -- the control side ------------------------------------------------------------------------
    def on_end(self, unwrap: Callable[[], None]) -> bool:
        """Run `unwrap` when the recording ends; False (and not kept) if it already has."""
        with self._lock:
            if self.ended is None:
                self._unwrap.append(unwrap)
                return True
        return False

    def end(self, reason: str) -> None:
        with self._lock:
            if self.ended is not None:
                return
            self.ended = reason
            if reason == "expired":  # nobody is left to take them
                self._pending.clear()
            unwrap, self._unwrap = self._unwrap, []
        for undo in unwrap:
            undo()

    def expired(self) -> bool:
        return self._clock() - self._read_at > self.lease_s

    def take(self, limit: int = READ_BATCH) -> Batch:
        """The oldest entries, `limit` units' worth; a device comes with the ops after it."""
        devices: list[tuple[str, str]] = []
        ops: list[TraceOp] = []
        with self._lock:
            self._read_at = self._clock()
            units = taken = 0
            for entry in self._pending:
                units += DEVICE_UNITS if isinstance(entry, _New) else 1
                if units > limit:
                    break
                taken += 1
            raw, self._pending = self._pending[:taken], self._pending[taken:]
            done = self.ended if not self._pending else None
            count = self._count
        for entry in raw:
            if isinstance(entry, _New):
                devices.append((entry.physical, entry.guest))
            else:
                ops.append(_op(entry))
        return Batch(devices, ops, done, count)


def _op(raw: _Raw) -> TraceOp:
    seq, cmd, device, domain, bus, devfn, offset, size, asked, err, answer = raw
    address = guest_address(domain, bus, devfn)
    if cmd not in CONFIG_CMDS:  # interrupt ops: no MSI-X entries, counts or PIRQs kept
        return TraceOp(seq, cmd, device, address, err)
    written = asked & 0xFFFFFFFF if cmd == _WRITE else None
    return TraceOp(seq, cmd, device, address, err, offset, size, written, answer & 0xFFFFFFFF)
