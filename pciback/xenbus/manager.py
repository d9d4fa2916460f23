"""Finds the guests' backend directories in xenstore and drives each one's state machine.

Every guest is handled apart: whatever its xenstore holds, a failure is reported for that guest
(error node, Closing) and the others are untouched.

A backend directory (a key: domain and device id) is, here, in one of four tables:

backends  taken: a PciBackend drives it.
waiting   not complete enough yet by the rule of directory.py (a toolstack writing across
          several transactions, the backend directory before the frontend one): nothing is
          written or claimed, one line says what it waits for, and the directory is read again
          at its next watch event; at frontend events only while it waits for the frontend.
failed    it holds a malformed node: reported once (log and error node), read again when the
          toolstack changes it.
retired   its backend went away (the frontend closed offline, or is gone) but the directory
          stays until the toolstack removes it: nothing is said or done for it any more, unless
          the toolstack offers it again (its `state` back to Initialising, as for a new guest).

A key leaves every table when its backend directory is removed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pciback.ports.xenstore import WatchEvent, XenStore, XenStoreError, join
from pciback.xenbus.backend import BACKEND_ROOT, ERROR_ROOT, PciBackend
from pciback.xenbus.directory import NotYet, read_directory
from pciback.xenbus.interfaces import DataPath, DeviceBroker
from pciback.xenbus.parse import XenbusConfigError
from pciback.xenbus.states import XenbusState, state_or_unknown

MAX_GUESTS = 4096
MAX_DEVIDS = 16
DOMID_MAX = 0x7FEF  # above are DOMID_FIRST_RESERVED and the special domains
MAX_EVENTS_PER_PUMP = 10_000
DOMAIN_ROOT = "/local/domain"
_BACKEND_TOKEN = "pciback:backend"
_RELEASE_TOKEN = "pciback:release"
_FRONTEND_TOKEN = "pciback:fe:"

log = logging.getLogger("pciback.xenbus")

Key = tuple[int, int]
Everything = Literal["everything"]  # a backend watch event at the root: look at every directory


def _small_int(text: str, limit: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        return None
    value = int(text)
    return value if value <= limit else None


@dataclass(frozen=True, slots=True)
class Waiting:
    missing: str
    for_frontend: bool


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
        self.waiting: dict[Key, Waiting] = {}
        self.failed: dict[Key, str] = {}  # the error, told once
        self.retired: dict[Key, str] = {}  # why its backend went away
        self.watched: dict[Key, str] = {}  # the frontend state node watched for each key

    def start(self) -> None:
        self.store.watch(BACKEND_ROOT, _BACKEND_TOKEN)
        self.store.watch("@releaseDomain", _RELEASE_TOKEN)

    def stop(self) -> None:
        """Stop watching; connections are dropped but nothing a guest holds is released."""
        self.store.unwatch(BACKEND_ROOT, _BACKEND_TOKEN)
        self.store.unwatch("@releaseDomain", _RELEASE_TOKEN)
        for key, path in self.watched.items():
            self.store.unwatch(path, _fe_token(key))
        self.watched.clear()
        for key, backend in self.backends.items():
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
        # Each event is handled where it happened: one key's directory, or one domain's list
        # of them. Re-listing every backend at each event made attaching the Nth guest cost
        # N listings; only the watch's first event (the root itself) looks at everything.
        if event.token == _BACKEND_TOKEN:
            where = self._where(event.path)
            if where == "everything":
                self.scan()
            elif isinstance(where, int):
                self._domain_changed(where)
            elif isinstance(where, tuple):
                self._directory_changed(where)
        elif event.token.startswith(_FRONTEND_TOKEN):
            key = self._parse_fe_token(event.token)
            if key is None:
                return
            if key in self.backends:
                self._frontend_changed(key)
            elif key in self.waiting and self.waiting[key].for_frontend:
                self._examine(key)
            # Else a wait for the toolstack, which the guest cannot hurry, or an event queued
            # before its watch went: nothing to read.
        elif event.token == _RELEASE_TOKEN:
            # A removed backend directory has its own event; a dead domain only this one.
            self._reap_dead_domains()

    def _known(self, key: Key) -> bool:
        return any(
            key in table for table in (self.backends, self.waiting, self.failed, self.retired)
        )

    def _keys_of(self, domid: int) -> list[Key]:
        return [(domid, devid) for devid in range(MAX_DEVIDS) if self._known((domid, devid))]

    # -- discovery ---------------------------------------------------------------------------
    def scan(self) -> None:
        """Compare the backend directories in xenstore with the keys held here."""
        present: set[Key] = set()
        for domtext in (self.store.list(BACKEND_ROOT) or [])[:MAX_GUESTS]:
            domid = _small_int(domtext, DOMID_MAX)
            if domid is None or domid == 0:
                continue
            for devtext in (self.store.list(join(BACKEND_ROOT, domtext)) or [])[:MAX_DEVIDS]:
                devid = _small_int(devtext, MAX_DEVIDS - 1)
                if devid is not None:
                    present.add((domid, devid))
        known = self._all_keys()
        for key in sorted(known - present):
            self._forget(key)
        for key in sorted(present - known):
            self._examine(key)
        for key in sorted(set(self.retired) & present):
            self._look_at_retired(key)
        self._reap_dead_domains()

    def _domain_changed(self, domid: int) -> None:
        """An event for one domain's directory of backends: its keys compared, as scan does."""
        present: set[Key] = set()
        for devtext in (self.store.list(join(BACKEND_ROOT, str(domid))) or [])[:MAX_DEVIDS]:
            devid = _small_int(devtext, MAX_DEVIDS - 1)
            if devid is not None:
                present.add((domid, devid))
        known = set(self._keys_of(domid))
        for key in sorted(known - present):
            self._forget(key)
        for key in sorted(present - known):
            self._examine(key)

    def _reap_dead_domains(self) -> None:
        """Unregister the backends of domains that died (home and frontend gone). One listing
        of the domains' homes, not a read per live guest, at every domain's death."""
        alive = set((self.store.list(DOMAIN_ROOT) or [])[: DOMID_MAX + 1])
        for domid in sorted({key[0] for key in self.backends if str(key[0]) not in alive}):
            for key in self._keys_of(domid):
                if key in self.backends and self._domain_gone(key):
                    self._unregister(key, "the domain is gone")

    def _all_keys(self) -> set[Key]:
        return set(self.backends) | set(self.waiting) | set(self.failed) | set(self.retired)

    def _domain_gone(self, key: Key) -> bool:
        return self.store.read(join(self.backends[key].frontend, "state")) is None

    def _directory_changed(self, key: Key) -> None:
        """A watch event at or below the backend directory of a key held here."""
        if self.store.read(_nodename(key)) is None:
            self._forget(key)
        elif key in self.backends:
            self._guarded(key, lambda b: b.backend_changed())
            self._reap(key)
        elif key in self.retired:
            self._look_at_retired(key)
        else:
            self._examine(key)

    def _examine(self, key: Key) -> None:
        """Take the directory if it is complete enough, else note what it waits for."""
        domid, devid = key
        try:
            found = read_directory(self.store, _nodename(key), domid)
            if isinstance(found, NotYet):
                self._wait(key, found)
                return
            backend = PciBackend(
                self.store,
                domid,
                devid,
                self.broker,
                self.datapath,
                found.frontend,
                self.default_mode,
            )
            self._watch_frontend(key, found.frontend)
        except (XenbusConfigError, XenStoreError, ValueError) as exc:
            self._fail(key, exc)
            return
        self.failed.pop(key, None)
        if self.waiting.pop(key, None) is not None:
            log.info("dom%d/%d: backend directory complete", domid, devid)
        self.backends[key] = backend
        outcome: list[str | None] = []
        self._guarded(key, lambda b: outcome.append(b.probe()))
        self._follow(key, outcome)

    def _wait(self, key: Key, found: NotYet) -> None:
        if found.frontend is not None:
            self._watch_frontend(key, found.frontend)
        before = self.waiting.get(key)
        self.waiting[key] = Waiting(found.missing, found.for_frontend)
        self.failed.pop(key, None)
        if before is None:
            log.info(
                "dom%d/%d: backend directory not complete yet: waiting for %s", *key, found.missing
            )
        elif before.missing != found.missing:
            log.debug("dom%d/%d: now waiting for %s", *key, found.missing)

    def _fail(self, key: Key, exc: Exception) -> None:
        self.waiting.pop(key, None)
        self._unwatch_frontend(key)
        message = str(exc)
        if self.failed.get(key) == message:
            return  # told already; the toolstack changed something else
        self.failed[key] = message
        log.error("dom%d/%d: cannot use backend directory: %s", key[0], key[1], message)
        code = exc.code if isinstance(exc, XenbusConfigError) else 22
        with contextlib.suppress(XenStoreError):
            self.store.write(f"{ERROR_ROOT}/{key[0]}/{key[1]}/error", f"{code} {message}"[:1024])

    def _look_at_retired(self, key: Key) -> None:
        state = state_or_unknown(self.store.read(join(_nodename(key), "state")))
        if state == XenbusState.INITIALISING:  # the toolstack offers it anew
            del self.retired[key]
            log.info("dom%d/%d: backend directory offered again", *key)
            self._examine(key)

    def _forget(self, key: Key) -> None:
        """The backend directory is gone: nothing of this key stays."""
        self._unregister(key, "its backend directory was removed")
        self.waiting.pop(key, None)
        self.failed.pop(key, None)
        self.retired.pop(key, None)
        self._unwatch_frontend(key)

    def _watch_frontend(self, key: Key, frontend: str) -> None:
        path = join(frontend, "state")
        if self.watched.get(key) == path:
            return
        self._unwatch_frontend(key)
        self.store.watch(path, _fe_token(key))
        self.watched[key] = path

    def _unwatch_frontend(self, key: Key) -> None:
        path = self.watched.pop(key, None)
        if path is not None:
            with contextlib.suppress(XenStoreError):
                self.store.unwatch(path, _fe_token(key))

    def _frontend_changed(self, key: Key) -> None:
        outcome: list[str | None] = []
        self._guarded(key, lambda b: outcome.append(b.frontend_changed()))
        self._follow(key, outcome)

    def _follow(self, key: Key, outcome: list[str | None]) -> None:
        """After the backend reacted: unregister it when it said why, else reap it."""
        if outcome and outcome[0] is not None:
            self._unregister(key, outcome[0])
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
        self._unwatch_frontend(key)
        try:
            backend.free()
        except Exception:
            log.exception("dom%d/%d: releasing devices failed", key[0], key[1])
        try:
            backend.mark_closed()
        except XenStoreError as exc:
            log.warning("dom%d/%d: could not write Closed: %s", key[0], key[1], exc)
        if self.store.read(_nodename(key)) is not None:
            self.retired[key] = why
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
    def _where(path: str) -> Key | int | Everything | None:
        """What a backend watch event is about: the root or above (everything), a
        domain id (its list of backends), a key (one backend directory), or None (a name no
        backend can have: nothing to look at)."""
        if not path.startswith(BACKEND_ROOT + "/"):
            return "everything"
        parts = path[len(BACKEND_ROOT) + 1 :].split("/")
        domid = _small_int(parts[0], DOMID_MAX)
        if domid is None or domid == 0:
            return None
        if len(parts) == 1:
            return domid
        devid = _small_int(parts[1], MAX_DEVIDS - 1)
        return None if devid is None else (domid, devid)

    @staticmethod
    def _parse_fe_token(token: str) -> Key | None:
        domtext, _, devtext = token[len(_FRONTEND_TOKEN) :].partition(":")
        domid, devid = _small_int(domtext, DOMID_MAX), _small_int(devtext, MAX_DEVIDS - 1)
        return None if domid is None or devid is None else (domid, devid)


def _nodename(key: Key) -> str:
    return f"{BACKEND_ROOT}/{key[0]}/{key[1]}"


def _fe_token(key: Key) -> str:
    return f"{_FRONTEND_TOKEN}{key[0]}:{key[1]}"
