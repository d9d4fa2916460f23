"""A daemon that dies in the middle of an attach or a detach: the record written before any
grant lets the next daemon finish or undo it; and a guest that died while no daemon ran is
cleaned up at the next start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pciback.control.state import DB_NAME
from pciback.sim import SimHost
from pciback.sim.domctl import SimulatedCrash
from pciback.toolstack.records import Attachment, AttachmentRecords, Phase

from .support import NIC, NIC2, make_host, node_map


def crash(host: SimHost) -> None:
    """What survives a crash: the state database and the world outside the daemon."""
    host.stop_daemon()


def rows(state_dir: Path) -> list[tuple[str, int, str]]:
    db = sqlite3.connect(state_dir / DB_NAME)
    try:
        return list(db.execute("SELECT address, domid, data FROM attachments"))
    finally:
        db.close()


@pytest.mark.parametrize("call", ["iomem_permission", "map_gsi", "assign_device"])
def test_a_crash_while_granting_is_undone_at_the_next_start(tmp_path: Path, call: str) -> None:
    with make_host(tmp_path) as host:
        host.create_domain(3)
        host.env.domains.crash_on = {call}
        with pytest.raises(SimulatedCrash):
            host.daemon_attach(3, NIC)
        # The record was there before the first grant, and part of it is granted now.
        assert [(a, d) for a, d, _ in rows(tmp_path)] == [(NIC, 3)]
        assert host.env.domains.calls[0][0] == "ioport_permission"
        crash(host)
        host.start_daemon()
        assert host.env.domains.leftovers() == {}
        assert rows(tmp_path) == []
        assert not node_map(host, "/local/domain/0/backend/pci")
        host.daemon_attach(3, NIC)  # nothing stands in the way of doing it again
        assert host.owner(NIC) == 3


def test_a_crash_after_the_xenstore_write_is_finished_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_host(tmp_path) as host:
        host.create_domain(3)
        put = AttachmentRecords.put

        def dies_when_done(self: AttachmentRecords, record: Attachment) -> None:
            if record.phase is Phase.ATTACHED:
                raise SimulatedCrash("after the xenstore write")
            put(self, record)

        monkeypatch.setattr(AttachmentRecords, "put", dies_when_done)
        with pytest.raises(SimulatedCrash):
            host.daemon_attach(3, NIC)
        monkeypatch.setattr(AttachmentRecords, "put", put)
        crash(host)
        host.start_daemon()
        assert host.daemon.status()["attachments"] == [
            {"domid": 3, "device": NIC, "phase": "attached"}
        ]
        assert host.env.domains.granted(3).devices == [NIC]
        guest = host.unpause(3)
        assert [d.vendor for d in guest.enumerate()] == [0x8086]


def test_a_crash_while_revoking_is_finished_at_the_next_start(tmp_path: Path) -> None:
    with make_host(tmp_path) as host:
        host.create_domain(3)
        host.daemon_attach(3, NIC)
        host.unpause(3)
        host.env.domains.crash_on = {"deassign_device"}  # the last revocation
        with pytest.raises(SimulatedCrash):
            host.daemon_detach(3, NIC)
        assert host.env.domains.granted(3).devices == [NIC]
        crash(host)
        host.start_daemon()
        assert host.env.domains.leftovers() == {}
        assert rows(tmp_path) == []


def test_an_interrupted_hot_unplug_stays_attached_for_the_operator(tmp_path: Path) -> None:
    with make_host(tmp_path) as host:
        host.create_domain(3)
        host.daemon_attach(3, NIC)
        host.unpause(3)
        host.daemon.toolstack.drive = lambda: 0  # the guest does not answer in time
        with pytest.raises(Exception, match="did not let go"):
            host.daemon_detach(3, NIC)
        crash(host)
        host.start_daemon()
        assert host.daemon.status()["attachments"][0]["phase"] == "attached"
        host.daemon_detach(3, NIC)  # run again, it completes
        assert host.env.domains.leftovers() == {} and rows(tmp_path) == []


def test_a_guest_destroyed_while_the_daemon_was_down_is_cleaned_up(tmp_path: Path) -> None:
    with make_host(tmp_path) as host:
        host.create_domain(3)
        host.daemon_attach(3, NIC)
        host.create_domain(4)
        host.daemon_attach(4, NIC2)
        host.stop_daemon()
        host.destroy_guest(3)  # xl destroy meanwhile: Xen forgets everything domain 3 had
        host.start_daemon()
        assert host.daemon.status()["attachments"] == [
            {"domid": 4, "device": NIC2, "phase": "attached"}
        ]
        assert not node_map(host, "/local/domain/0/backend/pci/3")
        assert host.owner(NIC) is None and host.owner(NIC2) == 4


def test_an_unreadable_record_is_reported_and_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with make_host(tmp_path) as host:
        host.create_domain(3)
        host.daemon_attach(3, NIC)
        host.stop_daemon()
        db = sqlite3.connect(tmp_path / DB_NAME)
        db.execute("UPDATE attachments SET data = ?", ('{"phase": "attached", "grants": 7}',))
        db.commit()
        db.close()
        host.start_daemon()
        assert "unusable attachment" in caplog.text
        assert rows(tmp_path) == []
