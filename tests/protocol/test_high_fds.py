"""A guest whose event channel lands on descriptors above 1023 is still served.

select() refuses such descriptors; a dom0 serving about 500 guests (two descriptors each in the
simulation, an event channel and a mapping on Xen) reaches them, and a service thread that
dies there leaves its guest without answers. Provoked cheaply: the process's low descriptors
are taken before the guest is attached.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

import pytest

from pciback.generated.names import COMMON_HEADER
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture

VENDOR_ID = COMMON_HEADER.VENDOR_ID


NET = "0000:03:00.0"
CEILING = 1024  # FD_SETSIZE


@pytest.fixture
def low_fds_taken() -> Iterator[None]:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CEILING + 64:
        pytest.skip(f"the open-file limit ({soft}) does not reach past {CEILING}")
    taken: list[int] = []
    try:
        while not taken or taken[-1] < CEILING:
            taken.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        yield
    finally:
        for fd in taken:
            os.close(fd)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death
@pytest.mark.usefixtures("low_fds_taken")
def test_a_guest_on_descriptors_above_1023_is_served() -> None:
    with SimHost(op_timeout=1.0) as host:
        host.add_device(NET, fixture("virtio-net-1af4-1041.bin"))
        guest = host.attach(1, [NET])
        assert guest.channel.backend.fileno() >= CEILING
        assert guest.conf_read(guest.devices[0], VENDOR_ID.offset, 4) == 0x10411AF4
