"""`pciback trace record DOMID -o FILE`: a guest's config ops and their answers, recorded by the
running daemon and written to FILE (JSON lines, docs/trace-format.md) until Ctrl-C, --seconds,
--max-ops or the guest's disconnection.

`pciback trace replay FILE --dump DUMP [--policy TREE [--policy TREE]]`: the same ops served
again on a simulated device built from DUMP, under the installed tables or one or two policy
trees (dsl/ directories, compiled on the fly, or generated/ trees); every answer that differs
from the recorded one and, under two policies, every op whose physical writes differ. Exit
status: 0 no difference, 1 differences, 2 an error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pciback.cli.socket import add_socket_options, control_request
from pciback.control.hide import HideSyntaxError, parse_device
from pciback.trace.limits import DEFAULT_MAX_OPS, MAX_OPS

# The replay's policy loader, simulated device and engine are imported when a command runs:
# `pciback --help` and every other command build this parser without them.
if TYPE_CHECKING:
    from pciback.cli import Subparsers
    from pciback.sim.replay import PolicyUnder

ERROR = 2  # as diff(1): 0 same, 1 different, 2 trouble


def register(sub: Subparsers) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "trace", help="record a guest's config ops, and replay them against a policy"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    rec = actions.add_parser("record", help="record a guest's ops from the running daemon")
    rec.add_argument("domid", type=int, help="the guest's domain")
    rec.add_argument("--device", help="only the ops reaching this device (DDDD:BB:DD.F)")
    rec.add_argument("-o", "--output", type=Path, required=True, help="the trace file")
    rec.add_argument(
        "--max-ops", type=int, default=DEFAULT_MAX_OPS,
        help=f"stop after this many ops (default {DEFAULT_MAX_OPS}, at most {MAX_OPS})",
    )  # fmt: skip
    rec.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    add_socket_options(rec, for_subcommand=True)
    rec.set_defaults(func=run_record)
    rep = actions.add_parser("replay", help="serve a trace's ops again under a policy")
    rep.add_argument("trace", type=Path, help="a file `pciback trace record` wrote")
    rep.add_argument("--dump", type=Path, required=True, help="the device's config dump")
    rep.add_argument(
        "--policy", type=Path, action="append", default=[], metavar="TREE",
        help="a dsl/ or generated/ tree, or git's REV:PATH (HEAD~1:dsl) (default: the"
        " installed tables); twice to compare two",
    )  # fmt: skip
    rep.add_argument("--device", help="the device to replay when the trace holds several")
    rep.set_defaults(func=run_replay)


# -- record -----------------------------------------------------------------------------------
def run_record(args: argparse.Namespace) -> int:
    from pciback.cli.trace_record import RecordError, record

    try:
        device = parse_device(args.device) if args.device is not None else None
    except HideSyntaxError as exc:
        return _fail("record", f"--device: {exc}")
    if not 0 < args.max_ops <= MAX_OPS:
        return _fail("record", f"--max-ops must be 1 to {MAX_OPS}")

    def send(op: str, fields: dict[str, Any]) -> Any:
        return control_request(args, op, fields=fields)

    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    interrupted = threading.Event()

    def should_stop() -> bool:
        return interrupted.is_set() or (deadline is not None and time.monotonic() >= deadline)

    try:
        out = args.output.open("w", encoding="utf-8")
    except OSError as exc:
        return _fail("record", f"{args.output}: cannot write: {exc.strerror}")
    with out, _stop_on_interrupt(interrupted):
        try:
            done = record(send, out, args.domid, device, args.max_ops, should_stop)
        except RecordError as exc:
            out.close()
            args.output.unlink(missing_ok=True)  # nothing was recorded
            return _fail("record", str(exc))
    if done.error is not None:
        return _fail("record", f"{done.error}; the {done.ops} ops taken are in {args.output}")
    print(
        f"pciback trace: {done.ops} ops of domain {args.domid} in {args.output} ({done.reason})",
        file=sys.stderr,
    )
    return 0


@contextmanager
def _stop_on_interrupt(flag: threading.Event) -> Iterator[None]:
    """Ctrl-C ends the recording cleanly (stop, take the rest, close the file)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only (a test running the CLI in a thread)
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        flag.set()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- replay -----------------------------------------------------------------------------------
def run_replay(args: argparse.Namespace) -> int:
    from pciback.audit.policies import PolicyTreeError
    from pciback.dumps import DumpError, load_config
    from pciback.sim.replay import ReplayError, choose_device, replay
    from pciback.sim.replay_report import render
    from pciback.trace.format import TraceFileError, read_trace

    # The device's own problems are the engine's log lines, not the replay's.
    logging.getLogger("pciback").addHandler(logging.NullHandler())
    logging.getLogger("pciback").propagate = False
    try:
        if len(args.policy) > 2:
            raise ReplayError("--policy at most twice: one policy, or two to compare")
        trace = read_trace(args.trace)
        device = parse_device(args.device) if args.device is not None else None
        info = choose_device(trace, device)
        config = load_config(args.dump).config
        policies = [_policy(tree) for tree in args.policy] or [_installed()]
        result = replay(trace, info, config, policies)
    except (TraceFileError, ReplayError, DumpError, PolicyTreeError, HideSyntaxError) as exc:
        return _fail("replay", str(exc))
    sys.stdout.write(render(str(args.trace), str(args.dump), trace, result, policies))
    sys.stdout.flush()
    return 1 if result.differences() else 0


def _policy(tree: Path) -> PolicyUnder:
    from pciback.audit.policies import load_policy_and_modules
    from pciback.sim.replay import PolicyUnder
    from pciback.trace.identity import identity

    policy, modules = load_policy_and_modules(tree)
    return PolicyUnder(str(tree), policy, identity(modules))


def _installed() -> PolicyUnder:
    from pciback.generated import MODULES
    from pciback.policy import default_policy
    from pciback.sim.replay import PolicyUnder
    from pciback.trace.identity import identity

    return PolicyUnder("installed tables", default_policy(), identity(MODULES))


def _fail(action: str, message: str) -> int:
    print(f"pciback trace {action}: {message}", file=sys.stderr)
    return ERROR
