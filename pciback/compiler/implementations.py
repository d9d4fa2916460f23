"""After check, for `pciback-dsl check`: every declared hook against the Python implementing it.

A hook is declared in the policy and implemented in pciback/hooks (`@write_hook("name")`,
`@read_hook("name")`). The compiled tables name hooks only, so a declaration without a fitting
implementation would compile and fail only when the daemon loads the tables; checking it here
reports it at the declaration. The daemon verifies the same at start-up (pciback.engine.policy),
against the same set of implementations (pciback.policy.installed_hooks).
"""

from __future__ import annotations

from pciback.compiler.check import Program
from pciback.compiler.diagnostics import Diagnostic, Diagnostics
from pciback.engine.hookapi import HookSet


def check_implementations(program: Program, implementations: HookSet) -> list[Diagnostic]:
    """One error per declared hook that `implementations` does not implement as declared."""
    diags = Diagnostics()
    for hook in program.hooks.values():
        problem = implementations.implementation_problem(hook.name, hook.kind, hook.params)
        if problem is not None:
            diags.error(hook.pos, f"on_{hook.kind} hook '{hook.name}' {problem}")
    return diags.items
