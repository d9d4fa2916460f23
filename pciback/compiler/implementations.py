"""After check, for `pciback-dsl check`: the Python the policy names, against pciback/hooks.

A hook is declared in the policy and implemented in pciback/hooks (`@write_hook("name")`,
`@read_hook("name")`); so is a capability's seize-time check or action (`seize check NAME` in
its block, `@capability_check("NAME")`). The compiled tables name them only, so a declaration
without a fitting implementation would compile and fail only when the daemon loads the tables;
checking it here reports it at the declaration. A seize-time check or action that no block
names would never run, silently: when the run reads the whole installed policy (every file
generated/ is compiled from), it is reported at its Python. The daemon verifies the same at
start-up (pciback.engine.policy), against the same set of implementations
(pciback.policy.installed_hooks).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from pciback.compiler.check import Program
from pciback.compiler.diagnostics import Diagnostic, Diagnostics, Pos
from pciback.compiler.pipeline import display_path
from pciback.engine.hookapi import HookSet, SeizeKind


def check_implementations(
    program: Program, implementations: HookSet, *, whole_policy: bool = False
) -> list[Diagnostic]:
    """One error per declared hook, seize-time check or action that `implementations` does
    not implement as declared; with `whole_policy` (the run reads every file the installed
    tables are compiled from), one per seize-time check or action of `implementations` that no
    block names."""
    diags = Diagnostics()
    for hook in program.hooks.values():
        problem = implementations.implementation_problem(hook.name, hook.kind, hook.params)
        if problem is not None:
            diags.error(hook.pos, f"on_{hook.kind} hook '{hook.name}' {problem}")
    named: set[tuple[str, str]] = set()
    for src in program.files:
        for block in src.blocks:
            for seize in block.seize:
                named.add((seize.kind, seize.name))
                kind: SeizeKind = "check" if seize.kind == "check" else "action"
                problem = implementations.seize_problem(seize.name, kind)
                if problem is not None:
                    diags.error(seize.pos, f"seize {seize.kind} '{seize.name}' {problem}")
    if whole_policy:
        for declaration, fn in implementations.unnamed_seize_hooks(named):
            diags.error(
                _defined_at(fn),
                f"{declaration.describe()} is named by no capability of the policy, so it would"
                f" never run: name it in its capability's block (`seize {declaration.role}"
                f' {declaration.name} "why"`) or remove it',
            )
    return diags.items


def _defined_at(fn: Callable[..., object]) -> Pos:
    """Where the function is written (its first decorator), as diagnostics show a place."""
    try:
        path = inspect.getsourcefile(fn)
        _, line = inspect.getsourcelines(fn)
    except (OSError, TypeError):  # pragma: no cover - a function without a source file
        path, line = None, 0
    shown = display_path(Path(path)) if path else getattr(fn, "__module__", "?")
    return Pos(shown, line, 1)
