"""Implementations of the side effects the policy names. Importing this registers them all."""

from pciback.hooks import header

__all__ = ["header"]
