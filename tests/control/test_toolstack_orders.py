"""The daemon under the orders real toolstacks write in (toolstack_orders.py), replayed one
xenstored request at a time with the daemon looking after each: every order ends with the guest
Connected and enumerating its devices through the simulated pcifront, and each situation is
logged once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pciback.sim import SimHost
from pciback.sim.domain import SimDomain
from pciback.sim.fixtures import fixture
from pciback.sim.toolstack import backend_path, frontend_path
from pciback.xenbus.states import XenbusState as S

from .harness import BLK, DEVICES, NET, RNG
from .toolstack_orders import Step, Toolstack

D = 1
IDS = {NET: (0x1AF4, 0x1041), BLK: (0x1AF4, 0x1042), RNG: (0x1AF4, 0x1044)}
KEY = (D, 0)


class Lab:
    """A simulated dom0 running the daemon, a toolstack replaying steps, and guests booted by
    hand (their pcifront follows the backend whenever the lab settles)."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.host = SimHost(op_timeout=5.0, state_dir=state_dir)
        for address in (NET, BLK, RNG):
            self.host.add_device(address, fixture(DEVICES[address]))
        self.host.hide(f"({NET})({BLK})({RNG})")
        self.toolstack = Toolstack(self.host.env.store)
        self.domains: dict[int, SimDomain] = {}
        self.gone: list[SimDomain] = []

    def domain(self, domid: int) -> SimDomain:
        domain = SimDomain(
            self.host.env.store, self.host.env.grants, domid, 5.0, pump=self.host.daemon.pump
        )
        self.domains[domid] = domain
        return domain

    def dying(self, domid: int) -> None:
        """The guest stops answering: it is closed once the daemon let go (close())."""
        self.gone.append(self.domains.pop(domid))

    def replay(self, steps: list[Step], after_each: Callable[[], None] | None = None) -> None:
        for step in steps:
            step()
            self.settle()
            if after_each is not None:
                after_each()

    def settle(self) -> None:
        for _ in range(200):
            moved = self.host.daemon.pump()
            moved += sum(d.xenbus.step() for d in self.domains.values())
            if not moved:
                return
        raise AssertionError("the daemon and the guests did not settle")

    def be(self, domid: int, name: str) -> str | None:
        return self.toolstack.xs.read(f"{backend_path(domid)}/{name}")

    def error(self, domid: int) -> str | None:
        return self.toolstack.xs.read(f"/local/domain/0/error/backend/pci/{domid}/0/error")

    def ids(self, domid: int) -> list[tuple[int, int]]:
        """What the guest finds scanning the root buses the backend published."""
        return sorted((d.vendor, d.device) for d in self.domains[domid].enumerate())

    def close(self) -> None:
        self.host.close()
        for domain in [*self.domains.values(), *self.gone]:
            domain.close()


