"""Every change made through the CLI says what it did: `slot remove`, `permissive` and
`interrupt-control` add/remove confirm the change and its meaning, and `quirk add` of a field
the device's view would ignore is refused with the reason instead of answering "added"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.daemon.config import parse_config
from pciback.generated.names import PM as PM_NAMES
from pciback.generated.names import TYPE0
from pciback.sim.environment import SimEnvironment

from .harness import BLK, DEVICES, NET, RNG


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    cfg = parse_config({"hide": f"({NET})({RNG})", "log_level": "error"})
    cfg.state_dir = tmp_path / "state"
    d = Daemon(cfg, SimEnvironment.from_dumps(DEVICES))
    d.start()
    try:
        yield d
    finally:
        d.stop()


def run(daemon: Daemon, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main([*argv, "--socket", str(daemon.config.control_socket)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_slot_remove_says_what_it_removed(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(daemon, capsys, "slot", "add", BLK)[:2] == (
        0,
        f"slot {BLK} added; seized {BLK}\n",
    )
    rc, out, _ = run(daemon, capsys, "slot", "remove", "03:00.*")
    assert rc == 0
    assert out.splitlines() == [
        f"removed slot {NET}, {BLK}",
        f"  {NET} stays in the pool: pciback assignable-remove -r {NET}",
        f"  {BLK} stays in the pool: pciback assignable-remove -r {BLK}",
    ]
    assert daemon.pool.slots() == [RNG]
    rc, out, err = run(daemon, capsys, "slot", "remove", "03:00.0")
    assert (rc, out) == (1, "") and err == "pciback: no slot matches 0000:03:00.0\n"


@pytest.mark.parametrize(
    ("command", "flag", "on", "off"),
    [
        ("permissive", "permissive", "may write registers the policy", "follow the policy"),
        ("interrupt-control", "interrupt_control", "may toggle INTx", "through pcifront"),
    ],
)
def test_flags_confirm_the_change(
    daemon: Daemon,
    capsys: pytest.CaptureFixture[str],
    command: str,
    flag: str,
    on: str,
    off: str,
) -> None:
    rc, out, _ = run(daemon, capsys, command, "add", "03:00.0")
    label = command.replace("-", " ")  # the daemon's words
    assert rc == 0 and out.startswith(f"{label} on for {NET}\n  ") and on in out
    assert daemon.pool.devices[NET].settings.__getattribute__(flag) is True
    rc, out, _ = run(daemon, capsys, command, "remove", "03:00.0")
    assert rc == 0 and out.startswith(f"{label} off for {NET}\n  ") and off in out
    assert daemon.pool.devices[NET].settings.__getattribute__(flag) is False
    rc, out, err = run(daemon, capsys, command, "add", BLK)  # not in the pool
    assert rc == 1 and out == "" and "not in the pciback pool" in err


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("03:00.0-04:1:ff", "covers part of command"),  # half of the command register
        ("03:00.0-41:1:ff", "covers the capability chain"),  # the first capability's next
        ("03:00.0-ffc:4:ffffffff", "does not fit the device"),  # past a 256-byte dump
    ],
)
def test_quirk_the_view_would_ignore_is_refused(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], spec: str, reason: str
) -> None:
    pointer = TYPE0.CAPABILITIES_POINTER
    first = daemon.env.bus.device(NET).read(pointer.offset, pointer.width)
    assert first == 0x40  # the dump's first capability
    assert daemon.env.bus.device(NET).config_size == 0x100
    rc, out, err = run(daemon, capsys, "quirk", "add", spec)
    assert rc == 1 and out == ""
    assert err.startswith(f"pciback: {spec}: not added, the view would ignore it: ")
    assert reason in err and err.count("\n") == 1
    assert daemon.pool.quirks() == []  # nothing stored that the view would not use


def test_a_quirk_the_view_takes_is_added(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(daemon, capsys, "quirk", "add", "03:00.0-44:2:ff")  # a vendor cap's body
    assert (rc, out) == (0, f"quirk {NET}-44:2:ff added\n")
    # A field half over the first: the view would drop it, so it is refused.
    rc, _, err = run(daemon, capsys, "quirk", "add", "03:00.0-45:1:ff")
    assert rc == 1 and "covers part of quirk_044" in err
    # At the same offset it replaces the first field, as the kernel's quirks attribute does.
    assert run(daemon, capsys, "quirk", "add", "03:00.0-44:1:f")[:2] == (
        0,
        f"quirk {NET}-44:1:f added\n",
    )
    assert daemon.pool.quirks()[2:] == ["\t\t00000044:1:0000000f"]


E1000E = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "qemu"
E1000E_DUMP = E1000E / "e1000e-8086-10d3.bin"
PM = 0xC8  # where the dump has its power-management capability (MANIFEST.md)
PMCSR_PME_ENABLE = PM_NAMES.PMCSR.PME_ENABLE.mask
PMCSR = PM + PM_NAMES.PMCSR.offset


@pytest.mark.skipif(not E1000E_DUMP.is_file(), reason="no ../shared/fixtures/qemu")
def test_checking_a_quirk_never_writes_to_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Building a view turns PME off on its device; the check builds one over a copy, so a
    device a guest holds is not touched by an operator's refused (or accepted) quirk."""
    cfg = parse_config({"hide": f"({NET})", "log_level": "error"})
    cfg.state_dir = tmp_path / "state"
    env = SimEnvironment.from_dumps({NET: str(E1000E_DUMP)})
    d = Daemon(cfg, env)
    d.start()
    try:
        device = env.devices[NET]
        pointer = TYPE0.CAPABILITIES_POINTER
        assert (
            device.read(pointer.offset, pointer.width) == PM and device.read(PM, 1) == PM_NAMES.id
        )
        pmcsr = device.read(PMCSR, PM_NAMES.PMCSR.width) | PMCSR_PME_ENABLE
        device.config[PMCSR : PMCSR + 2] = pmcsr.to_bytes(2, "little")  # as a host could leave it
        writes = list(device.writes)
        rc, _, err = run(d, capsys, "quirk", "add", f"{NET}-{PM + 1:x}:1:ff")  # PM's next
        assert rc == 1 and "covers the capability chain" in err
        assert run(d, capsys, "quirk", "add", f"{NET}-40:4:ffffffff")[0] == 0
        assert device.writes == writes and device.read(PMCSR, PM_NAMES.PMCSR.width) == pmcsr
    finally:
        d.stop()
