"""The local control socket: operator commands to the running daemon.

A unix stream socket, mode 0600, one JSON request and one JSON reply per connection, each at
most MAX_MESSAGE bytes. The mode already keeps others out; SO_PEERCRED is checked as well so a
descriptor passed to a foreign process, or a socket directory with loose permissions, does not
open the door: only root and the daemon's own user are served. A refused peer is answered
(without blocking) and closed as it is accepted: it never holds a slot.

A connection holds a slot from its accept to its reply. Requests are read by one thread with a
selector, so a client that sends slowly costs a descriptor, not a thread, and loses its slot when
its whole request has not arrived by `deadline` seconds after the accept (a total, not a
per-recv timeout that a byte a second would keep alive). One peer (uid and pid, from
SO_PEERCRED) holds at most `max_per_peer` slots and everyone together `max_clients`; when
either bound is reached, the slot of the connection that has been reading longest, if that is
at least `grace` seconds, is taken for the newcomer. A client that sends its request at once
(read as it is accepted) is therefore never the one dropped; when no slot can be taken the
newcomer is turned away with a "busy" answer, which `exchange` retries within its timeout.

Requests that change something are handed to an Audit (the daemon's: pciback.daemon.changes):
the reply says what changed, and the change is journaled with the peer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pciback.ratelimit import RateLimit, log_limited

MAX_MESSAGE = 64 * 1024
REQUEST_DEADLINE = 5.0  # seconds from the accept to the request's last byte
REPLY_TIMEOUT = 5.0  # seconds for the whole reply (sendall's timeout is a total since 3.5)
GRACE = 1.0  # a request still arriving after this long may lose its slot to a newcomer
MAX_CLIENTS = 16
MAX_PER_PEER = 4
_ACCEPTS_PER_WAKE = 64  # a flood of connects cannot keep the reader from the readers
_BACKLOG = 64

log = logging.getLogger("pciback.control")

Handler = Callable[[dict[str, Any]], Any]


class ControlError(RuntimeError):
    """A request the daemon refused or could not be reached; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


class Audit(Protocol):
    """What the server asks about requests that change the daemon's state."""

    def changes(self, request: dict[str, Any]) -> bool:
        """Whether this request (well-formed, not yet run) is one that changes something."""
        ...

    def describe(self, request: dict[str, Any], result: Any) -> str:
        """One line saying what a successful changing request changed."""
        ...

    def record(self, peer: PeerCred, request: dict[str, Any], ok: bool, detail: str) -> None:
        """Journal one changing request's outcome; must not block on the disk."""
        ...


def peer_credentials(conn: socket.socket) -> PeerCred:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


def peer_allowed(peer: PeerCred, daemon_uid: int) -> bool:
    """Root, or the user the daemon runs as; nobody else."""
    return peer.uid == 0 or peer.uid == daemon_uid


