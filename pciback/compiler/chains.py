"""The checks of a block's chains (`chain entry[COUNT] @START next STEP { ... }`), run with the
array expansion: a chain's record is checked as a block of its own (its registers, their
fields, their layout in every combination of the record's fields), then placed in the block.

What the runtime relies on, checked here in every combination of the fields read: a record's
next one starts at or after its last register's end (records never overlap, and the walk
always moves forward), on the alignment its widest register needs; the records start after
the block's own registers; and the count is bounded (the runtime never lays out more).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from pciback.compiler.diagnostics import Diagnostics, Pos
from pciback.compiler.evaluate import EvalError, FieldValues, Unresolved, evaluate
from pciback.compiler.model import BlockDecl, ChainDecl, Expr, HookDecl, device_refs
from pciback.tables import BlockKind

if TYPE_CHECKING:
    from pciback.compiler.check import BlockChecker, Catalog

# Records one chain may have: every record is at least a dword of the 4096-byte space.
MAX_RECORDS = 1024


def check_chains(
    block: BlockDecl,
    checker: type[BlockChecker],
    consts: Mapping[str, int],
    hooks: Mapping[str, HookDecl],
    diags: Diagnostics,
    declared: Collection[str] = (),
    catalog: Catalog | None = None,
) -> BlockDecl:
    """The block with its chains checked, their records' arrays expanded and their bounds
    (`most`) worked out."""
    if not block.chains:
        return block
    names = {r.name: r.pos for r in block.registers}
    chains: list[ChainDecl] = []
    for chain in block.chains:
        if chain.name in names:
            diags.error(
                chain.pos, f"chain '{chain.name}' is named as '{chain.name}' at {names[chain.name]}"
            )
        names.setdefault(chain.name, chain.pos)
        outer = checker(block, consts, hooks, diags, declared, catalog)
        outer.registers = {r.name: r for r in block.registers}
        most = _placement(outer, block, chain, diags)
        record = _record(chain, block, checker, consts, hooks, diags, declared, catalog)
        chains.append(replace(chain, registers=record.registers, most=most))
    return replace(block, chains=tuple(chains))


def _placement(outer: BlockChecker, block: BlockDecl, chain: ChainDecl, diags: Diagnostics) -> int:
    """The most records the count can give; reported: a start before the block's registers
    end or off the records' alignment, a count beyond MAX_RECORDS."""
    outer._check_refs(chain.count, "a chain count")
    outer._check_refs(chain.start, "a chain start")
    most = 0
    for env in _domain(outer, [chain.count], "the chain count depends"):
        try:
            most = max(most, evaluate(chain.count, outer.consts, env))
        except EvalError as exc:
            diags.error(exc.pos, exc.message + _when(env))
            return 0
        except Unresolved:
            return 0  # reported by _check_refs
    align = max((r.width for r in chain.registers), default=1)
    exprs: list[Expr | None] = [chain.start]
    exprs += [e for r in block.registers for e in (r.offset, r.condition)]
    for env in _domain(outer, exprs, "the chain start depends"):
        try:
            start = evaluate(chain.start, outer.consts, env)
            ends = [
                (evaluate(r.offset, outer.consts, env) + r.width, r)
                for r in block.registers
                if r.condition is None or evaluate(r.condition, outer.consts, env)
            ]
        except EvalError as exc:
            diags.error(exc.pos, exc.message + _when(env))
            return 0
        except Unresolved:
            return 0  # reported by _check_refs
        after = [r for end, r in ends if end > start]
        if after:
            diags.error(
                _expr_pos(chain.start, chain.pos),
                f"chain '{chain.name}' starts at {start:#x}, before register"
                f" '{after[0].name}' ends{_when(env)}: a chain follows the block's registers",
            )
            return 0
        if start % align:
            diags.error(
                _expr_pos(chain.start, chain.pos),
                f"chain '{chain.name}' starts at {start:#x}, not on the {align}-byte alignment"
                f" its registers need{_when(env)}",
            )
            return 0
    if most > MAX_RECORDS:
        diags.error(
            _expr_pos(chain.count, chain.pos),
            f"chain '{chain.name}' can have {most} records; at most {MAX_RECORDS}"
            " (bound the count, with min() for instance)",
        )
        return 0
    return most


def _record(
    chain: ChainDecl,
    block: BlockDecl,
    checker: type[BlockChecker],
    consts: Mapping[str, int],
    hooks: Mapping[str, HookDecl],
    diags: Diagnostics,
    declared: Collection[str],
    catalog: Catalog | None,
) -> BlockDecl:
    """A record as a block of its own (a quirk's, which the whole space may hold and no chain
    link starts), checked as one; its arrays expanded."""
    alone = replace(
        block,
        kind=BlockKind.QUIRK,
        name=f"{block.name}.{chain.name}",
        registers=chain.registers,
        items=chain.registers,
        rests=(),
        chains=(),
        length=None,
        length_auto=None,
    )
    expanded = checker(alone, consts, hooks, diags, declared, catalog).expand_arrays()
    inner = checker(expanded, consts, hooks, diags, declared, catalog)
    errors = len(diags.errors)
    inner.run_registers()
    inner._check_refs(chain.next, "a chain's next")
    if len(diags.errors) == errors:
        _check_next(inner, chain, expanded, diags)
    return expanded


def _check_next(
    inner: BlockChecker, chain: ChainDecl, record: BlockDecl, diags: Diagnostics
) -> None:
    """In every combination of the record's fields, the next record starts at or after this
    one's end, on its registers' alignment."""
    regs = record.registers
    exprs: list[Expr | None] = [chain.next]
    exprs += [r.offset for r in regs] + [r.condition for r in regs]
    align = max((r.width for r in regs), default=1)
    where = _expr_pos(chain.next, chain.pos)
    for env in _domain(inner, exprs, "the chain's records depend"):
        try:
            step = evaluate(chain.next, inner.consts, env)
            end = max(
                (
                    evaluate(r.offset, inner.consts, env) + r.width
                    for r in regs
                    if r.condition is None or evaluate(r.condition, inner.consts, env)
                ),
                default=0,
            )
        except EvalError as exc:
            diags.error(exc.pos, exc.message + _when(env))
            return
        except Unresolved:
            return  # reported by _check_refs
        if step < max(end, 1):
            diags.error(
                where,
                f"chain '{chain.name}' next is {step}, but its record ends at {end:#x}"
                f"{_when(env)}: records would overlap",
            )
            return
        if step % align:
            diags.error(
                where,
                f"chain '{chain.name}' next is {step}, not a multiple of {align}{_when(env)}:"
                " the next record's registers would be misaligned",
            )
            return


def _domain(
    checker: BlockChecker, exprs: list[Expr | None], what: str
) -> list[dict[tuple[str, ...], int]]:
    """Every combination of the fields `exprs` read that tells their values apart (none when
    a field is unknown: reported already)."""
    if not any(device_refs(e) for e in exprs if e is not None):
        return [{}]
    return checker._field_domain(exprs, what) or []


def _when(env: FieldValues) -> str:
    if not env:
        return ""
    return " when " + ", ".join(f"{'.'.join(key)} = {value}" for key, value in sorted(env.items()))


def _expr_pos(expr: Expr, default: Pos) -> Pos:
    pos = getattr(expr, "pos", None)
    return pos if isinstance(pos, Pos) else default
