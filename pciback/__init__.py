"""pciback: a user-space Xen PCI passthrough backend for dom0."""

__version__ = "0.1.0"
