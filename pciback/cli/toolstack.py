"""The toolstack role's commands, named after xl's so its habits carry over: `attach` and
`detach` (xl pci-attach / pci-detach) and `assignable-add`, `assignable-remove`,
`assignable-list` (xl pci-assignable-*). The daemon does the work; these send one request and
print its outcome (docs/using-with-xl.md)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pciback.cli.control import _parser
from pciback.cli.socket import control_request
from pciback.daemon.control import ControlError

if TYPE_CHECKING:
    from pciback.cli import Subparsers

# Attach and detach wait for the guest (each wait bounded by the daemon, 10 s by default).
TIMEOUT = 120.0


def _domid(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise argparse.ArgumentTypeError(f"not a domain id: {text[:16]!r}")
    return int(text)


def _slot(text: str) -> int:
    """xl's virtual slot: hex, 0..1f."""
    try:
        slot = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a slot number (hex): {text[:16]!r}") from None
    if not 0 < slot <= 0x1F:
        raise argparse.ArgumentTypeError(f"slot {text[:16]} out of range (1..1f)")
    return slot


def register(sub: Subparsers) -> None:
    attach = _parser(sub, "attach", "give a device of the pool to a guest (xl pci-attach)")
    attach.add_argument("domid", type=_domid, metavar="DOMID")
    attach.add_argument("device", metavar="BDF", help="DDDD:BB:DD.F or BB:DD.F, [@VSLOT] as xl")
    attach.add_argument("--vdev", type=_slot, metavar="SLOT", help="guest slot (hex), as @VSLOT")
    attach.add_argument(
        "--permissive", action="store_true", help="let the guest write unknown registers (unsafe)"
    )
    attach.add_argument(
        "--allow-interrupt-control",
        action="store_true",
        help="let the guest toggle INTx/MSI/MSI-X enables by config writes",
    )
    attach.set_defaults(func=_attach)
    detach = _parser(sub, "detach", "take a device back from a guest (xl pci-detach)")
    detach.add_argument("domid", type=_domid, metavar="DOMID")
    detach.add_argument("device", metavar="BDF")
    detach.set_defaults(func=_detach)
    add = _parser(sub, "assignable-add", "take a device from its host driver into the pool")
    add.add_argument("device", metavar="BDF")
    add.set_defaults(func=_assignable_add)
    remove = _parser(sub, "assignable-remove", "give a device of the pool back to the host")
    remove.add_argument("device", metavar="BDF")
    remove.add_argument(
        "-r", "--rebind", action="store_true", help="bind it to the driver it came from"
    )
    remove.set_defaults(func=_assignable_remove)
    listing = _parser(sub, "assignable-list", "the devices in the pool")
    listing.set_defaults(func=_assignable_list)


def _call(args: argparse.Namespace, op: str, **fields: Any) -> tuple[int, Any]:
    try:
        return 0, control_request(args, op, timeout=TIMEOUT, fields=fields)
    except ControlError as exc:
        print(f"pciback: {exc}", file=sys.stderr)
        return 1, None


def _attach(args: argparse.Namespace) -> int:
    device, at, slot = str(args.device).partition("@")
    vdev = args.vdev
    if at:
        try:
            vdev = _slot(slot)
        except argparse.ArgumentTypeError as exc:
            print(f"pciback attach: {exc}", file=sys.stderr)
            return 2
    rc, result = _call(
        args,
        "attach",
        domid=args.domid,
        device=device,
        vdev=vdev,
        permissive=args.permissive,
        interrupt_control=args.allow_interrupt_control,
    )
    if rc != 0:
        return rc
    where = f" as {result['guest']}" if result.get("guest") else ""
    print(f"attached {result['device']} to domain {result['domid']}{where}")
    if result.get("state") == "pending":
        waits = "answers the hot plug" if result.get("hot") else "connects its pcifront"
        print(f"  the guest sees it once it {waits}")
    return 0


def _detach(args: argparse.Namespace) -> int:
    rc, result = _call(args, "detach", domid=args.domid, device=args.device)
    if rc != 0:
        return rc
    if result.get("state") == "domain gone":
        print(f"domain {result['domid']} is gone; {result['device']} is back in the pool")
    else:
        print(f"detached {result['device']} from domain {result['domid']}; back in the pool")
    for problem in result.get("problems") or []:
        print(f"pciback: warning: could not revoke: {problem}", file=sys.stderr)
    return 1 if result.get("problems") else 0


def _assignable_add(args: argparse.Namespace) -> int:
    rc, result = _call(args, "assignable_add", device=args.device)
    if rc == 0:
        note = "is assignable" if result["seized"] else "was assignable already"
        print(f"{result['device']} {note}")
    return rc


def _assignable_remove(args: argparse.Namespace) -> int:
    rc, result = _call(args, "assignable_remove", device=args.device, rebind=args.rebind)
    if rc == 0:
        driver = result.get("driver")
        where = f"returned to {driver}" if driver else "left with no driver"
        print(f"{result['device']} is no longer assignable; {where}")
    return rc


def _assignable_list(args: argparse.Namespace) -> int:
    rc, result = _call(args, "assignable_list")
    for line in result or []:
        print(line)
    return rc
