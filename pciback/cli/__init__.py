"""The `pciback` command. Each subcommand lives in a small module listed in COMMAND_MODULES.

A command module defines `register(subparsers)`: it adds its parser(s) to `subparsers` and sets
`func` to a handler `handler(args: argparse.Namespace) -> int` (the exit status). A listed
module that is not installed is skipped, so a command can land in its own module (for instance
`pciback/cli/view.py` for `pciback view`) without touching this file.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias, cast

from pciback import __version__
from pciback.cli.socket import add_socket_options

COMMAND_MODULES = (
    "pciback.cli.daemon",
    "pciback.cli.control",
    "pciback.cli.toolstack",
    "pciback.cli.view",
    "pciback.cli.audit",
    "pciback.cli.trace",
    "pciback.cli.journal",
    "pciback.cli.docs",
)

if TYPE_CHECKING:
    # What add_subparsers() returns; generic only to the type checker.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pciback", description="User-space Xen PCI passthrough backend for dom0."
    )
    parser.add_argument("--version", action="version", version=f"pciback {__version__}")
    # Before the subcommand as well as after it: `pciback --socket S list`.
    add_socket_options(parser, for_subcommand=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        register = cast("Callable[[Subparsers], None]", module.register)
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = cast(Callable[[argparse.Namespace], int], args.func)
    return handler(args)
