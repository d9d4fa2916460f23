"""The local control socket: operator commands to the running daemon.

A unix stream socket, mode 0600, one JSON request and one JSON reply per connection, each at
most MAX_MESSAGE bytes. The mode already keeps others out; SO_PEERCRED is checked as well so a
descriptor passed to a foreign process, or a socket directory with loose permissions, does not
open the door: only root and the daemon's own user are served.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_MESSAGE = 64 * 1024
CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 8

log = logging.getLogger("pciback.control")

Handler = Callable[[dict[str, Any]], Any]


class ControlError(RuntimeError):
    """A request the daemon refused or could not be reached; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


def peer_credentials(conn: socket.socket) -> PeerCred:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


def peer_allowed(peer: PeerCred, daemon_uid: int) -> bool:
    """Root, or the user the daemon runs as; nobody else."""
    return peer.uid == 0 or peer.uid == daemon_uid


def _read_message(conn: socket.socket) -> bytes:
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


class ControlServer:
    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        credentials: Callable[[socket.socket], PeerCred] = peer_credentials,
        daemon_uid: int | None = None,
    ) -> None:
        self.path = path
        self.handler = handler
        self.credentials = credentials
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid
        self.refused = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

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
        sock.listen(MAX_CLIENTS)
        sock.setblocking(False)
        self._sock = sock
        # The accept loop sleeps on the socket and on this, which stop() rings: no polling
        # interval for a stop to wait out.
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

    def _serve(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as waiting:
            waiting.register(self._sock, selectors.EVENT_READ)
            waiting.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                if any(key.fd == self._wake_r for key, _ in waiting.select()):
                    return
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # the client went away before it was accepted
                except OSError:
                    return
                self._take(conn)

    def _take(self, conn: socket.socket) -> None:
        if not self._slots.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(CLIENT_TIMEOUT)
                reply = self.serve_connection(conn)
                conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:
            log.warning("control client: %s", exc)
        finally:
            self._slots.release()

    def serve_connection(self, conn: socket.socket) -> dict[str, Any]:
        """Check the caller, read one request, run it; the reply to send back."""
        peer = self.credentials(conn)
        if not peer_allowed(peer, self.daemon_uid):
            self.refused += 1
            log.warning("control: refused pid %d uid %d", peer.pid, peer.uid)
            # The request is read (bounded, never parsed) so that the caller's send completes
            # and it reads the refusal rather than a reset connection.
            with contextlib.suppress(ControlError, OSError):
                _read_message(conn)
            return {"ok": False, "error": f"permission denied for uid {peer.uid}"}
        try:
            request = json.loads(_read_message(conn) or b"null")
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise ControlError('a request is a JSON object with a string "op"')
            return {"ok": True, "result": self.handler(request)}
        except (ControlError, ValueError, KeyError) as exc:
            return {"ok": False, "error": str(exc)}
        except RecursionError:
            return {"ok": False, "error": "request nested too deeply"}
        except Exception as exc:  # the operator gets an answer, the log the traceback
            log.exception("control: request failed")
            return {"ok": False, "error": f"internal error: {exc}"}


def request(
    path: Path,
    op: str,
    arg: str | None = None,
    timeout: float = 10.0,
    fields: Mapping[str, Any] | None = None,
) -> Any:
    """Send one request to the daemon; the result, or ControlError with the daemon's words.
    `fields` are further members of the request object (the toolstack role's requests)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlError(f"cannot reach the daemon at {path}: {exc.strerror}") from None
        message: dict[str, Any] = {"op": op} if arg is None else {"op": op, "arg": arg}
        message.update(fields or {})
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
        reply = json.loads(raw)
    except ValueError:
        raise ControlError("the daemon sent an unreadable reply") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ControlError(str(reply.get("error") if isinstance(reply, dict) else reply))
    return reply.get("result")
