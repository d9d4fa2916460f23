"""`pciback daemon --config FILE` and `pciback demo`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pciback.cli.socket import ENV_CONFIG
from pciback.daemon.config import ConfigError, load_config
from pciback.daemon.logs import setup_logging

if TYPE_CHECKING:
    from pciback.cli import Subparsers

log = logging.getLogger("pciback.daemon")


def register(sub: Subparsers) -> None:
    daemon = sub.add_parser("daemon", help="run the backend daemon")
    # Also before the subcommand (`pciback --config FILE daemon`), or $PCIBACK_CONFIG: the
    # same ways the other commands find this daemon.
    daemon.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"TOML configuration file (default: ${ENV_CONFIG})",
    )
    daemon.set_defaults(func=run_daemon)
    demo = sub.add_parser("demo", help="run the daemon on a simulated host with two guests")
    demo.add_argument(
        "--log-level",
        default="critical",
        choices=("debug", "info", "warning", "error", "critical"),
        help="daemon log lines on stderr (default: none, the report says what happens)",
    )
    demo.set_defaults(func=run_demo)


def run_daemon(args: argparse.Namespace) -> int:
    from pciback.backend import Daemon
    from pciback.control.state import StateError, check_state
    from pciback.control.state_dir import StateDirError, StateDirLock, check_file
    from pciback.daemon.audit_journal import JOURNAL_NAME as AUDIT_JOURNAL
    from pciback.daemon.control import ControlError
    from pciback.daemon.core import DaemonError, check_policy
    from pciback.daemon.service import reload_config, sd_notify

    path = getattr(args, "config", None) or os.environ.get(ENV_CONFIG, "").strip()
    if not path:
        print(f"pciback daemon: no configuration: --config FILE or ${ENV_CONFIG}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(Path(path))
    except ConfigError as exc:
        print(f"pciback: {exc}", file=sys.stderr)
        return 2
    lock: StateDirLock | None = None
    try:
        # Before logging is set up and anything is touched: one line says what is wrong. The
        # state directory is checked and locked first of all, and its database validated (or
        # created), so that a daemon refused here has done nothing at all.
        check_policy()
        if cfg.state_dir is not None:
            lock = StateDirLock.acquire(cfg.state_dir)
            check_state(lock.directory)
        if cfg.control_socket is not None:
            check_file(cfg.control_socket, socket=True)
            if cfg.state_dir is not None:
                check_file(cfg.state_dir / AUDIT_JOURNAL)
    except (DaemonError, StateError, StateDirError) as exc:
        if lock is not None:
            lock.release()
        print(f"pciback: cannot start: {exc}", file=sys.stderr)
        return 1
    setup_logging(cfg.log_level, cfg.log_format)
    if cfg.state_dir is None:
        log.warning(
            "persist = false: no state directory; a restart releases every device a guest holds"
        )
    stop = threading.Event()
    # The handlers only write the signal's number into a pipe: a handler runs between two
    # bytecodes of the main thread, which may be inside a lock the handler would want (an
    # Event's, the logging module's). The signal thread below acts on it.
    signals_r, signals_w = os.pipe()
    os.set_blocking(signals_w, False)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe holds signals enough
            os.write(signals_w, bytes([signum]))

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    # sqlite3.Error: a database that passed its checks and still fails is one line too.
    try:
        daemon = Daemon(cfg, state_lock=lock)
    except (DaemonError, StateError, StateDirError, sqlite3.Error, OSError, ValueError) as exc:
        if lock is not None:
            lock.release()
        log.error("cannot start: %s", exc)
        print(f"pciback: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        daemon.start()
    except (
        DaemonError,
        StateError,
        StateDirError,
        ControlError,
        sqlite3.Error,
        OSError,
        ValueError,
    ) as exc:
        daemon.stop()
        log.error("cannot start: %s", exc)
        print(f"pciback: cannot start: {exc}", file=sys.stderr)
        return 1

    def act_on_signals() -> None:
        while True:
            for signum in os.read(signals_r, 64):
                if signum != signal.SIGHUP:
                    log.info("signal %d: shutting down", signum)
                    stop.set()
                    return
                sd_notify("RELOADING=1")
                try:
                    with daemon.lock:
                        reload_config(daemon, Path(path))
                except Exception:  # a reload's bug must not end reloads, nor the daemon
                    log.exception("reload failed; the daemon goes on as it was")
                finally:
                    sd_notify("READY=1")

    threading.Thread(target=act_on_signals, name="pciback-signals", daemon=True).start()
    sd_notify(f"READY=1\nSTATUS=serving; {len(daemon.pool.devices)} device(s) in the pool")
    try:
        daemon.run(stop)
    finally:
        sd_notify("STOPPING=1")
        daemon.stop()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from pciback.sim.demo import run_demo as demo

    setup_logging(args.log_level, "text", sys.stderr)
    return demo(sys.stdout)
