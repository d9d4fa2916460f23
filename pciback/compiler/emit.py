"""Pass 4: checked model -> Python source, through the jinja2 templates beside this module.

Output is a pure function of the sources: no timestamps, no absolute paths, stable ordering.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from pciback.compiler.check import Program
from pciback.compiler.evaluate import evaluate, to_python, to_text
from pciback.compiler.model import (
    BackingKind,
    BlockDecl,
    FieldDecl,
    RegisterDecl,
    SourceFile,
    UseDecl,
    device_refs,
)

TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True, slots=True)
class Output:
    name: str  # file name inside the output directory
    text: str


def module_name(path: str) -> str:
    stem = Path(path).stem.lower()
    name = re.sub(r"[^a-z0-9_]", "_", stem)
    return name if name[:1].isalpha() else f"p_{name}"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["py"] = repr
    return env


def emit(program: Program, index_modules: list[str] | None = None) -> list[Output]:
    """One module per source file that holds declarations, plus the package index."""
    env = _env()
    outputs: list[Output] = []
    names: list[str] = []
    for src in program.files:
        if not (src.blocks or src.hooks or src.groups):
            continue
        name = module_name(src.path)
        names.append(name)
        text = env.get_template("module.py.j2").render(_module_context(src, program))
        outputs.append(Output(f"{name}.py", text))
    index = sorted(index_modules if index_modules is not None else names)
    outputs.append(Output("__init__.py", env.get_template("index.py.j2").render(modules=index)))
    return outputs


def group_constant(name: str) -> str:
    return name.upper()


def _module_context(src: SourceFile, program: Program) -> dict[str, Any]:
    here = module_name(src.path)
    imports: dict[str, set[str]] = {}
    for block in src.blocks:
        for item in block.items:
            if isinstance(item, UseDecl):
                group = program.groups[item.group]
                home = module_name(group.pos.file)
                if home != here:
                    imports.setdefault(home, set()).add(group_constant(group.name))
    return {
        "imports": [{"module": m, "names": sorted(n)} for m, n in sorted(imports.items())],
        "groups": [
            {
                "name": g.name,
                "const": group_constant(g.name),
                "source": f"{src.path}:{g.pos.line}",
                "reason": g.reason,
                "registers": [_register(r, program) for r in g.registers],
            }
            for g in src.groups
        ],
        "source": src.path,
        "sha256": hashlib.sha256(src.text.encode("utf-8")).hexdigest(),
        "hooks": [
            {
                "name": h.name,
                "kind": h.kind,
                "params": h.params,
                "source": f"{src.path}:{h.pos.line}",
                "reason": h.reason,
            }
            for h in src.hooks
        ],
        "blocks": [_block(b, src, program) for b in src.blocks],
    }


def _block(block: BlockDecl, src: SourceFile, program: Program) -> dict[str, Any]:
    consts = program.consts
    length: str | None = None
    if block.length is not None:
        length = _expr_or_int(block.length, consts)
    policy = block.policies[0] if block.policies else None
    return {
        "kind": block.kind.name,
        "kind_word": block.kind.value,
        "name": block.name,
        "ident": _hex(evaluate(block.ident, consts)) if block.ident is not None else "0",
        "source": f"{src.path}:{block.pos.line}",
        "length": length,
        "length_text": to_text(block.length) if block.length is not None else "",
        "hidden": bool(policy and policy.hidden),
        "policy_reason": policy.reason if policy else "",
        "rest": bool(block.rests),
        "rest_if": _lambda(to_python(block.rests[0].condition, consts))
        if block.rests and block.rests[0].condition is not None
        else None,
        "rest_reason": block.rests[0].reason if block.rests else "",
        "reason": block.reason,
        "matches": [
            {
                "key": m.key,
                "value": _hex(evaluate(m.value, consts)),
                "mask": _hex(evaluate(m.mask, consts))
                if m.mask is not None
                else _hex((1 << (24 if m.key == "class" else 16)) - 1),
            }
            for m in block.matches
        ],
        "entries": [_item(item, program) for item in block.items],
    }


def _item(item: RegisterDecl | UseDecl, program: Program) -> dict[str, Any]:
    if isinstance(item, UseDecl):
        group = program.groups[item.group]
        return {
            "use": group_constant(group.name),
            "group": group.name,
            "source": f"{group.pos.file}:{group.pos.line}",
        }
    return {"use": None, **_register(item, program)}


def _register(reg: RegisterDecl, program: Program) -> dict[str, Any]:
    consts = program.consts
    movable = bool(device_refs(reg.offset))
    return {
        "name": reg.name,
        "offset": _expr_or_int(reg.offset, consts, offset=True),
        "offset_text": to_text(reg.offset) if movable else "",
        "width": reg.width,
        "source": f"{reg.pos.file}:{reg.pos.line}",
        "present": _lambda(to_python(reg.condition, consts)) if reg.condition else None,
        "present_text": to_text(reg.condition) if reg.condition else "",
        "reason": reg.reason,
        "fields": [_field(f, reg, program) for f in reg.fields],
    }


def _field(fld: FieldDecl, reg: RegisterDecl, program: Program) -> dict[str, Any]:
    init: str | None = None
    if fld.backing.value is not None:
        init = _hex(evaluate(fld.backing.value, program.consts))
    write_hook = next((h for h in fld.hooks if h.kind == "write"), None)
    read_hook = next((h for h in fld.hooks if h.kind == "read"), None)
    bits = f"[{fld.msb}]" if fld.msb == fld.lsb else f"[{fld.msb}:{fld.lsb}]"
    digits = reg.width * 2
    return {
        "name": fld.name,
        "bits": bits,
        "mask": f"0x{fld.mask:0{digits}X}",
        "backing": fld.backing.kind.name if fld.backing.kind is not BackingKind.HW else "HW",
        "access": fld.access.upper(),
        "source": f"{fld.pos.file}:{fld.pos.line}",
        "init": init,
        "permissive": fld.permissive.upper() if fld.permissive else None,
        "on_write": write_hook.name if write_hook else None,
        "edge": write_hook.edge.upper() if write_hook else "ANY",
        "on_read": read_hook.name if read_hook else None,
        "reason": fld.reason,
    }


def _expr_or_int(expr: Any, consts: Mapping[str, int], *, offset: bool = False) -> str:
    if device_refs(expr):
        return _lambda(to_python(expr, consts))
    value = evaluate(expr, consts)
    return f"0x{value:02x}" if offset else _hex(value)


def _lambda(body: str) -> str:
    return f"lambda f: {body}"


def _hex(value: int) -> str:
    return hex(value) if value > 9 else str(value)
