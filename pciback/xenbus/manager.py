"""Finds the guests' backend directories in xenstore and drives each one's state machine.

Every guest is handled apart: whatever its xenstore holds, a failure is reported for that guest
(error node, Closing) and the others are untouched.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from pciback.ports.xenstore import WatchEvent, XenStore, XenStoreError, join
from pciback.xenbus.backend import BACKEND_ROOT, PciBackend
from pciback.xenbus.interfaces import DataPath, DeviceBroker
from pciback.xenbus.parse import XenbusConfigError

MAX_GUESTS = 4096
MAX_DEVIDS = 16
DOMID_MAX = 0x7FEF  # above are DOMID_FIRST_RESERVED and the special domains
MAX_EVENTS_PER_PUMP = 10_000
_BACKEND_TOKEN = "pciback:backend"
_RELEASE_TOKEN = "pciback:release"
_FRONTEND_TOKEN = "pciback:fe:"

log = logging.getLogger("pciback.xenbus")

Key = tuple[int, int]


def _small_int(text: str, limit: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        return None
    value = int(text)
    return value if value <= limit else None


class XenbusBackends:
    def __init__(
        self,
        store: XenStore,
        broker: DeviceBroker,
        datapath: DataPath,
        default_mode: str = "vpci",
        on_guest_gone: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.datapath = datapath
        self.default_mode = default_mode
        self.on_guest_gone = on_guest_gone
        self.backends: dict[Key, PciBackend] = {}
        self.failed: dict[Key, str] = {}  # guests whose directory could not even be read

    def start(self) -> None:
        self.store.watch(BACKEND_ROOT, _BACKEND_TOKEN)
        self.store.watch("@releaseDomain", _RELEASE_TOKEN)

    def stop(self) -> None:
        """Stop watching; connections are dropped but nothing a guest holds is released."""
        self.store.unwatch(BACKEND_ROOT, _BACKEND_TOKEN)
        self.store.unwatch("@releaseDomain", _RELEASE_TOKEN)
        for key, backend in self.backends.items():
            self.store.unwatch(join(backend.frontend, "state"), _fe_token(key))
            if backend.connected:
                backend.connected = False
                self.datapath.suspend(*key)

    def pump(self, timeout: float | None = 0.0) -> int:
        """Handle pending watch events, waiting up to `timeout` for the first; returns how many."""
        handled = 0
        event = self.store.next_event(timeout)
        while event is not None and handled < MAX_EVENTS_PER_PUMP:
            self.handle(event)
            handled += 1
            event = self.store.next_event(0.0)
        return handled

    def handle(self, event: WatchEvent) -> None:
        if event.token == _BACKEND_TOKEN:
            key = self._key_of(event.path)
            if key is not None and key in self.failed:
                del self.failed[key]  # its directory changed: look again
                self.scan()
            elif key is None or key not in self.backends:
                self.scan()
            else:
                self._guarded(key, lambda b: b.backend_changed())
                self._reap(key)
        elif event.token.startswith(_FRONTEND_TOKEN):
            key = self._parse_fe_token(event.token)
            if key is not None and key in self.backends:
                self._frontend_changed(key)
        elif event.token == _RELEASE_TOKEN:
            self.scan()

    # -- discovery ---------------------------------------------------------------------------
    def scan(self) -> None:
        """Compare the backend directories in xenstore with the backends held here."""
        present: set[Key] = set()
        for domtext in (self.store.list(BACKEND_ROOT) or [])[:MAX_GUESTS]:
            domid = _small_int(domtext, DOMID_MAX)
            if domid is None or domid == 0:
                continue
            for devtext in (self.store.list(join(BACKEND_ROOT, domtext)) or [])[:MAX_DEVIDS]:
                devid = _small_int(devtext, MAX_DEVIDS - 1)
                if devid is not None:
                    present.add((domid, devid))
        for key in sorted(set(self.backends) - present):
            self._unregister(key, "its backend directory was removed")
        for key in sorted(present - set(self.backends) - set(self.failed)):
            self._probe(key)
        for key in sorted(set(self.failed) - present):
            del self.failed[key]
        for key in sorted(self.backends):
            if self.store.read(f"/local/domain/{key[0]}") is None and self._domain_gone(key):
                self._unregister(key, "the domain is gone")

    def _domain_gone(self, key: Key) -> bool:
        return self.store.read(join(self.backends[key].frontend, "state")) is None

    def _probe(self, key: Key) -> None:
        domid, devid = key
        try:
            backend = PciBackend(
                self.store, domid, devid, self.broker, self.datapath, self.default_mode
            )
            self.store.watch(join(backend.frontend, "state"), _fe_token(key))
        except (XenbusConfigError, XenStoreError, ValueError) as exc:
            self.failed[key] = str(exc)
            log.error("dom%d/%d: cannot use backend directory: %s", domid, devid, exc)
            self._report(key, exc)
            return
        self.backends[key] = backend
        self._guarded(key, lambda b: b.probe())

    def _report(self, key: Key, exc: Exception) -> None:
        with contextlib.suppress(XenStoreError):
            self.store.write(
                f"/local/domain/0/error/backend/pci/{key[0]}/{key[1]}/error", f"22 {exc}"[:1024]
            )

    def _frontend_changed(self, key: Key) -> None:
        outcome: list[str | None] = []
        self._guarded(key, lambda b: outcome.append(b.frontend_changed()))
        if outcome and outcome[0] == "unregister":
            self._unregister(key, "the frontend closed")
        else:
            self._reap(key)

    def _reap(self, key: Key) -> None:
        """A backend that failed gives its devices back at once (it stays, in Closing)."""
        backend = self.backends.get(key)
        if backend is not None and backend.error is not None and backend.exported:
            self._guarded(key, lambda b: b.free())

    def _unregister(self, key: Key, why: str) -> None:
        backend = self.backends.pop(key, None)
        if backend is None:
            return
        log.info("dom%d/%d: unregistering backend: %s", key[0], key[1], why)
        with contextlib.suppress(XenStoreError):
            self.store.unwatch(join(backend.frontend, "state"), _fe_token(key))
        try:
            backend.free()
        except Exception:
            log.exception("dom%d/%d: releasing devices failed", key[0], key[1])
        if self.on_guest_gone is not None and not any(k[0] == key[0] for k in self.backends):
            self.on_guest_gone(key[0])

    def _guarded(self, key: Key, action: Callable[[PciBackend], object]) -> None:
        backend = self.backends.get(key)
        if backend is None:
            return
        try:
            action(backend)
        except Exception as exc:  # one guest's trouble must not reach the others
            log.exception("dom%d/%d: backend failed", key[0], key[1])
            backend.fatal(
                getattr(exc, "code", 5) if isinstance(exc, XenbusConfigError) else 5, str(exc)
            )

    @staticmethod
    def _key_of(path: str) -> Key | None:
        if not path.startswith(BACKEND_ROOT + "/"):
            return None
        parts = path[len(BACKEND_ROOT) + 1 :].split("/")
        if len(parts) < 2:
            return None
        domid, devid = _small_int(parts[0], DOMID_MAX), _small_int(parts[1], MAX_DEVIDS - 1)
        return None if domid is None or devid is None else (domid, devid)

    @staticmethod
    def _parse_fe_token(token: str) -> Key | None:
        domtext, _, devtext = token[len(_FRONTEND_TOKEN) :].partition(":")
        domid, devid = _small_int(domtext, DOMID_MAX), _small_int(devtext, MAX_DEVIDS - 1)
        return None if domid is None or devid is None else (domid, devid)


def _fe_token(key: Key) -> str:
    return f"{_FRONTEND_TOKEN}{key[0]}:{key[1]}"
