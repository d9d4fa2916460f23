"""The control socket: mode 0600, callers other than root and the daemon's user refused."""

from __future__ import annotations

import json
import os
import selectors
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from pciback.daemon.control import (
    MAX_MESSAGE,
    REQUEST_DEADLINE,
    ControlError,
    ControlServer,
    PeerCred,
    peer_allowed,
    peer_credentials,
    request,
)


def test_peer_check_logic() -> None:
    assert peer_allowed(PeerCred(1, 0, 0), daemon_uid=1000)  # root
    assert peer_allowed(PeerCred(1, 1000, 1000), daemon_uid=1000)  # the daemon's user
    assert not peer_allowed(PeerCred(1, 1001, 1000), daemon_uid=1000)  # same group is not enough
    assert not peer_allowed(PeerCred(1, 65534, 65534), daemon_uid=0)


class Server:
    def __init__(self, path: Path, uid: int | None = None) -> None:
        self.calls: list[dict[str, Any]] = []

        def creds(conn: socket.socket) -> PeerCred:
            real = peer_credentials(conn)
            return real if uid is None else PeerCred(real.pid, uid, uid)

        self.server = ControlServer(path, self.handle, credentials=creds)

    def handle(self, req: dict[str, Any]) -> Any:
        self.calls.append(req)
        if req["op"] == "boom":
            raise ValueError("no such thing")
        if req["op"] == "bug":
            raise RuntimeError("a bug in the daemon")
        return {"echo": req.get("arg")}


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "control.sock"


def test_owner_is_served_and_socket_is_0600(sock_path: Path) -> None:
    s = Server(sock_path)
    s.server.start()
    try:
        assert sock_path.stat().st_mode & 0o777 == 0o600
        assert request(sock_path, "hello", "x") == {"echo": "x"}
        with pytest.raises(ControlError, match="no such thing"):
            request(sock_path, "boom")
    finally:
        s.server.stop()
    assert not sock_path.exists()


def test_foreign_caller_is_refused(sock_path: Path) -> None:
    foreign = os.geteuid() + 4242
    s = Server(sock_path, uid=foreign)
    s.server.start()
    try:
        with pytest.raises(ControlError, match=f"permission denied for uid {foreign}"):
            request(sock_path, "slots")
    finally:
        s.server.stop()
    assert s.calls == []  # the handler never ran
    assert s.server.refused == 1


def test_real_peer_credentials_are_ours() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        cred = peer_credentials(a)
    assert (cred.pid, cred.uid, cred.gid) == (os.getpid(), os.geteuid(), os.getegid())


def raw_exchange(path: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(str(path))
        try:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early on an oversized request
        data = b""
        for _ in range(1000):
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


def test_malformed_and_oversized_requests(sock_path: Path) -> None:
    s = Server(sock_path)
    s.server.start()
    try:
        assert "JSON object" in raw_exchange(sock_path, b"[1, 2]\n")["error"]
        assert not raw_exchange(sock_path, b"{not json\n")["ok"]
        big = b'{"op": "x", "arg": "' + b"a" * (MAX_MESSAGE + 10) + b'"}\n'
        assert "longer than" in raw_exchange(sock_path, big)["error"]
        deep = b"[" * (MAX_MESSAGE - 10) + b"\n"
        assert not raw_exchange(sock_path, deep)["ok"]
        assert "internal error" in raw_exchange(sock_path, b'{"op": "bug"}\n')["error"]
    finally:
        s.server.stop()
    assert s.calls == [{"op": "bug"}]


def test_stale_socket_replaced_live_one_refused(sock_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()  # a socket file nobody listens on, as a crashed daemon leaves it
    s = Server(sock_path)
    s.server.start()
    try:
        other = Server(sock_path)
        with pytest.raises(ControlError, match="another daemon"):
            other.server.start()
    finally:
        s.server.stop()
    sock_path.write_text("not a socket")
    with pytest.raises(ControlError, match="not a socket"):
        Server(sock_path).server.start()


def test_unreachable_daemon_is_a_clear_error(sock_path: Path) -> None:
    with pytest.raises(ControlError, match="cannot reach the daemon"):
        request(sock_path, "slots")


def test_concurrent_clients_are_served(sock_path: Path) -> None:
    s = Server(sock_path)
    s.server.start()
    results: list[Any] = []
    try:
        threads = [
            threading.Thread(target=lambda i=i: results.append(request(sock_path, "x", str(i))))
            for i in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        s.server.stop()
    assert sorted(r["echo"] for r in results) == [str(i) for i in range(6)]


def test_the_accept_loop_sleeps_until_a_client_or_stop(
    sock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No accept timeout to wait out: stop() wakes the loop, which then leaves at once. A
    finite timeout only while a request is arriving (its deadline), if its bytes come after
    the accept."""
    timeouts: list[float | None] = []
    real_select = selectors.DefaultSelector.select

    def recorded(self: selectors.BaseSelector, timeout: float | None = None) -> Any:
        timeouts.append(timeout)
        return real_select(self, timeout)  # type: ignore[arg-type]

    monkeypatch.setattr(selectors.DefaultSelector, "select", recorded)
    s = Server(sock_path)
    s.server.start()
    try:
        assert request(sock_path, "echo", "one") == {"echo": "one"}
        thread = s.server._thread
        assert thread is not None
    finally:
        s.server.stop()
    assert not thread.is_alive()
    assert timeouts and timeouts[-1] is None  # idle, until stop() woke it
    assert all(t is None or 0 <= t <= REQUEST_DEADLINE for t in timeouts)
    assert not sock_path.exists()
