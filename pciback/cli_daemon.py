"""`pciback daemon --config FILE` and `pciback demo`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pciback.daemon.config import ConfigError, load_config
from pciback.daemon.logs import setup_logging

if TYPE_CHECKING:
    from pciback.cli import Subparsers

log = logging.getLogger("pciback.daemon")


def register(sub: Subparsers) -> None:
    daemon = sub.add_parser("daemon", help="run the backend daemon")
    daemon.add_argument("--config", required=True, type=Path, help="TOML configuration file")
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
    from pciback.daemon.core import Daemon, DaemonError, check_policy

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"pciback: {exc}", file=sys.stderr)
        return 2
    try:
        # Before logging is set up and anything is touched: one line says what is wrong.
        check_policy()
    except DaemonError as exc:
        print(f"pciback: cannot start: {exc}", file=sys.stderr)
        return 1
    setup_logging(cfg.log_level, cfg.log_format)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = Daemon(cfg)
        daemon.start()
    except (DaemonError, OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        print(f"pciback: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        daemon.run(stop)
    finally:
        daemon.stop()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from pciback.daemon.demo import run_demo as demo

    setup_logging(args.log_level, "text", sys.stderr)
    return demo(sys.stdout)
