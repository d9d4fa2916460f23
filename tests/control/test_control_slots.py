"""The control socket under slow, greedy and refused clients: a request has a total deadline,
one peer holds a bounded number of slots, a prompt client is served whoever else is connected,
and a peer SO_PEERCRED refuses is answered and closed as it is accepted."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pciback.daemon.control import (
    ControlError,
    ControlServer,
    PeerCred,
    peer_credentials,
    request,
)

# A client in a process of its own (a peer of its own: SO_PEERCRED names its pid) that starts
# a request and never finishes it.
SLOW_CLIENT = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'{"op": "echo", "arg": ')
print("ready", flush=True)
time.sleep(60)
"""


# A client in a process of its own that connects, sends nothing and prints what it is told.
LISTENING_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
print(s.recv(4096).decode().strip(), flush=True)
"""


def echo(req: dict[str, Any]) -> Any:
    return {"echo": req.get("arg")}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "control.sock"


@pytest.fixture
def slow_processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def start_slow_client(path: Path, procs: list[subprocess.Popen[str]]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLIENT, str(path)], stdout=subprocess.PIPE, text=True
    )
    procs.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"


def partial_request(path: Path) -> socket.socket:
    """A connection of this process that starts a request and sends nothing more."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(str(path))
    conn.sendall(b'{"op": "echo"')
    return conn


def answer(conn: socket.socket) -> dict[str, Any]:
    data = b""
    for _ in range(100):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


def test_slow_clients_in_other_processes_cannot_starve_a_prompt_one(
    sock_path: Path, slow_processes: list[subprocess.Popen[str]]
) -> None:
    # The deadline is far away: it is the slot rule, not the deadline, that serves the prompt
    # client here.
    server = ControlServer(sock_path, echo, deadline=60.0, max_clients=8, max_per_peer=2, grace=0.0)
    server.start()
    try:
        for _ in range(10):
            start_slow_client(sock_path, slow_processes)
        wait_for(lambda: server.slots_held == 8 and server.displaced == 2)
        started = time.monotonic()
        assert request(sock_path, "echo", "prompt", timeout=5) == {"echo": "prompt"}
        assert time.monotonic() - started < 2.0
        assert server.displaced == 3  # the longest-waiting slow client gave its slot
        wait_for(lambda: server.slots_held == 7)  # the prompt client's slot is free again
    finally:
        server.stop()


def test_one_peer_holds_at_most_its_share_of_slots(
    sock_path: Path, slow_processes: list[subprocess.Popen[str]]
) -> None:
    server = ControlServer(sock_path, echo, deadline=60.0, max_clients=8, max_per_peer=2, grace=0.0)
    server.start()
    conns = [partial_request(sock_path) for _ in range(8)]
    try:
        wait_for(lambda: server.displaced == 6)
        assert server.slots_held == 2
        # Each of the six that lost its slot was told why; the last two still wait.
        for conn in conns[:6]:
            assert "slot went to another" in answer(conn)["error"]
        # Another process is served while this one holds its two.
        start_slow_client(sock_path, slow_processes)
        wait_for(lambda: server.slots_held == 3)
        # And this process's own prompt request takes its oldest slow connection's slot.
        assert request(sock_path, "echo", "mine", timeout=5) == {"echo": "mine"}
        assert "slot went to another" in answer(conns[6])["error"]
    finally:
        for conn in conns:
            conn.close()
        server.stop()


def test_the_deadline_is_for_the_whole_request_not_each_recv(sock_path: Path) -> None:
    server = ControlServer(sock_path, echo, deadline=1.0)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(sock_path))
            started = time.monotonic()
            reply: dict[str, Any] | None = None
            # A byte every 0.1 s: a per-recv timeout of any length would never fire.
            for byte in b'{"op": "echo", "arg": "' + b"x" * 100:
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    break  # closed on us: the deadline passed
                time.sleep(0.1)
            reply = answer(conn)
            elapsed = time.monotonic() - started
        assert reply["error"] == "request not complete within 1 s"
        assert 1.0 <= elapsed < 4.0
        assert server.expired == 1
        wait_for(lambda: server.slots_held == 0)
    finally:
        server.stop()


