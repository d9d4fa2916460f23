"""The fixture copies carried in the package match the shared fixtures they were taken from."""

from __future__ import annotations

from pathlib import Path

import pytest

import pciback.sim.fixtures as fixtures_pkg
from pciback.sim.fixtures import fixture, fixture_dir

PACKAGED = Path(fixtures_pkg.__file__).parent
SHARED = PACKAGED.parents[3] / "shared" / "fixtures"


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/fixtures next to the repository")
def test_packaged_copies_match_shared() -> None:
    shared = sorted(p.name for p in SHARED.iterdir() if p.is_file())
    assert shared == sorted(p.name for p in PACKAGED.iterdir() if p.suffix in (".bin", ".txt"))
    for name in shared:
        assert (PACKAGED / name).read_bytes() == (SHARED / name).read_bytes(), name
    assert fixture_dir() == SHARED


def test_unknown_fixture_names_both_places() -> None:
    with pytest.raises(FileNotFoundError, match="neither in"):
        fixture("no-such-device.bin")
