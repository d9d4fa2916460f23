"""Between build and check: `use GROUP` lines replaced by the group's registers.

Groups are shared by every file of a run, like hooks and constants, so that the prelude can
hold what several blocks use.
"""

from __future__ import annotations

from dataclasses import replace

from pciback.compiler.diagnostics import Diagnostics, did_you_mean
from pciback.compiler.model import GroupDecl, RegisterDecl, SourceFile, UseDecl

# Generated modules hold these names; a group becomes a constant named after it in upper case.
_RESERVED = frozenset({"BLOCKS", "HOOKS", "MODULE"})


def resolve(files: list[SourceFile], diags: Diagnostics) -> list[SourceFile]:
    groups: dict[str, GroupDecl] = {}
    for src in files:
        for group in src.groups:
            if group.name in groups:
                first = groups[group.name].pos
                diags.error(
                    group.pos, f"duplicate register group '{group.name}' (first at {first})"
                )
                continue
            if group.name.upper() in _RESERVED:
                diags.error(group.pos, f"'{group.name}' names part of a generated module already")
                continue
            groups[group.name] = group
    expand_uses(files, groups, diags)
    return files


def expand_uses(
    files: list[SourceFile] | tuple[SourceFile, ...],
    groups: dict[str, GroupDecl],
    diags: Diagnostics,
) -> None:
    """Each block's registers: its own and those of the groups it uses, in source order."""
    for src in files:
        src.blocks = [
            replace(block, registers=_expand(block.items, groups, diags))
            if any(isinstance(item, UseDecl) for item in block.items)
            else block
            for block in src.blocks
        ]


def _expand(
    items: tuple[RegisterDecl | UseDecl, ...],
    groups: dict[str, GroupDecl],
    diags: Diagnostics,
) -> tuple[RegisterDecl, ...]:
    registers: list[RegisterDecl] = []
    for item in items:
        if isinstance(item, RegisterDecl):
            registers.append(item)
            continue
        group = groups.get(item.group)
        if group is None:
            hint = did_you_mean(item.group, groups)
            diags.error(item.pos, f"unknown register group '{item.group}'{hint}")
            continue
        registers.extend(group.registers)
    return tuple(registers)
