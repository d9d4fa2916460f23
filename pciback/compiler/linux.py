"""Pass 5, beside emit: docs/policy-vs-linux-fields.md from the elaborated model. The registers
and fields whose policy carries a `linux` note, how Linux's xen-pciback treats each and why this
policy differs, one table per block.

Generated rather than written so that a difference cannot be changed in dsl/ and left stale in
the comparison: `make test` checks the file as it checks the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from pciback.compiler.elaborate import Model, Register
from pciback.compiler.emit import TEMPLATES
from pciback.compiler.report import offset_text

# What each word of a note means, for the table's readers.
TREATMENTS = {
    "ro": "read-only (writes dropped)",
    "rw": "written through",
    "rw1c": "write-1-to-clear",
    "rsvdp": "reads 0, device value kept",
    "rsvdz": "reads 0, 0 written",
    "undescribed": "not described: read from the device, written through in permissive mode",
    "refused": "a write changing it is refused",
}


def linux_report(model: Model) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    sections: list[dict[str, Any]] = []
    for src in model.files:
        for group in src.groups:
            rows = _rows(group.shown)
            if rows:
                sections.append(
                    {"title": f"registers {group.name}", "source": src.path, "rows": rows}
                )
        for block in src.blocks:
            rows = _rows(block.own)
            for chain in block.chains:  # a record's registers as `chain[i].register`
                rows += [
                    {
                        **row,
                        "offset": f"{chain.name}[i] + {row['offset']}",
                        "register": f"{chain.name}[i].{row['register']}",
                    }
                    for row in _rows(chain.shown)
                ]
            if rows:
                kind = block.kind.value.replace("_", " ")
                sections.append({"title": f"{kind} {block.name}", "source": src.path, "rows": rows})
    directories = sorted({str(Path(src.path).parent) for src in model.files})
    return env.get_template("linux.md.j2").render(
        sections=sections, directory=", ".join(f"{d}/" for d in directories), treatments=TREATMENTS
    )


def _rows(registers: tuple[Register, ...]) -> list[dict[str, str]]:
    """A row for each noted register (an array once, as declared) and each noted field."""
    rows: list[dict[str, str]] = []
    for reg in registers:
        if reg.linux is not None:
            ours = ", ".join(sorted({f.policy for f in reg.fields}))
            rows.append(
                _row(
                    reg,
                    "*register*",
                    f"{8 * reg.width - 1}:0",
                    ours,
                    reg.linux,
                    reg.reason,
                    reg.source,
                )
            )
        for fld in reg.fields:
            if fld.linux is not None:
                rows.append(
                    _row(
                        reg,
                        fld.name,
                        fld.bits,
                        fld.policy,
                        fld.linux,
                        fld.reason or reg.reason,
                        f"{reg.file}:{fld.line}",
                    )
                )
    return rows


def _row(
    reg: Register, field: str, bits: str, ours: str, linux: str, why: str, source: str
) -> dict[str, str]:
    return {
        "offset": offset_text(reg),
        "register": f"{reg.name}[i]" if reg.array is not None else reg.name,
        "bits": bits,
        "field": field,
        "ours": ours,
        "linux": linux,
        "why": why.replace("|", "\\|"),
        "source": source,
    }
