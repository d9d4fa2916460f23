"""The config-space engine: compiled tables + a physical device -> the guest's view.

The engine knows no policy of its own: the caller loads one (tables and the hooks serving them)
and hands it over; pciback.policy loads the installed one.
"""

from pciback.engine.policy import Policy, PolicyError
from pciback.engine.space import ConfigSpace

__all__ = ["ConfigSpace", "Policy", "PolicyError"]
