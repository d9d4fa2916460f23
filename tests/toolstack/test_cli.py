"""The toolstack role's commands through the real control socket, with the daemon's watch loop
on its own thread and a guest whose pcifront runs beside it, as on a dom0: parsing, output,
exit status, and refusals as one line without a traceback."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.daemon.config import parse_config
from pciback.sim.domain import SimDomain
from pciback.sim.environment import SimEnvironment
from pciback.sim.toolstack import SimToolstack

from .support import NIC, NIC2, SPARE, nic_with_io


@dataclass
class Dom0:
    daemon: Daemon
    env: SimEnvironment
    socket: str
    libxl: SimToolstack


@pytest.fixture
def dom0(tmp_path: Path) -> Iterator[Dom0]:
    env = SimEnvironment({a: nic_with_io(a) for a in (NIC, NIC2, SPARE)})
    cfg = parse_config({"hide": f"({NIC})({NIC2})", "log_level": "error"})
    cfg.state_dir = tmp_path / "state"
    daemon = Daemon(cfg, env)
    daemon.toolstack.timeout = 5.0
    daemon.start()
    stop = threading.Event()
    loop = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    loop.start()
    try:
        yield Dom0(daemon, env, str(cfg.control_socket), SimToolstack(env.store, env.domains))
    finally:
        stop.set()
        loop.join(5)
        daemon.datapath.close()
        daemon.stop()


class RunningGuest:
    """A booted guest whose pcifront follows its backend on a thread of its own."""

    def __init__(self, dom0: Dom0, domid: int) -> None:
        self.domain = SimDomain(dom0.env.store, dom0.env.grants, domid, op_timeout=5)
        self.domain.boot(10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(0.005):
            self.domain.xenbus.step()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.domain.close()


def run(capsys: pytest.CaptureFixture[str], dom0: Dom0, *argv: str) -> tuple[int, str, str]:
    rc = main([*argv, "--socket", dom0.socket])
    out, err = capsys.readouterr()
    return rc, out, err


def test_attach_boot_hot_add_and_detach(dom0: Dom0, capsys: pytest.CaptureFixture[str]) -> None:
    dom0.libxl.make_domain(3)  # xl create -p
    rc, out, err = run(capsys, dom0, "attach", "3", "03:00.0")
    assert (rc, err) == (0, "")
    assert out == f"attached {NIC} to domain 3 as 0000:00:00.0\n"
    guest = RunningGuest(dom0, 3)  # xl unpause
    try:
        assert [d.address for d in guest.domain.enumerate()] == ["0000:00:00.0"]
        rc, out, _ = run(capsys, dom0, "attach", "3", f"{NIC2}@7", "--permissive")
        assert rc == 0 and out.startswith(f"attached {NIC2} to domain 3")
        assert dom0.daemon.pool.permissive() == [NIC2]
        rc, out, _ = run(capsys, dom0, "list")
        assert f"  {NIC}  dom3  attached" in out and f"  {NIC2}  dom3  attached" in out
        rc, out, err = run(capsys, dom0, "detach", "3", NIC)
        assert (rc, out, err) == (0, f"detached {NIC} from domain 3; back in the pool\n", "")
        rc, out, _ = run(capsys, dom0, "detach", "3", NIC2)
        assert rc == 0
    finally:
        guest.close()
    assert dom0.env.domains.leftovers() == {}
    assert not [p for p in dom0.env.store.nodes if "/pci" in p]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("attach", "9", NIC), "pciback: no domain 9 (or it is dying)\n"),
        (
            ("attach", "3", SPARE),
            f"pciback: {SPARE} is not assignable: run pciback assignable-add {SPARE}\n",
        ),
        (("attach", "0", NIC), "pciback: domain 0 is dom0: its devices are not passed through\n"),
        (("detach", "3", NIC), f"pciback: {NIC} is not attached to domain 3 by pciback\n"),
        (("assignable-remove", "0000:0a:00.0"), "pciback: 0000:0a:00.0 is not assignable\n"),
    ],
)
def test_refusals_are_one_line_and_exit_1(
    dom0: Dom0, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    dom0.libxl.make_domain(3)
    rc, out, err = run(capsys, dom0, *argv)
    assert (rc, out, err) == (1, "", message)


def test_a_device_held_by_another_guest_names_it(
    dom0: Dom0, capsys: pytest.CaptureFixture[str]
) -> None:
    for domid in (3, 4):
        dom0.libxl.make_domain(domid)
    assert run(capsys, dom0, "attach", "3", NIC)[0] == 0
    assert run(capsys, dom0, "attach", "4", NIC)[1:] == (
        "",
        f"pciback: {NIC} is assigned to domain 3\n",
    )
    rc, _, err = run(capsys, dom0, "assignable-remove", NIC)
    assert (rc, err) == (
        1,
        f"pciback: {NIC} is assigned to domain 3: run pciback detach 3 {NIC} first\n",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("attach", "three", NIC),
        ("attach", "3", NIC, "--vdev", "20"),
        ("attach", "3", NIC, "--vdev", "zz"),
        ("detach", "3"),
        ("assignable-add",),
    ],
)
def test_bad_arguments_are_usage_errors(
    dom0: Dom0, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--socket", dom0.socket])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_a_bad_slot_after_the_at_sign_is_refused_before_sending(
    dom0: Dom0, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(capsys, dom0, "attach", "3", f"{NIC}@40")
    assert rc == 2 and "out of range" in err
    assert dom0.env.domains.calls == []


def test_assignable_commands(dom0: Dom0, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, dom0, "assignable-list") == (0, f"{NIC}\n{NIC2}\n", "")
    assert run(capsys, dom0, "assignable-add", "05:00.0") == (0, f"{SPARE} is assignable\n", "")
    assert run(capsys, dom0, "assignable-add", SPARE)[1] == f"{SPARE} was assignable already\n"
    assert run(capsys, dom0, "assignable-remove", SPARE, "-r") == (
        0,
        f"{SPARE} is no longer assignable; returned to host\n",
        "",
    )
    assert run(capsys, dom0, "assignable-remove", NIC2) == (
        0,
        f"{NIC2} is no longer assignable; left with no driver\n",
        "",
    )
    assert run(capsys, dom0, "assignable-list") == (0, f"{NIC}\n", "")


def test_an_unreachable_daemon_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["attach", "3", NIC, "--socket", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("pciback: cannot reach the daemon") and err.count("\n") == 1


def test_every_change_through_the_socket_is_journaled_with_its_peer(
    dom0: Dom0, capsys: pytest.CaptureFixture[str]
) -> None:
    dom0.libxl.make_domain(3)
    changing = [
        (("attach", "3", "03:00.0"), "ok", f"attached {NIC} to domain 3 as 0000:00:00.0"),
        (("attach", "9", NIC2), "failed", "no domain 9 (or it is dying)"),
        (("assignable-add", SPARE), "ok", f"{SPARE} made assignable"),
        (("permissive", "add", NIC2), "ok", f"permissive on for {NIC2}"),
        (("permissive", "remove", NIC2), "ok", f"permissive off for {NIC2}"),
        (("quirk", "add", f"{NIC2}-44:4:ff"), "ok", f"quirk {NIC2}-44:4:ff added"),
        (("assignable-remove", SPARE), "ok", f"{SPARE} no longer assignable; left with no driver"),
    ]
    reading = [("list",), ("assignable-list",), ("permissive", "list"), ("slot", "list")]
    for argv, outcome, _ in changing:
        assert run(capsys, dom0, *argv)[0] == (0 if outcome == "ok" else 1)
    for argv in reading:
        assert run(capsys, dom0, *argv)[0] == 0
    assert dom0.daemon.journal is not None and dom0.daemon.journal.flush()
    path = Path(dom0.socket).parent / "audit.jsonl"
    assert path.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(changing)  # one a change; reading requests leave none
    for line, (argv, outcome, detail) in zip(lines, changing, strict=True):
        assert (line["uid"], line["pid"]) == (os.geteuid(), os.getpid())
        assert (line["outcome"], line["detail"]) == (outcome, detail), argv
        assert line["time"].endswith("Z")
    assert lines[0]["request"]["op"] == "attach" and lines[0]["request"]["domid"] == 3
    assert lines[5]["request"] == {"op": "quirk_add", "arg": f"{NIC2}-44:4:ff"}
