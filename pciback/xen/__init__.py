"""The real-dom0 adapters: the Xen libraries reached through cffi in ABI mode (no compiler on the
target), one module per library, each implementing a port the core already uses.

    xenstore  libxenstore    the xenstore port (pciback.ports.xenstore.XenStore)
    gnttab    libxengnttab   the frontend's granted shared page, as a SharedPage
    evtchn    libxenevtchn   the backend end of the interdomain event channel, as an EventPort
    xenctrl   libxenctrl     the hypervisor port (PIRQs for MSI/MSI-X, killing a domain)
    physdev   libxencall     PHYSDEVOP_prepare_msix / release_msix (no libxenctrl wrapper)
    domctl    libxenctrl     the toolstack role's domain control (permissions, assignment)
    atomic    libatomic      atomic bit operations on the shared page's flags word
    sysfs     /sys/bus/pci   the physical bus port (pciback.ports.bus, .hostbus) of dom0's kernel

They are proven on a real Xen 4.17 in the project's lab (make lab-test, lab/README.md), which is
where any change to them is checked: tests/xen checks, on a machine without Xen, that every
declaration matches the installed Xen headers (compiled against them when libxen-dev is
present), that a missing piece fails with a message naming it, and the adapters' logic over
stand-in libraries.
"""

YOUNG_NOTE = (
    "the Xen adapters (pciback.xen) are young: proven in the lab on Xen 4.17 only "
    "(make lab-test); report what your Xen does differently"
)
