"""The state directory off the op path: guest ops complete while the disk does not answer, a
crash keeps the owners and PIRQs (the interrupt journal) and loses at most the unflushed view
changes, an interrupted map hypercall leaks no PIRQ, a forgotten row is never written back, and
a clean stop writes everything."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from pciback.control.state import DB_NAME, StateStore
from pciback.control.state_journal import JournalRow, journal_files, read_journal
from pciback.control.state_writer import Key, Row, StateWriter
from pciback.generated.names import COMMON_HEADER, MSI
from pciback.ports.hypervisor import HypervisorError, IrqKind
from pciback.sim import SimGuest, SimHost, SimHypervisor
from pciback.sim.fixtures import fixture
from tests.protocol.simconfig import MSI_CAP, nic_config

from .harness import DEVICES, NET

COMMAND = COMMON_HEADER.COMMAND.offset
DECODE = COMMON_HEADER.COMMAND.MEMORY_SPACE.mask | COMMON_HEADER.COMMAND.BUS_MASTER.mask
# Two command bits the view keeps as shadows (parity response, SERR enable): a guest-written
# value of 0..3 that lives in the view only.
PARITY = COMMON_HEADER.COMMAND.PARITY_RESPONSE.mask
SERR = COMMON_HEADER.COMMAND.SERR_ENABLE.mask
WAIT = 10.0  # a guard against a hung test, never a measurement


def note(guest: SimGuest, value: int) -> None:
    bits = (PARITY if value & 1 else 0) | (SERR if value & 2 else 0)
    guest.conf_write(NET, COMMAND, 2, DECODE | bits)


def noted(command: int | None) -> int | None:
    if command is None:
        return None
    return (1 if command & PARITY else 0) | (2 if command & SERR else 0)


def read_note(guest: SimGuest) -> int | None:
    return noted(guest.conf_read(NET, COMMAND, 2))


def rows(directory: Path, table: str) -> dict[str, tuple[int, str]]:
    db = sqlite3.connect(directory / DB_NAME)
    try:
        return {a: (d, t) for a, d, t in db.execute(f"SELECT address, domid, data FROM {table}")}
    finally:
        db.close()


def view_shadow(directory: Path, address: str, offset: int) -> int | None:
    record = rows(directory, "view_state").get(address)
    if record is None:
        return None
    view = json.loads(record[1])
    return next(int(r["shadow"]) for r in view["registers"] if r["offset"] == offset)


class Gate:
    """A disk that does not answer: the writer's commits wait here until `open` (at the latest
    when the `with` block ends). A commit let through after its store was abandoned is
    dropped, as a dead process's would be."""

    def __init__(self, writer: StateWriter) -> None:
        self.writer = writer
        self.commit = writer.commit
        assert self.commit is not None
        self.entered = threading.Event()
        self.opened = threading.Event()
        writer.commit = self._gated

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.open()

    def _gated(self, batch: dict[Key, Row | None]) -> None:
        self.entered.set()
        self.opened.wait()
        if self.writer.abandoned:
            raise RuntimeError("the daemon was killed meanwhile")
        assert self.commit is not None
        self.commit(batch)

    def wait_entered(self) -> None:
        """Have the writer take what is pending now and block in its commit."""
        self.writer.flush(timeout=0)
        assert self.entered.wait(WAIT)

    def open(self) -> None:
        self.opened.set()


def journaled(directory: Path) -> list[JournalRow]:
    """What the interrupt journal holds now, oldest first."""
    return [row for _, path in journal_files(directory) for row in read_journal(path, 1 << 20, 99)]


def msi_host(directory: Path, hypervisor: SimHypervisor | None = None) -> SimHost:
    h = SimHost(state_dir=directory, hypervisor=hypervisor)
    h.add_device(NET, nic_config(), bar_sizes={0: 0x4000})
    return h


# -- the op path does not wait for the disk --------------------------------------------------