def _read_message(conn: socket.socket) -> bytes:
    """The client side's read of a reply: bounded in size; the socket's timeout bounds time."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_MESSAGE:
            raise ControlError(f"message longer than {MAX_MESSAGE} bytes")
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def _answer_and_close(conn: socket.socket, reply: dict[str, Any]) -> None:
    """A short answer without blocking, then close. What the client sent is drained first:
    closing a unix socket with unread data resets the peer, which would then lose the answer
    waiting in its queue. Bounded: the drain stops at what has arrived, or one message."""
    with conn:
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            drained = 0
            while drained <= MAX_MESSAGE:
                chunk = conn.recv(MAX_MESSAGE)
                if not chunk:
                    break
                drained += len(chunk)
        with contextlib.suppress(OSError):
            conn.send(json.dumps(reply).encode() + b"\n")


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _busy(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message, "busy": True}  # worth retrying soon


PeerKey = tuple[int, int]  # (uid, pid)


@dataclass(slots=True, eq=False)
class _Reading:
    conn: socket.socket
    peer: PeerCred
    deadline: float
    data: bytearray = field(default_factory=bytearray)

    @property
    def key(self) -> PeerKey:
        return (self.peer.uid, self.peer.pid)


class ControlServer:
    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        credentials: Callable[[socket.socket], PeerCred] = peer_credentials,
        daemon_uid: int | None = None,
        audit: Audit | None = None,
        deadline: float = REQUEST_DEADLINE,
        max_clients: int = MAX_CLIENTS,
        max_per_peer: int = MAX_PER_PEER,
        grace: float | None = None,
    ) -> None:
        self.path = path
        self.handler = handler
        self.credentials = credentials
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
        self.audit = audit
        self.deadline = deadline
        self.grace = min(GRACE, deadline / 5) if grace is None else grace
        self.max_clients = max_clients
        self.max_per_peer = max(1, min(max_per_peer, max_clients))
        self.refused = 0  # peers SO_PEERCRED refused
        self.expired = 0  # requests not complete by their deadline
        self.displaced = 0  # requests still arriving whose slot a newcomer took
        self.busy = 0  # newcomers turned away: every slot they could take was serving
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the slot counts; the reader and the workers change them
        self._held: dict[PeerKey, int] = {}
        self._total = 0
        self._reading: dict[socket.socket, _Reading] = {}  # the reader thread's alone
        # Any local user may connect: refusals (and the rest) are logged, but not once each.
        self._log_limit = RateLimit()

    @property
    def slots_held(self) -> int:
        with self._lock:
            return self._total

    def start(self) -> None:
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window with a looser mode
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        # Checked, not chmod-ed: chmod follows a link that could have replaced the socket.
        st = os.lstat(self.path)
        if not stat.S_ISSOCK(st.st_mode) or st.st_mode & 0o077:
            sock.close()
            raise ControlError(f"{self.path}: not the 0600 socket just made; refusing it")
        sock.listen(_BACKLOG)  # not the slots: refused and displaced callers pass through it too
        sock.setblocking(False)
        self._sock = sock
        # The reader sleeps on the socket, its clients and this, which stop() rings: no
        # polling interval for a stop to wait out.
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._serve, name="pciback-control", daemon=True)
        self._thread.start()
        log.info("control socket at %s", self.path)

    def _clear_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # left by a daemon that died
            return
        finally:
            probe.close()
        raise ControlError(f"another daemon is listening on {self.path}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")
            self._thread.join(5.0)
            self._thread = None
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _warn(self, message: str, *args: object) -> None:
        log_limited(log, self._log_limit, logging.WARNING, message, *args)

    # -- the reader thread -------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while not self._stop.is_set():
                    for key, _ in selector.select(self._wait()):
                        if key.fileobj == self._wake_r:
                            return
                        try:
                            if key.fileobj is self._sock:
                                self._accept_some(selector)
                            else:
                                assert isinstance(key.fileobj, socket.socket)
                                self._receive(selector, key.fileobj)
                        except Exception:  # the socket must outlive a bug, or nobody gets in
                            log.exception("control: serving a connection failed")
                    self._expire(selector)
            finally:
                for reading in list(self._reading.values()):
                    self._drop(selector, reading, "the daemon is stopping")

    def _wait(self) -> float | None:
        """Until the soonest deadline of a request still arriving; None (no timeout) when no
        request is: a connect or stop() wakes the reader."""
        if not self._reading:
            return None
        soonest = min(reading.deadline for reading in self._reading.values())
        return max(0.0, soonest - time.monotonic())

    def _accept_some(self, selector: selectors.BaseSelector) -> None:
        assert self._sock is not None
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the next wake tries again
                log.warning("control: accept failed: %s", exc)
                return
            self._admit(selector, conn)

    def _admit(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            peer = self.credentials(conn)
        except OSError as exc:
            self._warn("control: no credentials for a caller (%s); closed", exc)
            conn.close()
            return
        if not peer_allowed(peer, self.daemon_uid):
            self.refused += 1
            self._warn("control: refused pid %d uid %d", peer.pid, peer.uid)
            _answer_and_close(conn, _error(f"permission denied for uid {peer.uid}"))
            return
        reading = _Reading(conn, peer, time.monotonic() + self.deadline)
        if not self._take_slot(selector, reading.key):
            self.busy += 1
            self._warn("control: busy; pid %d uid %d turned away", peer.pid, peer.uid)
            _answer_and_close(conn, _busy("the daemon is busy with other requests; retry"))
            return
        conn.setblocking(False)
        self._reading[conn] = reading
        selector.register(conn, selectors.EVENT_READ)
        # What a prompt client sent is here already: its request goes to a worker now, and
        # it is not a reader a later newcomer of the same burst could take the slot of.
        self._receive(selector, conn)

    def _take_slot(self, selector: selectors.BaseSelector, key: PeerKey) -> bool:
        """Count a slot for `key`, taking one from the longest reader when a bound is reached
        (its own first: a peer at its bound competes with itself only)."""
        with self._lock:
            peer_full = self._held.get(key, 0) >= self.max_per_peer
            full = self._total >= self.max_clients
        if peer_full or full:
            started_before = time.monotonic() - self.grace
            candidates = [
                r
                for r in self._reading.values()
                if (not peer_full or r.key == key) and r.deadline - self.deadline <= started_before
            ]
            if not candidates:
                return False
            victim = min(candidates, key=lambda reading: reading.deadline)
            self.displaced += 1
            self._warn(
                "control: pid %d uid %d still sending its request; its slot goes to a newcomer",
                victim.peer.pid,
                victim.peer.uid,
            )
            self._drop(selector, victim, "request not complete: its slot went to another")
        with self._lock:
            self._held[key] = self._held.get(key, 0) + 1
            self._total += 1
        return True

    def _release(self, key: PeerKey) -> None:
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)
            self._total -= 1

    def _drop(self, selector: selectors.BaseSelector, reading: _Reading, why: str) -> None:
        selector.unregister(reading.conn)
        del self._reading[reading.conn]
        _answer_and_close(reading.conn, _error(why))
        self._release(reading.key)

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for reading in [r for r in self._reading.values() if r.deadline <= now]:
            self.expired += 1
            self._warn(
                "control: pid %d uid %d did not finish its request in %.1f s; closed",
                reading.peer.pid,
                reading.peer.uid,
                self.deadline,
            )
            self._drop(selector, reading, f"request not complete within {self.deadline:g} s")

    def _receive(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        reading = self._reading.get(conn)
        if reading is None:  # dropped earlier in the same batch: a newcomer took its slot
            return
        try:
            chunk = conn.recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""  # a reset: whatever came is all there will be
        reading.data += chunk
        if len(reading.data) > MAX_MESSAGE:
            self._drop(selector, reading, f"message longer than {MAX_MESSAGE} bytes")
            return
        if chunk and b"\n" not in chunk:
            return
        selector.unregister(conn)
        del self._reading[conn]
        message = bytes(reading.data).split(b"\n", 1)[0]
        worker = threading.Thread(
            target=self._answer,
            args=(conn, reading.peer, message),
            name="pciback-control-request",
            daemon=True,
        )
        try:
            worker.start()
        except RuntimeError:  # no thread to be had: answered here, without blocking
            _answer_and_close(conn, _busy("the daemon cannot serve the request now; retry"))
            self._release(reading.key)

    # -- a worker per complete request -------------------------------------------------------
    def _answer(self, conn: socket.socket, peer: PeerCred, message: bytes) -> None:
        try:
            with conn:
                conn.setblocking(True)
                conn.settimeout(REPLY_TIMEOUT)
                reply = self.serve_request(message, peer)
                conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:
            log.warning("control client: %s", exc)
        finally:
            self._release((peer.uid, peer.pid))

    def serve_request(self, message: bytes, peer: PeerCred) -> dict[str, Any]:
        """Run one complete request from an admitted peer; the reply to send back."""
        try:
            request = json.loads(message or b"null")
        except ValueError as exc:
            return _error(str(exc))
        except RecursionError:
            return _error("request nested too deeply")
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return _error('a request is a JSON object with a string "op"')
        audited = self.audit is not None and self.audit.changes(request)
        try:
            result = self.handler(request)
        except (ControlError, ValueError, KeyError) as exc:
            reply = _error(str(exc))
        except RecursionError:
            reply = _error("request nested too deeply")
        except Exception as exc:  # the operator gets an answer, the log the traceback
            log.exception("control: request failed")
            reply = _error(f"internal error: {exc}")
        else:
            reply = {"ok": True, "result": result}
        if audited:
            assert self.audit is not None
            try:
                if reply["ok"]:
                    reply["changed"] = self.audit.describe(request, result)
                detail = reply["changed"] if reply["ok"] else reply["error"]
                self.audit.record(peer, request, bool(reply["ok"]), str(detail))
            except Exception:  # the change is made: its caller still gets the answer
                log.exception("control: describing or journaling %r failed", request["op"])
        return reply


@dataclass(frozen=True, slots=True)
class Reply:
    result: Any
    changed: str | None  # what the request changed, in the daemon's words


def _exchange_once(path: Path, message: dict[str, Any], timeout: float) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlError(f"cannot reach the daemon at {path}: {exc.strerror}") from None
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon may answer (a refusal) before taking all of it: read that answer
        try:
            raw = _read_message(sock)
        except OSError as exc:
            raise ControlError(f"the daemon at {path} closed the connection: {exc}") from None
    finally:
        sock.close()
    try:
        return json.loads(raw)
    except ValueError:
        raise ControlError("the daemon sent an unreadable reply") from None


def exchange(
    path: Path,
    op: str,
    arg: str | None = None,
    timeout: float = 10.0,
    fields: Mapping[str, Any] | None = None,
) -> Reply:
    """Send one request to the daemon; its result and what it changed, or ControlError with
    the daemon's words. `fields` are further members of the request object (the toolstack
    role's requests). A "busy" answer (every slot this caller may have is serving) is retried
    until `timeout` has passed."""
    message: dict[str, Any] = {"op": op} if arg is None else {"op": op, "arg": arg}
    message.update(fields or {})
    end = time.monotonic() + timeout
    pause = 0.02
    while True:
        reply = _exchange_once(path, message, max(0.1, end - time.monotonic()))
        busy = isinstance(reply, dict) and reply.get("busy") is True
        remaining = end - time.monotonic()
        if not busy or remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ControlError(str(reply.get("error") if isinstance(reply, dict) else reply))
    changed = reply.get("changed")
    return Reply(reply.get("result"), changed if isinstance(changed, str) else None)


def request(
    path: Path,
    op: str,
    arg: str | None = None,
    timeout: float = 10.0,
    fields: Mapping[str, Any] | None = None,
) -> Any:
    """Send one request to the daemon; the result, or ControlError with the daemon's words."""
    return exchange(path, op, arg, timeout, fields).result
