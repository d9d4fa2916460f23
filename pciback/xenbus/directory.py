"""When a guest's backend directory is complete enough to act on, and what it lists.

A toolstack writes a guest's backend directory (dom0's, /local/domain/0/backend/pci/D/N, the
guest may only read it) and its frontend directory (the guest's, /local/domain/D/device/pci/N)
either in one transaction, as libxl does, or across several: libxl itself when it creates a
domain with several devices (one transaction per device), a script with one `xenstore-write` per
directory, or one node per write, in either order. The daemon may look in between any two.

The rule. A backend directory is acted on only when all of these hold:

- `frontend` is there and names a path under /local/domain/D/; `frontend-id` is there and is D;
- `state` is there: the toolstack's Initialising, which it writes once. Acting before it would
  let a late write of it undo the InitWait this backend wrote;
- `num_devs` is there, and for every index N below it `dev-N` and `state-N` are there, unless
  the directory was set up before (its `state` beyond InitWait: a daemon restarting under a
  running guest): then an entry still being written is not the guest's yet and is left to the
  reconfiguration the toolstack will ask for, instead of holding back what the guest has;
- the frontend directory exists: Linux's backend also looks for the other end before it talks
  to it, and a frontend directory that is not there yet is not one that went away.

`online`, `domain`, `key-N`, `opts-N` and the daemon's own `topology` are not waited for:
nothing at set-up reads the first four, and a toolstack that wants a topology other than the
default writes `topology` with or before `num_devs`.

A node that is not there yet means "not yet": nothing is written, claimed or reported, and the
directory is read again at the next watch event for it. Only a node that is there and malformed
is an error, for that guest alone. The same rule applies whenever the backend reads the device
list again (a device added before the guest connected, a reconfiguration).

A guest owns only its frontend directory, so all it can do is keep its own backend waiting for
it. The checks run cheapest first and the frontend's existence before the device list, so a
wait for the frontend costs a handful of reads per frontend event; a wait for the toolstack is
not re-read on frontend events at all (see XenbusBackends), and no wait holds a device, a state
change or more than one watch.
"""

from __future__ import annotations

from dataclasses import dataclass

from pciback.ports.xenstore import StoreOps, XenStoreError, check_path, join
from pciback.xenbus.parse import (
    MAX_DEVS,
    XenbusConfigError,
    parse_bdf,
    parse_state,
    parse_uint,
)
from pciback.xenbus.states import XenbusState

MAX_FRONTEND_PATH = 256
DOMID_BITS_MAX = 0xFFFF  # domid_t; frontend-id must be this directory's domain anyway
_NOT_SET_UP = (XenbusState.UNKNOWN, XenbusState.INITIALISING, XenbusState.INIT_WAIT)


@dataclass(frozen=True, slots=True)
class Listed:
    """One device the backend directory lists: dev-N and state-N."""

    index: int
    physical: str
    state: XenbusState


@dataclass(frozen=True, slots=True)
class NotYet:
    """The directory is not complete enough yet; `missing` says what it waits for."""

    missing: str
    frontend: str | None = None  # the frontend path once known, to watch meanwhile
    for_frontend: bool = False  # what is missing is the guest's, not the toolstack's


@dataclass(frozen=True, slots=True)
class Complete:
    frontend: str
    devices: tuple[Listed, ...]


def read_frontend(store: StoreOps, nodename: str, domid: int) -> str | NotYet:
    """The frontend path the toolstack gave this backend, checked: a path that is not this
    guest's, or not a path, would have the backend watch and read what it must not."""
    node = join(nodename, "frontend")
    text = store.read(node)
    if text is None:
        return NotYet("frontend")
    path = text.strip()
    home = f"/local/domain/{domid}/"
    if not path.startswith(home) or len(path) > MAX_FRONTEND_PATH:
        raise XenbusConfigError(node, f"not under {home}: {path[:80]!r}")
    try:
        return check_path(path)
    except XenStoreError as exc:
        raise XenbusConfigError(node, exc.strerror or "malformed") from None


def read_devices(
    store: StoreOps, nodename: str, skip_unfinished: bool = False
) -> tuple[Listed, ...] | NotYet:
    """The devices listed (num_devs, dev-N, state-N); a device listed twice is an error unless
    one of the two entries is already Closed (removed, the toolstack has not pruned it yet).
    `skip_unfinished`: an entry missing dev-N or state-N is left out instead of waited for."""
    count_node = join(nodename, "num_devs")
    count_text = store.read(count_node)
    if count_text is None:
        return NotYet("num_devs")
    count = parse_uint(count_node, count_text, MAX_DEVS)
    listed: list[Listed] = []
    live: dict[str, int] = {}
    for i in range(count):
        dev_node, state_node = join(nodename, f"dev-{i}"), join(nodename, f"state-{i}")
        dev_text, state_text = store.read(dev_node), store.read(state_node)
        if dev_text is None or state_text is None:
            if skip_unfinished:
                continue
            return NotYet(f"dev-{i}" if dev_text is None else f"state-{i}")
        entry = Listed(i, parse_bdf(dev_node, dev_text), parse_state(state_node, state_text))
        if entry.state != XenbusState.CLOSED:
            if entry.physical in live:
                first = live[entry.physical]
                raise XenbusConfigError(dev_node, f"{entry.physical} is dev-{first} already")
            live[entry.physical] = i
        listed.append(entry)
    return tuple(listed)


def read_directory(store: StoreOps, nodename: str, domid: int) -> Complete | NotYet:
    """The whole rule of the module docstring, cheapest checks first."""
    frontend = read_frontend(store, nodename, domid)
    if isinstance(frontend, NotYet):
        return frontend
    id_node = join(nodename, "frontend-id")
    id_text = store.read(id_node)
    if id_text is None:
        return NotYet("frontend-id", frontend)
    if parse_uint(id_node, id_text, DOMID_BITS_MAX) != domid:
        raise XenbusConfigError(id_node, f"{id_text.strip()!r} is not domain {domid}")
    state_node = join(nodename, "state")
    state_text = store.read(state_node)
    if state_text is None:
        return NotYet("state", frontend)
    set_up_before = parse_state(state_node, state_text) not in _NOT_SET_UP
    count_text = store.read(join(nodename, "num_devs"))
    if count_text is None:
        return NotYet("num_devs", frontend)
    parse_uint(join(nodename, "num_devs"), count_text, MAX_DEVS)
    if store.read(frontend) is None:
        return NotYet(f"the frontend directory {frontend}", frontend, for_frontend=True)
    devices = read_devices(store, nodename, skip_unfinished=set_up_before)
    if isinstance(devices, NotYet):
        return NotYet(devices.missing, frontend)
    return Complete(frontend, devices)
