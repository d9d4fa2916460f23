"""The orders in which real toolstacks write a PV PCI device's xenstore nodes, as steps to replay
on the simulated store one at a time, so that the daemon can look in between any two.

A step is one xenstored request: one write, rm or chmod, or one transaction (which the daemon
sees at once). The orders, and where they come from:

libxl (Xen 4.17, libxl_pci.c, libxl_device.c, libxl_domain.c)
  create         the first device: one transaction that removes, makes, chmods and fills the
                 backend directory, then the frontend directory, then device 0 and num_devs;
                 each further device of the domain's config: its own transaction (dev-N ...,
                 num_devs), the backend `state` untouched (the domain is still paused)
  hot attach     one transaction: key-N, dev-N, opts-N, state-N = 1, num_devs, state = 7
  hot detach     one transaction: state-N = 5, state = 7; once the backend is Connected again,
                 one transaction removing N's nodes, decrementing num_devs and moving every
                 later device's nodes one index down
  forced remove  one transaction: the frontend directory removed, online = 0, state = 5; once
                 the backend is Closed (or after 10 s), one transaction removing both directories
xs-offer-pci.sh (the lab's script): rm both directories; create the empty backend directory
  and chmod it; fill it with one multi-node `xenstore-write` (one transaction); the same for
  the frontend directory, its `state` in that last write
naive          a script writing one node per `xenstore-write`, in libxl's node order, the backend
               directory first or the frontend directory first (both directories made and given
               their permissions first: xenstored refuses the guest anything else)
a domain dying /local/domain/D removed with everything under it, then @releaseDomain; the
               backend directory stays until someone removes it
"""

from __future__ import annotations

from collections.abc import Callable

from pciback.sim.toolstack import backend_path, frontend_path
from pciback.sim.xenstore import SimTransaction, SimXenStore, SimXenStoreClient

Step = Callable[[], None]
Nodes = list[tuple[str, str]]

OPTS = "msitranslate=0,power_mgmt=0,permissive=0,rdm_policy=strict"
INITIALISING, CLOSING, RECONFIGURING = "1", "5", "7"
PER_DEVICE = ("state", "key", "dev", "vdev", "opts", "vdevfn", "name")  # libxl's list


def backend_nodes(domid: int) -> Nodes:
    be = backend_path(domid)
    return [
        (f"{be}/frontend", frontend_path(domid)),
        (f"{be}/frontend-id", str(domid)),
        (f"{be}/online", "1"),
        (f"{be}/state", INITIALISING),
        (f"{be}/domain", f"guest{domid}"),
    ]


def device_nodes(domid: int, index: int, address: str) -> Nodes:
    be = backend_path(domid)
    return [
        (f"{be}/key-{index}", address),
        (f"{be}/dev-{index}", address),
        (f"{be}/opts-{index}", OPTS),
        (f"{be}/state-{index}", INITIALISING),
    ]


def frontend_nodes(domid: int) -> Nodes:
    fe = frontend_path(domid)
    return [(f"{fe}/backend", backend_path(domid)), (f"{fe}/backend-id", "0"), (f"{fe}/state", "1")]


def num_devs(domid: int, count: int) -> Nodes:
    return [(f"{backend_path(domid)}/num_devs", str(count))]