def test_ops_and_interrupts_complete_while_a_commit_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with msi_host(tmp_path) as h, Gate(h.daemon.state.writer) as disk:
        guest = h.attach(1, [NET])
        control_plane_writes: list[str] = []  # owners & co: synchronous, never per op
        run = h.daemon.state._run

        def recording(sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
            control_plane_writes.append(sql)
            return run(sql, args)

        monkeypatch.setattr(h.daemon.state, "_run", recording)
        note(guest, 1)
        disk.wait_entered()  # the writer is inside a commit that does not return

        for value in range(32):
            note(guest, value % 4)
            assert read_note(guest) == value % 4
        pirq = guest.enable_msi(NET)
        control = MSI.CONTROL
        assert guest.conf_read(NET, MSI_CAP + control.offset, control.width) & control.ENABLE.mask
        guest.disable_msi(NET)
        pirqs = guest.enable_msix(NET, [0, 3])
        assert h.hypervisor.pirqs_of(1) == sorted(pirqs)

        assert rows(tmp_path, "view_state") == rows(tmp_path, "irq_state") == {}
        assert control_plane_writes == []
        journal = journaled(tmp_path)  # what a crash now would keep
        intents = [json.loads(d) for t, _, _, d in journal if t == "irq_intent" and d]
        assert [(i["kind"], i["indexes"]) for i in intents] == [("msi", [0]), ("msix", [0, 3])]
        assert ("irq_intent", NET, 1, None) in journal  # settled by each record
        records = [json.loads(d) for t, _, _, d in journal if t == "irq_state" and d]
        assert [r["msi"] for r in records] == [[pirq], []]
        disk.open()
        assert h.daemon.state.flush()
        assert noted(view_shadow(tmp_path, NET, COMMAND)) == 31 % 4
        saved = json.loads(rows(tmp_path, "irq_state")[NET][1])
        assert saved["msix"] == [[0, pirqs[0]], [3, pirqs[1]]]


# -- a crash -------------------------------------------------------------------------------------


def test_a_crash_keeps_owners_and_pirqs_and_loses_only_unflushed_view_changes(
    tmp_path: Path,
) -> None:
    with SimHost(state_dir=tmp_path) as h:
        h.add_device(NET, fixture(DEVICES[NET]))
        guest = h.attach(1, [NET])
        note(guest, 1)
        assert h.daemon.state.flush()  # older than the window: kept
        with Gate(h.daemon.state.writer) as disk:
            note(guest, 2)  # within the window: lost
            pirqs = guest.enable_msix(NET, [0, 1])
            disk.wait_entered()
            maps = [c for c in h.hypervisor.calls if c[0] == "map_pirq"]

            h.crash_daemon()
            h.start_daemon()

        assert h.owner(NET) == 1
        assert h.guest(1).exported(NET).irq.msix_pirqs == ((0, pirqs[0]), (1, pirqs[1]))
        assert h.hypervisor.pirqs_of(1) == sorted(pirqs)
        assert [c for c in h.hypervisor.calls if c[0] == "map_pirq"] == maps  # adopted
        assert read_note(guest) == 1
        guest.disable_msix(NET)
        assert h.hypervisor.pirqs_of(1) == []


class DyingHypervisor(SimHypervisor):
    """The daemon dies right after a map hypercall returns: the call does not come back into
    the daemon, which is gone (let go once the guest is gone, it fails into a dead store)."""

    def __init__(self) -> None:
        super().__init__()
        self.mapped_one = threading.Event()
        self.dying = False
        self.released = threading.Event()

    def map_pirq(self, domid: int, address: str, kind: IrqKind, index: int, count: int) -> int:
        pirq = super().map_pirq(domid, address, kind, index, count)
        if self.dying:
            self.dying = False
            self.mapped_one.set()
            self.released.wait()
            raise HypervisorError("the daemon that made this call is gone")
        return pirq


def test_a_crash_between_a_map_and_its_record_leaks_no_pirq(tmp_path: Path) -> None:
    hypervisor = DyingHypervisor()
    try:
        with msi_host(tmp_path, hypervisor) as h:
            guest = h.attach(1, [NET])
            answers: list[int | BaseException] = []

            def enable() -> None:
                try:
                    answers.append(guest.enable_msi(NET))
                except BaseException as exc:  # reported by the assertions below
                    answers.append(exc)

            hypervisor.dying = True
            op = threading.Thread(target=enable, daemon=True)
            op.start()
            assert hypervisor.mapped_one.wait(WAIT)
            stranded = hypervisor.pirqs_of(1)
            assert len(stranded) == 1
            journaled = [
                r for _, p in journal_files(tmp_path) for r in read_journal(p, 1 << 20, 99)
            ]
            intent = next(json.loads(d) for t, _, _, d in journaled if t == "irq_intent" and d)
            assert (intent["domid"], intent["kind"], intent["indexes"]) == (1, "msi", [0])

            h.crash_daemon()
            h.start_daemon()

            assert hypervisor.pirqs_of(1) == []
            assert ("unmap_pirq", 1, stranded[0]) in hypervisor.calls
            assert h.daemon.state.intents() == {} and rows(tmp_path, "irq_intent") == {}
            assert h.physical(NET).msi_vectors == 0  # it was never programmed
            # pcifront would give up on its op after 2 s; here its event is sent again, and
            # the new daemon serves the op the old one died in.
            guest.channel.frontend.notify()
            op.join(WAIT)
            assert len(answers) == 1 and isinstance(answers[0], int)
            assert hypervisor.pirqs_of(1) == [answers[0]]
            assert h.physical(NET).msi_vectors == 1
    finally:
        hypervisor.released.set()


def test_an_intent_of_a_guest_gone_is_resolved_at_start(tmp_path: Path) -> None:
    with msi_host(tmp_path) as h:
        h.attach(1, [NET])
        h.stop_daemon()
        h.destroy_guest(1)
        stranded = h.hypervisor.map_pirq(1, NET, IrqKind.MSIX, 2, 1)  # the call, not its record
        h.hypervisor.prepare_msix("0000:07:00.0")  # another device of the guest's
        other = h.hypervisor.map_pirq(1, "0000:07:00.0", IrqKind.MSIX, 0, 1)
        state = StateStore(tmp_path)
        state.intend_interrupts(NET, 1, '{"kind": "msix"}')
        state.abandon()  # as the daemon that made the call died

        h.start_daemon()

        assert h.hypervisor.pirqs_of(1) == [other]  # only that device's PIRQs were looked for
        assert ("unmap_pirq", 1, stranded) in h.hypervisor.calls
        assert rows(tmp_path, "irq_intent") == {}


# -- ordering and flushing -------------------------------------------------------------------


def test_a_forgotten_view_is_never_written_back(tmp_path: Path) -> None:
    store = StateStore(tmp_path, flush_delay=3600)
    disk = Gate(store.writer)
    try:
        store.save_view(NET, 1, '{"v": 1}')
        disk.wait_entered()  # that save is being committed...
        store.forget_view(NET)  # ...when the device is given back
        called: list[str] = []

        def snapshot() -> Row | None:
            called.append("snapshot")
            return 2, '{"v": 2}'

        store.save_view_later("0000:05:00.0", snapshot)
        store.forget_view("0000:05:00.0")  # queued after it: the snapshot is never taken
        disk.open()
        assert store.flush()
        assert called == []
        assert rows(tmp_path, "view_state") == {}
        assert store.views() == {}
    finally:
        disk.open()
        store.close()
    again = StateStore(tmp_path)
    try:
        assert again.views() == {}
    finally:
        again.close()


def test_a_device_given_back_leaves_no_view_behind(tmp_path: Path) -> None:
    with SimHost(state_dir=tmp_path) as h:
        h.add_device(NET, fixture(DEVICES[NET]))
        guest = h.attach(1, [NET])
        h.daemon.state.writer.delay = 3600  # nothing is written unless flushed
        note(guest, 3)
        h.detach(1, NET)
        assert rows(tmp_path, "view_state") == {}
        h.restart_daemon()
        guest = h.attach(2, [NET])
        assert read_note(guest) == noted(h.physical(NET).read(COMMAND, 2))


def test_a_clean_stop_writes_what_is_pending(tmp_path: Path) -> None:
    with msi_host(tmp_path) as h:
        guest = h.attach(1, [NET])
        h.daemon.state.writer.delay = 3600  # nothing is written unless flushed
        note(guest, 3)
        pirq = guest.enable_msi(NET)
        assert noted(view_shadow(tmp_path, NET, COMMAND)) != 3
        assert rows(tmp_path, "irq_state") == {}

        h.stop_daemon()

        assert noted(view_shadow(tmp_path, NET, COMMAND)) == 3
        assert json.loads(rows(tmp_path, "irq_state")[NET][1])["msi"] == [pirq]
        assert journal_files(tmp_path) == []  # folded into the database
        h.start_daemon()
        assert read_note(guest) == 3


# -- the writer and the journal on their own ------------------------------------------------


def test_a_failed_commit_is_retried_and_flush_says_so(tmp_path: Path) -> None:
    store = StateStore(tmp_path, flush_delay=3600)
    commit = store.writer.commit
    assert commit is not None
    failures = [sqlite3.OperationalError("disk I/O error")]

    def flaky(batch: dict[Key, Row | None]) -> None:
        if failures:
            raise failures.pop()
        assert commit is not None
        commit(batch)

    store.writer.commit = flaky
    try:
        store.save_interrupts(NET, 1, '{"msi": [64]}')
        assert not store.flush()
        assert rows(tmp_path, "irq_state") == {}
        assert journal_files(tmp_path)  # kept until its rows are in the database
        assert store.flush()
        assert rows(tmp_path, "irq_state") == {NET: (1, '{"msi": [64]}')}
    finally:
        store.close()
    assert journal_files(tmp_path) == []


def test_the_journal_is_read_back_as_untrusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = json.dumps([["irq_state", NET, 1, '{"msi": [64]}'], ["irq_intent", NET, 1, None]])
    bad = json.dumps([["owners", NET, 1, "x"]])  # not a table the journal may touch
    (tmp_path / "interrupts.000000000007.journal").write_text(
        f"{good}\n{bad}\n" + '[["irq_intent", "0000:04:00.0", 1, "{"'
    )
    with caplog.at_level(logging.WARNING):
        store = StateStore(tmp_path)
    try:
        assert store.interrupts() == {NET: (1, '{"msi": [64]}')}
        assert store.intents() == {}
        messages = [r.getMessage() for r in caplog.records]
        assert any("line 2: an unusable" in m for m in messages)
        assert any("line 3: a torn" in m for m in messages)
        assert rows(tmp_path, "irq_state") == {NET: (1, '{"msi": [64]}')}  # folded at once
        assert [n for n, _ in journal_files(tmp_path)] == [8]  # the next generation
    finally:
        store.close()
