"""Where the CLI finds the daemon's control socket, so that an operator need not repeat
`--socket` on every call.

The first source given wins, in this order: `--socket PATH`, `--config FILE` (the daemon's
TOML: its `socket`, else `<state_dir>/control.sock`), `$PCIBACK_SOCKET`, `$PCIBACK_CONFIG`,
then the daemon's default, /var/lib/pciback/control.sock. A source that is given but wrong (a
bad configuration, one without a socket) is an error naming it rather than a silent fall
through to the next: the operator meant that daemon, not another one.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pciback.daemon.config import DEFAULT_STATE_DIR, ConfigError, load_config
from pciback.daemon.control import ControlError, Reply, exchange

ENV_SOCKET = "PCIBACK_SOCKET"
ENV_CONFIG = "PCIBACK_CONFIG"
DEFAULT_SOCKET = DEFAULT_STATE_DIR / "control.sock"
# An environment variable longer than this is not a path anyone typed.
MAX_PATH = 4096


class SocketNotFound(Exception):
    """No control socket could be named; the message says what was tried."""


@dataclass(frozen=True, slots=True)
class FoundSocket:
    path: Path
    origin: str  # where the path came from, for the operator's error line


def add_socket_options(parser: argparse.ArgumentParser, *, for_subcommand: bool) -> None:
    """`--socket` and `--config`, accepted before the subcommand and after it. A subcommand's
    copies leave the attributes unset when not given (SUPPRESS), so that they do not overwrite
    what the global options set."""
    default = argparse.SUPPRESS if for_subcommand else None
    parser.add_argument(
        "--socket",
        default=default,
        metavar="PATH",
        help=f"the daemon's control socket (default: ${ENV_SOCKET}, or from the configuration)",
    )
    parser.add_argument(
        "--config",
        default=default,
        metavar="FILE",
        help=f"the daemon's TOML configuration, to find its socket (default: ${ENV_CONFIG})",
    )


def find_socket(
    socket: str | None, config: str | None, environ: Mapping[str, str] | None = None
) -> FoundSocket:
    env = os.environ if environ is None else environ
    if socket:
        return FoundSocket(Path(socket), "--socket")
    if config:
        return FoundSocket(_from_config(config, "--config"), f"--config {config}")
    env_socket = _env(env, ENV_SOCKET)
    if env_socket:
        return FoundSocket(Path(env_socket), f"${ENV_SOCKET}")
    env_config = _env(env, ENV_CONFIG)
    if env_config:
        return FoundSocket(_from_config(env_config, f"${ENV_CONFIG}"), f"${ENV_CONFIG}")
    return FoundSocket(
        DEFAULT_SOCKET,
        f"the default (no --socket, no --config, ${ENV_SOCKET} and ${ENV_CONFIG} unset)",
    )


def socket_of(args: argparse.Namespace) -> FoundSocket:
    """The socket a parsed command line names (attributes absent when no option was given)."""
    socket = getattr(args, "socket", None)
    config = getattr(args, "config", None)
    return find_socket(
        None if socket is None else str(socket), None if config is None else str(config)
    )


def control_exchange(
    args: argparse.Namespace,
    op: str,
    arg: str | None = None,
    *,
    timeout: float = 10.0,
    fields: Mapping[str, Any] | None = None,
) -> Reply:
    """One request to the daemon the command line names: its result and what it changed;
    ControlError in one line, saying where the socket's path came from when the daemon cannot
    be reached there."""
    try:
        found = socket_of(args)
    except SocketNotFound as exc:
        raise ControlError(f"no control socket: {exc}") from None
    try:
        return exchange(found.path, op, arg, timeout=timeout, fields=fields)
    except ControlError as exc:
        if str(exc).startswith("cannot reach"):
            raise ControlError(f"{exc} (socket from {found.origin})") from None
        raise


def control_request(
    args: argparse.Namespace,
    op: str,
    arg: str | None = None,
    *,
    timeout: float = 10.0,
    fields: Mapping[str, Any] | None = None,
) -> Any:
    """`control_exchange`'s result alone, for the commands that print their own lines."""
    return control_exchange(args, op, arg, timeout=timeout, fields=fields).result


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_PATH or "\0" in value:
        raise SocketNotFound(f"${name} is not a path")
    return value


def _from_config(path: str, origin: str) -> Path:
    try:
        cfg = load_config(Path(path))
    except ConfigError as exc:
        raise SocketNotFound(f"{origin}: {exc}") from None
    socket = cfg.control_socket
    if socket is None:
        raise SocketNotFound(
            f"{origin}: {path} runs the daemon with persist = false: it has no control socket"
        )
    return socket
