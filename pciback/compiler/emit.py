"""Pass 4: checked model -> Python source, through the jinja2 templates beside this module.

Output is a pure function of the sources: no timestamps, no absolute paths, stable ordering.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from pciback.compiler.check import Program
from pciback.compiler.evaluate import evaluate, to_python, to_text
from pciback.compiler.extent import length_text
from pciback.compiler.model import (
    BackingKind,
    BlockDecl,
    BlockKindDecl,
    CapabilityFieldRef,
    Expr,
    FieldDecl,
    MatchDecl,
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
    env.filters["doc"] = _docstring_text
    return env


def _docstring_text(text: str) -> str:
    """Text that stands inside a triple-quoted docstring as it reads."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


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
    outputs.append(Output(NAMES, env.get_template("names.py.j2").render(_names_context(program))))
    return outputs


NAMES = "names.py"


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
        "length_text": length_text(block),
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
                "alternatives": _tuple([_hex(evaluate(v, consts)) for v in m.alternatives]),
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


def match_text(match: MatchDecl, show: Callable[[Expr], str]) -> str:
    """`key = V / M` or `key in (V, W)`, each value as `show` writes it."""
    if match.listed:
        return f"{match.key} in ({', '.join(show(v) for v in match.values)})"
    mask = f" / {show(match.mask)}" if match.mask is not None else ""
    return f"{match.key} = {show(match.value)}{mask}"


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
    BlockKindDecl.HEADER: "header_type",
    BlockKindDecl.CAPABILITY: "id",
    BlockKindDecl.EXTENDED_CAPABILITY: "id",
}


def names_constant(name: str) -> str:
    """A block's, register's or field's name in generated/names.py: the policy's, upper-cased."""
    return name.upper()


def _names_context(program: Program) -> dict[str, Any]:
    consts = program.consts
    spaces: list[dict[str, Any]] = []
    constants: list[dict[str, Any]] = []
    for src in program.files:
        for const in src.consts:
            value = evaluate(const.value, consts)
            constants.append(
                {
                    "name": names_constant(const.name),
                    "value": _hex(value),
                    "source": f"{src.path}:{const.pos.line}",
                    "reason": const.reason,
                }
            )
        for group in src.groups:
            spaces.append(
                {
                    "name": names_constant(group.name),
                    "title": f"registers {group.name}",
                    "source": f"{src.path}:{group.pos.line}",
                    "reason": group.reason,
                    "ident": None,
                    "length": None,
                    "uses": [],
                    "registers": [_register_names(r, consts) for r in group.registers],
                }
            )
        for block in src.blocks:
            ident = None
            title = f"{block.kind.value} {block.name}"
            if block.ident is not None and block.kind in _IDENT_ATTR:
                value = evaluate(block.ident, consts)
                shown = {BlockKindDecl.CAPABILITY: f"0x{value:02x}"}.get(block.kind, str(value))
                if block.kind is BlockKindDecl.EXTENDED_CAPABILITY:
                    shown = f"0x{value:04x}"
                ident = {"attr": _IDENT_ATTR[block.kind], "value": shown}
            if block.matches:
                title += " match " + ", ".join(match_text(m, to_text) for m in block.matches)
            spaces.append(
                {
                    "name": names_constant(block.name),
                    "title": title,
                    "source": f"{src.path}:{block.pos.line}",
                    "reason": block.reason,
                    "ident": ident,
                    "length": _movable(block.length, consts) if block.length else None,
                    "uses": [
                        names_constant(i.group) for i in block.items if isinstance(i, UseDecl)
                    ],
                    "registers": [
                        _register_names(i, consts)
                        for i in block.items
                        if isinstance(i, RegisterDecl)
                    ],
                }
            )
    return {"constants": constants, "spaces": spaces}


def _register_names(reg: RegisterDecl, consts: Mapping[str, int]) -> dict[str, Any]:
    digits = reg.width * 2
    at = f"0x{evaluate(reg.offset, consts):02x}" if not device_refs(reg.offset) else None
    return {
        "name": names_constant(reg.name),
        "title": f"{reg.name} @{at if at else to_text(reg.offset)} u{reg.width * 8}",
        "present": to_text(reg.condition) if reg.condition else "",
        "source": f"{reg.pos.file}:{reg.pos.line}",
        "offset": _movable(reg.offset, consts),
        "width": reg.width,
        "fields": [
            {
                "name": names_constant(f.name),
                "mask": f"0x{f.mask:0{digits}X}",
                "shift": f.lsb,
                "width": f.width,
                "bits": f"[{f.msb}]" if f.msb == f.lsb else f"[{f.msb}:{f.lsb}]",
            }
            for f in reg.fields
            if f.name != "_"
        ],
    }


def _movable(expr: Any, consts: Mapping[str, int]) -> dict[str, Any]:
    """A constant as its value; an expression over device fields as a function of them, each
    field a keyword argument named `register_field` (`block_register_field` for a field of
    another capability)."""
    refs = device_refs(expr)
    if not refs:
        return {"value": f"0x{evaluate(expr, consts):02x}", "params": None}
    params = sorted(
        {
            f"{r.block}_{r.register}_{r.field}"
            if isinstance(r, CapabilityFieldRef)
            else f"{r.register}_{r.field}"
            for r in refs
        }
    )
    body = to_python(expr, consts)
    body = re.sub(r'f\.of\("(\w+)", "(\w+)", "(\w+)"\)', r"\1_\2_\3", body)
    body = re.sub(r'f\("(\w+)", "(\w+)"\)', r"\1_\2", body)
    return {"value": body, "params": params, "text": to_text(expr)}
