"""The audit as a bit map: SVG (one row per register, one cell per bit, coloured by what a guest
write does, a tooltip per field with its reason) and an HTML page around it."""

from __future__ import annotations

from html import escape

from pciback.audit.model import Audit, Category, FieldAudit, Row
from pciback.audit.text import _offsets, summary_lines

COLOURS = {
    Category.RO: "#d4d4d4",
    Category.RW: "#66c266",
    Category.RW1C: "#f5a742",
    Category.RESERVED: "#ffffff",
    Category.HIDDEN: "#444444",
    Category.HOST_OWNED: "#7fa7d9",
}
CELL = 30  # one bit's width: room for a one-bit field's first letters
ROW = 22
LABEL = 330  # the offset / register column
MARGIN = 10
BITS = 32
FONT = "font-family:DejaVu Sans Mono,monospace"
WIDTH = MARGIN * 2 + LABEL + CELL * BITS


def _a(text: str) -> str:
    """Text safe in an attribute or element (quotes included)."""
    return escape(text, quote=True)


def render_svg(audit: Audit, title: str) -> str:
    mode = "permissive" if audit.permissive else "normal"
    body: list[str] = []
    y = MARGIN
    body.append(
        f'<text x="{MARGIN}" y="{y + 14}" style="{FONT};font-size:15px;font-weight:bold">'
        f"{_a(title)} — guest access in {mode} mode ({audit.size} bytes)</text>"
    )
    y += 26
    y = _legend(body, y)
    y = _bit_numbers(body, y)
    region = None
    for row in audit.rows:
        if row.region != region:
            region = row.region
            y += 6
            body.append(
                f'<text x="{MARGIN}" y="{y + 14}" style="{FONT};font-size:12px;'
                f'font-weight:bold;fill:#203060">{_a(region)}</text>'
            )
            y += ROW
        _row(body, row, y, audit.permissive)
        y += ROW
    height = y + MARGIN
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}">\n'
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )


def _legend(body: list[str], y: int) -> int:
    x = MARGIN
    for category, colour in COLOURS.items():
        body.append(
            f'<rect x="{x}" y="{y}" width="16" height="14" fill="{colour}" stroke="#333"/>'
            f'<text x="{x + 21}" y="{y + 12}" style="{FONT};font-size:12px">{category.value}</text>'
        )
        x += 28 + 8 * len(category.value)
    body.append(
        f'<circle cx="{x + 6}" cy="{y + 7}" r="3.5" fill="#000"/>'
        f'<text x="{x + 15}" y="{y + 12}" style="{FONT};font-size:12px">write hook</text>'
    )
    body.append(
        f'<text x="{MARGIN}" y="{y + 32}" style="{FONT};font-size:11px;fill:#555">'
        "hover a field for its backing, both modes, hook, reason and DSL line</text>"
    )
    return y + 42


def _bit_numbers(body: list[str], y: int) -> int:
    for bit in range(BITS):
        x = _cell_x(bit) + CELL // 2
        body.append(
            f'<text x="{x}" y="{y + 12}" text-anchor="middle"'
            f' style="{FONT};font-size:9px;fill:#666">{bit}</text>'
        )
    return y + 16


def _cell_x(bit: int) -> int:
    """Bit 0 in the rightmost column, as the specifications draw registers."""
    return MARGIN + LABEL + (BITS - 1 - bit) * CELL


def _tooltip(row: Row, fld: FieldAudit) -> str:
    parts = [
        f"{_offsets(row)} {row.register}[{fld.bits}] {fld.name}",
        f"backing {fld.backing or '-'}; normal {fld.normal}; permissive {fld.permissive}",
    ]
    if fld.hook:
        parts.append(fld.hook)
    if fld.reason:
        parts.append(f"field: {fld.reason}")
    if row.reason and row.reason != fld.reason:
        parts.append(f"register: {row.reason}")
    parts.append(fld.source)
    return "\n".join(parts)


