"""A reviewer's view of the whole policy: one Markdown table per block, one row per bit field."""

from __future__ import annotations

from typing import Any

import jinja2

from pciback.compiler.check import Program
from pciback.compiler.emit import TEMPLATES
from pciback.compiler.evaluate import evaluate, to_text
from pciback.compiler.model import BackingKind, BlockDecl, FieldDecl, field_refs

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
        "length_text": to_text(block.length) if block.length is not None else "",
        "match_text": ", ".join(
            f"{m.key} = {evaluate(m.value, consts):#x}"
            + (f" / {evaluate(m.mask, consts):#x}" if m.mask is not None else "")
            for m in block.matches
        ),
        "registers": [
            {
                "offset": to_text(r.offset)
                if field_refs(r.offset)
                else f"{evaluate(r.offset, consts):#04x}",
                "name": r.name,
                "bits": f"{8 * r.width - 1}:0",
                "reason": _cell(r.reason),
                "source": f"{r.pos.file}:{r.pos.line}",
                "condition": to_text(r.condition) if r.condition is not None else "",
                "fields": [_field(f, program) for f in r.fields],
            }
            for r in block.registers
        ],
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
        "reason": _cell(fld.reason),
        "source": f"{fld.pos.file}:{fld.pos.line}",
    }


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")
