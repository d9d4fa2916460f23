"""The simulated host's PCI functions: the dump-backed functions of pciback.dumps.device, named
here too because the simulation's tests and callers know them as the sim's devices."""

from pciback.dumps.device import MSI_ADDRESS, SimDevice

__all__ = ["MSI_ADDRESS", "SimDevice"]
