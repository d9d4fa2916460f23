"""What a side-effect hook is given, how an implementation declares what it implements, and
the set of implementations (HookSet) a policy is loaded with.

A write hook runs before the write lands; returning False vetoes the write of its field (the
rest of the access still lands). Raising PciOpError fails the whole op with that error.
A read hook returns the value the guest sees for its field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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
    # The register's, copied once when the context is made rather than fetched through it at
    # every hook call (a register neither moves nor changes its state dict in its life):
    offset: int = field(init=False)  # absolute offset of the register
    block_base: int = field(init=False)
    # Per-register state kept for the device's lifetime (e.g. a BAR's sizing latch).
    state: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        register = self.register
        self.offset = register.offset
        self.block_base = register.block_base
        self.state = register.state

    def field(self, name: str, value: int | None = None) -> int:
        """A field of this register, from `value` (default: the new register value)."""
        fld = self.register.field_named(name)
        source = self.new_register if value is None else value
        return (source & fld.mask) >> fld.shift


WriteHook = Callable[[HookContext, int, int], bool]
ReadHook = Callable[[HookContext, int], int]
_Fn = TypeVar("_Fn", bound=Callable[..., object])

CapabilityCheck = Callable[["PhysicalDevice", int], "str | None"]
"""`check(device, offset)`: None when the device-provided layout is sane, else the reason."""

SeizeAction = Callable[["PhysicalDevice", int], None]
"""`action(device, offset)`: put a capability in the state a guest may start from."""

CapabilityKey = tuple[bool, int]  # (extended, capability ID)

# The attribute a declaring decorator leaves on the function: a declaration is a fact about the
# function, read when a HookSet is built, never a registration into some shared table.
_DECLARED = "__pciback_declared__"


@dataclass(frozen=True, slots=True)
class Declaration:
    """What a decorated function implements: a write or read hook by name, or a capability's
    seize-time check or action."""

    role: Literal["write", "read", "check", "action"]
    name: str = ""
    capability: CapabilityKey = (False, 0)
    view_constant: bool = False  # a read hook's answer: see `read_hook`

    def describe(self) -> str:
        if self.role in ("write", "read"):
            return f"{self.role} hook {self.name!r}"
        extended, ident = self.capability
        what = "capability check" if self.role == "check" else "seize action"
        return f"{what} for {'extended ' if extended else ''}{ident:#x}"


def _declare(declaration: Declaration) -> Callable[[_Fn], _Fn]:
    def mark(fn: _Fn) -> _Fn:
        setattr(fn, _DECLARED, declaration)
        return fn

    return mark


def declaration_of(fn: object) -> Declaration | None:
    declared = getattr(fn, _DECLARED, None)
    return declared if isinstance(declared, Declaration) else None


def write_hook(name: str) -> Callable[[WriteHook], WriteHook]:
    """Declare `fn` the implementation of the policy's `on_write NAME` hook."""
    return _declare(Declaration("write", name))


def read_hook(name: str, *, view_constant: bool = False) -> Callable[[ReadHook], ReadHook]:
    """Declare `fn` the implementation of the policy's `on_read NAME` hook. `view_constant`:
    its answer depends on nothing but the view's chains, fixed once the view is built (not on
    the field's value, the device, the mode or time), so a view asks it once per read plan
    rather than at every read."""
    return _declare(Declaration("read", name, view_constant=view_constant))


def is_view_constant(hook: ReadHook) -> bool:
    """Whether `hook` was declared `view_constant` (see `read_hook`)."""
    declaration = declaration_of(hook)
    return declaration is not None and declaration.view_constant


def capability_check(
    ident: int, *, extended: bool = False
) -> Callable[[CapabilityCheck], CapabilityCheck]:
    """Declare a seize-time check; a capability that fails it is hidden (and blocked)."""
    return _declare(Declaration("check", capability=(extended, ident)))


