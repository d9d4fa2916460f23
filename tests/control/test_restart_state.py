"""What a guest holds survives a daemon restart: its view's virtual state and its mapped PIRQs;
a guest that went away meanwhile has its PIRQs unmapped; saved state that does not validate is
reported and leaves the device as it is. And allow_interrupt_control, end to end."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.control.state import DB_NAME, StateStore
from pciback.daemon.config import parse_config
from pciback.daemon.control import request
from pciback.generated.names import COMMON_HEADER, MSI, TYPE0
from pciback.ports.hypervisor import IrqKind
from pciback.protocol.interrupts import (
    InterruptControl,
    InterruptStateError,
    saved_pirqs,
)
from pciback.sim import SimHost, SimHypervisor
from pciback.sim.device import SimDevice
from pciback.sim.environment import SimEnvironment
from pciback.sim.fixtures import fixture
from tests.protocol.simconfig import MSI_CAP, nic_config

from .harness import DEVICES, NET, RNG

BLK = "0000:03:00.1"
COMMAND, BAR0 = COMMON_HEADER.COMMAND.offset, TYPE0.BAR0.offset
INTX_DISABLE = COMMON_HEADER.COMMAND.INTX_DISABLE.mask
PARITY_RESPONSE = COMMON_HEADER.COMMAND.PARITY_RESPONSE.mask  # a shadow bit: the guest's view only


def host(tmp_path: Path) -> SimHost:
    h = SimHost(state_dir=tmp_path)
    h.add_device(NET, fixture(DEVICES[NET]))
    h.add_device(BLK, fixture(DEVICES[BLK]))
    return h


def guest_reads(h: SimHost, domid: int, addr: str) -> list[int]:
    guest = h.guest(domid)
    return [guest.conf_read(addr, off, 4) for off in range(0, 0x100, 4)]


def set_up_guest(h: SimHost, domid: int, addr: str) -> list[int]:
    """A guest driver's start: decode and mastering on, parity response noted (a shadow),
    BAR0 left sizing, two MSI-X vectors."""
    guest = h.attach(domid, [addr])
    guest.conf_write(addr, COMMAND, 2, 0x6 | PARITY_RESPONSE)
    guest.conf_write(addr, BAR0, 4, 0xFFFFFFFF)
    return guest.enable_msix(addr, [0, 1])


def rows(tmp_path: Path, table: str) -> dict[str, tuple[int, str]]:
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        return {a: (d, t) for a, d, t in db.execute(f"SELECT address, domid, data FROM {table}")}
    finally:
        db.close()


def corrupt(tmp_path: Path, table: str, address: str, data: str) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        db.execute(f"UPDATE {table} SET data = ? WHERE address = ?", (data, address))
        db.commit()
    finally:
        db.close()


def test_restart_keeps_what_the_guest_sees_and_its_pirqs(tmp_path: Path) -> None:
    with host(tmp_path) as h:
        pirqs = set_up_guest(h, 1, NET)
        before = guest_reads(h, 1, NET)
        assert before[COMMAND // 4] & PARITY_RESPONSE
        assert before[BAR0 // 4] == 0xFFF0_0004  # 1 MiB, 64-bit: the sizing answer
        mapped = h.hypervisor.pirqs_of(1)
        writes = list(h.physical(NET).writes)
        # Written behind, at most FLUSH_DELAY later; once flushed a crash would keep it too,
        # not only the clean stop below.
        assert h.daemon.state.flush()
        view = json.loads(rows(tmp_path, "view_state")[NET][1])
        command = next(r for r in view["registers"] if r["offset"] == COMMAND)
        assert command["shadow"] & PARITY_RESPONSE

        h.restart_daemon()

        assert guest_reads(h, 1, NET) == before
        assert not h.physical(NET).config[COMMAND] & PARITY_RESPONSE  # only the view had it
        assert h.hypervisor.pirqs_of(1) == mapped == sorted(pirqs)
        assert h.physical(NET).writes == writes  # resuming touched nothing
        assert h.guest(1).exported(NET).irq.msix_pirqs == tuple(zip((0, 1), pirqs, strict=True))
        h.guest(1).disable_msix(NET)  # the adopted PIRQs are the ones given back
        assert h.hypervisor.pirqs_of(1) == []
        assert {("unmap_pirq", 1, p) for p in pirqs} <= set(h.hypervisor.calls)
        assert h.daemon.state.flush()  # the journal's record is folded behind
        assert rows(tmp_path, "irq_state") == {}
        h.guest(1).enable_msix(NET, [1])
        h.destroy_guest(1)
        assert h.hypervisor.pirqs_of(1) == []
        assert rows(tmp_path, "irq_state") == rows(tmp_path, "view_state") == {}


def test_restart_keeps_a_multi_message_msi_block(tmp_path: Path) -> None:
    with SimHost(state_dir=tmp_path) as h:
        h.add_device(NET, nic_config(), bar_sizes={0: 0x4000})
        guest = h.attach(1, [NET])
        base = guest.enable_multi_msi(NET, 4)
        # the capability's header and control, and the message address
        spans = [(MSI_CAP, 4), (MSI_CAP + MSI.ADDRESS.offset, MSI.ADDRESS.width)]
        msi = [guest.conf_read(NET, at, size) for at, size in spans]
        h.restart_daemon()
        assert h.guest(1).exported(NET).irq.msi_pirqs == tuple(range(base, base + 4))
        assert [guest.conf_read(NET, at, size) for at, size in spans] == msi
        guest.disable_msi(NET)
        assert h.hypervisor.pirqs_of(1) == []


def test_a_guest_destroyed_while_the_daemon_was_down_has_its_pirqs_unmapped(
    tmp_path: Path,
) -> None:
    with host(tmp_path) as h:
        gone = set_up_guest(h, 1, NET)
        h.attach(2, [BLK]).conf_write(BLK, COMMAND, 2, 0x6)
        kept = h.guest(2).enable_msix(BLK, [1])
        h.stop_daemon()
        h.destroy_guest(1)
        assert h.hypervisor.pirqs_of(1) == sorted(gone)  # nobody to unmap them yet

        h.start_daemon()

        assert h.hypervisor.pirqs_of(1) == []
        assert {("unmap_pirq", 1, p) for p in gone} <= set(h.hypervisor.calls)
        assert h.owner(NET) is None and h.owner(BLK) == 2
        assert h.hypervisor.pirqs_of(2) == kept
        assert set(rows(tmp_path, "irq_state")) == set(rows(tmp_path, "view_state")) == {BLK}


def test_a_guest_that_cannot_be_resumed_has_its_pirqs_unmapped(tmp_path: Path) -> None:
    with host(tmp_path) as h:
        pirqs = set_up_guest(h, 1, NET)
        h.stop_daemon()
        h.guest(1).domain.close()  # its page and port are gone; its backend directory is not
        h.start_daemon()
        assert h.hypervisor.pirqs_of(1) == []
        assert {("unmap_pirq", 1, p) for p in pirqs} <= set(h.hypervisor.calls)
        assert rows(tmp_path, "irq_state") == {}


@pytest.mark.parametrize(
    ("table", "data", "message"),
    [
        ("view_state", "{not json", "saved view state for domain 1 unusable"),
        ("view_state", '{"version": 9}', "saved view state for domain 1 unusable"),
        ("irq_state", "[" * 100_000, "saved interrupt state unreadable"),
        (
            "irq_state",
            json.dumps(
                {"version": 1, "domid": 1, "address": NET, "msi": [], "msix": [[0, 1 << 16]]}
            ),
            "PIRQs out of 1..65535",
        ),
    ],
)
def test_corrupted_saved_state_is_reported_and_the_device_shown_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, table: str, data: str, message: str
) -> None:
    with host(tmp_path) as h:
        set_up_guest(h, 1, NET)
        set_up_guest(h, 2, BLK)
        other = guest_reads(h, 2, BLK)
        other_pirqs = h.hypervisor.pirqs_of(2)
        mapped = h.hypervisor.pirqs_of(1)
        h.stop_daemon()
        corrupt(tmp_path, table, NET, data)
        writes = list(h.physical(NET).writes)

        with caplog.at_level(logging.WARNING):
            h.start_daemon()

        assert any(NET in r.getMessage() and message in r.getMessage() for r in caplog.records)
        assert NET not in rows(tmp_path, table)  # reported once, not at every start
        assert h.physical(NET).writes == writes  # the device keeps what it has
        reads = guest_reads(h, 1, NET)
        if table == "view_state":
            assert not reads[COMMAND // 4] & PARITY_RESPONSE  # the device's, not the view's
            assert reads[BAR0 // 4] == h.physical(NET).read(BAR0, 4)  # no sizing latch
        else:  # no number in it can be trusted: nothing adopted, nothing unmapped
            assert h.guest(1).exported(NET).irq.msix_pirqs == ()
            assert h.physical(NET).msix_entries == (0, 1)
            assert h.hypervisor.pirqs_of(1) == mapped
        assert guest_reads(h, 2, BLK) == other
        assert h.hypervisor.pirqs_of(2) == other_pirqs
        assert h.owner(NET) == 1 and h.owner(BLK) == 2


def test_an_interrupt_record_the_device_contradicts_is_unmapped_not_adopted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with host(tmp_path) as h:
        pirqs = set_up_guest(h, 1, NET)
        h.stop_daemon()
        record = json.loads(rows(tmp_path, "irq_state")[NET][1])
        record["msix"].append([2000, 900])  # beyond the device's table of 3
        corrupt(tmp_path, "irq_state", NET, json.dumps(record))
        with caplog.at_level(logging.WARNING):
            h.start_daemon()
        assert any("MSI-X entries beyond the table" in r.getMessage() for r in caplog.records)
        assert h.hypervisor.pirqs_of(1) == []  # nothing of it is trusted to stay mapped
        assert {("unmap_pirq", 1, p) for p in pirqs} <= set(h.hypervisor.calls)
        assert h.guest(1).exported(NET).irq.msix_pirqs == ()


def test_allow_interrupt_control_end_to_end(tmp_path: Path) -> None:
    with host(tmp_path) as h:
        guest = h.attach(1, [NET])
        command = guest.conf_read(NET, COMMAND, 2)
        guest.conf_write(NET, COMMAND, 2, command | INTX_DISABLE)
        assert not any(off == COMMAND for off, _, _ in h.physical(NET).writes)
        assert not h.physical(NET).read(COMMAND, 2) & INTX_DISABLE

        h.allow_interrupt_control(NET)  # applied to the live view
        guest.conf_write(NET, COMMAND, 2, command)
        guest.conf_write(NET, COMMAND, 2, command | INTX_DISABLE)
        assert any(
            off == COMMAND and value & INTX_DISABLE for off, _, value in h.physical(NET).writes
        )
        assert h.physical(NET).read(COMMAND, 2) & INTX_DISABLE

        h.restart_daemon()  # persisted, and a saved view cannot override the policy
        assert h.daemon.pool.interrupt_control() == [NET]
        h.allow_interrupt_control(NET, False)
        h.physical(NET).writes.clear()
        guest.conf_write(NET, COMMAND, 2, command)
        assert h.physical(NET).writes == []


def test_interrupt_control_cli_and_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = parse_config(
        {"hide": f"({NET})({RNG})", "log_level": "error", "allow_interrupt_control": [RNG]}
    )
    cfg.state_dir = tmp_path / "state"
    env = SimEnvironment.from_dumps(DEVICES)
    daemon = Daemon(cfg, env)
    daemon.start()
    sock = str(cfg.control_socket)
    try:
        assert main(["interrupt-control", "add", "03:00.0", "--socket", sock]) == 0
        assert capsys.readouterr().out.startswith(f"interrupt control on for {NET}\n  ")
        assert main(["interrupt-control", "list", "--socket", sock]) == 0
        assert capsys.readouterr().out.split() == [NET, RNG]
        assert main(["interrupt-control", "add", "03:00.1", "--socket", sock]) == 1
        assert "not in the pciback pool" in capsys.readouterr().err
        flags = {
            d["address"]: d["interrupt_control"] for d in request(Path(sock), "list")["devices"]
        }
        assert flags[NET] and flags[RNG] and not flags["0000:00:00.0"]
        assert main(["interrupt-control", "remove", "0000:04:00.0", "--socket", sock]) == 0
    finally:
        daemon.stop()
    restarted = parse_config({"log_level": "error"})  # the list comes from the database now
    restarted.state_dir = cfg.state_dir
    again = Daemon(restarted, env, control=False)
    again.start()
    try:
        assert again.pool.interrupt_control() == [NET]
    finally:
        again.stop()


# -- InterruptControl's saved form -----------------------------------------------------------


def msix_control(tmp_path: Path) -> tuple[InterruptControl, SimHypervisor]:
    device = SimDevice(NET, fixture(DEVICES[NET]))
    device.disable_msix()  # the dump was taken with the guest driver's MSI-X on
    device.write(COMMAND, 2, 0x6)
    hv = SimHypervisor()
    hv.prepare_msix(NET)  # what the stub pool does when it seizes the device

    class Caps:
        def capability_offset(self, cap_id: int) -> int | None:
            return device.find_capability(cap_id)

    return InterruptControl(3, device, hv, Caps()), hv


def test_interrupt_state_round_trips_and_each_change_is_recorded(tmp_path: Path) -> None:
    irq, hv = msix_control(tmp_path)
    seen: list[dict[str, Any]] = []
    irq.on_change = seen.append
    pirqs = irq.enable_msix([0, 2])
    saved = irq.export_state()
    assert seen == [saved]  # recorded before the device was programmed
    assert saved == {
        "version": 1,
        "domid": 3,
        "address": NET,
        "msi": [],
        "msix": [[0, pirqs[0]], [2, pirqs[1]]],
    }
    again = InterruptControl(3, irq.device, hv, irq.caps)
    again.import_state(json.loads(json.dumps(saved)))
    assert again.msix_pirqs == irq.msix_pirqs
    assert hv.calls.count(("map_pirq", 3, NET, IrqKind.MSIX.value, 0, 1)) == 1  # no new maps
    again.teardown()
    assert hv.pirqs_of(3) == []


def good() -> dict[str, Any]:
    return {"version": 1, "domid": 3, "address": NET, "msi": [], "msix": [[0, 64]]}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"version": 2}, "version 1"),
        ({"extra": 1}, "unexpected or missing keys"),
        ({"domid": 0}, "out of range"),
        ({"domid": True}, "out of range"),
        ({"msix": [[0, 0x10000]]}, "PIRQs out of"),
        ({"msix": [[0, 64], [1, 64]]}, "repeated"),
        ({"msix": [[0, 64], [0, 65]]}, "repeated"),
        ({"msix": [[-1, 64]]}, "MSI-X entries out"),
        ({"msix": [[0, 64, 1]]}, "pair"),
        ({"msix": [[i, 64 + i] for i in range(129)]}, "more than a device can have"),
        ({"msi": [64, 65, 66], "msix": []}, "power of two"),
        ({"msi": [64, 66], "msix": []}, "consecutive"),
        ({"msi": [64]}, "both enabled"),
        ({"msix": "64"}, "must be lists"),
    ],
)
def test_saved_interrupt_state_is_validated(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InterruptStateError, match=fragment):
        saved_pirqs({**good(), **change})


def test_import_checks_the_device(tmp_path: Path) -> None:
    irq, _ = msix_control(tmp_path)
    with pytest.raises(InterruptStateError, match="has it off"):
        irq.import_state(good())  # the device's MSI-X is off: the record is stale
    with pytest.raises(InterruptStateError, match="not domain 3"):
        irq.import_state({**good(), "domid": 4})
    with pytest.raises(InterruptStateError, match="beyond the table"):
        irq.import_state({**good(), "msix": [[2047, 64]]})
    with pytest.raises(InterruptStateError, match="no MSI capability"):
        irq.import_state({**good(), "msix": [], "msi": [64]})
    assert irq.msix_pirqs == ()
    assert irq.msi_pirqs == ()


def test_schema_1_is_upgraded_and_bad_rows_dropped(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE view_state (address TEXT PRIMARY KEY, domid INTEGER NOT NULL,"
        " data TEXT NOT NULL);"
        f"INSERT INTO view_state VALUES ('{NET}', 1, '{{}}'), ('{RNG}', 99999, '{{}}'),"
        f" ('{BLK}', 1, x'00');"
    )
    db.commit()
    db.close()
    state = StateStore(tmp_path)
    try:
        assert state.views() == {NET: (1, "{}")}
        assert state.views() == {NET: (1, "{}")}
        state.set_interrupt_control(NET, True)
        assert state.interrupt_control() == {NET}
    finally:
        state.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() == ("2",)
    db.close()
