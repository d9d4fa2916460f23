"""Operator commands that talk to the running daemon over its control socket: the Linux
driver's sysfs attributes (new_slot, remove_slot, slots, permissive, allow_interrupt_control,
quirks, irq_handlers, irq_handler_state) as subcommands, and `list`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pciback.cli.socket import add_socket_options, control_exchange
from pciback.daemon.control import ControlError
from pciback.protocol.opstats import BUCKETS, bucket_floor, percentile_ceiling

if TYPE_CHECKING:
    from pciback.cli import Subparsers


def _parser(sub: Subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    add_socket_options(parser, for_subcommand=True)
    return parser


def register(sub: Subparsers) -> None:
    slot = _parser(sub, "slot", "add, remove or list the slots the backend seizes")
    slot.add_argument("action", choices=("add", "remove", "list"))
    slot.add_argument("slot", nargs="?", help="DDDD:BB:DD.F or BB:DD.F; F or DD.F may be *")
    slot.set_defaults(func=_slot)
    perm = _parser(sub, "permissive", "let a device's guest write unknown registers (unsafe)")
    perm.add_argument("action", choices=("add", "remove", "list"))
    perm.add_argument("device", nargs="?", help="DDDD:BB:DD.F")
    perm.set_defaults(func=_permissive)
    ctl = _parser(
        sub,
        "interrupt-control",
        "let a device's guest toggle INTx disable and MSI/MSI-X enable by config writes",
    )
    ctl.add_argument("action", choices=("add", "remove", "list"))
    ctl.add_argument("device", nargs="?", help="DDDD:BB:DD.F")
    ctl.set_defaults(func=_interrupt_control)
    quirk = _parser(sub, "quirk", "add a writable config-space field to a device, or list them")
    quirk.add_argument("action", choices=("add", "list"))
    quirk.add_argument("spec", nargs="?", help="DDDD:BB:DD.F-REG:SIZE:MASK (hex)")
    quirk.set_defaults(func=_quirk)
    irq = _parser(sub, "irq-handlers", "list the shared-INTx helper handlers, or toggle one")
    irq.add_argument("toggle", nargs="?", metavar="DEVICE", help="device whose handler to toggle")
    irq.set_defaults(func=_irq)
    listing = _parser(sub, "list", "devices, owners and guests")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)


def _call(args: argparse.Namespace, op: str, arg: str | None = None) -> tuple[int, Any]:
    """Send one request; what it changed (if anything) is printed as the daemon says it."""
    try:
        reply = control_exchange(args, op, arg)
    except ControlError as exc:
        print(f"pciback: {exc}", file=sys.stderr)
        return 1, None
    if reply.changed:
        print(reply.changed)
    return 0, reply.result


def _need(value: str | None, what: str) -> str:
    if not value:
        print(f"pciback: {what} is required for this action", file=sys.stderr)
        raise SystemExit(2)
    return value


def _print_lines(result: Any) -> None:
    for line in result or []:
        print(line)


def _slot(args: argparse.Namespace) -> int:
    if args.action == "list":
        rc, result = _call(args, "slots")
        _print_lines(result)
        return rc
    slot = _need(args.slot, "a slot")
    if args.action == "add":
        rc, _ = _call(args, "new_slot", slot)  # the daemon's line says what it seized
        return rc
    rc, result = _call(args, "remove_slot", slot)
    if rc == 0:
        for address in result["in_pool"]:
            # As Linux: forgetting the slot does not unbind the device; say how to.
            print(f"  {address} stays in the pool: pciback assignable-remove -r {address}")
    return rc


# What a per-device flag does, for the line that confirms a change to it.
_FLAG_MEANING = {
    "permissive": (
        "its guest may write registers the policy does not describe (unsafe)",
        "its guest's writes follow the policy",
    ),
    "interrupt_control": (
        "its guest may toggle INTx disable and MSI/MSI-X enable by config writes",
        "its guest's interrupt enables change only through pcifront's requests",
    ),
}


def _device_knob(knob: str) -> Callable[[argparse.Namespace], int]:
    """`KNOB list` or `KNOB add|remove DEVICE`, for the per-device flags (requests `KNOB`,
    `KNOB_add`, `KNOB_remove`)."""

    def run(args: argparse.Namespace) -> int:
        if args.action == "list":
            rc, result = _call(args, knob)
            _print_lines(result)
            return rc
        rc, _ = _call(args, f"{knob}_{args.action}", _need(args.device, "a device"))
        if rc == 0:  # after the daemon's line of what changed, what that means for the guest
            print(f"  {_FLAG_MEANING[knob][0 if args.action == 'add' else 1]}")
        return rc

    return run


_permissive = _device_knob("permissive")
_interrupt_control = _device_knob("interrupt_control")


def _quirk(args: argparse.Namespace) -> int:
    if args.action == "list":
        rc, result = _call(args, "quirks")
        _print_lines(result)
        return rc
    rc, _ = _call(args, "quirk_add", _need(args.spec, "a quirk"))
    return rc


def _irq(args: argparse.Namespace) -> int:
    if args.toggle:
        rc, _ = _call(args, "irq_handler_state", args.toggle)
        return rc
    rc, result = _call(args, "irq_handlers")
    _print_lines(result)
    return rc


def _op_summary(stats: dict[str, Any]) -> str:
    """One line of a guest's op counters: how many, and how long they took inside the daemon
    (percentiles as the histogram bounds them)."""
    if not stats["ops"]:
        return f"ops 0 ({stats['wakeups']} wake-ups)"

    def bound(fraction: float) -> str:
        ceiling = percentile_ceiling(stats, fraction)
        return f"< {ceiling} us" if ceiling is not None else f">= {bucket_floor(BUCKETS - 1)} us"

    busy = stats["busy_ns_total"] / stats["ops"] / 1000
    cpu = stats.get("thread_cpu_ns_total")
    running = "" if cpu is None else f", running {cpu / stats['ops'] / 1000:.1f} us"
    timed = stats.get("timed_ops", stats["ops"])
    times = (
        f"in the daemon ({timed} timed): mean {stats['service_us_mean']} us, p50 {bound(0.5)},"
        f" p99 {bound(0.99)}, max {stats['service_us_max']} us"
        if timed
        else "none timed yet"
    )
    return (
        f"ops {stats['ops']} ({stats['wakeups']} wake-ups), {times};"
        f" thread busy {busy:.1f} us{running} per op"
    )


def _list(args: argparse.Namespace) -> int:
    rc, result = _call(args, "list")
    if rc != 0:
        return rc
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("devices:")
    for dev in result["devices"]:
        owner = "-" if dev["owner"] is None else f"dom{dev['owner']}"
        flags = " permissive" if dev["permissive"] else ""
        flags += " interrupt-control" if dev.get("interrupt_control") else ""
        flags += f" quirks={dev['quirks']}" if dev["quirks"] else ""
        print(f"  {dev['address']}  driver={dev['driver'] or '-'}  owner={owner}{flags}")
    print("guests:")
    for guest in result["guests"]:
        devices = ", ".join(f"{g}={p}" for g, p in guest["devices"].items()) or "none"
        error = f"  error: {guest['error']}" if guest["error"] else ""
        print(f"  dom{guest['domid']}/{guest['devid']} {guest['topology']} {guest['state']}")
        print(f"    {devices}{error}")
        if guest.get("ops"):
            print(f"    {_op_summary(guest['ops'])}")
    attachments = result.get("attachments") or []
    if attachments:
        print("attached by pciback:")
    for item in attachments:
        print(f"  {item['device']}  dom{item['domid']}  {item['phase']}")
    return 0
