"""The daemon's TOML configuration.

backend = "sim"                 # "sim" (simulated host) or "xen" (a real dom0)
                                # "xen" needs /proc/xen, /dev/xen, libxenstore, libxengnttab,
                                # libxenevtchn, libxenctrl, libatomic and, to drive the real
                                # /sys, PCIBACK_ALLOW_SYSFS_WRITES=1 (lab/README.md)
state_dir = "/var/lib/pciback"  # SQLite state (the default); created 0700 when missing. It must
                                # be owned by the daemon's user, not group- or world-writable,
                                # with no symbolic link in its path, and each parent owned by
                                # root or that user and not writable by others unless sticky:
                                # never a directory another user could have made first (such as
                                # a fixed name under /tmp). One daemon per state directory.
persist = true                  # the default. false (and no state_dir): no state directory;
                                # ownership, slots and guests' saved state live in memory only,
                                # and a restart releases every device a guest holds (demos,
                                # experiments, never a dom0 with guests)
socket = "/run/pciback.sock"    # control socket (default: <state_dir>/control.sock; none
                                # with persist = false)
topology = "vpci"               # default guest topology: "vpci" or "passthrough"
hide = "(0000:03:00.0)(04:00.*)"
permissive = ["0000:03:00.0"]   # per device; `permissive = true` for every device (unsafe)
allow_interrupt_control = ["0000:03:00.0"]  # guest config writes toggle INTx/MSI/MSI-X enables
quirks = ["0000:03:00.0-40:2:ff00"]
log_level = "info"              # debug, info, warning, error
log_format = "json"             # "json" (structured, one object a line) or "text"
op_linger_us = 2000             # backend = "xen": how long a guest's service thread looks for
                                # its next op before sleeping (0: never; pciback.protocol.linger)
toolstack_timeout_s = 10        # how long attach and detach wait for a guest's pcifront (libxl:
                                # 10 s); a detach that times out completes when the guest lets go
config_reads = "ecam"           # backend = "xen": read a device's config space through a
                                # read-only mapping of its ECAM page (one load, no system call)
                                # where dom0 maps it and it reads as sysfs does, sysfs elsewhere
                                # (the default); "sysfs": always sysfs (pciback.xen.ecam)

[sim.devices]                   # backend = "sim": address = dump file (fixture name or path)
"0000:03:00.0" = "virtio-net-1af4-1041.bin"
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pciback.control.hide import HideSyntaxError, parse_device, parse_hide, parse_quirk

BACKENDS = ("sim", "xen")
TOPOLOGIES = ("vpci", "passthrough")
LOG_LEVELS = ("debug", "info", "warning", "error")
CONFIG_READS = ("ecam", "sysfs")
MAX_CONFIG = 1 << 20
DEFAULT_STATE_DIR = Path("/var/lib/pciback")

_KEYS = {
    "backend",
    "state_dir",
    "persist",
    "socket",
    "topology",
    "hide",
    "permissive",
    "allow_interrupt_control",
    "quirks",
    "log_level",
    "log_format",
    "op_linger_us",
    "toolstack_timeout_s",
    "config_reads",
    "sim",
}
T = TypeVar("T")
MAX_LINGER_US = 100_000
MAX_TOOLSTACK_TIMEOUT_S = 3600


class ConfigError(ValueError):
    """The configuration file is wrong; the message names the file and the key."""


@dataclass
class Config:
    backend: str = "sim"
    # None keeps the state in memory: what `persist = false` asks for, and what the simulated
    # host and tests build in-process. A configuration file without the key gets the default.
    state_dir: Path | None = None
    socket: Path | None = None
    topology: str = "vpci"
    hide: str = ""
    permissive: list[str] = field(default_factory=list)
    permissive_all: bool = False
    interrupt_control: list[str] = field(default_factory=list)
    quirks: list[str] = field(default_factory=list)
    log_level: str = "info"
    log_format: str = "json"
    op_linger_us: int | None = None  # None: the backend's default
    toolstack_timeout_s: float | None = None  # None: libxl's 10 s
    config_reads: str = "ecam"
    sim_devices: dict[str, str] = field(default_factory=dict)
    source: Path | None = None

    @property
    def control_socket(self) -> Path | None:
        if self.socket is not None:
            return self.socket
        return None if self.state_dir is None else self.state_dir / "control.sock"


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """` (did you mean X?)` when one known name is close to `word`, else nothing."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _unknown(section: str, keys: Iterable[str], known: Iterable[str]) -> None:
    unknown = sorted(set(keys) - set(known))
    if unknown:
        named = ", ".join(f"{key[:64]}{did_you_mean(key, known)}" for key in unknown[:8])
        raise ConfigError(f"{section}unknown key(s): {named}")


