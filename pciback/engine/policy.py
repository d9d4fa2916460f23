"""The compiled policy, indexed for the engine: which table describes which block."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pciback.engine.hookapi import (
    CapabilityCheck,
    HookSet,
    SeizeAction,
    SeizeKind,
    qualified_name,
)
from pciback.tables import Block, BlockKind, HookDecl, PolicyModule


class PolicyError(Exception):
    """The compiled tables and the runtime disagree (a hook without an implementation...)."""


@dataclass(frozen=True, slots=True)
class Policy:
    headers: dict[int, Block]
    capabilities: dict[int, Block]
    extended: dict[int, Block]
    quirks: tuple[Block, ...]
    hooks: dict[str, HookDecl]
    # Capability tables with a match: each describes its capability in the devices it
    # matches only, in place of the unmatched table (see ConfigSpace._classify).
    variants: tuple[Block, ...] = ()
    # What serves the hooks the tables name, and the capabilities' seize-time checks and
    # actions: given by the caller, as the engine knows no implementation of its own.
    implementations: HookSet = field(default_factory=HookSet)

    def named(self, name: str) -> Block | None:
        """The capability table without a match that another block's expressions name
        (`pcie.linkcap.max_width`); None for a name no table or two tables have."""
        tables = [
            block
            for block in (*self.capabilities.values(), *self.extended.values())
            if block.name == name
        ]
        return tables[0] if len(tables) == 1 else None

    def seize_checks(self, table: Block | None) -> tuple[CapabilityCheck, ...]:
        """The checks the table names, run on a capability it describes when a view is built."""
        if table is None:
            return ()
        return tuple(self.implementations.checks[s.name] for s in table.seize if s.kind == "check")

    def seize_actions(self, table: Block | None) -> tuple[SeizeAction, ...]:
        """The actions the table names, run on a capability it describes when a view is built."""
        if table is None:
            return ()
        return tuple(
            self.implementations.actions[s.name] for s in table.seize if s.kind == "action"
        )

    @classmethod
    def from_modules(
        cls, modules: Iterable[PolicyModule], implementations: HookSet, *, whole: bool = False
    ) -> Policy:
        """The tables of `modules`, served by `implementations` (checked to fit here, at load,
        not at a guest's first access). `whole`: the modules are the whole policy (generated/),
        so a seize-time check or action that none of them names is an error: it would never
        run."""
        headers: dict[int, Block] = {}
        caps: dict[int, Block] = {}
        ext: dict[int, Block] = {}
        quirks: list[Block] = []
        variants: list[Block] = []
        hooks: dict[str, HookDecl] = {}
        index = {
            BlockKind.HEADER: headers,
            BlockKind.CAPABILITY: caps,
            BlockKind.EXTENDED_CAPABILITY: ext,
        }
        for module in modules:
            for hook in module.hooks:
                hooks[hook.name] = hook
            for block in module.blocks:
                if block.kind is BlockKind.QUIRK:
                    quirks.append(block)
                    continue
                if block.matches:
                    variants.append(block)
                    continue
                table = index[block.kind]
                if block.ident in table:
                    raise PolicyError(
                        f"{block.source}: {block.kind.value} {block.ident:#x} is described twice"
                        f" (also at {table[block.ident].source})"
                    )
                table[block.ident] = block
        policy = cls(headers, caps, ext, tuple(quirks), hooks, tuple(variants), implementations)
        policy.verify_hooks(whole=whole)
        return policy

    def verify_hooks(self, *, whole: bool = False) -> None:
        """Every declared hook, and every seize-time check and action a table names, is
        implemented, with the kind and the parameters it was declared with; with `whole`, every
        seize-time check and action implemented is named by a table (`pciback-dsl check`
        verifies the same before the tables are even compiled)."""
        problems = []
        implementations = self.implementations
        for hook in self.hooks.values():
            problem = implementations.implementation_problem(hook.name, hook.kind, hook.params)
            if problem is not None:
                problems.append(f"{hook.source}: on_{hook.kind} hook '{hook.name}' {problem}")
        named: set[tuple[str, str]] = set()
        for block in self._seizing_blocks():
            for seize in block.seize:
                named.add((seize.kind, seize.name))
                kind: SeizeKind = "check" if seize.kind == "check" else "action"
                problem = implementations.seize_problem(seize.name, kind)
                if problem is not None:
                    problems.append(f"{seize.source}: seize {seize.kind} '{seize.name}' {problem}")
        if problems:
            raise PolicyError(
                "the compiled policy names hooks pciback/hooks does not provide: "
                + "; ".join(problems)
            )
        if whole:
            unnamed = [
                f"{declaration.describe()} ({qualified_name(fn)})"
                for declaration, fn in implementations.unnamed_seize_hooks(named)
            ]
            if unnamed:
                raise PolicyError(
                    "pciback/hooks implements what no table of the compiled policy names, so it"
                    " would never run: " + "; ".join(unnamed)
                )

    def _seizing_blocks(self) -> tuple[Block, ...]:
        """The tables that may name seize-time checks and actions: the capabilities'."""
        return (*self.capabilities.values(), *self.extended.values(), *self.variants)
