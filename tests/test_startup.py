"""Start-up cost: the CLI's parser is built without the simulator, the engine or cffi, so
`pciback --help` and the control commands do not pay for them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pciback.sim", "pciback.engine", "pciback.audit.model", "pciback.protocol.abi", "cffi")
PROBE = """
import sys
from pciback.cli import build_parser
build_parser().format_help()
print(" ".join(sorted(sys.modules)))
"""


def test_building_the_cli_parser_imports_nothing_heavy() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stdout.split())
    assert "pciback.cli.audit" in loaded and "pciback.cli.view" in loaded  # every command built
    assert sorted(m for m in loaded if m.startswith(HEAVY)) == []


def test_help_still_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pciback.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for command in ("daemon", "demo", "view", "audit"):
        assert command in result.stdout