def _choice(data: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        shown = repr(value)[:64]
        raise ConfigError(f"{key} = {shown}: expected one of {', '.join(choices)}{hint}")
    return str(value)


def _strings(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of strings")
    if len(value) > 4096:
        raise ConfigError(f"{key}: more than 4096 entries")
    return list(value)


def _each(key: str, items: list[str], parse: Callable[[str], T]) -> list[T]:
    """Parse every entry of a list key; an error names the key and the entry's index."""
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse(item))
        except HideSyntaxError as exc:
            raise ConfigError(f"{key}[{index}] = {item[:64]!r}: {exc}") from None
    return parsed


def parse_config(data: dict[str, Any], base: Path | None = None) -> Config:
    _unknown("", data, _KEYS)
    cfg = Config()
    cfg.backend = _choice(data, "backend", BACKENDS, "sim")
    cfg.topology = _choice(data, "topology", TOPOLOGIES, "vpci")
    cfg.log_level = _choice(data, "log_level", LOG_LEVELS, "info")
    cfg.log_format = _choice(data, "log_format", ("json", "text"), "json")
    cfg.config_reads = _choice(data, "config_reads", CONFIG_READS, "ecam")
    linger = data.get("op_linger_us")
    if linger is not None:
        if not isinstance(linger, int) or isinstance(linger, bool):
            raise ConfigError("op_linger_us: expected a whole number of microseconds")
        if not 0 <= linger <= MAX_LINGER_US:
            raise ConfigError(f"op_linger_us = {linger}: expected 0 to {MAX_LINGER_US}")
        cfg.op_linger_us = linger
    wait = data.get("toolstack_timeout_s")
    if wait is not None:
        if not isinstance(wait, int | float) or isinstance(wait, bool):
            raise ConfigError("toolstack_timeout_s: expected a number of seconds")
        if not 0 < wait <= MAX_TOOLSTACK_TIMEOUT_S:
            raise ConfigError(
                f"toolstack_timeout_s = {wait}: expected more than 0, at most "
                f"{MAX_TOOLSTACK_TIMEOUT_S}"
            )
        cfg.toolstack_timeout_s = float(wait)
    for key in ("state_dir", "socket"):
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}: expected a path")
            path = Path(value)
            setattr(cfg, key, path if path.is_absolute() or base is None else base / path)
    persist = data.get("persist", True)
    if not isinstance(persist, bool):
        raise ConfigError("persist: expected true or false")
    if not persist and "state_dir" in data:
        raise ConfigError("persist = false and state_dir contradict each other: remove one")
    # Persistence unless asked otherwise: a daemon that forgot its owners on a restart would
    # release the devices guests hold.
    if persist and cfg.state_dir is None:
        cfg.state_dir = DEFAULT_STATE_DIR
    hide = data.get("hide", "")
    if not isinstance(hide, str):
        raise ConfigError("hide: expected a string such as '(0000:03:00.0)(04:00.*)'")
    try:
        parse_hide(hide)
    except HideSyntaxError as exc:
        raise ConfigError(f"hide = {hide[:64]!r}: {exc}") from None
    cfg.hide = hide
    if isinstance(data.get("permissive"), bool):  # the Linux module parameter
        cfg.permissive_all = data["permissive"]
    else:
        cfg.permissive = _each("permissive", _strings(data, "permissive"), parse_device)
    cfg.interrupt_control = _each(
        "allow_interrupt_control", _strings(data, "allow_interrupt_control"), parse_device
    )
    cfg.quirks = _strings(data, "quirks")
    _each("quirks", cfg.quirks, parse_quirk)
    cfg.sim_devices = _sim_devices(data.get("sim", {}))
    return cfg


def _sim_devices(sim: Any) -> dict[str, str]:
    if not isinstance(sim, dict):
        raise ConfigError("sim: expected a table ([sim.devices])")
    _unknown("[sim]: ", sim, ("devices",))
    devices = sim.get("devices", {})
    if not isinstance(devices, dict):
        raise ConfigError("[sim.devices]: expected a table of address = dump file")
    if len(devices) > 4096:
        raise ConfigError("[sim.devices]: more than 4096 devices")
    found: dict[str, str] = {}
    for address, dump in devices.items():
        where = f"[sim.devices] {address[:64]!r}"
        if not isinstance(dump, str):
            raise ConfigError(f"{where}: expected a dump file name or path")
        try:
            found[parse_device(address)] = dump
        except HideSyntaxError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return found


def load_config(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        cfg = parse_config(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg.source = path
    return cfg
