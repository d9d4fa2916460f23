from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pciback.sim import SimHost


@pytest.fixture
def host() -> Iterator[SimHost]:
    before = threading.active_count()
    h = SimHost(aer_timeout=0.3, op_timeout=5.0)
    yield h
    h.close()
    # Every guest's service threads stop with the host.
    assert threading.active_count() <= before
