"""Which control requests change the daemon's state, what each one changed in words, and the
journal line it leaves (the control server's Audit, pciback.daemon.control).

An operator (or a script) that changed something is told what changed, not just "ok": a slot
removed or a permissive flag set used to succeed silently. The same words go to the audit
journal with who asked (uid and pid from SO_PEERCRED), when, the request and its outcome.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pciback.daemon.audit_journal import AuditJournal
from pciback.daemon.control import PeerCred

# Every request that changes something; the others (list, slots, config, ...) only read.
CHANGING_OPS = frozenset(
    {
        "attach",
        "detach",
        "assignable_add",
        "assignable_remove",
        "new_slot",
        "remove_slot",
        "permissive_add",
        "permissive_remove",
        "interrupt_control_add",
        "interrupt_control_remove",
        "quirk_add",
        "irq_handler_state",
        "unseize",
    }
)
MAX_JOURNALED_REQUEST = 1024  # bytes of a request's JSON kept in its journal line
MAX_DETAIL = 1024


def _field(result: Any, key: str, default: object) -> object:
    return result.get(key, default) if isinstance(result, dict) else default


def describe(request: dict[str, Any], result: Any) -> str:
    """What a successful changing request changed, in one line."""
    op = request["op"]
    arg = request.get("arg")
    device = _field(result, "device", request.get("device"))
    domid = _field(result, "domid", request.get("domid"))
    if op == "attach":
        guest = _field(result, "guest", None)
        return f"attached {device} to domain {domid}" + (f" as {guest}" if guest else "")
    if op == "detach":
        return f"detached {device} from domain {domid}"
    if op == "assignable_add":
        seized = _field(result, "seized", True)
        return f"{device} made assignable" if seized else f"{device} was assignable already"
    if op == "assignable_remove":
        driver = _field(result, "driver", None)
        return f"{device} no longer assignable; " + (
            f"returned to {driver}" if driver else "left with no driver"
        )
    if op == "new_slot":
        seized = ", ".join(str(a) for a in result) if isinstance(result, list) and result else ""
        return f"slot {arg} added" + (f"; seized {seized}" if seized else "; nothing seized")
    if op == "remove_slot":
        removed = _field(result, "removed", None)
        if isinstance(removed, list) and removed:
            return "removed slot " + ", ".join(str(a) for a in removed)
        return f"slot {arg} removed"
    if op in ("permissive_add", "permissive_remove"):
        return f"permissive {'on' if op.endswith('add') else 'off'} for {result}"
    if op in ("interrupt_control_add", "interrupt_control_remove"):
        state = "on" if op.endswith("add") else "off"
        return f"interrupt control {state} for {result}"
    if op == "quirk_add":
        quirk, live = _field(result, "quirk", result), _field(result, "live", [])
        held = ", ".join(str(d) for d in live) if isinstance(live, list) else ""
        return f"quirk {quirk} added" + (f"; in the view of domain {held} now" if held else "")
    if op == "irq_handler_state":
        return f"irq handler of {arg} turned {'on' if result else 'off'}"
    if op == "unseize":
        return f"{arg} released from the pool"
    return f"{op} done"


def _bounded_request(request: dict[str, Any]) -> object:
    """The request as journaled: whole when short; else its op and size (a 64 KiB argument
    must not make the journal rotate every few lines)."""
    text = json.dumps(request, sort_keys=True)
    if len(text) <= MAX_JOURNALED_REQUEST:
        return request
    return {"op": str(request["op"])[:64], "truncated_from": len(text)}


class ChangeAudit:
    """The daemon's Audit: describes changes, and journals them when it has a journal."""

    def __init__(self, journal: AuditJournal | None) -> None:
        self.journal = journal

    def changes(self, request: dict[str, Any]) -> bool:
        return request.get("op") in CHANGING_OPS

    def describe(self, request: dict[str, Any], result: Any) -> str:
        return describe(request, result)

    def record(self, peer: PeerCred, request: dict[str, Any], ok: bool, detail: str) -> None:
        if self.journal is None:
            return
        now = time.time()
        self.journal.append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1000):03d}Z",
                "uid": peer.uid,
                "pid": peer.pid,
                "request": _bounded_request(request),
                "outcome": "ok" if ok else "failed",
                "detail": detail[:MAX_DETAIL],
            }
        )
