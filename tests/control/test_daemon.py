"""The daemon end to end on the simulated host: configuration, control requests, guests over
the real shared page, restart with guests attached, SIGTERM, the CLI and the demo."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pciback.backend import Daemon
from pciback.cli import build_parser, main
from pciback.daemon.config import Config, ConfigError, load_config, parse_config
from pciback.daemon.control import ControlError, request
from pciback.daemon.core import DaemonError
from pciback.generated.names import COMMON_HEADER
from pciback.ports.xenstore import WatchEvent
from pciback.sim.demo import run_demo
from pciback.sim.domain import SimDomain
from pciback.sim.environment import SimEnvironment
from pciback.sim.toolstack import SimToolstack

from .harness import DEVICES, NET, RNG

VENDOR_ID = COMMON_HEADER.VENDOR_ID

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **kw: object) -> Config:
    cfg = parse_config({"hide": f"({NET})({RNG})", "log_level": "error", **kw})
    cfg.state_dir = tmp_path / "state"
    return cfg


def env() -> SimEnvironment:
    return SimEnvironment.from_dumps(DEVICES)


def test_config_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pciback.toml"
    path.write_text(
        'backend = "sim"\nstate_dir = "st"\nhide = "(03:00.0)"\ntopology = "passthrough"\n'
        'permissive = ["03:00.0"]\nquirks = ["03:00.0-40:2:ff"]\nlog_format = "text"\n'
        '[sim.devices]\n"0000:03:00.0" = "virtio-net-1af4-1041.bin"\n'
    )
    cfg = load_config(path)
    assert cfg.state_dir == tmp_path / "st"
    assert cfg.control_socket == tmp_path / "st" / "control.sock"
    assert cfg.permissive == [NET]
    assert cfg.sim_devices == {NET: "virtio-net-1af4-1041.bin"}


def test_op_linger_reaches_the_data_path(tmp_path: Path) -> None:
    path = tmp_path / "pciback.toml"
    path.write_text("op_linger_us = 750\npersist = false\n")
    daemon = Daemon(load_config(path), env(), control=False)
    try:
        assert daemon.datapath.linger_ns == 750_000
    finally:
        daemon.stop()
    default = Daemon(parse_config({"persist": False}), env(), control=False)
    assert default.datapath.linger_ns == 0  # the simulation never lingers (its guests are threads)
    default.stop()


def test_toolstack_timeout_reaches_the_toolstack_role(tmp_path: Path) -> None:
    path = tmp_path / "pciback.toml"
    path.write_text("toolstack_timeout_s = 45\npersist = false\n")
    daemon = Daemon(load_config(path), env(), control=False)
    try:
        assert daemon.toolstack.timeout == 45.0
    finally:
        daemon.stop()
    default = Daemon(parse_config({"persist": False}), env(), control=False)
    assert default.toolstack.timeout == 10.0  # libxl's
    default.stop()


def test_permissive_true_is_the_global_module_parameter(tmp_path: Path) -> None:
    path = tmp_path / "pciback.toml"
    path.write_text(f'permissive = true\nhide = "({NET})"\npersist = false\n')
    cfg = load_config(path)
    assert cfg.permissive_all and cfg.permissive == []
    daemon = Daemon(cfg, env(), control=False)
    try:
        daemon.start()
        assert daemon.control is None
        assert daemon.pool.policy(NET) == (True, ())
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('backend = "kvm"', "expected one of sim, xen"),
        ('hide = "(03:00.0"', "column 9"),
        ('permissive = ["03:00.*"]', "wildcards"),
        ("colour = 1", "unknown key(s): colour"),
        ('quirks = ["03:00.0-41:2:1"]', "aligned"),
        ("hide = [", "pciback.toml"),
        ("op_linger_us = -1", "expected 0 to 100000"),
        ("op_linger_us = true", "whole number of microseconds"),
        ("toolstack_timeout_s = 0", "expected more than 0, at most 3600"),
        ('toolstack_timeout_s = "10"', "a number of seconds"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "pciback.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=r"pciback\.toml") as info:
        load_config(path)
    assert fragment in str(info.value)


def test_xen_backend_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(DaemonError, match="adapters"):
        Daemon(config(tmp_path, backend="xen"), env())


def test_daemon_serves_guests_and_control(tmp_path: Path) -> None:
    e = env()
    cfg = config(tmp_path)
    sock = cfg.control_socket
    assert sock is not None
    daemon = Daemon(cfg, e)
    daemon.start()
    toolstack = SimToolstack(e.store)
    guest = SimDomain(e.store, e.grants, 7, op_timeout=10)
    try:
        assert request(sock, "slots") == [NET, RNG]
        assert request(sock, "permissive_add", "03:00.0") == NET
        with pytest.raises(ControlError, match="not in the pciback pool"):
            request(sock, "permissive_add", "03:00.1")
        assert request(sock, "new_slot", "03:00.1") == ["0000:03:00.1"]
        toolstack.create(7, [NET, RNG], "vpci")
        for _ in range(100):
            daemon.step(0.0)
        guest.xenbus.publish()
        deadline = time.monotonic() + 10
        while guest.xenbus.state().name != "CONNECTED" and time.monotonic() < deadline:
            daemon.step(0.01)
            guest.xenbus.step()
        found = guest.enumerate()
        assert [d.address for d in found] == ["0000:00:00.0", "0000:00:01.0"]
        assert guest.ops.enable_interrupts(found[0])
        status = request(sock, "list")
        assert status["guests"][0]["devices"] == {"0000:00:00.0": NET, "0000:00:01.0": RNG}
        owners = {d["address"]: d["owner"] for d in status["devices"]}
        assert owners[NET] == owners[RNG] == 7
    finally:
        daemon.stop()

    resets = e.devices[NET].resets
    again = Daemon(cfg, e)  # a restart with the guest attached
    again.start()
    try:
        assert again.ownership.all() == {NET: 7, RNG: 7}
        assert e.devices[NET].resets == resets
        # served again
        assert guest.ops.conf_read("0000:00:00.0", VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4
        assert again.pool.permissive() == [NET]
    finally:
        again.stop()
        guest.close()


def test_cli_talks_to_the_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e = env()
    cfg = config(tmp_path)
    daemon = Daemon(cfg, e)
    daemon.start()
    sock = str(cfg.control_socket)
    try:
        assert main(["slot", "list", "--socket", sock]) == 0
        assert capsys.readouterr().out.split() == [NET, RNG]
        assert main(["quirk", "add", "03:00.0-44:4:ffffffff", "--socket", sock]) == 0
        assert main(["quirk", "list", "--socket", sock]) == 0
        assert "00000044:4:ffffffff" in capsys.readouterr().out
        assert main(["slot", "add", "(03:00.0)", "--socket", sock]) == 1
        assert "column 1" in capsys.readouterr().err
        assert main(["list", "--json", "--socket", sock]) == 0
        assert json.loads(capsys.readouterr().out)["guests"] == []
        assert main(["irq-handlers", "--socket", sock]) == 0
        assert f"{NET}:off:acking:0" in capsys.readouterr().out
        assert main(["permissive", "add", "03:00.0", "--socket", sock]) == 0
        assert capsys.readouterr().out.startswith(f"permissive on for {NET}\n  ")  # not silent
        assert main(["permissive", "list", "--socket", sock]) == 0
        assert capsys.readouterr().out.split() == [NET]
        assert main(["permissive", "remove", "03:00.0", "--socket", sock]) == 0
        assert capsys.readouterr().out.startswith(f"permissive off for {NET}\n  ")
        assert daemon.pool.permissive() == []
    finally:
        daemon.stop()
    assert main(["slot", "list", "--socket", sock]) == 1
    assert "cannot reach the daemon" in capsys.readouterr().err


def test_extra_command_modules_plug_in() -> None:
    parser = build_parser(("pciback.cli.daemon", "pciback.not_there"))
    args = parser.parse_args(["daemon", "--config", "x.toml"])
    assert args.command == "daemon"


def test_sigterm_stops_cleanly_and_logs_json(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "pciback.toml"
    cfg.write_text(f'state_dir = "{state}"\nhide = "(03:00.0)"\nlog_level = "info"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "pciback.cli", "daemon", "--config", str(cfg)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sock = state / "control.sock"
        for _ in range(3000):
            if sock.exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert request(sock, "slots") == [NET]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in lines]
    assert any(m.startswith("started:") for m in messages)
    assert any("shutting down" in m for m in messages)
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert not sock.exists()


def test_demo_runs_to_completion() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    assert "[8/8]" in text and "done in" in text
    assert "refused: " in text and "owned by domain 1" in text
    assert "interrupts: MSI-X -> PIRQ" in text
    assert "not reset by the restart" in text


def test_daemon_without_state_dir_still_runs() -> None:
    cfg = parse_config({"hide": f"({NET})", "persist": False})
    assert cfg.control_socket is None
    daemon = Daemon(cfg, env())
    daemon.start()
    assert daemon.control is None
    daemon.stop()


def test_the_watch_loop_sleeps_without_a_polling_interval_and_stopping_wakes_it(
    tmp_path: Path,
) -> None:
    e = env()
    daemon = Daemon(config(tmp_path), e)
    daemon.start()
    waits: list[float | None] = []
    # Whether the loop is inside a sleep (a wait without timeout) now: a flag under a
    # condition rather than an event, since the sleep that follows the handled events may
    # begin before or after the test looks.
    sleeping = threading.Condition()
    asleep = [False]
    real_next_event = daemon.xs.next_event

    def recorded(timeout: float | None = 0.0) -> WatchEvent | None:
        waits.append(timeout)
        if timeout is None:
            with sleeping:
                asleep[0] = True
                sleeping.notify_all()
        try:
            return real_next_event(timeout)
        finally:
            if timeout is None:
                with sleeping:
                    asleep[0] = False

    daemon.xs.next_event = recorded  # type: ignore[method-assign]
    stop = threading.Event()
    loop = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    loop.start()
    try:
        SimToolstack(e.store).create(7, [NET], "vpci")  # events come, are handled
        with sleeping:  # and it went back to sleep, with nothing pending
            assert sleeping.wait_for(lambda: asleep[0] and bool(daemon.backends.backends), 10)
        stop.set()  # no watch event follows: only the stop can end that sleep
        loop.join(10)
        assert not loop.is_alive()
    finally:
        stop.set()
        daemon.stop()
    assert daemon.backends.backends  # the guest's backend was taken meanwhile
    assert set(waits) == {None, 0.0}  # it slept until woken or polled without waiting
