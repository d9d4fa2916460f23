"""The compiled policy, indexed for the engine: which table describes which block."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from pciback.engine.hookapi import READ_HOOKS, WRITE_HOOKS
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

    @classmethod
    def from_modules(cls, modules: Iterable[PolicyModule]) -> Policy:
        headers: dict[int, Block] = {}
        caps: dict[int, Block] = {}
        ext: dict[int, Block] = {}
        quirks: list[Block] = []
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
                table = index[block.kind]
                if block.ident in table:
                    raise PolicyError(
                        f"{block.source}: {block.kind.value} {block.ident:#x} is described twice"
                        f" (also at {table[block.ident].source})"
                    )
                table[block.ident] = block
        policy = cls(headers, caps, ext, tuple(quirks), hooks)
        policy.verify_hooks()
        return policy

    def verify_hooks(self) -> None:
        """Every declared hook is implemented, with the kind it was declared with."""
        import pciback.hooks  # noqa: F401  (registers the implementations)

        missing = []
        for hook in self.hooks.values():
            table = WRITE_HOOKS if hook.kind == "write" else READ_HOOKS
            if hook.name not in table:
                missing.append(f"{hook.source}: on_{hook.kind} hook '{hook.name}'")
        if missing:
            raise PolicyError("hooks declared but not implemented: " + "; ".join(missing))


@cache
def default_policy() -> Policy:
    from pciback.generated import MODULES

    return Policy.from_modules(MODULES)
