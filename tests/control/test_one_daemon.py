"""One daemon per state directory: a second daemon on a running daemon's state directory is
refused before it reads any state or touches any device, so the first daemon's guest keeps its
device exactly as it was (config space, owner, database, xenstore, PIRQs)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.control.state import DB_NAME
from pciback.control.state_dir import LOCK_NAME, StateDirError, StateDirLock
from pciback.daemon.config import Config
from pciback.generated.names import COMMON_HEADER, TYPE0
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture

from .harness import DEVICES, NET

VENDOR_ID = COMMON_HEADER.VENDOR_ID

REPO = Path(__file__).resolve().parents[2]
COMMAND, BAR0 = COMMON_HEADER.COMMAND.offset, TYPE0.BAR0.offset


@pytest.fixture
def host(tmp_path: Path) -> Any:
    """A daemon with state in tmp_path, and guest 1 holding NET with MSI-X vectors mapped."""
    h = SimHost(state_dir=tmp_path)
    h.add_device(NET, fixture(DEVICES[NET]))
    guest = h.attach(1, [NET])
    guest.conf_write(NET, COMMAND, 2, 0x6)  # memory decode and bus mastering on
    guest.conf_write(NET, BAR0, 4, 0xFFFFFFFF)  # BAR sizing under way: a latch in the view
    guest.enable_msix(NET, [0, 1])
    yield h
    h.close()


def everything(h: SimHost, state_dir: Path) -> dict[str, Any]:
    """All a second daemon could change: devices, owners, database, xenstore, PIRQs, files."""
    assert h.daemon.state.flush(10.0)
    db = sqlite3.connect(f"file:{state_dir / DB_NAME}?mode=ro", uri=True)
    try:
        dump = list(db.iterdump())
    finally:
        db.close()
    return {
        "devices": {
            address: (bytes(d.config), list(d.writes), d.resets, d.msix_entries, d.enabled)
            for address, d in h.env.devices.items()
        },
        "owners": {address: h.owner(address) for address in h.env.devices},
        "database": dump,
        "xenstore": dict(h.env.store.tree.values),
        "pirqs": dict(h.hypervisor.mapped),
        "hypervisor_calls": list(h.hypervisor.calls),
        # The journal's generations come and go with the first daemon's own writer; their rows
        # are in the database compared above.
        "files": sorted(n for n in os.listdir(state_dir) if not n.endswith(".journal")),
    }


def test_the_lock_file_names_the_holder(host: SimHost, tmp_path: Path) -> None:
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert (tmp_path / LOCK_NAME).stat().st_mode & 0o777 == 0o600


def test_a_second_daemon_in_process_changes_nothing(host: SimHost, tmp_path: Path) -> None:
    before = everything(host, tmp_path)
    assert before["owners"][NET] == 1 and before["pirqs"]
    second = Config(state_dir=tmp_path, log_level="warning")
    with pytest.raises(StateDirError) as info:
        Daemon(second, host.env, control=False)  # the same simulated host: the same devices
    assert str(info.value) == (
        f"{tmp_path}: another pciback daemon (pid {os.getpid()}) uses this state directory; "
        "stop it first"
    )
    assert everything(host, tmp_path) == before
    # And the first daemon still serves its guest.
    assert host.guest(1).conf_read(NET, VENDOR_ID.offset, 4) == int.from_bytes(
        before["devices"][NET][0][:4], "little"
    )


def test_a_second_daemon_process_exits_in_one_line(host: SimHost, tmp_path: Path) -> None:
    before = everything(host, tmp_path)
    config = tmp_path.parent / f"{tmp_path.name}.toml"
    config.write_text(f'state_dir = "{tmp_path}"\nhide = "({NET})"\nlog_level = "debug"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "pciback.cli", "daemon", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"pciback: cannot start: {tmp_path}: another pciback daemon (pid {os.getpid()}) uses "
        "this state directory; stop it first"
    ]
    assert everything(host, tmp_path) == before


def test_the_cli_in_process_is_refused_too(
    host: SimHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path.parent / f"{tmp_path.name}.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n')
    before = everything(host, tmp_path)
    assert main(["daemon", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "another pciback daemon" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert everything(host, tmp_path) == before


def test_the_lock_goes_with_the_daemon(tmp_path: Path) -> None:
    """A stopped or killed daemon lets the next one in (the kernel drops a dead process's
    flock; kill() does the same in-process)."""
    h = SimHost(state_dir=tmp_path)
    h.add_device(NET, fixture(DEVICES[NET]))
    h.attach(1, [NET])
    h.crash_daemon()
    h.start_daemon()
    assert h.owner(NET) == 1
    h.stop_daemon()
    lock = StateDirLock.acquire(tmp_path)
    try:
        assert lock.held
    finally:
        lock.release()
    h.start_daemon()
    h.close()


def test_a_daemon_that_fails_to_build_lets_the_lock_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kw: object) -> None:
        raise OSError("no store")

    monkeypatch.setattr("pciback.sim.environment.SimEnvironment.connect_store", broken)
    with pytest.raises(OSError, match="no store"):
        Daemon(Config(state_dir=tmp_path), control=False)
    StateDirLock.acquire(tmp_path).release()  # not held by the daemon that failed
