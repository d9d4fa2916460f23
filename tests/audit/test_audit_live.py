"""`pciback audit DEVICE`: a device the running daemon holds, over the control socket, with the
daemon's own permissive flag and quirk fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.daemon.config import parse_config
from pciback.daemon.control import request
from pciback.sim.environment import SimEnvironment

from ..control.harness import DEVICES, NET, RNG


@pytest.fixture
def daemon(tmp_path: Path) -> tuple[Daemon, Path]:
    cfg = parse_config({"hide": f"({NET})({RNG})", "log_level": "error"})
    cfg.state_dir = tmp_path / "state"
    assert cfg.control_socket is not None
    return Daemon(cfg, SimEnvironment.from_dumps(DEVICES)), cfg.control_socket


def test_a_live_device_is_audited_with_the_daemons_flags(
    daemon: tuple[Daemon, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, sock = daemon
    d.start()
    try:
        live = ["audit", NET, "--socket", str(sock)]
        argv = [*live, "--format", "json"]
        assert main(argv) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["device"] == f"{NET} (live)" and doc["address"] == NET
        assert main([*live, "--format", "svg"]) == 0
        assert "guest access in normal mode" in capsys.readouterr().out
        # The daemon's permissive flag and quirk fields are the view's.
        request(sock, "permissive_add", NET)
        request(sock, "quirk_add", f"{NET}-44:2:ff")  # in a vendor capability's body
        assert main([*live, "--format", "svg"]) == 0
        assert "guest access in permissive mode" in capsys.readouterr().out
        assert main(argv) == 0
        doc = json.loads(capsys.readouterr().out)
        quirk = next(r for r in doc["rows"] if r["offset"] == 0x44)
        assert quirk["width"] == 2
        assert quirk["register"] == "quirk_044"
        passthrough = next(f for f in quirk["fields"] if f["mask"] == 0xFF)
        assert passthrough["normal"] == "rw"
        assert passthrough["source"] == f"operator quirk {NET}-44:2:ff"
    finally:
        d.stop()


def test_a_device_the_daemon_does_not_hold(
    daemon: tuple[Daemon, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, sock = daemon
    d.start()
    try:
        assert main(["audit", "0000:09:00.0", "--socket", str(sock)]) == 1
        err = capsys.readouterr().err
        assert err == "pciback audit: 0000:09:00.0: 0000:09:00.0 is not in the pciback pool\n"
    finally:
        d.stop()
