"""Side effects of the Vital Product Data capability: reads pass, writes are refused."""

from __future__ import annotations

from pciback.engine.hookapi import HookContext, write_hook
from pciback.errors import PciOpError, XenPciError


@write_hook("vpd_flag")
def vpd_flag(ctx: HookContext, old: int, new: int) -> bool:
    # The flag written as 1 is how a VPD write starts; Linux answers PCIBIOS_SET_FAILED, which
    # the guest sees as access denied, and the address is not written either.
    if new:
        raise PciOpError(XenPciError.ACCESS_DENIED, "writing VPD is refused")
    return True