def test_refused_peers_are_closed_at_once_and_hold_no_slot(sock_path: Path) -> None:
    foreign = os.geteuid() + 4242
    calls: list[dict[str, Any]] = []

    def creds(conn: socket.socket) -> PeerCred:
        real = peer_credentials(conn)
        return PeerCred(real.pid, foreign, foreign)

    def handler(req: dict[str, Any]) -> Any:
        calls.append(req)
        return None

    server = ControlServer(
        sock_path, handler, credentials=creds, deadline=60.0, max_clients=1, max_per_peer=1
    )
    server.start()
    try:
        conns = []
        started = time.monotonic()
        for _ in range(5):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(10)
            conn.connect(str(sock_path))
            conns.append(conn)  # sends nothing: a slot, had it one, would last the deadline
        for conn in conns:
            with conn:
                assert answer(conn)["error"] == f"permission denied for uid {foreign}"
        assert time.monotonic() - started < 5.0  # not the 60 s deadline
        assert server.refused == 5
        assert server.slots_held == 0
        assert calls == []
    finally:
        server.stop()


def test_a_newcomer_is_turned_away_only_when_every_slot_is_serving(sock_path: Path) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def handler(req: dict[str, Any]) -> Any:
        entered.release()
        release.wait(10)
        return req["arg"]

    server = ControlServer(sock_path, handler, max_clients=2, max_per_peer=2)
    server.start()
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(request(sock_path, "x", str(i))))
        for i in range(2)
    ]
    try:
        for thread in threads:
            thread.start()
        assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
        started = time.monotonic()
        with pytest.raises(ControlError, match="busy"):
            request(sock_path, "x", "late", timeout=1)
        assert time.monotonic() - started >= 0.9  # retried until its timeout, then told
        assert server.busy >= 2
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
        server.stop()
    assert sorted(results) == ["0", "1"]


def test_a_request_just_begun_keeps_its_slot_for_the_grace_and_busy_is_retried(
    sock_path: Path,
) -> None:
    server = ControlServer(sock_path, echo, deadline=60.0, max_clients=8, max_per_peer=2, grace=0.5)
    server.start()
    conns = [partial_request(sock_path) for _ in range(2)]
    try:
        wait_for(lambda: server.slots_held == 2)
        started = time.monotonic()
        # Busy at first (both slow ones are younger than the grace); the client retries, and
        # once the older one has had its grace it gives its slot.
        assert request(sock_path, "echo", "patient", timeout=5) == {"echo": "patient"}
        assert time.monotonic() - started >= 0.3
        assert server.busy >= 1 and server.displaced == 1
        assert "slot went to another" in answer(conns[0])["error"]
    finally:
        for conn in conns:
            conn.close()
        server.stop()


def test_refused_peers_take_no_slot_from_an_admitted_one(sock_path: Path) -> None:
    """Other processes are refused here; their flood neither holds a slot nor takes the one
    slot an admitted (slow) client of this process holds."""
    foreign = os.geteuid() + 4242

    def creds(conn: socket.socket) -> PeerCred:
        real = peer_credentials(conn)
        return real if real.pid == os.getpid() else PeerCred(real.pid, foreign, foreign)

    server = ControlServer(
        sock_path, echo, credentials=creds, deadline=60.0, max_clients=1, grace=0.0
    )
    server.start()
    admitted = partial_request(sock_path)
    try:
        wait_for(lambda: server.slots_held == 1)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", LISTENING_CLIENT, str(sock_path)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        for proc in procs:
            out, _ = proc.communicate(timeout=20)
            assert json.loads(out)["error"] == f"permission denied for uid {foreign}"
        assert server.refused == 8
        assert server.slots_held == 1 and server.displaced == 0 and server.busy == 0
        admitted.sendall(b', "arg": "still mine"}\n')
        assert answer(admitted) == {"ok": True, "result": {"echo": "still mine"}}
    finally:
        admitted.close()
        server.stop()


def test_a_reader_dropped_earlier_in_the_same_batch_is_skipped(sock_path: Path) -> None:
    """One select batch can hold both a newcomer (whose admission drops the longest reader to
    free a slot) and that reader's own data: the reader is gone by the time its turn comes,
    and the reader thread must go on (it used to die of a KeyError, and with it the socket)."""
    server = ControlServer(sock_path, echo)
    mine, theirs = socket.socketpair()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(mine, selectors.EVENT_READ)
            theirs.sendall(b'{"op": "echo"')  # readable, but no longer one of the readers
            server._receive(selector, mine)
            assert selector.get_map() is not None and mine in selector.get_map()
            assert mine.fileno() >= 0  # left alone: whoever dropped it closed its own copy
    finally:
        mine.close()
        theirs.close()
