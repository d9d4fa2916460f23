"""The audit as a text table (one line per field, every byte covered) and as JSON."""

from __future__ import annotations

import json
from typing import Any

from pciback.audit.model import Audit, FieldAudit, Row
from pciback.audit.summary import reach

_COLUMNS = ("offset", "register", "bits", "field", "backing", "normal", "permissive", "hook")


def _offsets(row: Row) -> str:
    if row.width <= 4:
        return f"{row.offset:#05x}"
    return f"{row.offset:#05x}-{row.end - 1:#05x}"


def render_text(audit: Audit, title: str) -> str:
    lines = [f"pciback audit of {title} ({audit.address}, {audit.size} bytes)"]
    lines.extend(f"problem: {p}" for p in audit.problems)
    region = None
    for row in audit.rows:
        if row.region != region:
            region = row.region
            lines.append("")
            lines.append(f"== {region}")
            lines.append("  ".join(f"{c:<{_width(c)}}" for c in _COLUMNS) + "  reason [source]")
        head = row.reason if row.reason and len(row.fields) > 1 else ""
        if head:
            lines.append(
                f"{_offsets(row):<{_width('offset')}}  {row.register}: {head} [{row.source}]"
            )
        for fld in reversed(row.fields):  # high bits first, as the spec draws registers
            cells = (
                _offsets(row),
                row.register,
                fld.bits,
                fld.name,
                fld.backing,
                fld.normal,
                fld.permissive,
                fld.hook,
            )
            reason = fld.reason or (row.reason if len(row.fields) == 1 else "")
            text = "  ".join(
                f"{c:<{_width(name)}}" for c, name in zip(cells, _COLUMNS, strict=True)
            )
            lines.append(f"{text}  {reason} [{fld.source}]".rstrip())
    lines.append("")
    lines.extend(summary_lines(audit))
    return "\n".join(lines) + "\n"


def _width(column: str) -> int:
    return {
        "offset": 11,
        "register": 20,
        "bits": 5,
        "field": 24,
        "backing": 12,
        "normal": 10,
        "permissive": 10,
        "hook": 28,
    }[column]


def summary_lines(audit: Audit) -> list[str]:
    lines: list[str] = []
    for permissive in (False, True):
        mode = "permissive" if permissive else "normal"
        lines.append(f"== what the guest can change on the device ({mode} mode)")
        reaches = reach(audit, permissive)
        if not reaches:
            lines.append("  nothing")
        for item in reaches:
            row = item.row
            parts = []
            if item.direct and row.width > 4:
                parts.append(f"every bit of its {row.width} bytes")
            elif item.direct:
                names = ", ".join(f"{f.name}[{f.bits}]" for f in reversed(item.direct))
                parts.append(f"bits {item.direct_mask:#0{2 + 2 * row.width}x} ({names})")
            if item.hooked:
                hooks = ", ".join(f"{f.name} via {_write_hook(f)}" for f in reversed(item.hooked))
                parts.append(f"through hooks: {hooks}")
            lines.append(f"  {_offsets(row)} {row.register:<20} {'; '.join(parts)}")
    return lines


def _write_hook(fld: FieldAudit) -> str:
    return next(h for h in fld.hook.split(", ") if h.startswith("on_write"))


def render_json(audit: Audit, title: str) -> str:
    def row(r: Row) -> dict[str, Any]:
        return {
            "offset": r.offset,
            "width": r.width,
            "region": r.region,
            "register": r.register,
            "reason": r.reason,
            "source": r.source,
            "fields": [
                {
                    "name": f.name,
                    "bits": f.bits,
                    # A long run's mask would be thousands of digits: its width says it.
                    "mask": f.mask if r.width <= 4 else None,
                    "backing": f.backing,
                    "normal": f.normal,
                    "permissive": f.permissive,
                    "hook": f.hook,
                    "reason": f.reason,
                    "source": f.source,
                }
                for f in r.fields
            ],
        }

    changes = {
        mode: [
            {
                "offset": item.row.offset,
                "register": item.row.register,
                "direct_mask": item.direct_mask if item.row.width <= 4 else None,
                "direct": [f.name for f in item.direct],
                "hooked": {f.name: f.hook for f in item.hooked},
            }
            for item in reach(audit, mode == "permissive")
        ]
        for mode in ("normal", "permissive")
    }
    doc = {
        "device": title,
        "address": audit.address,
        "size": audit.size,
        "problems": list(audit.problems),
        "rows": [row(r) for r in audit.rows],
        "guest_can_change": changes,
    }
    return json.dumps(doc, indent=1) + "\n"
