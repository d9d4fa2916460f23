"""Pass 5: elaborated model -> Python source, through the jinja2 templates beside this module.

Every value was computed by the elaboration pass; this one only writes it as Python. Output is
a pure function of the sources: no timestamps, no absolute paths, stable ordering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from pciback.compiler.elaborate import (
    Block,
    Chain,
    Field,
    File,
    Layout,
    LayoutField,
    LayoutRegister,
    Model,
    Register,
    Value,
)
from pciback.tables import BlockKind

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
    env.filters["doc"] = _docstring_text
    return env


def _docstring_text(text: str) -> str:
    """Text that stands inside a triple-quoted docstring as it reads."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def emit(model: Model, index_modules: list[str] | None = None) -> list[Output]:
    """One module per source file that holds declarations, plus the package index."""
    env = _env()
    outputs: list[Output] = []
    names: list[str] = []
    for src in model.files:
        if not (src.blocks or src.hooks or src.groups):
            continue
        name = module_name(src.path)
        names.append(name)
        text = env.get_template("module.py.j2").render(_module_context(src, model))
        outputs.append(Output(f"{name}.py", text))
    index = sorted(index_modules if index_modules is not None else names)
    outputs.append(Output("__init__.py", env.get_template("index.py.j2").render(modules=index)))
    outputs.append(Output(NAMES, env.get_template("names.py.j2").render(_names_context(model))))
    return outputs


NAMES = "names.py"


def group_constant(name: str) -> str:
    return name.upper()


def _module_context(src: File, model: Model) -> dict[str, Any]:
    here = module_name(src.path)
    imports: dict[str, set[str]] = {}
    for block in src.blocks:
        for item in block.items:
            if isinstance(item, Register):
                continue
            group = model.groups[item.group]
            home = module_name(group.file)
            if home != here:
                imports.setdefault(home, set()).add(group_constant(group.name))
    return {
        "chained": any(b.chains for b in src.blocks),
        "imports": [{"module": m, "names": sorted(n)} for m, n in sorted(imports.items())],
        "groups": [
            {
                "name": g.name,
                "const": group_constant(g.name),
                "source": g.source,
                "reason": g.reason,
                "registers": [_register(r) for r in g.registers],
            }
            for g in src.groups
        ],
        "source": src.path,
        "sha256": src.sha256,
        "hooks": [
            {
                "name": h.name,
                "kind": h.kind,
                "params": h.params,
                "source": h.source,
                "reason": h.reason,
            }
            for h in src.hooks
        ],
        "blocks": [_block(b) for b in src.blocks],
    }


def _block(block: Block) -> dict[str, Any]:
    rest = block.rest
    return {
        "kind": block.kind.name,
        "kind_word": block.kind.value,
        "name": block.name,
        "ident": _hex(block.ident) if block.ident is not None else "0",
        "source": block.source,
        "length": _number_or_lambda(block.length) if block.length is not None else None,
        "length_text": block.length_text,
        "hidden": block.hidden,
        "policy_reason": block.policy_reason,
        "rest": rest is not None,
        "rest_if": _lambda(rest.condition.python)
        if rest is not None and rest.condition is not None
        else None,
        "rest_reason": rest.reason if rest is not None else "",
        "reason": block.reason,
        "seize": [
            {"kind": s.kind, "name": s.name, "source": s.source, "reason": s.reason}
            for s in block.seize
        ],
        "matches": [
            {
                "key": m.key,
                "value": _hex(m.values[0]),
                "mask": _hex(m.full_mask),
                "alternatives": _tuple([_hex(v) for v in m.values[1:]]),
            }
            for m in block.matches
        ],
        "chains": [_chain(c) for c in block.chains],
        "entries": [
            {"use": None, **_register(item)}
            if isinstance(item, Register)
            else {"use": group_constant(item.group), "group": item.group, "source": item.source}
            for item in block.items
        ],
    }


