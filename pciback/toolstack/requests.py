"""The toolstack role's control requests, as the daemon receives them (JSON objects):

    {"op": "attach", "domid": 3, "device": "0000:03:00.0",
     "vdev": 5, "permissive": false, "interrupt_control": false}     vdev, flags optional
    {"op": "detach", "domid": 3, "device": "0000:03:00.0"}
    {"op": "assignable_add", "device": "..."}
    {"op": "assignable_remove", "device": "...", "rebind": true}
    {"op": "assignable_list"}   {"op": "attachments"}

Every field is checked here; a wrong one is a one-line refusal.
"""

from __future__ import annotations

from typing import Any

from pciback.control.stub import StubError
from pciback.ports.domain import DomainError
from pciback.ports.xenstore import XenStoreError
from pciback.toolstack.attach import Toolstack, ToolstackError
from pciback.xenbus.parse import XenbusConfigError

OPS = frozenset(
    {"attach", "detach", "assignable_add", "assignable_remove", "assignable_list", "attachments"}
)
MAX_FIELD = 64


def serve(toolstack: Toolstack, request: dict[str, Any]) -> Any:
    """Run one request; every failure is a ToolstackError with a one-line message."""
    try:
        return _serve(toolstack, request)
    except (XenStoreError, DomainError, XenbusConfigError, StubError) as exc:
        raise ToolstackError(f"{request['op']}: {exc}") from None


def _serve(toolstack: Toolstack, request: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "assignable_list":
        return toolstack.assignable_list()
    if op == "attachments":
        return toolstack.listing()
    device = _string(request, "device")
    if op == "assignable_add":
        return toolstack.assignable_add(device)
    if op == "assignable_remove":
        return toolstack.assignable_remove(device, _flag(request, "rebind"))
    domid = _int(request, "domid")
    if op == "detach":
        return toolstack.detach(domid, device)
    if op == "attach":
        vdev = request.get("vdev")
        return toolstack.attach(
            domid,
            device,
            vdev=None if vdev is None else _int(request, "vdev"),
            permissive=_flag(request, "permissive"),
            interrupt_control=_flag(request, "interrupt_control"),
        )
    raise ToolstackError(f"unknown request {op!r}")


def _string(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise ToolstackError(f"{request['op']}: {key!r} must be a device such as 0000:03:00.0")
    return value


def _int(request: dict[str, Any], key: str) -> int:
    value = request.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ToolstackError(f"{request['op']}: {key!r} must be a number")
    return value


def _flag(request: dict[str, Any], key: str) -> bool:
    value = request.get(key, False)
    if not isinstance(value, bool):
        raise ToolstackError(f"{request['op']}: {key!r} must be true or false")
    return value
