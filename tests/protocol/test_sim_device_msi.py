"""The simulated device's MSI / MSI-X enable modelling, as the host's PCI core programs it."""

from __future__ import annotations

import pytest

from pciback.sim.device import MSI_ADDRESS

from .simconfig import MSI_CAP, MSIX_CAP, nic


def test_msi_programs_address_count_and_masks_intx() -> None:
    dev = nic()
    dev.enable_msi(4)
    assert dev.read(MSI_CAP + 4, 4) == MSI_ADDRESS
    control = dev.read(MSI_CAP + 2, 2)
    assert control & 1 and (control >> 4) & 7 == 2
    assert dev.read(0x04, 2) & 0x400
    dev.disable_msi()
    assert not dev.read(MSI_CAP + 2, 2) & 0x71
    assert not dev.read(0x04, 2) & 0x400


@pytest.mark.parametrize("vectors", [0, 3, 16])
def test_msi_refuses_what_the_capability_cannot_do(vectors: int) -> None:
    with pytest.raises(ValueError):
        nic().enable_msi(vectors)


def test_msix_sets_enable_and_clears_function_mask() -> None:
    dev = nic()
    dev.write(MSIX_CAP + 2, 2, 0x4000 | dev.read(MSIX_CAP + 2, 2))
    dev.enable_msix((1, 2))
    assert dev.read(MSIX_CAP + 2, 2) & 0xC000 == 0x8000
    assert dev.msix_entries == (1, 2)
    with pytest.raises(ValueError):
        dev.enable_msix((8,))
    dev.disable_msix()
    assert dev.msix_entries is None and not dev.read(MSIX_CAP + 2, 2) & 0x8000


def test_missing_capabilities_and_reset() -> None:
    dev = nic(msi=False, msix=False)
    with pytest.raises(ValueError):
        dev.enable_msi(1)
    with pytest.raises(ValueError):
        dev.enable_msix((0,))
    full = nic()
    full.enable_msi(1)
    full.reset()
    assert full.msi_vectors == 0 and not full.read(MSI_CAP + 2, 2) & 1