def _chain(chain: Chain) -> dict[str, Any]:
    return {
        "name": chain.name,
        "count": _number_or_lambda(chain.count),
        "count_text": chain.count.text,
        "start": _number_or_lambda(chain.start),
        "next": _lambda(chain.next.python),
        "next_text": chain.next.text,
        "most": chain.most,
        "source": chain.source,
        "reason": chain.reason,
        "registers": [_register(r) for r in chain.registers],
    }


def _register(reg: Register) -> dict[str, Any]:
    at = reg.offset
    return {
        "name": reg.name,
        "offset": _lambda(at.python) if at.constant is None else f"0x{at.constant:02x}",
        "offset_text": at.text if at.movable else "",
        "width": reg.width,
        "source": reg.source,
        "present": _lambda(reg.condition.python) if reg.condition is not None else None,
        "present_text": reg.condition.text if reg.condition is not None else "",
        "reason": reg.reason,
        "fields": [_field(f, reg) for f in reg.fields],
    }


def _field(fld: Field, reg: Register) -> dict[str, Any]:
    write_hook = fld.write_hook
    read_hook = fld.read_hook
    return {
        "name": fld.name,
        "bits": f"[{fld.bits}]",
        "mask": _mask(fld, reg),
        "backing": fld.backing.name,
        "access": fld.access.name,
        "source": fld.source,
        "init": _hex(fld.initial) if fld.initial is not None else None,
        "permissive": fld.permissive.name if fld.permissive else None,
        "on_write": write_hook.name if write_hook else None,
        "edge": fld.write_edge.name,
        "on_read": read_hook.name if read_hook else None,
        "reason": fld.reason,
    }


def _mask(fld: Field, reg: Register) -> str:
    """In hex, as many digits as the register is wide."""
    return f"0x{fld.mask:0{reg.width * 2}X}"


def _number_or_lambda(value: Value) -> str:
    return _lambda(value.python) if value.constant is None else _hex(value.constant)


def _tuple(items: list[str]) -> str:
    """Python source of a tuple ('' for none)."""
    if not items:
        return ""
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _lambda(body: str) -> str:
    return f"lambda f: {body}"


def _hex(value: int) -> str:
    return hex(value) if value > 9 else str(value)


# -- generated/names.py: the policy's names, for the code that reads a device itself ------------
_IDENT_ATTR = {
    BlockKind.HEADER: "header_type",
    BlockKind.CAPABILITY: "id",
    BlockKind.EXTENDED_CAPABILITY: "id",
}


def names_constant(name: str) -> str:
    """A block's, register's or field's name in generated/names.py: the policy's, upper-cased."""
    return name.upper()


def _names_context(model: Model) -> dict[str, Any]:
    spaces: list[dict[str, Any]] = []
    constants: list[dict[str, Any]] = []
    for src in model.files:
        for const in src.consts:
            constants.append(
                {
                    "name": names_constant(const.name),
                    "value": _hex(const.value),
                    "source": const.source,
                    "reason": const.reason,
                }
            )
        for group in src.groups:
            spaces.append(
                {
                    "name": names_constant(group.name),
                    "title": f"registers {group.name}",
                    "source": group.source,
                    "reason": group.reason,
                    "ident": None,
                    "length": None,
                    "constants": [],
                    "uses": [],
                    "registers": [_register_names(r) for r in group.registers],
                }
            )
        for block in src.blocks:
            ident = None
            title = f"{block.kind.value} {block.name}"
            if block.ident is not None and block.kind in _IDENT_ATTR:
                shown = {
                    BlockKind.CAPABILITY: f"0x{block.ident:02x}",
                    BlockKind.EXTENDED_CAPABILITY: f"0x{block.ident:04x}",
                }.get(block.kind, str(block.ident))
                ident = {"attr": _IDENT_ATTR[block.kind], "value": shown}
            if block.matches:
                title += " match " + ", ".join(m.text(as_written=True) for m in block.matches)
            spaces.append(
                {
                    "name": names_constant(block.name),
                    "title": title,
                    "source": block.source,
                    "reason": block.reason,
                    "ident": ident,
                    "length": _movable(block.length) if block.length is not None else None,
                    "constants": [],
                    "uses": [
                        names_constant(i.group) for i in block.items if not isinstance(i, Register)
                    ],
                    "registers": [
                        _register_names(i) for i in block.items if isinstance(i, Register)
                    ],
                }
            )
            spaces += [_chain_names(block, chain) for chain in block.chains]
        spaces += [_layout_names(layout) for layout in src.layouts]
    return {"constants": constants, "spaces": spaces}


