"""The recorder's side of `pciback trace record`: start a recording in the daemon, take its
ops as they come and write them to the trace file, stop it when asked.

The disk is only ever written here, in the recorder's process: the daemon's op path never
waits for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from pciback.daemon.control import ControlError
from pciback.trace.format import write_line

# One control request: (op, fields) -> the daemon's result. The CLI sends it over the control
# socket; a test may hand it to the daemon directly.
Send = Callable[[str, dict[str, Any]], Any]
POLL_S = 0.1


class RecordError(Exception):
    """The recording could not start or its answers were not understood: one line."""


@dataclass(frozen=True, slots=True)
class Recorded:
    ops: int
    reason: str
    error: str | None = None  # why the daemon was lost, for reason "lost"


def record(
    send: Send,
    out: TextIO,
    domid: int,
    device: str | None,
    max_ops: int,
    should_stop: Callable[[], bool],
    *,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Recorded:
    start: dict[str, Any] = {"domid": domid, "max_ops": max_ops}
    if device is not None:
        start["device"] = device
    try:
        reply = send("trace_start", start)
        ident, header = reply["id"], reply["header"]
        if type(ident) is not int or not isinstance(header, dict):
            raise TypeError("id or header")
    except ControlError as exc:
        raise RecordError(str(exc)) from None
    except (TypeError, KeyError) as exc:
        raise RecordError(f"the daemon's answer is not understood: {exc}") from None
    write_line(out, header)
    out.flush()
    which = {"domid": domid, "id": ident}
    ops = 0
    stopping = False
    try:
        while True:
            if not stopping and should_stop():
                send("trace_stop", which)
                stopping = True
            batch = _batch(send("trace_read", which))
            for line in batch["devices"]:
                write_line(out, line)
            for line in batch["ops"]:
                write_line(out, line)
            ops += len(batch["ops"])
            out.flush()
            if batch["ended"] is not None:
                write_line(out, {"type": "end", "ops": ops, "reason": batch["ended"]})
                return Recorded(ops, str(batch["ended"]))
            if not batch["ops"]:
                sleep(poll_s)
    except (ControlError, RecordError) as exc:
        # What was taken is a trace still: closed as cut short, for a replay of what it holds.
        write_line(out, {"type": "end", "ops": ops, "reason": "lost"})
        return Recorded(ops, "lost", str(exc))


def _batch(reply: Any) -> dict[str, Any]:
    if (
        not isinstance(reply, dict)
        or not isinstance(reply.get("devices"), list)
        or not isinstance(reply.get("ops"), list)
        or not all(isinstance(x, dict) for x in reply["devices"] + reply["ops"])
        or not (reply.get("ended") is None or isinstance(reply.get("ended"), str))
    ):
        raise RecordError("the daemon's answer to trace_read is not understood")
    return reply
