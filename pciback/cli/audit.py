"""`pciback audit DUMP`: every bit of a device's config space as the policy lays it out for a
guest — who backs it, what a guest write does in normal and in permissive mode, the hook, the
reason and the DSL line — then what the guest can change on the device.

DEVICE (DDDD:BB:DD.F) is a device the running daemon holds: its config space as it reads now,
its permissive flag and its quirk fields come over the control socket.

`pciback audit --diff OLD NEW DUMP`: the same device under two policy trees (dsl/ directories,
compiled on the fly, or generated/ trees): every bit whose guest access changed.

Nothing here writes to a device: the bytes become a simulated device, as for `pciback view`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pciback.cli.socket import add_socket_options, control_request
from pciback.cli.view import DEFAULT_ADDRESS, extended_id, standard_id
from pciback.dumps import Dump

# The audit model, its renderers, the engine and the simulated device are imported when the
# command runs: `pciback --help` and every other command build this parser without them.
if TYPE_CHECKING:
    from collections.abc import Callable

    from pciback.audit.model import Audit
    from pciback.cli import Subparsers
    from pciback.engine.policy import Policy
    from pciback.tables import Register

_ADDRESS = re.compile(r"^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
FORMATS = ("text", "json", "svg", "html")


def renderers() -> dict[str, Callable[[Audit, str], str]]:
    from pciback.audit.bitmap import render_html, render_svg
    from pciback.audit.text import render_json, render_text

    return {"text": render_text, "json": render_json, "svg": render_svg, "html": render_html}


class AuditError(Exception):
    """One line for the operator: a bad path, dump or policy tree."""


def register(sub: Subparsers) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "audit",
        help="every bit of a device's config space under the policy, and what a guest can change",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "dump",
        type=Path,
        metavar="DEVICE|DUMP",
        help="a device the daemon holds (DDDD:BB:DD.F), or a raw binary or lspci -x/-xxxx dump",
    )
    parser.add_argument(
        "--permissive",
        action="store_true",
        help="draw the bit map in permissive mode (text and JSON always show both modes)",
    )
    parser.add_argument(
        "--hide-cap", action="append", default=[], metavar="ID", type=standard_id,
        help="hide a standard capability (number or name: pm, msi, msix, pcie, ...); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--hide-ext-cap", action="append", default=[], metavar="ID", type=extended_id,
        help="hide an extended capability (number or name: aer, sriov, ...); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="TREE",
        help="a dsl/ or generated/ tree, or git's REV:PATH (HEAD~1:dsl), to audit under"
        " (default: the installed tables)",
    )
    parser.add_argument(
        "--diff",
        nargs=2,
        type=Path,
        metavar=("OLD", "NEW"),
        help="list every bit whose access differs between two policy trees (directories, or"
        " git's REV:PATH)",
    )
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.add_argument("--address", help="DDDD:BB:DD.F to show (default: the dump's)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    add_socket_options(parser, for_subcommand=True)  # for a DEVICE the daemon holds
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Target:
    """What is audited: config bytes, and how the daemon builds its view when it is live."""

    dump: Dump
    title: str
    permissive: bool = False
    quirks: tuple[Register, ...] = ()


def run(args: argparse.Namespace) -> int:
    from pciback.audit.policies import PolicyTreeError
    from pciback.dumps import DumpError

    # The device's problems are part of the audit; the engine's log copy would repeat them.
    logging.getLogger("pciback.engine").addHandler(logging.NullHandler())
    logging.getLogger("pciback.engine").propagate = False
    try:
        text = _run(args)
        if args.output is not None:
            try:
                args.output.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise AuditError(f"{args.output}: cannot write: {exc.strerror}") from None
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except (AuditError, DumpError, PolicyTreeError) as exc:
        print(f"pciback audit: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> str:
    from pciback.audit.diff import diff, render_diff
    from pciback.audit.policies import load_policy

    target = _load(args)
    address = args.address or target.dump.address or DEFAULT_ADDRESS
    if args.diff is not None:
        if args.format != "text":
            raise AuditError("--diff prints text only")
        old_tree, new_tree = args.diff
        old = _audit(target, address, args, load_policy(old_tree))
        new = _audit(target, address, args, load_policy(new_tree))
        return render_diff(diff(old, new), str(old_tree), str(new_tree))
    policy = load_policy(args.policy) if args.policy is not None else None
    result = _audit(target, address, args, policy)
    return renderers()[args.format](result, target.title)


def _load(args: argparse.Namespace) -> Target:
    from pciback.dumps import load_config

    path: Path = args.dump
    if not path.exists() and _ADDRESS.match(str(path)):
        return _live(str(path), args)
    if path.is_dir():
        raise AuditError(f"{path}: is a directory, not a dump")
    return Target(load_config(path), path.name)


def _live(device: str, args: argparse.Namespace) -> Target:
    """A device the daemon holds, as it reads now; the daemon's own flags for it kept."""
    from pciback.control.hide import parse_quirk
    from pciback.control.quirks import quirk_register
    from pciback.daemon.control import ControlError
    from pciback.dumps import validate_config

    try:
        reply = control_request(args, "config", device)
        config = bytes.fromhex(reply["config"])
        quirks = tuple(quirk_register(parse_quirk(q)) for q in reply["quirks"])
    except ControlError as exc:
        raise AuditError(f"{device}: {exc}") from None
    except (TypeError, KeyError, ValueError) as exc:
        raise AuditError(f"{device}: the daemon's answer is not understood: {exc}") from None
    address = str(reply["address"])
    dump = Dump(validate_config(config, address), address)
    return Target(dump, f"{address} (live)", bool(reply["permissive"]), quirks)


def _audit(target: Target, address: str, args: argparse.Namespace, policy: Policy | None) -> Audit:
    from pciback.audit.model import audit
    from pciback.policy import build_config_space
    from pciback.sim.device import SimDevice

    device = SimDevice(address, target.dump.config)
    space = build_config_space(
        device,
        permissive=args.permissive or target.permissive,
        policy=policy,
        hide=args.hide_cap,
        hide_extended=args.hide_ext_cap,
        extra_registers=target.quirks,
    )
    return audit(space, address)