def seize_action(ident: int, *, extended: bool = False) -> Callable[[SeizeAction], SeizeAction]:
    """Declare what to do to a capability when a view of its device is built (hidden or not:
    what it must not do, it must not do either way)."""
    return _declare(Declaration("action", capability=(extended, ident)))


def _frozen() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class HookSet:
    """The implementations a policy is served by, as one value: built once by whoever loads the
    policy and handed to the engine with the tables (Policy.from_modules). Nothing registers
    itself on import, so two policies (a test's, the installed one) never share hooks by
    accident."""

    write: Mapping[str, WriteHook] = field(default_factory=_frozen)
    read: Mapping[str, ReadHook] = field(default_factory=_frozen)
    checks: Mapping[CapabilityKey, CapabilityCheck] = field(default_factory=_frozen)
    actions: Mapping[CapabilityKey, SeizeAction] = field(default_factory=_frozen)

    @classmethod
    def of(cls, *implementations: Callable[..., object]) -> HookSet:
        """The set of these functions, each declared by one of the decorators above."""
        return cls().including(*implementations)

    @classmethod
    def collect(cls, *modules: ModuleType) -> HookSet:
        """Every declared function defined in `modules` (not those they import from another)."""
        return cls.of(
            *(
                value
                for module in modules
                for value in vars(module).values()
                if declaration_of(value) is not None
                and getattr(value, "__module__", None) == module.__name__
            )
        )

    def including(self, *implementations: Callable[..., object]) -> HookSet:
        """This set with more implementations; one that names a hook (or capability) already
        implemented by another function is an error, as a hook has one meaning."""
        tables: dict[str, dict[Any, Any]] = {
            "write": dict(self.write),
            "read": dict(self.read),
            "check": dict(self.checks),
            "action": dict(self.actions),
        }
        for fn in implementations:
            declaration = declaration_of(fn)
            if declaration is None:
                raise ValueError(f"{_where(fn)} is declared as no hook")
            table = tables[declaration.role]
            key = (
                declaration.name
                if declaration.role in ("write", "read")
                else declaration.capability
            )
            if table.get(key, fn) is not fn:
                raise ValueError(f"{declaration.describe()} implemented twice")
            table[key] = fn
        return HookSet(
            MappingProxyType(tables["write"]),
            MappingProxyType(tables["read"]),
            MappingProxyType(tables["check"]),
            MappingProxyType(tables["action"]),
        )

    def without(self, *names: str) -> HookSet:
        """This set lacking the write and read hooks named (what a policy checked against an
        older pciback/hooks meets)."""
        return HookSet(
            MappingProxyType({k: v for k, v in self.write.items() if k not in names}),
            MappingProxyType({k: v for k, v in self.read.items() if k not in names}),
            self.checks,
            self.actions,
        )

    def implementation_problem(self, name: str, kind: str, params: Sequence[str]) -> str | None:
        """What is wrong with the implementation of a hook the policy declares as
        `on_KIND NAME(PARAMS)` (kind "write" or "read"), as words that follow "hook 'NAME'";
        None when an implementation in this set fits. The engine calls one as
        `fn(ctx, *values)`, so it must take the context and then the declared parameters, by
        position and by name."""
        table: Mapping[str, Callable[..., object]]
        other: Mapping[str, Callable[..., object]]
        table, other = (self.write, self.read) if kind == "write" else (self.read, self.write)
        decorator = f'@{kind}_hook("{name}")'
        fn = table.get(name)
        if fn is None:
            wrong = other.get(name)
            if wrong is not None:
                other_kind = "read" if kind == "write" else "write"
                return (
                    f"is implemented as an on_{other_kind} hook ({_where(wrong)}),"
                    f" not with {decorator}"
                )
            return f"is not implemented (no {decorator} in pciback/hooks)"
        return _signature_problem(fn, params)


def _where(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _signature_problem(fn: Callable[..., object], params: Sequence[str]) -> str | None:
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