@pytest.fixture
def lab(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> Iterator[Lab]:
    caplog.set_level(logging.INFO, logger="pciback")
    lab = Lab(tmp_path / "state")
    yield lab
    lab.close()


def said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def connected(lab: Lab, domid: int, devices: list[str]) -> None:
    """Both ends Connected, every device claimed by the guest and found by its scan."""
    assert lab.be(domid, "state") == str(int(S.CONNECTED))
    assert lab.domains[domid].xenbus.state() == S.CONNECTED
    assert lab.error(domid) is None
    assert {a: lab.host.owner(a) for a in devices} == dict.fromkeys(devices, domid)
    assert lab.ids(domid) == sorted(IDS[a] for a in devices)


def create(lab: Lab, order: str, domid: int, devices: list[str]) -> list[Step]:
    ts = lab.toolstack
    steps = {
        "libxl": lambda: ts.libxl_create(domid, devices),
        "xs-offer-pci": lambda: ts.xs_offer_pci(domid, devices),
        "naive, backend first": lambda: ts.naive(domid, devices, frontend_first=False),
        "naive, frontend first": lambda: ts.naive(domid, devices, frontend_first=True),
    }[order]()
    return [ts.domain(domid), *steps]


def boot(lab: Lab, order: str, domid: int, devices: list[str]) -> SimDomain:
    domain = lab.domain(domid)
    lab.replay(create(lab, order, domid, devices))
    domain.boot(5.0)
    return domain


CREATE_ORDERS = ["libxl", "xs-offer-pci", "naive, backend first", "naive, frontend first"]


@pytest.mark.parametrize("devices", [[NET], [NET, RNG]], ids=["one device", "two devices"])
@pytest.mark.parametrize("order", CREATE_ORDERS)
def test_every_create_order_ends_connected(
    lab: Lab, caplog: pytest.LogCaptureFixture, order: str, devices: list[str]
) -> None:
    """Before: xs-offer-pci and the naive orders failed the guest ("frontend: missing", a
    frontend directory not there yet taken for a closed one, num_devs read too early), and
    libxl's second device (its own transaction) was never exported."""
    domain = lab.domain(D)

    def nothing_happens_while_waiting() -> None:
        if KEY in lab.host.daemon.backends.waiting:
            assert lab.be(D, "state") in (None, str(int(S.INITIALISING)))
            assert lab.error(D) is None and lab.host.daemon.ownership.all() == {}
        assert loud(caplog) == []

    lab.replay(create(lab, order, D, devices), nothing_happens_while_waiting)
    assert lab.be(D, "state") == str(int(S.INITIALISED))
    domain.boot(5.0)
    connected(lab, D, devices)
    waited = order != "libxl"
    assert said(caplog, "backend directory not complete yet") == waited
    assert said(caplog, "backend directory complete") == waited
    assert said(caplog, "unregistering") == 0
    assert loud(caplog) == []


def test_libxl_second_device_joins_before_the_guest_connects(lab: Lab) -> None:
    lab.domain(D)
    first, second = create(lab, "libxl", D, [NET, RNG])[1:]
    lab.replay([lab.toolstack.domain(D), first])
    assert lab.be(D, "state") == str(int(S.INITIALISED)) and lab.be(D, "vdev-1") is None
    lab.replay([second])  # the domain is still paused: no Reconfiguring, just more devices
    assert lab.be(D, "state-1") == str(int(S.INITIALISED)) and lab.be(D, "vdev-1") is not None


@pytest.mark.parametrize("order", ["libxl", "count first"])
def test_hot_attach_orders(lab: Lab, caplog: pytest.LogCaptureFixture, order: str) -> None:
    boot(lab, "libxl", D, [NET])
    ts = lab.toolstack
    orders = {
        "libxl": [ts.hot_attach(D, 1, RNG)],
        "count first": ts.hot_attach_count_first(D, 1, RNG),
    }
    lab.replay(orders[order], lambda: assert_quiet(lab, caplog))
    lab.domains[D].settled(5.0)
    connected(lab, D, [NET, RNG])
    assert said(caplog, "waiting for dev-1") == (order != "libxl")
    assert loud(caplog) == []


def assert_quiet(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    assert loud(caplog) == [] and lab.error(D) is None


def test_hot_detach_with_libxls_renumbering_then_attach_then_destroy(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """libxl moves the devices after a removed one down one index; the backend must still know
    which device it holds at which index, or a device added at a freed index hides one it holds
    (never released)."""
    boot(lab, "libxl", D, [NET, RNG])
    ts = lab.toolstack
    lab.replay([ts.hot_detach_request(D, 0)])
    assert lab.be(D, "state") == str(int(S.CONNECTED)) and lab.host.owner(NET) is None
    lab.replay([ts.hot_detach_prune(D, 0, 2)])
    assert (lab.be(D, "num_devs"), lab.be(D, "dev-0")) == ("1", RNG)
    connected(lab, D, [RNG])
    lab.replay([ts.hot_attach(D, 1, BLK)])
    connected(lab, D, [RNG, BLK])
    lab.dying(D)
    lab.replay([ts.forced_remove(D), ts.device_destroy(D), ts.domain_dies(D)])
    assert lab.host.daemon.ownership.all() == {}
    assert said(caplog, "unregistering") == 1
    assert loud(caplog) == []


def test_a_dead_domain_whose_backend_directory_stays_is_let_go_once(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "unregistering backend: the frontend closed" again at every later watch event,
    the directory probed afresh each time."""
    boot(lab, "libxl", D, [NET])
    boot(lab, "libxl", 2, [RNG])
    lab.dying(D)
    lab.replay([lab.toolstack.domain_dies(D)])
    assert said(caplog, "dom1/0: unregistering backend: the frontend is gone") == 1
    assert lab.host.owner(NET) is None
    assert lab.be(D, "state") == str(int(S.CLOSED))  # what libxl waits for
    assert KEY in lab.host.daemon.backends.retired
    told = len(caplog.records)
    ts = lab.toolstack
    lab.replay(
        [
            ts.hot_attach(2, 1, BLK),  # other guests' events, other scans
            ts.domain_dies(7),
            ts.write([(f"{backend_path(D)}/online", "0")]),  # its own directory changes
        ]
    )
    lab.domains[2].settled(5.0)
    assert [r.getMessage() for r in caplog.records[told:] if "dom1/" in r.getMessage()] == []
    assert lab.host.owner(NET) is None
    lab.replay([ts.rm(backend_path(D))])
    assert KEY not in lab.host.daemon.backends.retired
    # The domain id comes back with a new guest, offered as the lab script does.
    boot(lab, "xs-offer-pci", D, [NET])
    connected(lab, D, [NET])
    assert said(caplog, "unregistering") == 1
    assert loud(caplog) == []


def test_libxl_forced_remove_sees_closed_at_once(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    boot(lab, "libxl", D, [NET, RNG])
    lab.dying(D)
    ts = lab.toolstack
    lab.replay([ts.forced_remove(D)])
    # libxl waits up to 10 s for this before it removes the directories by force.
    assert lab.be(D, "state") == str(int(S.CLOSED))
    assert lab.host.daemon.ownership.all() == {}
    lab.replay([ts.device_destroy(D), ts.domain_dies(D)])
    assert lab.toolstack.xs.read(f"{backend_path(D)}") is None
    assert not lab.host.daemon.backends._known(KEY)
    assert said(caplog, "unregistering") == 1
    assert loud(caplog) == []


def test_a_closed_frontend_whose_directory_stays_is_quiet_and_may_start_over(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    domain = boot(lab, "libxl", D, [NET])
    domain.xenbus.close()  # pcifront unloaded: Closing, Closed; the directory stays
    lab.settle()
    assert lab.be(D, "state") == str(int(S.CLOSED))
    assert lab.host.owner(NET) == D  # online: the device stays the guest's, as in Linux
    told = len(caplog.records)
    for _ in range(3):
        domain.xenbus.switch(S.CLOSED)  # the same state written again
        lab.replay([lab.toolstack.write([(f"{backend_path(D)}/domain", "renamed")])])
    assert caplog.records[told:] == []
    domain.xenbus.switch(S.INITIALISING)  # pcifront loaded again
    lab.settle()
    assert lab.be(D, "state") == str(int(S.INITIALISED))
    domain.boot(5.0)
    connected(lab, D, [NET])
    assert said(caplog, "the frontend starts over") == 1
    assert said(caplog, "unregistering") == 0
    assert loud(caplog) == []


def test_a_frontend_closed_offline_goes_once_until_offered_again(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """libxl's removal of a running guest's device: online 0 and Closing; the guest's pcifront
    follows to Closed and the backend goes, once, whatever the guest writes afterwards."""
    domain = boot(lab, "libxl", D, [NET])
    be = backend_path(D)
    lab.replay([lab.toolstack.write([(f"{be}/online", "0"), (f"{be}/state", "5")])])
    assert domain.xenbus.state() == S.CLOSED
    assert said(caplog, "dom1/0: unregistering backend: the frontend closed") == 1
    assert lab.host.owner(NET) is None and lab.be(D, "state") == str(int(S.CLOSED))
    told = len(caplog.records)
    for state in (S.INITIALISING, S.CLOSED, S.INITIALISED):
        domain.xenbus.switch(state)
        lab.settle()
    assert caplog.records[told:] == [] and lab.host.owner(NET) is None
    # The toolstack offers the directory again (libxl's create rewrites it in one transaction).
    lab.replay(lab.toolstack.libxl_create(D, [NET]))
    domain.xenbus.publish()
    lab.settle()
    connected(lab, D, [NET])
    assert said(caplog, "backend directory offered again") == 1
    assert loud(caplog) == []


def test_frontend_path_is_watched_once_per_key(lab: Lab) -> None:
    domain = lab.domain(D)
    lab.replay(create(lab, "naive, backend first", D, [NET]))
    domain.boot(5.0)
    assert lab.host.daemon.backends.watched == {KEY: f"{frontend_path(D)}/state"}


def test_the_lab_script_run_again_for_a_running_guest(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """xs-offer-pci.sh removes the backend directory alone (its parent stays): before, that
    event was taken for a change inside the directory and the backend kept the devices."""
    domain = boot(lab, "libxl", D, [NET])
    lab.replay(lab.toolstack.xs_offer_pci(D, [NET, RNG]))
    assert said(caplog, "dom1/0: unregistering backend: its backend directory was removed") == 1
    domain.boot(5.0)  # pcifront probes the new frontend directory
    connected(lab, D, [NET, RNG])
    assert said(caplog, "unregistering") == 1
    assert loud(caplog) == []


def test_a_daemon_restarting_mid_way_through_a_hot_attach_keeps_what_the_guest_has(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """The new daemon finds num_devs counting a device whose nodes are not written yet: it
    resumes the guest with what it has (before the rule, the old resume did the same), and the
    rest of the attach goes as if nothing had happened."""
    domain = boot(lab, "libxl", D, [NET])
    resets = lab.host.physical(NET).resets
    count, request, *device = lab.toolstack.hot_attach_count_first(D, 1, RNG)
    lab.replay([count])
    lab.host.restart_daemon()
    domain.pump = lab.host.daemon.pump
    assert KEY in lab.host.daemon.backends.backends
    assert lab.host.owner(NET) == D and lab.host.physical(NET).resets == resets
    lab.replay([request, *device])
    domain.settled(5.0)
    connected(lab, D, [NET, RNG])
    assert loud(caplog) == []
