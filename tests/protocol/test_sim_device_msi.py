"""The simulated device's MSI / MSI-X enable modelling, as the host's PCI core programs it."""

from __future__ import annotations

import pytest

from pciback.generated.names import COMMON_HEADER, MSI, MSIX
from pciback.sim.device import MSI_ADDRESS

from .simconfig import MSI_CAP, MSIX_CAP, nic

COMMAND = COMMON_HEADER.COMMAND
MSI_CONTROL, MSIX_CONTROL = MSI_CAP + MSI.CONTROL.offset, MSIX_CAP + MSIX.CONTROL.offset
MSIX_ENABLE, FUNCTION_MASK = MSIX.CONTROL.ENABLE.mask, MSIX.CONTROL.FUNCTION_MASK.mask


def test_msi_programs_address_count_and_masks_intx() -> None:
    dev = nic()
    dev.enable_msi(4)
    assert dev.read(MSI_CAP + MSI.ADDRESS.offset, MSI.ADDRESS.width) == MSI_ADDRESS
    control = dev.read(MSI_CONTROL, 2)
    assert (
        control & MSI.CONTROL.ENABLE.mask and MSI.CONTROL.MULTIPLE_MESSAGE_ENABLE.get(control) == 2
    )
    assert dev.read(COMMAND.offset, COMMAND.width) & COMMAND.INTX_DISABLE.mask
    dev.disable_msi()
    assert not dev.read(MSI_CONTROL, 2) & (
        MSI.CONTROL.ENABLE.mask | MSI.CONTROL.MULTIPLE_MESSAGE_ENABLE.mask
    )
    assert not dev.read(COMMAND.offset, COMMAND.width) & COMMAND.INTX_DISABLE.mask


@pytest.mark.parametrize("vectors", [0, 3, 16])
def test_msi_refuses_what_the_capability_cannot_do(vectors: int) -> None:
    with pytest.raises(ValueError):
        nic().enable_msi(vectors)


def test_msix_sets_enable_and_clears_function_mask() -> None:
    dev = nic()
    dev.write(MSIX_CONTROL, 2, FUNCTION_MASK | dev.read(MSIX_CONTROL, 2))
    dev.enable_msix((1, 2))
    assert dev.read(MSIX_CONTROL, 2) & (MSIX_ENABLE | FUNCTION_MASK) == MSIX_ENABLE
    assert dev.msix_entries == (1, 2)
    with pytest.raises(ValueError):
        dev.enable_msix((8,))
    dev.disable_msix()
    assert dev.msix_entries is None and not dev.read(MSIX_CONTROL, 2) & MSIX_ENABLE


def test_missing_capabilities_and_reset() -> None:
    dev = nic(msi=False, msix=False)
    with pytest.raises(ValueError):
        dev.enable_msi(1)
    with pytest.raises(ValueError):
        dev.enable_msix((0,))
    full = nic()
    full.enable_msi(1)
    full.reset()
    assert full.msi_vectors == 0 and not full.read(MSI_CONTROL, 2) & MSI.CONTROL.ENABLE.mask
