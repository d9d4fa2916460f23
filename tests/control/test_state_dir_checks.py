"""The state directory and its database are checked before the daemon trusts them: each attack
(a planted link, a directory others can write or own, a corrupt or truncated database, a
read-only file system) is refused in one line naming the path, and nothing is followed, chmod-ed
or acted on meanwhile."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from pciback.backend import Daemon
from pciback.cli import main
from pciback.control.state import DB_NAME, StateError, StateStore
from pciback.control.state_dir import LOCK_NAME, StateDirError, StateDirLock, check_directory
from pciback.daemon.audit_journal import JOURNAL_NAME as AUDIT_JOURNAL
from pciback.daemon.config import DEFAULT_STATE_DIR, Config, ConfigError, parse_config
from pciback.sim.environment import SimEnvironment

from .harness import DEVICES, NET

JOURNAL = "interrupts.000000000001.journal"
VICTIM_TEXT = "the attacker's target\n"


def populated(state: Path) -> None:
    """A state directory as a daemon leaves it: an owner and a saved config space."""
    store = StateStore(state)
    store.set_owner(NET, 1)
    store.save_config(NET, bytes(range(64)))
    store.close()


def victim(tmp_path: Path) -> Path:
    """A file a link planted in the state directory points at (root's, 0644)."""
    target = tmp_path / "victim"
    target.write_text(VICTIM_TEXT)
    target.chmod(0o644)
    return target


def untouched(target: Path) -> bool:
    st = target.lstat()
    return target.read_text() == VICTIM_TEXT and stat.S_IMODE(st.st_mode) == 0o644


def refusal(tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The daemon's CLI on `state`: refused, status 1, one line on stderr, no traceback."""
    config = tmp_path / "pciback.toml"
    config.write_text(f'state_dir = "{state}"\nhide = "({NET})"\n')
    assert main(["daemon", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pciback: cannot start: ")
    return lines[0].removeprefix("pciback: cannot start: ")


# -- links -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME, JOURNAL, AUDIT_JOURNAL]
)
def test_a_planted_link_is_neither_followed_nor_chmod_ed(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if name != LOCK_NAME:
        populated(state)
    target = victim(tmp_path)
    (state / name).unlink(missing_ok=True)
    (state / name).symlink_to(target)
    message = refusal(tmp_path, state, capsys)
    assert message == f"{state / name}: a symbolic link where a state file belongs; remove it"
    assert untouched(target)
    assert (state / name).is_symlink()


def test_a_link_planted_as_the_control_socket_is_refused_before_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    populated(state)
    target = victim(tmp_path)
    (state / "control.sock").symlink_to(target)
    message = refusal(tmp_path, state, capsys)
    assert message == (
        f"{state / 'control.sock'}: a symbolic link where a state file belongs; remove it"
    )
    assert untouched(target)
    env = SimEnvironment.from_dumps({NET: DEVICES[NET]})
    with pytest.raises(StateDirError):
        Daemon(Config(state_dir=state, hide=f"({NET})"), env)
    assert env.devices[NET].writes == [] and env.devices[NET].resets == 0


def test_the_state_directory_as_a_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(real)
    message = refusal(tmp_path, tmp_path / "state", capsys)
    assert message == (
        f"{tmp_path / 'state'}: the state directory is a symbolic link; give the real path"
    )
    assert os.listdir(real) == []


def test_a_link_in_a_parent_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real)
    message = refusal(tmp_path, tmp_path / "via" / "state", capsys)
    assert message == (
        f"{tmp_path / 'via'}: a symbolic link in the state directory's path; give the path "
        "without links"
    )
    assert os.listdir(real) == []  # nothing created through it


def test_a_relative_path_is_checked_as_the_kernel_walks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`via/../state` goes through `via`: the link is seen, not normalised away."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StateDirError, match="via: a symbolic link"):
        check_directory(Path("via/../state"))


def test_a_hard_linked_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    populated(state)
    os.link(state / DB_NAME, tmp_path / "second-name")
    with pytest.raises(StateDirError, match="has 2 hard links"):
        StateStore(state)


# -- who may write the directory ---------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o720, 0o702])
def test_a_directory_others_can_write_is_refused_and_left_alone(
    tmp_path: Path, mode: int, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    populated(state)
    state.chmod(mode)
    message = refusal(tmp_path, state, capsys)
    assert message == (
        f"{state}: the state directory is writable by its group or others (mode {mode:04o}); "
        "chmod 0700 it"
    )
    assert stat.S_IMODE(state.stat().st_mode) == mode  # not "fixed" behind the operator's back


def test_a_directory_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    populated(state)
    owner = state.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)  # the daemon runs as another user
    with pytest.raises(StateDirError) as info:
        StateDirLock.acquire(state)
    assert str(info.value) == (
        f"{state}: the state directory is owned by uid {owner}, not by the daemon's uid "
        f"{owner + 4242}; chown it or choose another state_dir"
    )
    assert not (state / LOCK_NAME).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_parent_owned_by_another_user_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tmp_path / "theirs"
    parent.mkdir()
    os.chown(parent, 4242, 4242)
    message = refusal(tmp_path, parent / "state", capsys)
    assert message.startswith(
        f"{parent}: a parent of the state directory owned by uid 4242 (not root or the daemon's"
    )
    assert not (parent / "state").exists()


def test_a_parent_others_can_write_without_the_sticky_bit_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(StateDirError, match=r"without the sticky bit \(mode 0777\)"):
        check_directory(parent / "state")
    parent.chmod(0o1777)  # as /tmp: others cannot rename what is not theirs
    assert check_directory(parent / "state") == parent / "state"


def test_a_missing_directory_is_created_0700(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    StateStore(state).close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / DB_NAME).stat().st_mode) == 0o600


# -- the database ----------------------------------------------------------------------------


def daemon_refused(tmp_path: Path, state: Path) -> tuple[str, dict[str, Any]]:
    """A daemon on `state` over a simulated host: its refusal, and the devices after it."""
    env = SimEnvironment.from_dumps({NET: DEVICES[NET]})
    config = Config(state_dir=state, hide=f"({NET})", log_level="warning")
    with pytest.raises(StateError) as info:
        Daemon(config, env, control=False)
    device = env.devices[NET]
    return str(info.value), {"writes": device.writes, "resets": device.resets}


WHAT_TO_DO = (
    "restore it from a backup, or move it away to start with no saved state (which forgets "
    "every device's owner and saved config space)"
)


def test_a_corrupt_database_is_refused_before_anything_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    populated(state)
    data = (state / DB_NAME).read_bytes()
    (state / DB_NAME).write_bytes(data[:4096] + b"\xa5" * (len(data) - 4096))
    message, device = daemon_refused(tmp_path, state)
    assert message == (
        f"{state / DB_NAME}: the state database is unreadable (database disk image is "
        f"malformed); {WHAT_TO_DO}"
    )
    assert device == {"writes": [], "resets": 0}
    assert refusal(tmp_path, state, capsys) == message


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / DB_NAME).write_bytes(b"not sqlite at all\n" * 100)
    message, device = daemon_refused(tmp_path, state)
    assert message == (
        f"{state / DB_NAME}: the state database is unreadable (file is not a database); "
        f"{WHAT_TO_DO}"
    )
    assert device == {"writes": [], "resets": 0}


@pytest.mark.parametrize("keep", [0.5, 0.1, 60 / 4096])
def test_a_truncated_database_is_refused(tmp_path: Path, keep: float) -> None:
    state = tmp_path / "state"
    populated(state)
    data = (state / DB_NAME).read_bytes()
    (state / DB_NAME).write_bytes(data[: int(len(data) * keep)])
    message, device = daemon_refused(tmp_path, state)
    assert message.startswith(f"{state / DB_NAME}: the state database is ")
    assert message.endswith(WHAT_TO_DO)
    assert device == {"writes": [], "resets": 0}


def test_a_database_truncated_to_nothing_is_not_taken_for_a_new_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite would open an empty file as a new database, and the daemon would forget every
    owner; a database is created whole (renamed into place), so empty means damaged."""
    state = tmp_path / "state"
    populated(state)
    (state / DB_NAME).write_bytes(b"")
    message, device = daemon_refused(tmp_path, state)
    assert message == f"{state / DB_NAME}: the state database is empty (truncated); {WHAT_TO_DO}"
    assert device == {"writes": [], "resets": 0}
    assert refusal(tmp_path, state, capsys) == message
    assert (state / DB_NAME).stat().st_size == 0  # left for the operator to look at


def test_a_database_without_a_schema_version_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = sqlite3.connect(state / DB_NAME)
    db.execute("CREATE TABLE owners (address TEXT PRIMARY KEY, domid INTEGER)")
    db.commit()
    db.close()
    message, _ = daemon_refused(tmp_path, state)
    assert message == (
        f"{state / DB_NAME}: no schema version, not a pciback state database; {WHAT_TO_DO}"
    )


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    populated(state)
    db = sqlite3.connect(state / DB_NAME)
    db.execute("UPDATE meta SET value = '9' WHERE key = 'schema'")
    db.commit()
    db.close()
    message, _ = daemon_refused(tmp_path, state)
    assert message == (
        f"{state / DB_NAME}: state database schema 9, this daemon knows 2; run the pciback that "
        f"wrote it, or {WHAT_TO_DO}"
    )


def read_only(monkeypatch: pytest.MonkeyPatch, state: Path) -> None:
    """Creating anything in `state` fails as on a read-only file system."""
    real_open = os.open

    def fake_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if flags & os.O_CREAT and Path(path).parent == state and not Path(path).exists():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, mode, **kw)

    def fake_mkdir(path: Any, mode: int = 0o777, **kw: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_a_read_only_file_system_without_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    read_only(monkeypatch, state)
    with pytest.raises(StateDirError) as info:
        StateDirLock.acquire(state)
    assert str(info.value) == (
        f"{state / LOCK_NAME}: cannot create the lock file: Read-only file system; the state "
        "directory must be writable (a read-only file system?), or set persist = false to run "
        "without saved state"
    )
    # The lock file there, the database not yet: the database's own line.
    monkeypatch.undo()
    (state / LOCK_NAME).touch(mode=0o600)
    read_only(monkeypatch, state)
    lock = StateDirLock.acquire(state)
    try:
        with pytest.raises(StateError) as db_info:
            StateStore(state)
    finally:
        lock.release()
    assert str(db_info.value) == (
        f"{state / DB_NAME}: cannot create the state database: Read-only file system; make "
        f"{state} writable (a read-only file system?), or set persist = false to run without "
        "saved state"
    )


def test_a_missing_directory_on_a_read_only_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_only(monkeypatch, tmp_path / "state")
    with pytest.raises(StateDirError) as info:
        check_directory(tmp_path / "state")
    assert str(info.value) == (
        f"{tmp_path / 'state'}: cannot create the state directory: Read-only file system; "
        "create it (0700, owned by the daemon's user), or set persist = false to run without "
        "saved state"
    )


def test_an_interrupted_creation_is_started_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / f"{DB_NAME}.new").write_bytes(b"half")
    StateStore(state).close()
    assert not (state / f"{DB_NAME}.new").exists()
    populated(state)


# -- the configuration -----------------------------------------------------------------------


def test_the_default_state_dir_and_persist_false() -> None:
    assert parse_config({}).state_dir == DEFAULT_STATE_DIR == Path("/var/lib/pciback")
    assert parse_config({"persist": True}).state_dir == DEFAULT_STATE_DIR
    memory = parse_config({"persist": False})
    assert memory.state_dir is None and memory.control_socket is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"persist": False, "state_dir": "/var/lib/pciback"}, "contradict"),
        ({"persist": "no"}, "persist: expected true or false"),
        ({"state_dir": ""}, "state_dir: expected a path"),
    ],
)
def test_persistence_is_turned_off_only_explicitly(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_config(data)
