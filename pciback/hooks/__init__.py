"""Implementations of the side effects the policy names. Importing this registers them all."""

from pciback.hooks import header, msi, pm, vpd

__all__ = ["header", "msi", "pm", "vpd"]
