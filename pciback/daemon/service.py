"""The daemon as a system service: readiness and state told to systemd (sd_notify), and what a
SIGHUP reloads.

sd_notify is a datagram of `KEY=VALUE` lines to the unix socket named by $NOTIFY_SOCKET (an
abstract one when the name starts with "@"); without the variable, as outside systemd, nothing
is sent. `Type=notify` in the unit (contrib/systemd/pciback.service) makes systemd wait for
READY=1, sent once the daemon has reconciled its devices and serves its guests, so that what is
ordered after it (guests started by xendomains) finds a backend.

A SIGHUP re-reads the configuration file. What the running daemon can take at once: the log
level and format, how long a service thread lingers (for guests that connect from now on:
a connected guest's thread keeps its window) and the toolstack timeout. What it cannot, it says
so, key by key: the backend, the state directory and the socket need a restart; the hide list,
permissive and interrupt-control devices and quirks are applied at start, and at run time
through `pciback` commands (the pool, `permissive add`, `quirk add`), which the operator
chooses rather than a file diff. A configuration that no longer loads changes nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from pciback.daemon.config import Config, ConfigError, load_config
from pciback.daemon.logs import setup_logging
from pciback.toolstack.attach import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from pciback.daemon.core import Daemon

log = logging.getLogger("pciback.daemon")

NOTIFY_ENV = "NOTIFY_SOCKET"
# Keys a reload applies at once, and what each of the others needs instead.
RELOADED = ("log_level", "log_format", "op_linger_us", "toolstack_timeout_s")
AT_START = {
    "backend": "a restart",
    "config_reads": "a restart (the bus is opened with it)",
    "state_dir": "a restart",
    "socket": "a restart",
    "topology": "a restart",
    "sim_devices": "a restart",
    "hide": "a restart, or `pciback assignable-add` / `pciback slot add` now",
    "permissive": "a restart, or `pciback permissive add|remove` now",
    "permissive_all": "a restart",
    "interrupt_control": "a restart, or `pciback interrupt-control add|remove` now",
    "quirks": "a restart, or `pciback quirk add` now",
}


def sd_notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send `state` (KEY=VALUE lines) to systemd; False when not under it or the send fails
    (a service manager that went away must not stop the daemon)."""
    address = (environ if environ is not None else os.environ).get(NOTIFY_ENV, "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), target)
    except OSError as exc:
        log.debug("sd_notify %r to %s failed: %s", state, address, exc)
        return False
    return True


def reload_config(daemon: Daemon, path: Path) -> list[str]:
    """Apply what `path` now says that the running daemon can take; returns one line per
    changed key, also logged: what was applied, and what was not and what it needs."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload: %s; nothing changed", exc)
        return [f"not reloaded: {exc}"]
    old = daemon.config
    said: list[str] = []
    for item in fields(Config):
        key = item.name
        if key == "source" or getattr(old, key) == getattr(new, key):
            continue
        if key in RELOADED:
            _apply(daemon, new, key)
            said.append(f"{key}: now {getattr(new, key)!r}")
            setattr(old, key, getattr(new, key))
        else:
            need = AT_START.get(key, "a restart")
            said.append(f"{key}: changed in the file, not applied: it needs {need}")
    for line in said:
        log.log(logging.WARNING if "not applied" in line else logging.INFO, "reload: %s", line)
    if not said:
        log.info("reload: %s: nothing changed", path)
    return said


def _apply(daemon: Daemon, new: Config, key: str) -> None:
    if key in ("log_level", "log_format"):
        setup_logging(new.log_level, new.log_format)
    elif key == "op_linger_us":
        daemon.datapath.linger_ns = (
            type(daemon.datapath).linger_ns if new.op_linger_us is None else new.op_linger_us * 1000
        )
    elif key == "toolstack_timeout_s":
        daemon.toolstack.timeout = (
            DEFAULT_TIMEOUT if new.toolstack_timeout_s is None else new.toolstack_timeout_s
        )


__all__ = ["NOTIFY_ENV", "reload_config", "sd_notify"]
