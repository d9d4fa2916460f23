"""Pass 5, beside emit: the elaborated model as a reviewer's view of the whole policy, one
Markdown table per block, one row per bit field (docs/policy-report.md)."""

from __future__ import annotations

from typing import Any

import jinja2

from pciback.compiler.elaborate import Block, Chain, Field, Layout, Model, Register, Value
from pciback.compiler.emit import TEMPLATES
from pciback.tables import Backing

_ID_WORDS = {"header": "type", "capability": "ID", "extended_capability": "ID"}


def report(model: Model) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    blocks = [_block(b) for src in model.files for b in src.blocks]
    layouts = [_layout(layout) for src in model.files for layout in src.layouts]
    sources = [f"`{src.path}`" for src in model.files]
    return env.get_template("report.md.j2").render(blocks=blocks, layouts=layouts, sources=sources)


def _layout(layout: Layout) -> dict[str, Any]:
    """A layout decides no access: its rows are its registers' and fields' places and reasons."""
    rows: list[dict[str, str]] = []
    for reg in layout.registers:
        common = {"offset": f"{reg.offset:#04x}", "register": reg.name}
        if reg.reason or not reg.fields:  # as a block's: a row of its own when it says more
            rows.append(
                {
                    **common,
                    "bits": f"{8 * reg.width - 1}:0",
                    "field": "*register*",
                    "reason": _cell(reg.reason),
                    "source": reg.source,
                }
            )
        rows += [
            {
                **common,
                "bits": fld.bits,
                "field": fld.name,
                "reason": _cell(fld.reason),
                "source": fld.source,
            }
            for fld in reg.fields
        ]
    return {
        "name": layout.name,
        "source": layout.source,
        "reason": _cell(layout.reason),
        "length": f"{layout.length:#x}" if layout.length is not None else "",
        "consts": [
            {"name": c.name, "value": f"{c.value:#x}", "reason": c.reason, "source": c.source}
            for c in layout.consts
        ],
        "rows": rows,
    }


def _block(block: Block) -> dict[str, Any]:
    rest = block.rest
    return {
        "kind_word": block.kind.value.replace("_", " "),
        "name": block.name,
        "ident_text": f"{_ID_WORDS[block.kind.value]} {block.ident:#x}"
        if block.ident is not None
        else "",
        "source": block.source,
        "reason": _cell(block.reason),
        "hidden": block.hidden,
        "policy_reason": block.policy_reason,
        "rest_reason": _cell(rest.reason or "-") if rest else "",
        "rest_if": rest.condition.text if rest and rest.condition is not None else "",
        "length_text": block.length_text,
        "match_text": ", ".join(m.text(as_written=False) for m in block.matches),
        "registers": [_register(r) for r in block.shown],
        "chains": [_chain(c) for c in block.chains],
        "seize": [
            {"kind": s.kind, "name": s.name, "reason": _cell(s.reason), "source": s.source}
            for s in block.seize
        ],
        "sections": [
            {
                "name": s.name,
                "condition": s.condition.text,
                "reason": s.reason,
                "registers": ", ".join(s.registers),
                "source": s.source,
            }
            for s in block.sections
        ],
    }


def _chain(chain: Chain) -> dict[str, Any]:
    """A chain's registers, named `chain[i].register`, at offsets from record i's start."""
    return {
        "name": chain.name,
        "count": chain.count.text,
        "most": chain.most,
        "start": offset_text_of(chain.start),
        "next": chain.next.text,
        "reason": _cell(chain.reason),
        "source": chain.source,
        "registers": [
            {
                **row,
                "offset": f"{chain.name}[i] + {row['offset']}",
                "name": f"{chain.name}[i].{row['name']}",
            }
            for row in map(_register, chain.shown)
        ],
    }


def offset_text_of(value: Value) -> str:
    return value.text if value.constant is None else f"{value.constant:#04x}"


def offset_text(reg: Register) -> str:
    """The offset as the Markdown tables show it: the expression when the device moves it."""
    at = reg.offset
    return at.text if at.constant is None else f"{at.constant:#04x}"


def _register(reg: Register) -> dict[str, Any]:
    offset = offset_text(reg)
    name = reg.name
    shape = ""
    array = reg.array
    if array is not None:
        stride = array.stride
        offset += f" + {stride if stride < 10 else hex(stride)}*i"
        name += "[i]"
        count = array.count_text
        shape = f"`{array.first} <= i < {count}`" if array.first else f"`i < {count}`"
        instances = array.instances
        if len(instances) > 1:
            shape += f": {instances[0]} to {instances[-1]}"
        else:
            shape += f": {instances[0]} only" if instances else ": no instance"
    if reg.section is not None:
        name += f" (section {reg.section})"
    return {
        "offset": offset,
        "name": name,
        "bits": f"{8 * reg.width - 1}:0",
        "reason": _cell(_with_linux(reg.reason, reg.linux)),
        "source": reg.source,
        "condition": reg.condition.text if reg.condition is not None else "",
        "array": shape,
        "fields": [_field(f) for f in reg.fields],
    }


def _field(fld: Field) -> dict[str, str]:
    backing = fld.backing.value
    if fld.backing is Backing.SHADOW:
        backing += f"({fld.initial:#x})" if fld.initial is not None else "(hw)"
    elif fld.backing is Backing.CONST and fld.initial is not None:
        backing += f"({fld.initial:#x})"
    hooks = ", ".join(f"{h.keyword} {h.name}" for h in fld.hooks)
    return {
        "bits": fld.bits,
        "name": fld.name,
        "backing": backing,
        "access": fld.access.value,
        "permissive": fld.permissive.value if fld.permissive else "",
        "hooks": hooks,
        "reason": _cell(_with_linux(fld.reason, fld.linux)),
        "source": fld.source,
    }


def _with_linux(reason: str, linux: str | None) -> str:
    """The reason, after how Linux treats the register or field when the policy notes it."""
    return reason if linux is None else f"(Linux: {linux}) {reason}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")
