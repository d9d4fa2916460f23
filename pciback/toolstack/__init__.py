"""The toolstack role: what libxl does for a PV guest's PCI device, done by the daemon for the
devices it holds, since xl cannot see a user-space backend (docs/using-with-xl.md).

    layout   the xenstore directories and nodes, as libxl_pci.c writes and removes them
    grants   what a device needs granted to its guest: BAR ranges, the legacy IRQ, assignment
    records  the attachments, kept durably before anything is granted
    attach   attach, detach, cleanup after a dead guest and start-up reconciliation
"""
