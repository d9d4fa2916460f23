"""The PV PCI protocol: the shared-page ABI, its transport, and the backend's op service
(config access, MSI/MSI-X set-up, AER requests)."""
