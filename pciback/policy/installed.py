"""The installed policy, loaded once, and guest views built under it unless told otherwise."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from pciback import hooks
from pciback.engine.hookapi import HookSet
from pciback.engine.policy import Policy
from pciback.engine.settings import DeviceSettings
from pciback.engine.space import ConfigSpace
from pciback.ports.bus import PhysicalDevice
from pciback.tables import Register


def installed_hooks() -> HookSet:
    """What pciback/hooks implements. Looked up on each call rather than bound at import, so
    that a test can stand another set in for the entry points that load the policy themselves
    (`pciback-dsl check`, the daemon)."""
    return hooks.HOOKS


def installed_sources() -> frozenset[str]:
    """The policy files generated/ is compiled from, as the compiler named them
    (`dsl/msix.pci`): a `pciback-dsl check` reading them all checks the installed policy."""
    from pciback.generated import MODULES

    return frozenset(module.source for module in MODULES)


@cache
def default_policy() -> Policy:
    """generated/ with pciback/hooks; PolicyError when the two disagree."""
    # The tables are imported on first use, not with this module: a caller that never builds
    # a view (a CLI command, the compiler) does not pay for them.
    from pciback.generated import MODULES

    return Policy.from_modules(MODULES, installed_hooks(), whole=True)


def build_config_space(
    device: PhysicalDevice,
    *,
    permissive: bool = False,
    settings: DeviceSettings | None = None,
    policy: Policy | None = None,
    hide: Iterable[int] = (),
    hide_extended: Iterable[int] = (),
    extra_registers: Iterable[Register] = (),
) -> ConfigSpace:
    """The guest view of `device` under the compiled policy (the default: the installed one)."""
    return ConfigSpace(
        device,
        policy or default_policy(),
        permissive=permissive,
        settings=settings,
        hide=hide,
        hide_extended=hide_extended,
        extra_registers=extra_registers,
    )
