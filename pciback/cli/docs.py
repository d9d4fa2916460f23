"""The CLI's man page and shell completion, written from its argparse parsers so that they
never drift from the commands: `pciback completion bash` prints the completion script, and
`make generate` writes both into the tree (docs/man/pciback.8, contrib/completion/pciback.bash),
which `make test` checks are current (`python -m pciback.cli.docs --check`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pciback import __version__

if TYPE_CHECKING:
    from pciback.cli import Subparsers

REPO = Path(__file__).resolve().parents[2]
MAN_PAGE = Path("docs/man/pciback.8")
BASH_COMPLETION = Path("contrib/completion/pciback.bash")
# Options whose value is a file or directory: the shell completes paths there.
PATH_METAVARS = frozenset({"FILE", "PATH", "DIR", "TREE", "DUMP", "OUTPUT"})


@dataclass
class Option:
    flags: tuple[str, ...]
    metavar: str | None  # None: a flag without a value
    help: str
    choices: tuple[str, ...] = ()


@dataclass
class Command:
    """A command or subcommand as the parsers define it."""

    path: tuple[str, ...]  # ("trace", "record")
    help: str
    usage: str
    options: list[Option] = field(default_factory=list)
    positionals: list[Option] = field(default_factory=list)
    children: list[Command] = field(default_factory=list)


def describe(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = (), summary: str = ""
) -> Command:
    command = Command(path, summary, " ".join(parser.format_usage().split())[len("usage: ") :])
    for action in parser._actions:  # argparse keeps no public list of them
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                command.children.append(describe(sub, (*path, name), helps.get(name, "")))
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices else ()
        takes_value = action.nargs != 0
        metavar = None
        if takes_value:
            shown = action.metavar or (
                action.dest.upper() if action.option_strings else action.dest
            )
            metavar = shown if isinstance(shown, str) else " ".join(shown)
        option = Option(tuple(action.option_strings), metavar, _help_text(action), choices)
        (command.options if action.option_strings else command.positionals).append(option)
    return command


def _help_text(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(default)" in text:
        text = text % {"default": action.default}
    return " ".join(text.split())


def walk(command: Command) -> Iterator[Command]:
    yield command
    for child in command.children:
        yield from walk(child)


# -- man page ------------------------------------------------------------------------------------
def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no line starting with a dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def man_page(root: Command) -> str:
    lines = [
        ".\\\" Written by pciback.cli.docs from the CLI's parsers: edit those, never this file.",
        f'.TH PCIBACK 8 "" "pciback {__version__}" "System Administration"',
        ".SH NAME",
        "pciback \\- user\\-space Xen PCI passthrough backend for dom0",
        ".SH SYNOPSIS",
        ".B pciback",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR ...",
        ".SH DESCRIPTION",
        _roff(
            "pciback serves the PV PCI protocol of Xen guests (the shared page and event channel"
            " of Linux's xen-pcifront) from user space, instead of the kernel's xen-pciback: what"
            " a guest may read and write of each device is a policy compiled from a small"
            " language. The daemon runs as a service; the other commands talk to it over its"
            " control socket, or work on config-space dumps and traces."
        ),
        ".SH OPTIONS",
    ]
    lines += _options(root.options)
    lines.append(".SH COMMANDS")
    for command in walk(root):
        if not command.path or command.children:
            continue
        lines += [f".SS {_roff(' '.join(command.path))}", _roff(command.help or ""), ".PP"]
        lines += [".nf", _roff(command.usage), ".fi"]
        for positional in command.positionals:
            lines += [".TP", f"\\fI{_roff(positional.metavar or '')}\\fR"]
            lines.append(_roff(_with_choices(positional)))
        lines += _options([o for o in command.options if "--help" not in o.flags])
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B PCIBACK_CONFIG",
        _roff("The daemon's configuration file, for the commands to find its control socket."),
        ".TP",
        ".B PCIBACK_SOCKET",
        _roff("The daemon's control socket."),
        ".TP",
        ".B PCIBACK_ALLOW_SYSFS_WRITES",
        _roff("Set to 1 to let the daemon write under the real /sys (a safety interlock)."),
        ".TP",
        ".B NOTIFY_SOCKET",
        _roff("Set by systemd: the daemon reports readiness, reloads and stopping there."),
        ".SH FILES",
        ".TP",
        ".I /etc/pciback/pciback.toml",
        _roff("The configuration the systemd unit (contrib/systemd/pciback.service) names."),
        ".TP",
        ".I /var/lib/pciback",
        _roff("The default state directory: owners, slots, saved views, the control socket."),
        ".SH SIGNALS",
        _roff(
            "SIGTERM and SIGINT stop the daemon, leaving every guest its devices. SIGHUP re-reads"
            " the configuration: log level and format, op_linger_us and toolstack_timeout_s take"
            " effect; any other changed key is logged with what it needs."
        ),
        ".SH SEE ALSO",
        ".BR xl (1),",
        ".BR xl.cfg (5),",
        ".BR lspci (8)",
    ]
    return "\n".join(lines) + "\n"


def _options(options: Sequence[Option]) -> list[str]:
    lines: list[str] = []
    for option in options:
        flags = ", ".join(f"\\fB{_roff(flag)}\\fR" for flag in option.flags)
        if option.metavar is not None:
            flags += f" \\fI{_roff(option.metavar)}\\fR"
        lines += [".TP", flags, _roff(_with_choices(option))]
    return lines


def _with_choices(option: Option) -> str:
    if not option.choices:
        return option.help
    return f"{option.help} (one of: {', '.join(option.choices)})".strip()


# -- bash completion -----------------------------------------------------------------------------
def bash_completion(root: Command) -> str:
    """A bash completion function: commands, subcommands and choices, each command's options,
    and paths for the options that take a file."""
    cases: list[str] = []
    for command in walk(root):
        words = [child.path[-1] for child in command.children]
        for positional in command.positionals:
            words += positional.choices
        options = [flag for option in command.options for flag in option.flags]
        paths = [
            flag
            for option in command.options
            if option.metavar in PATH_METAVARS
            for flag in option.flags
        ]
        key = " ".join(command.path)
        cases.append(
            f'        "{key}") words="{" ".join([*words, *options])}"; paths="{" ".join(paths)}" ;;'
        )
    return "\n".join(
        [
            "# bash completion for pciback. Written by pciback.cli.docs from the CLI's parsers.",
            "# Install: source it, or copy it to /usr/share/bash-completion/completions/pciback",
            "_pciback() {",
            "    local cur prev words paths path='' i w",
            '    cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
            "    # The command path so far: the words that are commands, not options or values.",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        w="${COMP_WORDS[i]}"',
            '        case "$w" in -*) continue ;; esac',
            '        _pciback_words "${path:+$path }$w"',
            '        [ -n "$words$paths" ] && path="${path:+$path }$w"',
            "    done",
            '    _pciback_words "$path"',
            '    case " $paths " in',
            '        *" $prev "*) COMPREPLY=($(compgen -f -- "$cur")); return ;;',
            "    esac",
            '    COMPREPLY=($(compgen -W "$words" -- "$cur"))',
            "}",
            "_pciback_words() {",
            '    case "$1" in',
            *cases,
            '        *) words=""; paths="" ;;',
            "    esac",
            "}",
            "complete -F _pciback pciback",
            "",
        ]
    )


# -- the command and the tree's copies -----------------------------------------------------------
def register(sub: Subparsers) -> None:
    parser = sub.add_parser("completion", help="print the shell completion script")
    parser.add_argument("shell", choices=("bash",), help="the shell")
    parser.set_defaults(func=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(bash_completion(_root()))
    return 0


def _root() -> Command:
    from pciback.cli import build_parser

    return describe(build_parser())


def generated() -> dict[Path, str]:
    root = _root()
    return {MAN_PAGE: man_page(root), BASH_COMPLETION: bash_completion(root)}


def main(argv: Sequence[str]) -> int:
    """`python -m pciback.cli.docs [--check]`: write (or check) the tree's copies."""
    check = "--check" in argv
    stale = []
    for relative, text in generated().items():
        path = REPO / relative
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(relative))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print(f"{', '.join(stale)}: stale; run make generate and commit the result")
        return 1
    if check:
        print("the man page and the completion script are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
