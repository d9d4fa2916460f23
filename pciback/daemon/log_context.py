"""The guest and the device a log line is about, as fields of their own, so that JSON logs can
be filtered by domain or device without parsing messages.

A call may name them (`extra={"domid": 3, "device": "0000:03:00.0"}`); otherwise they are
taken from the call's own arguments, never from the rendered message: an integer argument whose
conversion follows "dom" or "domain " in the format is the domid (a "dom%d/%d" pair gives the
devid too), and a string argument that is exactly a canonical address is the device. Text a
guest wrote (a xenstore value, a frontend's error) reaches a log line as part of an argument
and cannot pass for another guest's fields this way.
"""

from __future__ import annotations

import logging
import re
from typing import Any

FIELDS = ("domid", "devid", "device")
_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?([diouxXeEfFgGcrsa%])")
_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]")
_DOMID_MAX = 0x7FF0  # DOMID_FIRST_RESERVED: anything above is not a guest


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """domid, devid and device of this record, those that are known."""
    found: dict[str, Any] = {}
    for name in FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            found[name] = value
    inferred = _from_arguments(record.msg, record.args)
    for name, value in inferred.items():
        found.setdefault(name, value)
    return found


def _from_arguments(fmt: object, args: object) -> dict[str, Any]:
    if not isinstance(fmt, str) or not isinstance(args, tuple) or not args:
        return {}
    found: dict[str, Any] = {}
    index = 0
    for match in _SPEC.finditer(fmt):
        if match.group(1) == "%":
            continue
        if "*" in match.group(0) or index >= len(args):
            return found  # a width taken from the arguments: stop rather than misalign
        value = args[index]
        index += 1
        before = fmt[: match.start()]
        if isinstance(value, int) and not isinstance(value, bool):
            if "domid" not in found and before.endswith(("dom", "domain ")):
                if 0 <= value < _DOMID_MAX:
                    found["domid"] = value
            elif "domid" in found and "devid" not in found and before.endswith("dom%d/"):
                found["devid"] = value
        elif isinstance(value, str) and "device" not in found and _ADDRESS.fullmatch(value):
            found["device"] = value
    return found
