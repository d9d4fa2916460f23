"""What a side-effect hook is given, how an implementation declares what it implements, and
the set of implementations (HookSet) a policy is loaded with.

A write hook runs before the write lands; returning False vetoes the write of its field (the
rest of the access still lands). Raising PciOpError fails the whole op with that error.
A read hook returns the value the guest sees for its field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
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

SeizeKind = Literal["check", "action"]

# The attribute a declaring decorator leaves on the function: a declaration is a fact about the
# function, read when a HookSet is built, never a registration into some shared table.
_DECLARED = "__pciback_declared__"


@dataclass(frozen=True, slots=True)
class Declaration:
    """What a decorated function implements, by the name the policy gives it: a write or read
    hook (`on_write NAME`), or a seize-time check or action (`seize check NAME` in a
    capability's block)."""

    role: Literal["write", "read", "check", "action"]
    name: str
    view_constant: bool = False  # a read hook's answer: see `read_hook`

    def describe(self) -> str:
        return f"{_ROLE_WORDS[self.role]} {self.name!r}"


_ROLE_WORDS = {
    "write": "write hook",
    "read": "read hook",
    "check": "seize check",
    "action": "seize action",
}
_DECORATORS = {
    "write": "write_hook",
    "read": "read_hook",
    "check": "capability_check",
    "action": "seize_action",
}


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


def capability_check(name: str) -> Callable[[CapabilityCheck], CapabilityCheck]:
    """Declare `fn` the implementation of the seize-time check a capability's block names
    (`seize check NAME "why"`); a capability that fails it is hidden (and blocked)."""
    return _declare(Declaration("check", name))


def seize_action(name: str) -> Callable[[SeizeAction], SeizeAction]:
    """Declare `fn` the implementation of the seize-time action a capability's block names
    (`seize action NAME "why"`): what to do to the capability when a view of its device is
    built (hidden or not: what it must not do, it must not do either way)."""
    return _declare(Declaration("action", name))


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
    checks: Mapping[str, CapabilityCheck] = field(default_factory=_frozen)
    actions: Mapping[str, SeizeAction] = field(default_factory=_frozen)

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
        """This set with more implementations; one that names a hook already implemented by
        another function is an error, as a hook has one meaning."""
        tables: dict[str, dict[Any, Any]] = {
            "write": dict(self.write),
            "read": dict(self.read),
            "check": dict(self.checks),
            "action": dict(self.actions),
        }
        for fn in implementations:
            declaration = declaration_of(fn)
            if declaration is None:
                raise ValueError(f"{qualified_name(fn)} is declared as no hook")
            table = tables[declaration.role]
            if table.get(declaration.name, fn) is not fn:
                raise ValueError(f"{declaration.describe()} implemented twice")
            table[declaration.name] = fn
        return HookSet(
            MappingProxyType(tables["write"]),
            MappingProxyType(tables["read"]),
            MappingProxyType(tables["check"]),
            MappingProxyType(tables["action"]),
        )

    def without(self, *names: str) -> HookSet:
        """This set lacking the hooks named, of any role (what a policy checked against an
        older pciback/hooks meets)."""

        def kept(table: Mapping[str, Any]) -> Mapping[str, Any]:
            return MappingProxyType({k: v for k, v in table.items() if k not in names})

        return HookSet(kept(self.write), kept(self.read), kept(self.checks), kept(self.actions))

    def _roles(self) -> dict[str, Mapping[str, Callable[..., object]]]:
        return {
            "write": self.write,
            "read": self.read,
            "check": self.checks,
            "action": self.actions,
        }

    def implementation_problem(self, name: str, kind: str, params: Sequence[str]) -> str | None:
        """What is wrong with the implementation of a hook the policy declares as
        `on_KIND NAME(PARAMS)` (kind "write" or "read"), as words that follow "hook 'NAME'";
        None when an implementation in this set fits. The engine calls one as
        `fn(ctx, *values)`, so it must take the context and then the declared parameters, by
        position and by name."""
        other = "read" if kind == "write" else "write"
        found = self._found(name, kind, (other,), "an on_{} hook")
        if isinstance(found, str):
            return found
        return _signature_problem(found, ("ctx", *params))

    def seize_problem(self, name: str, kind: SeizeKind) -> str | None:
        """What is wrong with the implementation of a seize-time check or action a capability's
        block names (`seize KIND NAME`), as words that follow "seize KIND 'NAME'"; None when
        one fits. The engine calls it as `fn(device, offset)`."""
        other = "action" if kind == "check" else "check"
        found = self._found(name, kind, (other,), "a seize {}")
        if isinstance(found, str):
            return found
        return _signature_problem(found, SEIZE_PARAMS)

    def _found(
        self, name: str, role: str, others: Sequence[str], other_words: str
    ) -> Callable[..., object] | str:
        """The implementation of `name` in `role`, or why there is none."""
        roles = self._roles()
        decorator = f'@{_DECORATORS[role]}("{name}")'
        fn = roles[role].get(name)
        if fn is not None:
            return fn
        for other in others:
            wrong = roles[other].get(name)
            if wrong is not None:
                return (
                    f"is implemented as {other_words.format(other)} ({qualified_name(wrong)}),"
                    f" not with {decorator}"
                )
        return f"is not implemented (no {decorator} in pciback/hooks)"

    def unnamed_seize_hooks(
        self, declared: Collection[tuple[str, str]]
    ) -> list[tuple[Declaration, Callable[..., object]]]:
        """The seize-time checks and actions of this set that no (role, name) of `declared`
        names: each would never run, as only a block naming it runs it."""
        found = []
        for role in ("check", "action"):
            for name, fn in sorted(self._roles()[role].items()):
                if (role, name) not in declared:
                    declaration = declaration_of(fn)
                    assert declaration is not None
                    found.append((declaration, fn))
        return found


SEIZE_PARAMS = ("device", "offset")


def qualified_name(fn: Callable[..., object]) -> str:
    """`module.function`, as messages name an implementation."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _signature_problem(fn: Callable[..., object], wanted: Sequence[str]) -> str | None:
    """Whether the engine may call `fn` with `wanted`, by position, as the names say."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - a callable Python cannot describe
        return None
    params = tuple(wanted[1:])
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
    wanted_text = ", ".join(wanted)
    return (
        f"has an implementation that does not take ({wanted_text}): {qualified_name(fn)}({taken})"
    )
