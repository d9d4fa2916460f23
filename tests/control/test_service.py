"""The daemon as a systemd service: READY=1 once it serves, RELOADING=1 / READY=1 around a
SIGHUP reload, STOPPING=1 on the way out; a reload applies what can change at run time and
names every other changed key with what it needs; a configuration that no longer loads
changes nothing. The unit file in contrib/ says the same."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pciback.daemon.control import request
from pciback.daemon.service import AT_START, RELOADED, sd_notify

from .harness import NET

REPO = Path(__file__).resolve().parents[2]


def test_sd_notify_reaches_a_path_or_an_abstract_socket_and_is_quiet_outside_systemd(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert server.recv(64) == b"READY=1"
    name = f"pciback-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert sd_notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(64) == b"STOPPING=1"
    assert not sd_notify("READY=1", {})  # not under systemd
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": "relative"})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_every_config_key_is_either_reloaded_or_says_what_it_needs() -> None:
    from dataclasses import fields

    from pciback.daemon.config import Config

    keys = {f.name for f in fields(Config)} - {"source"}
    assert keys == set(RELOADED) | set(AT_START)


def test_systemd_hears_ready_reloading_stopping_and_sighup_reloads(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "pciback.toml"
    base = f'state_dir = "{state}"\nhide = "({NET})"\n'
    cfg.write_text(base + 'log_level = "info"\n')
    notify = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(notify))
    server.settimeout(60)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pciback.cli", "daemon", "--config", str(cfg)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NOTIFY_SOCKET": str(notify)},
    )
    try:
        ready = server.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=serving")
        assert request(state / "control.sock", "slots") == [NET]  # it serves once ready
        cfg.write_text(
            f'state_dir = "{state}"\nhide = "({NET})(03:00.1)"\n'
            'log_level = "debug"\nop_linger_us = 500\n'
        )
        proc.send_signal(signal.SIGHUP)
        assert server.recv(64) == b"RELOADING=1"
        assert server.recv(64) == b"READY=1"
        cfg.write_text("state_dir = [\n")  # broken: nothing may change
        proc.send_signal(signal.SIGHUP)
        assert server.recv(64) == b"RELOADING=1"
        assert server.recv(64) == b"READY=1"
        assert request(state / "control.sock", "slots") == [NET]
        proc.send_signal(signal.SIGTERM)
        assert server.recv(64) == b"STOPPING=1"
        _, err = proc.communicate(timeout=30)
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    messages = [json.loads(line)["msg"] for line in err.splitlines() if line.startswith("{")]
    assert "reload: log_level: now 'debug'" in messages
    assert "reload: op_linger_us: now 500" in messages
    hide = [m for m in messages if m.startswith("reload: hide: changed in the file, not applied")]
    assert hide and "pciback slot add" in hide[0]
    assert any(m.startswith("reload: ") and m.endswith("nothing changed") for m in messages)


def test_the_unit_file_runs_the_daemon_as_a_notify_service_reloaded_by_sighup() -> None:
    unit = (REPO / "contrib" / "systemd" / "pciback.service").read_text(encoding="utf-8")
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#")
    assert lines["Type"] == "notify"
    assert lines["ExecStart"].split()[1:3] == ["daemon", "--config"]
    assert lines["ExecReload"].endswith("kill -HUP $MAINPID")
    assert "xenstored.service" in lines["After"]


def test_a_reload_that_drops_the_toolstack_timeout_restores_the_default(tmp_path: Path) -> None:
    from pciback.backend import Daemon
    from pciback.daemon.config import parse_config
    from pciback.daemon.service import reload_config
    from pciback.toolstack.attach import DEFAULT_TIMEOUT

    cfg = tmp_path / "p.toml"
    cfg.write_text("persist = false\ntoolstack_timeout_s = 3.0\n")
    daemon = Daemon(parse_config({"persist": False, "toolstack_timeout_s": 3.0}), control=False)
    daemon.start()
    try:
        assert daemon.toolstack.timeout == 3.0
        cfg.write_text("persist = false\n")
        assert reload_config(daemon, cfg) == ["toolstack_timeout_s: now None"]
        assert daemon.toolstack.timeout == DEFAULT_TIMEOUT
    finally:
        daemon.stop()
