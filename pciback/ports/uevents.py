"""The kernel's device events (uevents): where a real dom0 learns of PCIe error recovery.

Linux's PCI error recovery announces itself on the device with a "change" uevent whose
environment has ERROR_EVENT=BEGIN_RECOVERY (DEVICE_ONLINE=0), SUCCESSFUL_RECOVERY
(DEVICE_ONLINE=1) or FAILED_RECOVERY (DEVICE_ONLINE=0). A device held by a driver without
error handlers, as the stub holding a seized function is, votes "no AER driver": depending on
the kernel, the event then comes for the function itself or only for the bridge above it (the
kernel's recovery failed there), so a listener must match bridges above the functions it holds.

A uevent on the kernel's netlink socket is one datagram: "ACTION@DEVPATH", then KEY=VALUE
strings, each NUL-terminated. `parse_uevent` reads one into a Uevent, bounded and never
raising: the socket may carry anything a kernel (or a fake source in tests) sends.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

MAX_UEVENT = 8192  # the kernel's UEVENT_BUFFER_SIZE is 2048; room to spare, and a bound
MAX_KEYS = 64  # the kernel allows 64 environment entries (UEVENT_NUM_ENVP)
NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1  # the multicast group of the kernel's own events (udev's is 2)


@dataclass(frozen=True, slots=True)
class Uevent:
    action: str
    devpath: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def subsystem(self) -> str | None:
        return self.env.get("SUBSYSTEM")

    @property
    def pci_address(self) -> str | None:
        """The function the event is about (the PCI core's PCI_SLOT_NAME)."""
        return self.env.get("PCI_SLOT_NAME")


def parse_uevent(data: bytes) -> Uevent | None:
    """One kernel uevent datagram, or None when it is not one (a udev-daemon message, which
    starts with "libudev", or garbage)."""
    if not data or len(data) > MAX_UEVENT:
        return None
    parts = data.split(b"\0")
    header = parts[0].decode("utf-8", "replace")
    action, at, devpath = header.partition("@")
    if not at or not action or not devpath.startswith("/"):
        return None
    env: dict[str, str] = {}
    for part in parts[1 : 1 + MAX_KEYS]:
        key, eq, value = part.decode("utf-8", "replace").partition("=")
        if eq and key:
            env[key] = value
    return Uevent(action, devpath, env)


class UeventSource(Protocol):
    def receive(self, timeout: float | None) -> bytes | None:
        """The next datagram, or None when `timeout` seconds pass or the source is closed."""
        ...

    def close(self) -> None: ...


class NetlinkUevents:
    """The kernel's uevents, read from its netlink socket (what `udevadm monitor --kernel` reads);
    closing it ends a `receive` waiting in another thread."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        try:
            self._sock.bind((0, KERNEL_GROUP))
        except OSError:
            self._sock.close()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False

    def receive(self, timeout: float | None) -> bytes | None:
        # poll(2): select(2) refuses descriptors from 1024 on, which a dom0 serving some 500
        # guests reaches, and this socket is opened after every guest's.
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._closed:
            if not poller.poll(None if timeout is None else max(0.0, timeout * 1000)):
                return None
            if self._closed:
                return None
            try:
                data, sender = self._sock.recvfrom(MAX_UEVENT)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # The kernel dropped events it could not queue: say so, and go on with the next.
                log.warning("kernel uevents were lost (the socket's buffer overflowed)")
                continue
            if sender[0] == 0:  # the kernel's port id; anything else was sent by a process
                return data
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_w.send(b"x")
        self._sock.close()
        self._wake_w.close()
        self._wake_r.close()


class QueuedUevents:
    """A source fed by hand: the simulated host's kernel, and tests. `emit` queues a datagram."""

    def __init__(self) -> None:
        self._queue: deque[bytes] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def emit(self, data: bytes) -> None:
        with self._ready:
            self._queue.append(data)
            self._ready.notify_all()

    def receive(self, timeout: float | None) -> bytes | None:
        with self._ready:
            self._ready.wait_for(lambda: self._queue or self._closed, timeout)
            if self._closed or not self._queue:
                return None
            return self._queue.popleft()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


def recovery_uevent(devpath: str, address: str, event: str, online: bool) -> bytes:
    """The datagram the kernel sends for a PCI error recovery event on `address`."""
    fields = [
        f"change@{devpath}",
        "ACTION=change",
        f"DEVPATH={devpath}",
        "SUBSYSTEM=pci",
        f"ERROR_EVENT={event}",
        f"DEVICE_ONLINE={int(online)}",
        f"PCI_SLOT_NAME={address}",
    ]
    return "\0".join(fields).encode() + b"\0"


__all__ = [
    "NetlinkUevents",
    "QueuedUevents",
    "Uevent",
    "UeventSource",
    "parse_uevent",
    "recovery_uevent",
]