class Toolstack:
    """Dom0's toolstack as steps on one connection to the simulated store."""

    def __init__(self, store: SimXenStore) -> None:
        self.store = store
        self.xs: SimXenStoreClient = store.connect(0)

    # -- one request each ----------------------------------------------------------------------
    def write(self, nodes: Nodes) -> Step:
        """One `xenstore-write` (several pairs are one transaction, as the CLI does)."""
        return self.transaction(lambda tx: _write_all(tx, nodes))

    def mkdir(self, path: str, perms: tuple[str, ...]) -> list[Step]:
        return [lambda: self.xs.write(path, ""), lambda: self.xs.set_permissions(path, perms)]

    def rm(self, path: str) -> Step:
        return lambda: self.xs.rm(path)

    def transaction(self, body: Callable[[SimTransaction], None]) -> Step:
        def step() -> None:
            tx = self.xs.transaction()
            body(tx)
            if not tx.commit():
                raise AssertionError("nothing else writes meanwhile: the commit cannot conflict")

        return step

    # -- the orders ----------------------------------------------------------------------------
    def domain(self, domid: int) -> Step:
        """What domain creation wrote long before any device (libxl__domain_make): the
        guest's home and its device directory, dom0's and read-only to the guest."""
        home = f"/local/domain/{domid}"

        def body(tx: SimTransaction) -> None:
            for path in (home, f"{home}/device"):
                tx.mkdir(path)
                tx.set_permissions(path, ("n0", f"r{domid}"))
            tx.write(f"{home}/name", f"guest{domid}")

        return self.transaction(body)

    def libxl_create(self, domid: int, devices: list[str]) -> list[Step]:
        be, fe = backend_path(domid), frontend_path(domid)

        def first(tx: SimTransaction) -> None:
            for path, nodes, perms in (
                (be, backend_nodes(domid), ("n0", f"r{domid}")),
                (fe, frontend_nodes(domid), (f"n{domid}", "r0")),
            ):
                tx.rm(path)
                tx.write(path, "")
                tx.set_permissions(path, perms)
                _write_all(tx, nodes)
            _write_all(tx, device_nodes(domid, 0, devices[0]) + num_devs(domid, 1))

        steps = [self.transaction(first)]
        for i, address in enumerate(devices[1:], start=1):
            steps.append(self.write(device_nodes(domid, i, address) + num_devs(domid, i + 1)))
        return steps

    def xs_offer_pci(self, domid: int, devices: list[str]) -> list[Step]:
        be, fe = backend_path(domid), frontend_path(domid)
        filled = backend_nodes(domid)
        for i, address in enumerate(devices):
            filled += device_nodes(domid, i, address)
        filled += num_devs(domid, len(devices))
        return [
            self.rm(be),
            self.rm(fe),
            *self.mkdir(be, ("n0", f"r{domid}")),
            self.write(filled),
            *self.mkdir(fe, (f"n{domid}", "r0")),
            self.write(frontend_nodes(domid)),
        ]

    def naive(self, domid: int, devices: list[str], frontend_first: bool) -> list[Step]:
        backend = backend_nodes(domid)
        for i, address in enumerate(devices):
            backend += device_nodes(domid, i, address)
        backend += num_devs(domid, len(devices))
        nodes = (
            frontend_nodes(domid) + backend if frontend_first else backend + frontend_nodes(domid)
        )
        be, fe = backend_path(domid), frontend_path(domid)
        made = [*self.mkdir(be, ("n0", f"r{domid}")), *self.mkdir(fe, (f"n{domid}", "r0"))]
        return made + [self.write([node]) for node in nodes]

    def hot_attach(self, domid: int, index: int, address: str) -> Step:
        be = backend_path(domid)
        return self.write(
            device_nodes(domid, index, address)
            + num_devs(domid, index + 1)
            + [(f"{be}/state", RECONFIGURING)]
        )

    def hot_attach_count_first(self, domid: int, index: int, address: str) -> list[Step]:
        """A script bumping num_devs and asking for the reconfiguration before it writes the
        device's nodes, one per write. (Asking before num_devs counts the device is asking
        for nothing: the request is served with what the directory lists when the frontend
        follows it, as in Linux; the device needs another request.)"""
        be = backend_path(domid)
        nodes = [*num_devs(domid, index + 1), (f"{be}/state", RECONFIGURING)]
        return [self.write([node]) for node in nodes + device_nodes(domid, index, address)]

    def hot_detach_request(self, domid: int, index: int) -> Step:
        be = backend_path(domid)
        return self.write([(f"{be}/state-{index}", CLOSING), (f"{be}/state", RECONFIGURING)])

    def hot_detach_prune(self, domid: int, index: int, count: int) -> Step:
        be = backend_path(domid)

        def body(tx: SimTransaction) -> None:
            for name in PER_DEVICE:
                tx.rm(f"{be}/{name}-{index}")
            tx.write(f"{be}/num_devs", str(count - 1))
            for j in range(index + 1, count):
                for name in PER_DEVICE:
                    value = tx.read(f"{be}/{name}-{j}")
                    if value is not None:
                        tx.write(f"{be}/{name}-{j - 1}", value)
                        tx.rm(f"{be}/{name}-{j}")

        return self.transaction(body)

    def forced_remove(self, domid: int) -> Step:
        be = backend_path(domid)

        def body(tx: SimTransaction) -> None:
            tx.rm(frontend_path(domid))
            if tx.read(f"{be}/state") is None:
                return
            tx.write(f"{be}/online", "0")
            if tx.read(f"{be}/state") != "6":
                tx.write(f"{be}/state", CLOSING)

        return self.transaction(body)

    def device_destroy(self, domid: int) -> Step:
        """libxl__device_destroy: both directories, and the backend's parent once empty."""

        def body(tx: SimTransaction) -> None:
            tx.rm(frontend_path(domid))
            tx.rm(backend_path(domid))
            parent = backend_path(domid).rsplit("/", 1)[0]
            if tx.list(parent) == []:
                tx.rm(parent)

        return self.transaction(body)

    def domain_dies(self, domid: int) -> Step:
        """libxl removes /local/domain/D (watches fire), then the hypervisor releases the
        domain (@releaseDomain)."""

        def step() -> None:
            self.xs.rm(f"/local/domain/{domid}")
            self.store.release_domain(domid)

        return step


def _write_all(tx: SimTransaction, nodes: Nodes) -> None:
    for path, value in nodes:
        tx.write(path, value)
