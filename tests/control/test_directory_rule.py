"""The rule deciding when a backend directory is complete enough to act on (directory.py)."""

from __future__ import annotations

import pytest

from pciback.sim.toolstack import SimToolstack, backend_path, frontend_path
from pciback.sim.xenstore import SimXenStore, SimXenStoreClient
from pciback.xenbus.directory import Complete, Listed, NotYet, read_devices, read_directory
from pciback.xenbus.parse import XenbusConfigError
from pciback.xenbus.states import XenbusState as S

NET, RNG = "0000:03:00.0", "0000:04:00.0"
BE, FE = backend_path(2), frontend_path(2)


@pytest.fixture
def xs() -> SimXenStoreClient:
    store = SimXenStore()
    SimToolstack(store).create(2, [NET, RNG])
    return store.connect(0)


def test_a_complete_directory_lists_its_devices(xs: SimXenStoreClient) -> None:
    assert read_directory(xs, BE, 2) == Complete(
        FE, (Listed(0, NET, S.INITIALISING), Listed(1, RNG, S.INITIALISING))
    )


@pytest.mark.parametrize(
    ("path", "missing", "for_frontend"),
    [
        (f"{BE}/frontend", "frontend", False),
        (f"{BE}/frontend-id", "frontend-id", False),
        (f"{BE}/state", "state", False),
        (f"{BE}/num_devs", "num_devs", False),
        (FE, f"the frontend directory {FE}", True),
        (f"{BE}/dev-1", "dev-1", False),
        (f"{BE}/state-0", "state-0", False),
    ],
)
def test_each_node_not_written_yet_is_not_yet(
    xs: SimXenStoreClient, path: str, missing: str, for_frontend: bool
) -> None:
    xs.rm(path)
    found = read_directory(xs, BE, 2)
    assert isinstance(found, NotYet)
    assert (found.missing, found.for_frontend) == (missing, for_frontend)
    assert found.frontend == (None if missing == "frontend" else FE)


def test_the_frontend_is_looked_for_before_the_device_list(
    xs: SimXenStoreClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that a wait for the guest costs a handful of reads, whatever num_devs says."""
    xs.rm(FE)
    xs.rm(f"{BE}/dev-0")
    reads: list[str] = []
    real_read = xs.read

    def counted(path: str) -> str | None:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(xs, "read", counted)
    found = read_directory(xs, BE, 2)
    assert isinstance(found, NotYet) and found.for_frontend
    assert len(reads) == 5


@pytest.mark.parametrize(
    ("node", "value", "fragment"),
    [
        ("frontend-id", "3", "'3' is not domain 2"),
        ("state", "x", "expected a decimal number"),
        ("num_devs", "257", "above the limit 256"),
        ("dev-1", NET, f"{NET} is dev-0 already"),
        ("state-1", "10", "above the limit 8"),
    ],
)
def test_a_node_there_and_malformed_is_an_error(
    xs: SimXenStoreClient, node: str, value: str, fragment: str
) -> None:
    xs.write(f"{BE}/{node}", value)
    with pytest.raises(XenbusConfigError, match=fragment):
        read_directory(xs, BE, 2)


def test_a_closed_entry_may_list_a_device_again(xs: SimXenStoreClient) -> None:
    """A removed device not pruned yet by the toolstack, attached again at a new index."""
    xs.write(f"{BE}/state-0", str(int(S.CLOSED)))
    xs.write(f"{BE}/dev-2", NET)
    xs.write(f"{BE}/state-2", "1")
    xs.write(f"{BE}/num_devs", "3")
    devices = read_devices(xs, BE)
    assert not isinstance(devices, NotYet)
    assert [(e.index, e.physical, e.state) for e in devices] == [
        (0, NET, S.CLOSED),
        (1, RNG, S.INITIALISING),
        (2, NET, S.INITIALISING),
    ]


def test_a_directory_set_up_before_does_not_wait_for_an_entry_being_written(
    xs: SimXenStoreClient,
) -> None:
    """A daemon restarting under a running guest while the toolstack adds a device."""
    xs.write(f"{BE}/num_devs", "3")  # dev-2 and state-2 not written yet
    assert read_directory(xs, BE, 2) == NotYet("dev-2", FE)
    xs.write(f"{BE}/state", str(int(S.CONNECTED)))
    found = read_directory(xs, BE, 2)
    assert isinstance(found, Complete) and [e.index for e in found.devices] == [0, 1]
