"""`pciback view DUMP`: the configuration space a guest would see for a device dump.

The dump (raw binary or `lspci -x/-xxx/-xxxx` text) becomes a simulated device, the compiled
policy is laid over it exactly as for a guest, and every dword is read through that view. The
result prints as an `lspci -xxxx`-style text dump, which `lspci -F FILE -vvv` decodes, or as raw
bytes. Nothing here writes to a device.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

# The engine, the policy tables and the simulated device are imported when the command runs:
# `pciback --help` and every other command build this parser without them.
if TYPE_CHECKING:
    from pciback.cli import Subparsers
    from pciback.control.hide import QuirkSpec
    from pciback.engine import ConfigSpace
    from pciback.tables import Register

DEFAULT_ADDRESS = "0000:00:00.0"
# The names an operator may give instead of a number are the policy's (PCI Code and ID
# Assignment spec), and those of capabilities it does not describe, which it has no name for.
UNDESCRIBED_NAMES = {"agp": 0x02, "hotswap": 0x06, "debug": 0x0A}
UNDESCRIBED_EXTENDED_NAMES = {"vc": 0x0002, "power": 0x0004}


def capability_names() -> dict[str, int]:
    from pciback.generated import names as n

    return {
        "pm": n.PM.id,
        "vpd": n.VPD.id,
        "slotid": n.SLOTID.id,
        "msi": n.MSI.id,
        "pcix": n.PCIX.id,
        "ht": n.HT.id,
        "vendor": n.VIRTIO_PCI_CAP.id,  # the vendor-specific ID, which virtio's carry
        "ssvid": n.SSVID.id,
        "pcie": n.PCIE.id,
        "msix": n.MSIX.id,
        "sata": n.SATA.id,
        "af": n.AF.id,
        "ea": n.EA.id,
        **UNDESCRIBED_NAMES,
    }


def extended_names() -> dict[str, int]:
    from pciback.generated import names as n

    return {
        "aer": n.AER.id,
        "dsn": n.DSN.id,
        "acs": n.ACS.id,
        "ari": n.ARI.id,
        "ats": n.ATS.id,
        "sriov": n.SRIOV.id,
        "ltr": n.LTR.id,
        "l1ss": n.L1SS.id,
        "rebar": n.REBAR.id,
        "pasid": n.PASID.id,
        "dvsec": n.DVSEC.id,
        **UNDESCRIBED_EXTENDED_NAMES,
    }


def capability_id(text: str, names: dict[str, int], limit: int) -> int:
    """`0x05`, `5` or a name such as `msi`; argparse reports the ValueError."""
    key = text.strip().lower()
    if key in names:
        return names[key]
    value = int(key, 0)
    if not 0 <= value <= limit:
        raise ValueError(f"capability ID {text!r} out of range 0..{limit:#x}")
    return value


def guest_view(
    config: bytes | str | Path,
    *,
    permissive: bool = False,
    hide: Iterable[int] = (),
    hide_extended: Iterable[int] = (),
    extra_registers: Iterable[Register] = (),
    address: str = DEFAULT_ADDRESS,
    host_irq: int | None = None,
) -> tuple[bytes, ConfigSpace]:
    """Every byte of the guest-visible config space of a dump, and the view that served it.
    `host_irq`: the IRQ dom0 routed for the device (default: the dump's interrupt line)."""
    from pciback.policy import build_config_space
    from pciback.sim.device import SimDevice

    device = SimDevice(address, config)
    if host_irq is not None:
        device.irq = host_irq
    space = build_config_space(
        device,
        permissive=permissive,
        hide=hide,
        hide_extended=hide_extended,
        extra_registers=extra_registers,
    )
    data = b"".join(
        space.read(offset, 4).to_bytes(4, "little") for offset in range(0, space.size, 4)
    )
    return data, space


def irq_number(text: str) -> int:
    value = int(text.strip(), 0)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"IRQ {text!r} out of range")
    return value


def standard_id(text: str) -> int:
    return capability_id(text, capability_names(), 0xFF)


def extended_id(text: str) -> int:
    return capability_id(text, extended_names(), 0xFFFF)


def register(sub: Subparsers) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "view",
        help="print the config space a guest would see for a device dump",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("dump", type=Path, help="raw binary or lspci -x/-xxx/-xxxx text dump")
    parser.add_argument(
        "--permissive",
        action="store_true",
        help="build the view in permissive mode (it changes writes only: the bytes read stay)",
    )
    parser.add_argument(
        "--hide-cap",
        action="append",
        default=[],
        metavar="ID",
        type=standard_id,
        help="hide a standard capability (number or name: pm, msi, msix, pcie, ...); repeatable",
    )
    parser.add_argument(
        "--hide-ext-cap",
        action="append",
        default=[],
        metavar="ID",
        type=extended_id,
        help="hide an extended capability (number or name: aer, sriov, ...); repeatable",
    )
    parser.add_argument(
        "--quirk",
        action="append",
        default=[],
        metavar="REG:SIZE:MASK",
        help="a runtime quirk field as the quirks attribute takes it (hex); repeatable",
    )
    parser.add_argument(
        "--host-irq",
        type=irq_number,
        metavar="IRQ",
        help="the IRQ dom0 routed for the device (its sysfs irq), which a guest reads as its "
        "interrupt line (default: the dump's own interrupt line)",
    )
    parser.add_argument("--format", choices=("text", "binary"), default="text")
    parser.add_argument("--address", help="DDDD:BB:DD.F for the text header (default: the dump's)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pciback.control.hide import HideSyntaxError, parse_quirk
    from pciback.control.quirks import quirk_register
    from pciback.dumps import DumpError, format_lspci, load_config

    # The device's problems are printed below, once; the engine's log copy would repeat them.
    logging.getLogger("pciback.engine").addHandler(logging.NullHandler())
    try:
        dump = load_config(args.dump)
    except DumpError as exc:
        print(f"pciback view: {exc}", file=sys.stderr)
        return 1
    address = args.address or dump.address or DEFAULT_ADDRESS
    quirks: list[QuirkSpec] = []
    for text in args.quirk:
        try:
            quirks.append(parse_quirk(f"{address}-{text}"))
        except HideSyntaxError as exc:
            print(f"pciback view: --quirk {text}: {exc.problem}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"pciback view: --quirk {text}: {exc}", file=sys.stderr)
            return 2
    data, space = guest_view(
        dump.config,
        permissive=args.permissive,
        hide=args.hide_cap,
        hide_extended=args.hide_ext_cap,
        extra_registers=[quirk_register(q) for q in quirks],
        address=address,
        host_irq=args.host_irq,
    )
    for problem in space.problems:
        print(f"pciback view: {args.dump}: {problem}", file=sys.stderr)
    if args.format == "binary":
        blob = data
    else:
        blob = format_lspci(data, f"{address} guest view of {args.dump.name}").encode("ascii")
    if args.output is not None:
        args.output.write_bytes(blob)
    else:
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
    return 0
