"""The hooks a policy is served by are one value built by its caller: declaring a hook registers
nothing, two policies never share implementations, and a name implemented twice is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pciback import hooks
from pciback.engine import Policy, PolicyError
from pciback.engine.hookapi import HookContext, HookSet, declaration_of, read_hook, write_hook
from pciback.generated import MODULES
from pciback.generated.names import COMMON_HEADER
from pciback.hooks import header
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture
from pciback.tables import PolicyModule
from tests.model.builders import ADDRESS

STATUS = COMMON_HEADER.STATUS


@write_hook("decode_enable")
def _another_decode_enable(ctx: HookContext, old: int, new: int) -> bool:
    return True


def test_the_installed_set_is_what_the_hooks_modules_declare() -> None:
    assert hooks.HOOKS.write["decode_enable"] is header.decode_enable
    assert hooks.HOOKS.read["bar_read"] is header.bar_read
    assert declaration_of(header.decode_enable) is not None
    assert declaration_of(header.size_mask) is None  # a helper, not a hook


def test_declaring_registers_nothing() -> None:
    """This module's own decode_enable reached no set: the installed one keeps its own."""
    assert hooks.HOOKS.write["decode_enable"] is not _another_decode_enable
    assert HookSet().write == {}


def test_a_hook_implemented_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="write hook 'decode_enable' implemented twice"):
        hooks.HOOKS.including(_another_decode_enable)
    # The same function again is the same implementation, not a second one.
    assert hooks.HOOKS.including(header.decode_enable).write == hooks.HOOKS.write


def test_collect_takes_only_what_a_module_defines() -> None:
    """pciback.hooks.msi imports from header; the header's hooks are not counted twice."""
    from_msi = HookSet.collect(hooks.msi)
    assert "decode_enable" not in from_msi.write
    assert "msi_enable" in from_msi.write


def test_a_policy_is_served_only_by_the_set_it_was_given() -> None:
    empty = Policy.from_modules([PolicyModule("none.pci", "0" * 64, ())], HookSet())
    assert empty.implementations.write == {}
    with pytest.raises(PolicyError, match="bist_start"):
        Policy.from_modules(MODULES, hooks.HOOKS.without("bist_start"))


# -- view-constant read hooks ----------------------------------------------------------------------
_asked: list[int] = []


@read_hook("capability_list", view_constant=True)
def _counted_list(ctx: HookContext, value: int) -> int:
    _asked.append(value)
    return header.capability_list(ctx, value)


@read_hook("capability_list")
def _counted_list_each_read(ctx: HookContext, value: int) -> int:
    _asked.append(value)
    return header.capability_list(ctx, value)


def _status_reads(hook: Callable[[HookContext, int], int], reads: int) -> tuple[set[int], int]:
    """The status values `reads` guest reads see through a policy whose capability-list hook is
    `hook`, and how many times the hook was asked."""
    policy = Policy.from_modules(MODULES, hooks.HOOKS.without("capability_list").including(hook))
    device = SimDevice(ADDRESS, fixture("virtio-net-1af4-1041.bin").read_bytes())
    view = build_config_space(device, policy=policy)
    _asked.clear()
    seen = {view.read(STATUS.offset, STATUS.width) for _ in range(reads)}
    return seen, len(_asked)


def test_a_view_constant_read_hook_is_asked_once_per_plan_and_answers_as_before() -> None:
    """Declared view_constant, the capability-list bit is asked once when the read's plan is
    made, not at every read; the guest sees the same status either way."""
    once, asked_once = _status_reads(_counted_list, 50)
    each, asked_each = _status_reads(_counted_list_each_read, 50)
    assert asked_once == 1
    assert asked_each == 50
    assert once == each
    assert all(value & STATUS.CAPABILITIES_LIST.mask for value in once)  # the fixture lists some
