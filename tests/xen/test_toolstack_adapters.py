"""The toolstack role's adapters over stand-in libraries: libxenctrl's domain-control calls
(arguments, errno becoming a DomainError naming the call, domain existence from the info
structure) and libxenstore's mkdir and permissions. No Xen is involved."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from pciback.ports.domain import DomainError
from pciback.ports.xenstore import XenStoreError, permissions, run_transaction
from pciback.xen import domctl
from pciback.xen.domctl import XenDomainResources, machine_sbdf
from pciback.xen.xenstore import XenStoreClient
from tests.xen.fakes import FakeXenstore, Recorder


class FakeDomctl(Recorder):
    """libxenctrl's domain-control calls: recorded, failing with `fail[name]` as errno."""

    def __init__(self, domains: dict[int, int] | None = None) -> None:
        super().__init__()
        self.domains = domains if domains is not None else {3: 0}  # domid -> flags
        self.fail: dict[str, int] = {}

    def _rc(self, name: str, *args: Any) -> int:
        self.calls.append((name, *args))
        if name in self.fail:
            domctl.ffi.errno = self.fail[name]
            return -1
        return 0

    def xc_interface_open(self, logger: Any, dombuild: Any, flags: int) -> Any:
        return self.handle

    def xc_interface_close(self, xch: Any) -> int:
        return self._rc("close")

    def xc_domain_getinfolist(self, xch: Any, first: int, count: int, info: Any) -> int:
        if self._rc("getinfolist", first, count):
            return -1
        later = sorted(d for d in self.domains if d >= first)
        if not later:
            return 0
        info[0].domain = later[0]
        info[0].flags = self.domains[later[0]]
        return 1

    def xc_domain_iomem_permission(self, xch: Any, d: int, first: int, nr: int, a: int) -> int:
        return self._rc("iomem", d, first, nr, a)

    def xc_domain_ioport_permission(self, xch: Any, d: int, first: int, nr: int, a: int) -> int:
        return self._rc("ioport", d, first, nr, a)

    def xc_domain_irq_permission(self, xch: Any, d: int, pirq: int, allow: bool) -> int:
        return self._rc("irq_permission", d, pirq, allow)

    def xc_physdev_map_pirq(self, xch: Any, d: int, index: int, pirq: Any) -> int:
        rc = self._rc("map_pirq", d, index, int(pirq[0]))
        if rc == 0:
            pirq[0] = int(pirq[0])  # Xen honours the PIRQ asked for
        return rc

    def xc_physdev_unmap_pirq(self, xch: Any, d: int, pirq: int) -> int:
        return self._rc("unmap_pirq", d, pirq)

    def xc_assign_device(self, xch: Any, d: int, sbdf: int, flag: int) -> int:
        return self._rc("assign", d, sbdf, flag)

    def xc_deassign_device(self, xch: Any, d: int, sbdf: int) -> int:
        return self._rc("deassign", d, sbdf)


def test_sbdf_is_libxls_encoding() -> None:
    assert machine_sbdf("0000:03:00.0") == 0x300
    assert machine_sbdf("0001:af:1f.7") == 0x1_AF_FF


def test_grants_reach_libxenctrl_as_libxl_passes_them() -> None:
    lib = FakeDomctl()
    xc = XenDomainResources(lib=lib)
    xc.iomem_permission(3, 0xFEBF0, 4, True)
    xc.ioport_permission(3, 0xC000, 0x20, True)
    assert xc.map_gsi(3, 23) == 23
    xc.irq_permission(3, 23, True)
    xc.assign_device(3, "0000:03:00.1")
    xc.deassign_device(3, "0000:03:00.1")
    xc.dequarantine("0000:03:00.1")
    xc.unmap_gsi(3, 23)
    assert lib.calls == [
        ("iomem", 3, 0xFEBF0, 4, 1),
        ("ioport", 3, 0xC000, 0x20, 1),
        ("map_pirq", 3, 23, 23),  # PIRQ == GSI requested
        ("irq_permission", 3, 23, True),
        ("assign", 3, 0x301, 0),  # rdm_policy strict: flag 0
        ("deassign", 3, 0x301),
        ("deassign", 0x7FF1, 0x301),  # out of Xen's quarantine (DOMID_IO), back to dom0
        ("unmap_pirq", 3, 23),
    ]
    xc.close()
    assert lib.calls[-1] == ("close",)
    with pytest.raises(DomainError, match="interface closed"):
        xc.iomem_permission(3, 1, 1, False)


def test_a_failed_call_names_itself_and_its_errno() -> None:
    lib = FakeDomctl()
    lib.fail["assign"] = errno.EOPNOTSUPP
    xc = XenDomainResources(lib=lib)
    with pytest.raises(DomainError) as info:
        xc.assign_device(3, "0000:03:00.0")
    assert info.value.errno == errno.EOPNOTSUPP
    assert str(info.value) == (
        f"xc_assign_device dom3 0000:03:00.0: Operation not supported "
        f"({errno.errorcode[errno.EOPNOTSUPP]}, errno {errno.EOPNOTSUPP})"
    )


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("iomem_permission", (0, 1, 1, True)),  # dom0
        ("iomem_permission", (3, -1, 1, True)),
        ("iomem_permission", (3, 1, 0, True)),
        ("ioport_permission", (3, 0xFFFF, 2, True)),  # past the last port
        ("map_gsi", (3, 0)),
        ("irq_permission", (0x7FF0, 5, True)),  # DOMID_FIRST_RESERVED
        ("assign_device", (3, "not-a-device")),
    ],
)
def test_bad_arguments_never_reach_xen(call: str, args: tuple[Any, ...]) -> None:
    lib = FakeDomctl()
    xc = XenDomainResources(lib=lib)
    with pytest.raises(DomainError) as info:
        getattr(xc, call)(*args)
    assert info.value.errno == errno.EINVAL
    assert lib.calls == []


def test_domain_existence_is_the_domain_itself_and_not_dying() -> None:
    lib = FakeDomctl({3: 0, 5: domctl.DOMINF_DYING, 9: 0})
    xc = XenDomainResources(lib=lib)
    assert xc.domain_exists(3)
    assert not xc.domain_exists(4)  # the list answers with domain 5: not ours
    assert not xc.domain_exists(5)  # dying: its resources are gone already
    assert not xc.domain_exists(10)  # nothing at or above
    assert domctl.ffi.sizeof("xc_domaininfo_t") == domctl.INFO_BUFFER


def test_store_mkdir_and_permissions_reach_libxenstore() -> None:
    lib = FakeXenstore()
    client = XenStoreClient(lib=lib)
    client.libc = lib

    def body(tx: Any) -> None:
        tx.mkdir("/local/domain/0/backend/pci/3/0")
        tx.set_permissions("/local/domain/0/backend/pci/3/0", permissions("n0", "r3"))

    run_transaction(client, body)
    assert lib.perms["/local/domain/0/backend/pci/3/0"] == [(0, 0), (3, 1)]
    mkdir, chmod, end = lib.calls[-3:]
    assert mkdir[0] == "mkdir" and chmod[0] == "chmod" and end[0] == "end"
    assert mkdir[1] == chmod[1] == end[1]  # all in the one transaction
    with pytest.raises(XenStoreError) as info:
        client.set_permissions("/absent", permissions("b3"))
    assert info.value.errno == errno.ENOENT
    with pytest.raises(XenStoreError) as info:
        client.set_permissions("/local", ())
    assert info.value.errno == errno.EINVAL
