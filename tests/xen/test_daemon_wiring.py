"""backend = "xen" in the daemon: a clear refusal where there is no Xen, the Xen ports wired in
where there is (stand-in libraries here), and the simulation left as it was otherwise."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.daemon.config import Config, parse_config
from pciback.daemon.core import DaemonError
from pciback.daemon.datapath import SimDataPath
from pciback.ports.uevents import QueuedUevents
from pciback.sim.device import SimDevice
from pciback.sim.environment import SimEnvironment
from pciback.sim.fixtures import fixture
from pciback.sim.hostbus import SimHostBus
from pciback.xen import YOUNG_NOTE, atomic, environment
from pciback.xen._loader import PROC_XEN, XenUnavailable
from pciback.xen.environment import XenDataPath, XenEnvironment
from pciback.xen.gnttab import GrantTable
from pciback.xen.xenctrl import XenHypervisor
from pciback.xen.xenstore import XenStoreClient
from tests.xen.fakes import FakeGnttab, FakeXenctrl, FakeXenstore

NET = "0000:03:00.0"
no_xen = pytest.mark.skipif(PROC_XEN.exists(), reason="this machine runs on Xen")


def config(tmp_path: Path, backend: str) -> Config:
    cfg = parse_config({"backend": backend, "hide": f"({NET})", "log_level": "error"})
    cfg.state_dir = tmp_path / "state"
    return cfg


@no_xen
def test_without_xen_the_daemon_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DaemonError) as info:
        Daemon(config(tmp_path, "xen"), control=False)
    text = str(info.value)
    assert text.startswith('backend = "xen": cannot use the Xen adapters: missing /proc/xen')
    assert "/dev/xen" in text


@no_xen
@pytest.mark.usefixtures("no_libraries")
def test_without_the_libraries_each_is_named(tmp_path: Path) -> None:
    with pytest.raises(DaemonError) as info:
        Daemon(config(tmp_path, "xen"), control=False)
    for lib in ("libxenstore", "libxengnttab", "libxenevtchn", "libxenctrl", "libatomic"):
        assert f"{lib}: lib" in str(info.value)


@no_xen
def test_the_cli_refuses_with_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pciback.toml"
    path.write_text('backend = "xen"\nstate_dir = "state"\nlog_level = "error"\n')
    assert main(["daemon", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert 'pciback: cannot start: backend = "xen"' in err and "/proc/xen" in err
    assert "Traceback" not in err


def test_sim_stays_the_simulation(tmp_path: Path) -> None:
    daemon = Daemon(config(tmp_path, "sim"), control=False)
    try:
        assert isinstance(daemon.env, SimEnvironment)
        assert type(daemon.datapath) is SimDataPath
    finally:
        daemon.stop()


@pytest.fixture
def fake_dom0(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """open_environment answering with the Xen ports over stand-in libraries."""
    try:
        atomic.library()
    except XenUnavailable as exc:
        pytest.skip(str(exc))
    libs: dict[str, Any] = {"xs": FakeXenstore(), "gnt": FakeGnttab(), "xc": FakeXenctrl()}
    libs["xs"].nodes["/local/domain/0/backend/pci"] = b""

    def fake_open(*args: Any, **kwargs: Any) -> XenEnvironment:
        libs["opened_with"] = kwargs
        store = XenStoreClient(lib=libs["xs"])
        store.libc = libs["xs"]
        bus = SimHostBus({NET: SimDevice(NET, fixture("virtio-net-1af4-1041.bin"))})
        return XenEnvironment(
            cast(Any, bus),
            store,
            GrantTable(lib=libs["gnt"]),
            XenHypervisor(lib=libs["xc"]),
            uevents=QueuedUevents,  # not this machine's kernel
        )

    monkeypatch.setattr(environment, "open_environment", fake_open)
    return libs


def test_xen_wires_the_xen_ports_and_says_they_are_young(
    tmp_path: Path, fake_dom0: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pciback.daemon"):
        daemon = Daemon(config(tmp_path, "xen"), control=False)
    assert any(YOUNG_NOTE in r.getMessage() for r in caplog.records)
    assert isinstance(daemon.env, XenEnvironment)
    assert isinstance(daemon.datapath, XenDataPath)
    daemon.start()
    assert NET in daemon.pool.devices  # the hide list seized through the host bus port
    watched = {path for path, _ in fake_dom0["xs"].watches}
    assert {"/local/domain/0/backend/pci", "@releaseDomain"} <= watched
    assert daemon.step(0.0) == 0
    daemon.stop()
    for name in ("xs", "gnt", "xc"):
        assert ("close",) in fake_dom0[name].calls, name


@pytest.mark.parametrize("reads", ["ecam", "sysfs", None])
def test_the_configured_way_of_config_reads_reaches_the_bus(
    tmp_path: Path, fake_dom0: dict[str, Any], reads: str | None
) -> None:
    cfg = config(tmp_path, "xen")
    if reads is not None:
        cfg = parse_config({"backend": "xen", "config_reads": reads})
        cfg.state_dir = tmp_path / "state"
    Daemon(cfg, control=False)
    assert fake_dom0["opened_with"] == {"config_reads": reads or "ecam"}


def test_the_daemon_on_xen_loads_no_simulator() -> None:
    """The simulated host is the daemon's only when it runs on it (pciback.backend.open_sim)."""
    probe = (
        "import sys, pciback.daemon.core, pciback.xen.environment\n"
        "print(' '.join(m for m in sys.modules if m.startswith('pciback.sim')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == []
