"""Implementations of the side effects the policy names.

HOOKS is what these modules declare, as one value; whoever loads the policy hands it to the
engine (pciback.policy does for the installed tables). Importing registers nothing.
"""

from pciback.engine.hookapi import HookSet
from pciback.hooks import header, msi, pm, vpd

HOOKS = HookSet.collect(header, msi, pm, vpd)

__all__ = ["HOOKS", "header", "msi", "pm", "vpd"]
