"""The policy pciback runs: the compiled tables of generated/, served by the hooks of
pciback/hooks. The one room where the two meet, so that the engine imports neither."""

from pciback.policy.installed import (
    build_config_space,
    default_policy,
    installed_hooks,
    installed_sources,
)

__all__ = ["build_config_space", "default_policy", "installed_hooks", "installed_sources"]
