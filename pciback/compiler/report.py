"""A reviewer's view of the whole policy: one Markdown table per block, one row per bit field."""

from __future__ import annotations

from typing import Any

import jinja2

from pciback.compiler.check import Program
from pciback.compiler.emit import TEMPLATES, match_text
from pciback.compiler.evaluate import evaluate, to_text
from pciback.compiler.extent import length_text
from pciback.compiler.model import (
    BackingKind,
    BlockDecl,
    FieldDecl,
    LinuxNote,
    RegisterDecl,
    device_refs,
)

_HOOK_WORDS = {
    ("read", "any"): "on_read",
    ("write", "any"): "on_write",
    ("write", "rising"): "on_rising",
    ("write", "falling"): "on_falling",
    ("write", "change"): "on_change",
}
_ID_WORDS = {"header": "type", "capability": "ID", "extended_capability": "ID"}


def report(program: Program) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    blocks = [_block(b, program) for src in program.files for b in src.blocks]
    sources = [f"`{src.path}`" for src in program.files]
    return env.get_template("report.md.j2").render(blocks=blocks, sources=sources)


def _block(block: BlockDecl, program: Program) -> dict[str, Any]:
    consts = program.consts
    ident = evaluate(block.ident, consts) if block.ident is not None else None
    policy = block.policies[0] if block.policies else None
    return {
        "kind_word": block.kind.value.replace("_", " "),
        "name": block.name,
        "ident_text": f"{_ID_WORDS[block.kind.value]} {ident:#x}" if ident is not None else "",
        "source": f"{block.pos.file}:{block.pos.line}",
        "reason": _cell(block.reason),
        "hidden": bool(policy and policy.hidden),
        "policy_reason": policy.reason if policy else "",
        "rest_reason": _cell(block.rests[0].reason or "-") if block.rests else "",
        "rest_if": to_text(block.rests[0].condition)
        if block.rests and block.rests[0].condition is not None
        else "",
        "length_text": length_text(block),
        "match_text": ", ".join(
            match_text(m, lambda e: f"{evaluate(e, consts):#x}") for m in block.matches
        ),
        "registers": [_register(r, block, program) for r in _shown(block)],
    }


def _shown(block: BlockDecl) -> list[RegisterDecl]:
    """The block's registers, an array's instances shown once, as the array."""
    shown: list[RegisterDecl] = []
    arrays: set[int] = set()
    for reg in block.registers:
        if reg.origin is None:
            shown.append(reg)
        elif id(reg.origin) not in arrays:
            arrays.add(id(reg.origin))
            shown.append(reg.origin)
    return shown


def _register(reg: RegisterDecl, block: BlockDecl, program: Program) -> dict[str, Any]:
    consts = program.consts
    offset = (
        to_text(reg.offset) if device_refs(reg.offset) else f"{evaluate(reg.offset, consts):#04x}"
    )
    name = reg.name
    condition = to_text(reg.condition) if reg.condition is not None else ""
    shape = ""
    array = reg.array
    if array is not None:
        instances = [r.name for r in block.registers if r.origin is reg]
        stride = evaluate(array.stride, consts) if array.stride is not None else reg.width
        first = evaluate(array.first, consts) if array.first is not None else 0
        offset += f" + {stride if stride < 10 else hex(stride)}*i"
        name += "[i]"
        count = to_text(array.count)
        shape = f"`{first} <= i < {count}`" if first else f"`i < {count}`"
        if len(instances) > 1:
            shape += f": {instances[0]} to {instances[-1]}"
        else:
            shape += f": {instances[0]} only" if instances else ": no instance"
    return {
        "offset": offset,
        "name": name,
        "bits": f"{8 * reg.width - 1}:0",
        "reason": _cell(_with_linux(reg.reason, reg.linux)),
        "source": f"{reg.pos.file}:{reg.pos.line}",
        "condition": condition,
        "array": shape,
        "fields": [_field(f, program) for f in reg.fields],
    }


def _field(fld: FieldDecl, program: Program) -> dict[str, str]:
    backing = fld.backing.kind.value
    if fld.backing.kind is BackingKind.SHADOW:
        value = fld.backing.value
        backing += f"({evaluate(value, program.consts):#x})" if value is not None else "(hw)"
    elif fld.backing.kind is BackingKind.CONST and fld.backing.value is not None:
        backing += f"({evaluate(fld.backing.value, program.consts):#x})"
    hooks = ", ".join(f"{_HOOK_WORDS[h.kind, h.edge]} {h.name}" for h in fld.hooks)
    return {
        "bits": f"{fld.msb}" if fld.msb == fld.lsb else f"{fld.msb}:{fld.lsb}",
        "name": fld.name,
        "backing": backing,
        "access": fld.access,
        "permissive": fld.permissive or "",
        "hooks": hooks,
        "reason": _cell(_with_linux(fld.reason, fld.linux)),
        "source": f"{fld.pos.file}:{fld.pos.line}",
    }


def _with_linux(reason: str, note: LinuxNote | None) -> str:
    """The reason, after how Linux treats the register or field when the policy notes it."""
    return reason if note is None else f"(Linux: {note.treatment}) {reason}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")
