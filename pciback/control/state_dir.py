"""The state directory: checked before anything in it is trusted, and locked so that one daemon
at a time uses it.

What is in it decides which guest holds which device and what config space a device gets back.
Whoever can write it, or swap it, can make a restarted daemon hand a device to the wrong guest
or restore a config space of their choosing; a symbolic link planted in it makes the daemon
write (or chmod) a file of the attacker's choosing as root. Hence:

- the directory is owned by the daemon's user and not writable by its group or others, and is
  created 0700 when missing;
- no component of its path is a symbolic link, and each parent is owned by root or the
  daemon's user and not writable by others, unless sticky (as /tmp): a parent writable by
  another user would let that user rename the checked directory away and put another there;
- its files (database, journal, lock, socket) are never followed when they are links: they
  are checked with lstat and opened with O_NOFOLLOW, and must be regular files of the
  daemon's user with one link.

Two daemons on one directory would each decide, from the same records, that the other's guest
no longer holds its device, and reset it under the guest. The lock (flock on `pciback.lock`,
held for the daemon's life, released by the kernel when the daemon dies however it dies) is
taken before any state is read or any device touched.

Every refusal is a StateDirError whose message is one line naming the path and what is wrong.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

LOCK_NAME = "pciback.lock"
MAX_PID_TEXT = 32


class StateDirError(RuntimeError):
    """The state directory or one of its files may not be used; the message says why."""


def _absolute(path: Path) -> Path:
    # Not resolve() or abspath(): both would hide what the kernel walks (a link, or a `..`
    # after one). Each prefix of the path as written is checked instead.
    return path if path.is_absolute() else Path(os.getcwd()) / path


def _check_parent(path: Path, st: os.stat_result, uid: int) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(
            f"{path}: a symbolic link in the state directory's path; give the path without links"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"{path}: not a directory (in the state directory's path)")
    if st.st_uid not in (0, uid):
        raise StateDirError(
            f"{path}: a parent of the state directory owned by uid {st.st_uid} (not root or "
            f"the daemon's uid {uid}): its owner could replace the state directory"
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise StateDirError(
            f"{path}: a parent of the state directory writable by its group or others without "
            f"the sticky bit (mode {stat.S_IMODE(st.st_mode):04o}): they could replace the "
            "state directory"
        )


def _check_state_dir(path: Path, st: os.stat_result, uid: int) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(f"{path}: the state directory is a symbolic link; give the real path")
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"{path}: the state directory is not a directory")
    if st.st_uid != uid:
        raise StateDirError(
            f"{path}: the state directory is owned by uid {st.st_uid}, not by the daemon's uid "
            f"{uid}; chown it or choose another state_dir"
        )
    if st.st_mode & 0o022:
        raise StateDirError(
            f"{path}: the state directory is writable by its group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); chmod 0700 it"
        )


def check_directory(path: Path, *, create: bool = True) -> Path:
    """The state directory as an absolute path, after checking every component of it (and
    creating the missing ones: the state directory itself 0700); StateDirError otherwise."""
    absolute = _absolute(path)
    uid = os.geteuid()
    parts = absolute.parts
    current = Path(parts[0])
    if len(parts) == 1:
        _check_state_dir(current, os.lstat(current), uid)
    for index, part in enumerate(parts[1:], 1):
        current = current / part
        last = index == len(parts) - 1
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create:
                raise StateDirError(f"{current}: the state directory does not exist") from None
            try:
                # mkdir never follows a link planted meanwhile: it fails with EEXIST.
                os.mkdir(current, 0o700 if last else 0o755)
                st = os.lstat(current)
            except OSError as exc:
                raise StateDirError(
                    f"{current}: cannot create the state directory: {exc.strerror}; create it "
                    "(0700, owned by the daemon's user), or set persist = false to run without "
                    "saved state"
                ) from None
        except OSError as exc:
            raise StateDirError(f"{current}: {exc.strerror}") from None
        if last:
            _check_state_dir(current, st, uid)
        else:
            _check_parent(current, st, uid)
    return absolute


def _check_file_stat(path: Path, st: os.stat_result, uid: int, want_socket: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError(f"{path}: a symbolic link where a state file belongs; remove it")
    kind_ok = stat.S_ISSOCK(st.st_mode) if want_socket else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        kind = "socket" if want_socket else "regular file"
        raise StateDirError(f"{path}: not a {kind}; remove it")
    if st.st_uid != uid:
        raise StateDirError(
            f"{path}: owned by uid {st.st_uid}, not by the daemon's uid {uid}; remove it"
        )
    if st.st_nlink > 1:
        # A second name elsewhere for a state file: whoever made it reads or writes it there.
        raise StateDirError(f"{path}: has {st.st_nlink} hard links, expected 1; remove it")


def check_file(path: Path, *, socket: bool = False) -> bool:
    """True if `path` exists and is a state file the daemon may use (never following a link),
    False if it does not exist; StateDirError otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateDirError(f"{path}: {exc.strerror}") from None
    _check_file_stat(path, st, os.geteuid(), socket)
    return True


def open_file(path: Path, flags: int) -> int:
    """os.open for a state file: never through a link, then checked on the descriptor itself
    (no window between the check and the use) and made 0600 with fchmod."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateDirError(
                f"{path}: a symbolic link where a state file belongs; remove it"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        _check_file_stat(path, st, os.geteuid(), False)
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)  # owners and saved device state are the daemon's business
    except BaseException:
        os.close(fd)
        raise
    return fd


class StateDirLock:
    """The exclusive lock on a state directory, held while the object lives (until release)."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path) -> StateDirLock:
        """Check the directory and lock it, or StateDirError naming the daemon holding it."""
        directory = check_directory(directory)
        path = directory / LOCK_NAME
        try:
            fd = open_file(path, os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise StateDirError(
                f"{path}: cannot create the lock file: {exc.strerror}; the state directory must "
                "be writable (a read-only file system?), or set persist = false to run without "
                "saved state"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateDirError(
                f"{directory}: another pciback daemon ({holder}) uses this state directory; "
                "stop it first"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateDirError(f"{path}: cannot lock: {exc.strerror}") from None
        # Written after locking: a pid read from a file nobody locks may be a dead daemon's.
        text = f"{os.getpid()}\n".encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
        except OSError:
            pass  # the lock is what matters; the pid only helps the operator
        return cls(directory, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let the next daemon in (closing the file drops the lock); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, MAX_PID_TEXT, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "pid not known yet"
