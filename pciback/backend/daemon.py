"""Opening the configuration's environment, and the daemon that does so itself."""

from __future__ import annotations

import logging
from functools import partial

from pciback.control.state_dir import StateDirLock
from pciback.daemon import core
from pciback.daemon.config import Config
from pciback.daemon.core import DaemonError
from pciback.daemon.environment import Environment

log = logging.getLogger("pciback.daemon")


def open_sim(config: Config) -> Environment:
    """The simulated host of the configuration's `sim_devices` (the default set without)."""
    from pciback.sim.environment import DEFAULT_SIM_DEVICES, SimEnvironment

    base = config.source.parent if config.source else None
    return SimEnvironment.from_dumps(config.sim_devices or DEFAULT_SIM_DEVICES, base)


def open_xen(config: Config) -> Environment:
    """The real dom0's ports, or a DaemonError naming what this machine lacks."""
    from pciback.xen import YOUNG_NOTE
    from pciback.xen._loader import XenUnavailable
    from pciback.xen.environment import open_environment as open_dom0

    try:
        env = open_dom0(config_reads=config.config_reads)
    except XenUnavailable as exc:
        raise DaemonError(f'backend = "xen": cannot use the Xen adapters: {exc}') from None
    log.warning('backend = "xen": %s', YOUNG_NOTE)
    return env


def open_environment(config: Config, given: Environment | None = None) -> Environment:
    """`given` when it fits the configuration's backend, else the backend's own: backend =
    "xen" uses a Xen environment only, and opens this dom0's otherwise."""
    if config.backend == "xen":
        return given if given is not None and given.backend == "xen" else open_xen(config)
    return given or open_sim(config)


class Daemon(core.Daemon):
    """The daemon on `env`, or on the environment its configuration's backend opens."""

    def __init__(
        self,
        config: Config,
        env: Environment | None = None,
        *,
        control: bool = True,
        state_lock: StateDirLock | None = None,
    ) -> None:
        # Opened by the core at the point it always was (after the policy check and the
        # state directory's lock), so that a refused start has touched nothing.
        opener = partial(open_environment, given=env)
        super().__init__(config, opener, control=control, state_lock=state_lock)