def _row(body: list[str], row: Row, y: int, permissive: bool) -> None:
    label = f"{_offsets(row)} {row.register}"
    if row.width > 4:
        label += f" ({row.width} bytes)"
    body.append(f'<text x="{MARGIN}" y="{y + 15}" style="{FONT};font-size:12px">{_a(label)}</text>')
    for fld in row.fields:
        category = fld.category(permissive)
        colour = COLOURS[category]
        ink = "#fff" if category is Category.HIDDEN else "#000"
        body.append(f"<g><title>{_a(_tooltip(row, fld))}</title>")
        if row.width > 4:
            # A long run of one kind (a hidden body, undescribed bytes): one cell for all.
            lo, hi = 0, BITS - 1
            body.append(
                f'<rect x="{_cell_x(hi)}" y="{y}" width="{CELL * BITS}" height="{ROW - 2}"'
                f' fill="{colour}" stroke="#333"/>'
            )
        else:
            lo, hi = fld.lsb, fld.msb
            for bit in range(lo, hi + 1):
                body.append(
                    f'<rect x="{_cell_x(bit)}" y="{y}" width="{CELL}" height="{ROW - 2}"'
                    f' fill="{colour}" stroke="#999" stroke-width="0.5"/>'
                )
            body.append(
                f'<rect x="{_cell_x(hi)}" y="{y}" width="{CELL * (hi - lo + 1)}"'
                f' height="{ROW - 2}" fill="none" stroke="#222" stroke-width="1.2"/>'
            )
        if fld.hook and "on_write" in fld.hook:
            body.append(f'<circle cx="{_cell_x(hi) + 5}" cy="{y + 5}" r="3" fill="#000"/>')
        span = CELL * (hi - lo + 1)
        name = fld.name if row.width <= 4 else f"{fld.name} {row.width} bytes"
        # Narrow fields get a smaller font: a one-bit field's name is still worth 4 letters.
        size, advance = (11, 6.7) if span > 2 * CELL else (8.5, 5.2)
        fits = int((span - 3) // advance)
        if fits >= 2:
            shown = name if len(name) <= fits else name[: fits - 1] + "…"
            body.append(
                f'<text x="{_cell_x(hi) + span / 2}" y="{y + 14}" text-anchor="middle"'
                f' style="{FONT};font-size:{size}px;fill:{ink}">{_a(shown)}</text>'
            )
        body.append("</g>")


def render_html(audit: Audit, title: str) -> str:
    rows = []
    for row in audit.rows:
        own = len(row.fields) > 1  # one field: the row's reason is that field's
        if row.reason and own:
            cells = (_offsets(row), row.register, "", "(register)", *[""] * 4, row.reason)
            tds = "".join(f"<td>{_a(c)}</td>" for c in (*cells, row.source))
            rows.append(f"<tr>{tds}</tr>")
        for fld in reversed(row.fields):
            cells = (
                _offsets(row),
                row.register,
                fld.bits,
                fld.name,
                fld.backing,
                fld.normal,
                fld.permissive,
                fld.hook,
                fld.reason if own else fld.reason or row.reason,
                fld.source,
            )
            colour = COLOURS[fld.category(audit.permissive)]
            tds = "".join(f"<td>{_a(c)}</td>" for c in cells)
            rows.append(f'<tr style="background:{colour}40">{tds}</tr>')
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "offset",
            "register",
            "bits",
            "field",
            "backing",
            "normal",
            "permissive",
            "hook",
            "reason",
            "source",
        )
    )
    summary = "\n".join(summary_lines(audit))
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>pciback audit: {_a(title)}</title>"
        "<style>body{font-family:sans-serif} table{border-collapse:collapse;font-size:12px}"
        " td,th{border:1px solid #bbb;padding:2px 5px;text-align:left}</style></head><body>\n"
        f"<h1>pciback audit: {_a(title)}</h1>\n"
        + "".join(f"<p>problem: {_a(p)}</p>\n" for p in audit.problems)
        + render_svg(audit, title)
        + f"<h2>What the guest can change on the device</h2>\n<pre>{_a(summary)}</pre>\n"
        + f"<h2>Every field</h2>\n<table><tr>{head}</tr>\n"
        + "\n".join(rows)
        + "\n</table></body></html>\n"
    )
