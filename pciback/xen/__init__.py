"""The real-dom0 adapters: the Xen libraries reached through cffi in ABI mode (no compiler on the
target), one module per library, each implementing a port the core already uses.

    xenstore  libxenstore    the xenstore port (pciback.ports.xenstore.XenStore)
    gnttab    libxengnttab   the frontend's granted shared page, as a SharedPage
    evtchn    libxenevtchn   the backend end of the interdomain event channel, as an EventPort
    xenctrl   libxenctrl     the hypervisor port (PIRQs for MSI/MSI-X, killing a domain)
    atomic    libatomic      atomic bit operations on the shared page's flags word

UNTESTED AGAINST XEN: these modules have never run on a Xen host. What is verified on a machine
without Xen is that every declaration matches the installed Xen headers (tests/xen compiles
them against the headers when libxen-dev is present), that a missing piece fails with a message
naming it, and the argument checks done before any call reaches a library.
"""

UNTESTED_NOTE = "the Xen adapters (pciback.xen) are untested against a real Xen host"
