"""What a side-effect hook is given, and how hook implementations are registered by name.

A write hook runs before the write lands; returning False vetoes the write of its field (the
rest of the access still lands). Raising PciOpError fails the whole op with that error.
A read hook returns the value the guest sees for its field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pciback.engine.registers import RegisterInstance
    from pciback.engine.space import ConfigSpace
    from pciback.ports.bus import PhysicalDevice


@dataclass(slots=True)
class HookContext:
    """What a hook is given about the register it acts for.

    Valid only for the duration of the hook call: the engine reuses a register's context from
    one read to the next, so a hook keeps what must outlive the call in `state`, never the
    context itself.
    """

    space: ConfigSpace
    register: RegisterInstance
    old_register: int  # the guest-visible value before the write (rw1c bits as 0)
    new_register: int  # the value the guest asked for, merged over the old one

    @property
    def offset(self) -> int:
        """Absolute offset of the register."""
        return self.register.offset

    @property
    def block_base(self) -> int:
        return self.register.block_base

    @property
    def state(self) -> dict[str, Any]:
        """Per-register state kept for the device's lifetime (e.g. a BAR's sizing latch)."""
        return self.register.state

    def field(self, name: str, value: int | None = None) -> int:
        """A field of this register, from `value` (default: the new register value)."""
        fld = self.register.field_named(name)
        source = self.new_register if value is None else value
        return (source & fld.mask) >> fld.shift


WriteHook = Callable[[HookContext, int, int], bool]
ReadHook = Callable[[HookContext, int], int]

WRITE_HOOKS: dict[str, WriteHook] = {}
READ_HOOKS: dict[str, ReadHook] = {}


def write_hook(name: str) -> Callable[[WriteHook], WriteHook]:
    def register(fn: WriteHook) -> WriteHook:
        if name in WRITE_HOOKS:
            raise ValueError(f"write hook {name!r} implemented twice")
        WRITE_HOOKS[name] = fn
        return fn

    return register


def read_hook(name: str) -> Callable[[ReadHook], ReadHook]:
    def register(fn: ReadHook) -> ReadHook:
        if name in READ_HOOKS:
            raise ValueError(f"read hook {name!r} implemented twice")
        READ_HOOKS[name] = fn
        return fn

    return register


def implementation_problem(name: str, kind: str, params: Sequence[str]) -> str | None:
    """What is wrong with the implementation of a hook the policy declares as
    `on_KIND NAME(PARAMS)` (kind "write" or "read"), as words that follow "hook 'NAME'"; None
    when a registered implementation fits. The engine calls one as `fn(ctx, *values)`, so it
    must take the context and then the declared parameters, by position and by name."""
    table, other = (WRITE_HOOKS, READ_HOOKS) if kind == "write" else (READ_HOOKS, WRITE_HOOKS)
    decorator = f'@{kind}_hook("{name}")'
    fn: Callable[..., object] | None = table.get(name)
    if fn is None:
        wrong = other.get(name)
        if wrong is not None:
            other_kind = "read" if kind == "write" else "write"
            return (
                f"is implemented as an on_{other_kind} hook ({_where(wrong)}), not with {decorator}"
            )
        return f"is not implemented (no {decorator} in pciback/hooks)"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - a callable Python cannot describe
        return None
    wanted = ("ctx", *params)
    given = list(signature.parameters.values())
    positional = [
        p
        for p in given
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    fits = (
        len(positional) >= len(wanted)
        and tuple(p.name for p in positional[1 : len(wanted)]) == tuple(params)
        and all(p.default is not p.empty for p in positional[len(wanted) :])
        and not any(
            p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty for p in given
        )
    )
    if fits:
        return None
    taken = ", ".join(str(p).split(":")[0].split("=")[0] for p in given)
    return f"has an implementation that does not take ({', '.join(wanted)}): {_where(fn)}({taken})"


def _where(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


CapabilityCheck = Callable[["PhysicalDevice", int], "str | None"]
"""`check(device, offset)`: None when the device-provided layout is sane, else the reason."""

CAPABILITY_CHECKS: dict[tuple[bool, int], CapabilityCheck] = {}


def capability_check(
    ident: int, *, extended: bool = False
) -> Callable[[CapabilityCheck], CapabilityCheck]:
    """Register a seize-time check; a capability that fails it is hidden (and blocked)."""

    def register(fn: CapabilityCheck) -> CapabilityCheck:
        key = (extended, ident)
        if key in CAPABILITY_CHECKS:
            raise ValueError(f"capability check for {ident:#x} implemented twice")
        CAPABILITY_CHECKS[key] = fn
        return fn

    return register


SeizeAction = Callable[["PhysicalDevice", int], None]
"""`action(device, offset)`: put a capability in the state a guest may start from."""

SEIZE_ACTIONS: dict[tuple[bool, int], SeizeAction] = {}


def seize_action(ident: int, *, extended: bool = False) -> Callable[[SeizeAction], SeizeAction]:
    """Register what to do to a capability when a view of its device is built (hidden or not:
    what it must not do, it must not do either way)."""

    def register(fn: SeizeAction) -> SeizeAction:
        key = (extended, ident)
        if key in SEIZE_ACTIONS:
            raise ValueError(f"seize action for {ident:#x} implemented twice")
        SEIZE_ACTIONS[key] = fn
        return fn

    return register