def _chain_names(block: Block, chain: Chain) -> dict[str, Any]:
    """A chain's record as a namespace of its own, `BLOCK_CHAIN`: its registers' offsets are
    from a record's start."""
    return {
        "name": names_constant(f"{block.name}_{chain.name}"),
        "title": f"chain {block.name}.{chain.name}: one record, offsets from its start",
        "source": chain.source,
        "reason": chain.reason,
        "ident": None,
        "length": None,
        "constants": [],
        "uses": [],
        "registers": [_register_names(r) for r in chain.registers],
    }


def _layout_names(layout: Layout) -> dict[str, Any]:
    """A layout as a block's namespace: its length (its registers' extent), its constants, its
    registers and fields."""
    return {
        "name": names_constant(layout.name),
        "title": f"layout {layout.name}",
        "source": layout.source,
        "reason": layout.reason,
        "ident": None,
        "length": {"value": f"0x{layout.length:02x}", "params": None}
        if layout.length is not None
        else None,
        "constants": [
            {
                "name": names_constant(c.name),
                "value": _hex(c.value),
                "source": c.source,
                "reason": c.reason,
            }
            for c in layout.consts
        ],
        "uses": [],
        "registers": [_layout_register_names(r) for r in layout.registers],
    }


def _layout_register_names(reg: LayoutRegister) -> dict[str, Any]:
    return {
        "name": names_constant(reg.name),
        "title": f"{reg.name} @0x{reg.offset:02x} u{reg.width * 8}",
        "present": "",
        "source": reg.source,
        "offset": {"value": f"0x{reg.offset:02x}", "params": None},
        "width": reg.width,
        "fields": [_field_names(f, reg.width) for f in reg.fields if f.name != "_"],
    }


def _register_names(reg: Register) -> dict[str, Any]:
    at = reg.offset
    shown = at.text if at.constant is None else f"0x{at.constant:02x}"
    return {
        "name": names_constant(reg.name),
        "title": f"{reg.name} @{shown} u{reg.width * 8}",
        "present": reg.condition.text if reg.condition is not None else "",
        "source": reg.source,
        "offset": _movable(at),
        "width": reg.width,
        "fields": [_field_names(f, reg.width) for f in reg.fields if f.name != "_"],
    }


def _field_names(fld: Field | LayoutField, register_width: int) -> dict[str, Any]:
    return {
        "name": names_constant(fld.name),
        "mask": f"0x{fld.mask:0{register_width * 2}X}",
        "shift": fld.lsb,
        "width": fld.width,
        "bits": f"[{fld.bits}]",
    }


def _movable(value: Value) -> dict[str, Any]:
    """A constant as its value; an expression over device fields as a function of them, each
    field a keyword argument named `register_field` (`block_register_field` for a field of
    another capability)."""
    if value.constant is not None:
        return {"value": f"0x{value.constant:02x}", "params": None}
    body = re.sub(r'f\.of\("(\w+)", "(\w+)", "(\w+)"\)', r"\1_\2_\3", value.python)
    body = re.sub(r'f\("(\w+)", "(\w+)"\)', r"\1_\2", body)
    return {"value": body, "params": list(value.params), "text": value.text}
