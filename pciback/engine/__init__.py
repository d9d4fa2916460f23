"""The config-space engine: compiled tables + a physical device -> the guest's view."""

from pciback.engine.policy import Policy, PolicyError, default_policy
from pciback.engine.space import ConfigSpace, build_config_space

__all__ = ["ConfigSpace", "Policy", "PolicyError", "build_config_space", "default_policy"]
