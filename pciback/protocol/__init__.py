"""The PV PCI protocol, backend side.

abi          struct xen_pci_sharedinfo & co. (cffi, declared once), op/flag/error numbers
transport    the shared page (atomic flag bits) and the event channel (doorbells)
ops          the op snapshot (one copy out of guest memory) and the fields written back
dispatch     one op: device lookup, field checks, config access through the engine's view
interrupts   MSI / multi-MSI / MSI-X with the XSA-157 state checks, via the hypervisor port
connection   a guest's service thread: serve ops, carry AER requests to the frontend
aer          the AER recovery sequence; kill and reset when the guest cannot recover

Guest-visible addresses (passthrough or vpci) are the xenbus backend's (pciback.xenbus.topology).
"""
