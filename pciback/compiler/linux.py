"""docs/policy-vs-linux-fields.md: the registers and fields whose policy carries a `linux` note,
how Linux's xen-pciback treats each and why this policy differs, one table per block.

Generated rather than written so that a difference cannot be changed in dsl/ and left stale in
the comparison: `make test` checks the file as it checks the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from pciback.compiler.check import Program
from pciback.compiler.emit import TEMPLATES
from pciback.compiler.evaluate import evaluate, to_text
from pciback.compiler.model import FieldDecl, LinuxNote, RegisterDecl, device_refs

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


def linux_report(program: Program) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    sections: list[dict[str, Any]] = []
    for src in program.files:
        for group in src.groups:
            rows = _rows(group.registers, program)
            if rows:
                sections.append(
                    {"title": f"registers {group.name}", "source": src.path, "rows": rows}
                )
        for block in src.blocks:
            own = tuple(i for i in block.items if isinstance(i, RegisterDecl))
            rows = _rows(own, program)
            if rows:
                kind = block.kind.value.replace("_", " ")
                sections.append({"title": f"{kind} {block.name}", "source": src.path, "rows": rows})
    directories = sorted({str(Path(src.path).parent) for src in program.files})
    return env.get_template("linux.md.j2").render(
        sections=sections, directory=", ".join(f"{d}/" for d in directories), treatments=TREATMENTS
    )


def _rows(registers: tuple[RegisterDecl, ...], program: Program) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    seen: set[int] = set()
    for reg in registers:
        shown = reg.origin if reg.origin is not None else reg  # an array once, as declared
        if id(shown) in seen:
            continue
        seen.add(id(shown))
        if shown.linux is not None:
            ours = sorted({_policy(f) for f in shown.fields})
            rows.append(
                _row(
                    shown,
                    "*register*",
                    f"{8 * shown.width - 1}:0",
                    ", ".join(ours),
                    shown.linux,
                    shown.reason,
                    program,
                    shown.pos.line,
                )
            )
        for fld in shown.fields:
            if fld.linux is not None:
                bits = f"{fld.msb}" if fld.msb == fld.lsb else f"{fld.msb}:{fld.lsb}"
                rows.append(
                    _row(
                        shown,
                        fld.name,
                        bits,
                        _policy(fld),
                        fld.linux,
                        fld.reason or shown.reason,
                        program,
                        fld.pos.line,
                    )
                )
    return rows


def _row(
    reg: RegisterDecl,
    field: str,
    bits: str,
    ours: str,
    note: LinuxNote,
    why: str,
    program: Program,
    line: int,
) -> dict[str, str]:
    offset = (
        to_text(reg.offset)
        if device_refs(reg.offset)
        else f"{evaluate(reg.offset, program.consts):#04x}"
    )
    name = f"{reg.name}[i]" if reg.array is not None else reg.name
    return {
        "offset": offset,
        "register": name,
        "bits": bits,
        "field": field,
        "ours": ours,
        "linux": note.treatment,
        "why": why.replace("|", "\\|"),
        "source": f"{reg.pos.file}:{line}",
    }


def _policy(fld: FieldDecl) -> str:
    """The field's guest access, and its permissive one."""
    return fld.access + (f" (permissive {fld.permissive})" if fld.permissive else "")
