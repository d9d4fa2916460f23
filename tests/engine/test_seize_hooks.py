"""Seize-time checks and actions are named by a capability's block (`seize check NAME "why"`,
`seize action NAME "why"`), carried by the tables, and bound to pciback/hooks by name, as write
and read hooks are: a name without an implementation, or an implementation no table names,
refuses the policy at load (issue 13, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback import hooks
from pciback.engine import Policy, PolicyError
from pciback.engine.hookapi import HookSet, capability_check, declaration_of, seize_action
from pciback.generated import MODULES
from pciback.generated.names import MSIX, PM, VIRTIO_PCI_CAP
from pciback.hooks import msi, pm
from pciback.policy import build_config_space, default_policy
from pciback.ports.bus import PhysicalDevice
from pciback.tables import SeizeHook
from tests.engine.support import compile_policy
from tests.model.builders import endpoint

PME_ENABLE, PME_STATUS = PM.PMCSR.PME_ENABLE.mask, PM.PMCSR.PME_STATUS.mask


@capability_check("orphan_check")
def _orphan_check(device: PhysicalDevice, offset: int) -> str | None:
    return None


@capability_check("always_refuses")
def _always_refuses(device: PhysicalDevice, offset: int) -> str | None:
    return f"refused at {offset:#x}"


_acted: list[int] = []


@seize_action("remember")
def _remember(device: PhysicalDevice, offset: int) -> None:
    _acted.append(offset)


def _seizing(name: str) -> SeizeHook | None:
    block = next(b for m in MODULES for b in m.blocks if b.name == name)
    return block.seize[0] if block.seize else None


def test_the_installed_tables_name_the_msix_check_and_the_pm_action() -> None:
    msix_hook, pm_hook = _seizing("msix"), _seizing("pm")
    assert msix_hook is not None and pm_hook is not None
    assert (msix_hook.kind, msix_hook.name) == ("check", "msix_layout")
    assert msix_hook.source.startswith("dsl/msix.pci:") and "memory BAR" in msix_hook.reason
    assert (pm_hook.kind, pm_hook.name) == ("action", "pme_off")
    assert hooks.HOOKS.checks == {"msix_layout": msi.msix_layout}
    assert hooks.HOOKS.actions == {"pme_off": pm.pme_off}


def test_a_decorator_names_the_hook_not_the_capability() -> None:
    declaration = declaration_of(msi.msix_layout)
    assert declaration is not None
    assert (declaration.role, declaration.name) == ("check", "msix_layout")
    assert declaration.describe() == "seize check 'msix_layout'"


def test_the_pm_action_still_turns_pme_off_when_a_view_is_built() -> None:
    b = endpoint()
    pos = b.pm(pmcsr=0x0008 | PME_ENABLE | PME_STATUS)
    _, dev = b.space()
    at = pos + PM.PMCSR.offset
    assert dev.read(at, 2) & PME_ENABLE == 0
    # PME status written as 0 (it is write-1-to-clear): a pending PME stays for the host.
    assert (at, PM.PMCSR.width, 0x0008) in dev.writes


def test_the_msix_check_still_hides_a_table_outside_the_bars() -> None:
    b = endpoint()
    b.msix(table=(5, 0x0))
    space, _ = b.space()
    assert space.capability_offset(MSIX.id) is None
    assert "MSI-X table BIR 5 names no memory BAR of the function: capability hidden" in (
        space.problems
    )


# A vendor-specific capability's ID, which the test's own table describes.
PROBE = VIRTIO_PCI_CAP.id
POLICY = f"""
capability probe id {PROBE:#x} length 4 "a vendor capability" {{
    seize check always_refuses "what a test refuses"
    seize action remember "what a test remembers"
    register body @0x02 u16 {{ x [15:0] hw ro }}
}}
"""


def test_a_table_runs_what_it_names_and_nothing_else(tmp_path: Path) -> None:
    implementations = hooks.HOOKS.including(_always_refuses, _remember, _orphan_check)
    policy = compile_policy(POLICY, tmp_path, implementations=implementations)
    b = endpoint()
    pos = b.cap(PROBE, b"\x00\x00")
    _acted.clear()
    space = build_config_space(b.sim(), policy=policy)
    assert _acted == [pos]  # the action, on the capability its table describes
    assert f"refused at {pos:#x}: capability hidden" in space.problems
    assert space.capability_offset(PROBE) is None


def test_a_name_without_implementation_refuses_the_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as refused:
        compile_policy(POLICY, tmp_path, implementations=hooks.HOOKS.including(_remember))
    message = str(refused.value)
    assert message.startswith("the compiled policy names hooks pciback/hooks does not provide: ")
    assert message.endswith(
        "policy.pci:3: seize check 'always_refuses' is not implemented"
        ' (no @capability_check("always_refuses") in pciback/hooks)'
    )


def test_an_implementation_no_table_names_refuses_the_whole_policy() -> None:
    with_orphan = hooks.HOOKS.including(_orphan_check)
    Policy.from_modules(MODULES, with_orphan)  # a part of a policy: others may name it
    with pytest.raises(PolicyError) as refused:
        Policy.from_modules(MODULES, with_orphan, whole=True)
    assert str(refused.value) == (
        "pciback/hooks implements what no table of the compiled policy names, so it would never"
        " run: seize check 'orphan_check' (tests.engine.test_seize_hooks._orphan_check)"
    )


def test_the_installed_policy_names_every_implementation() -> None:
    default_policy.cache_clear()
    try:
        assert default_policy().implementations is hooks.HOOKS
    finally:
        default_policy.cache_clear()


def test_a_seize_hook_of_the_wrong_role_or_signature_is_said_so() -> None:
    with_check = HookSet.of(_always_refuses)
    assert with_check.seize_problem("always_refuses", "action") == (
        "is implemented as a seize check"
        " (tests.engine.test_seize_hooks._always_refuses), not with"
        ' @seize_action("always_refuses")'
    )

    def backwards(offset: int, device: PhysicalDevice) -> None:
        pass

    declared = seize_action("backwards")(backwards)  # type: ignore[arg-type]
    problem = HookSet.of(declared).seize_problem("backwards", "action")
    assert problem is not None
    assert problem.startswith("has an implementation that does not take (device, offset): ")
