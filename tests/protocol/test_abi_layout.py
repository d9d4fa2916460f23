"""The cffi declarations against what a C compiler makes of an independently written header."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pciback.errors import XenPciError
from pciback.protocol.abi import SH_INFO_MAX_VEC, XEN_PCI_MAGIC, Cmd, Flag, ffi

HEADER = """
#include <stdint.h>
#define SH_INFO_MAX_VEC 128
#define XEN_PCI_MAGIC "7"
#define _XEN_PCIF_active 0
#define _XEN_PCIB_AERHANDLER 1
#define _XEN_PCIB_active 2
#define XEN_PCI_OP_conf_read 0
#define XEN_PCI_OP_conf_write 1
#define XEN_PCI_OP_enable_msi 2
#define XEN_PCI_OP_disable_msi 3
#define XEN_PCI_OP_enable_msix 4
#define XEN_PCI_OP_disable_msix 5
#define XEN_PCI_OP_aer_detected 6
#define XEN_PCI_OP_aer_resume 7
#define XEN_PCI_OP_aer_mmio 8
#define XEN_PCI_OP_aer_slotreset 9
#define XEN_PCI_OP_enable_multi_msi 10
#define XEN_PCI_ERR_success 0
#define XEN_PCI_ERR_dev_not_found (-1)
#define XEN_PCI_ERR_invalid_offset (-2)
#define XEN_PCI_ERR_access_denied (-3)
#define XEN_PCI_ERR_not_implemented (-4)
#define XEN_PCI_ERR_op_failed (-5)
struct xen_msix_entry { uint16_t vector; uint16_t entry; };
struct xen_pci_op {
    uint32_t cmd; int32_t err; uint32_t domain; uint32_t bus; uint32_t devfn;
    int32_t offset; int32_t size; uint32_t value; uint32_t info;
    struct xen_msix_entry msix_entries[SH_INFO_MAX_VEC];
};
struct xen_pcie_aer_op {
    uint32_t cmd; int32_t err; uint32_t domain; uint32_t bus; uint32_t devfn;
};
struct xen_pci_sharedinfo { uint32_t flags; struct xen_pci_op op; struct xen_pcie_aer_op aer_op; };
"""

FIELDS = {
    "xen_msix_entry": ["vector", "entry"],
    "xen_pci_op": [
        "cmd", "err", "domain", "bus", "devfn", "offset", "size", "value", "info", "msix_entries",
    ],
    "xen_pcie_aer_op": ["cmd", "err", "domain", "bus", "devfn"],
    "xen_pci_sharedinfo": ["flags", "op", "aer_op"],
}  # fmt: skip

CONSTANTS = {
    "SH_INFO_MAX_VEC": SH_INFO_MAX_VEC,
    "_XEN_PCIF_active": Flag.PCIF_ACTIVE,
    "_XEN_PCIB_AERHANDLER": Flag.PCIB_AERHANDLER,
    "_XEN_PCIB_active": Flag.PCIB_ACTIVE,
    **{f"XEN_PCI_OP_{c.name.lower()}": c.value for c in Cmd},
    **{f"XEN_PCI_ERR_{e.name.lower()}": e.value for e in XenPciError},
}


def _program() -> str:
    lines = ["#include <stdio.h>", "#include <stddef.h>", HEADER, "int main(void) {"]
    for struct_name, fields in FIELDS.items():
        lines.append(f'printf("sizeof {struct_name} %zu\\n", sizeof(struct {struct_name}));')
        for f in fields:
            lines.append(
                f'printf("offsetof {struct_name}.{f} %zu\\n", offsetof(struct {struct_name}, {f}));'
            )
    for name in CONSTANTS:
        lines.append(f'printf("const {name} %d\\n", (int)({name}));')
    lines.append('printf("magic %s\\n", XEN_PCI_MAGIC);')
    lines.append("return 0; }")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    tmp: Path = tmp_path_factory.mktemp("abi")
    (tmp / "layout.c").write_text(_program())
    subprocess.run([gcc, "-std=c11", "-o", str(tmp / "layout"), str(tmp / "layout.c")], check=True)
    out = subprocess.run([str(tmp / "layout")], check=True, capture_output=True, text=True)
    return dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())


def test_struct_sizes_match_the_c_compiler(compiled: dict[str, str]) -> None:
    for struct_name in FIELDS:
        assert ffi.sizeof(f"struct {struct_name}") == int(compiled[f"sizeof {struct_name}"])


def test_field_offsets_match_the_c_compiler(compiled: dict[str, str]) -> None:
    for struct_name, fields in FIELDS.items():
        for f in fields:
            expected = int(compiled[f"offsetof {struct_name}.{f}"])
            assert ffi.offsetof(f"struct {struct_name}", f) == expected, (struct_name, f)


def test_constants_match_the_header(compiled: dict[str, str]) -> None:
    for name, value in CONSTANTS.items():
        assert int(value) == int(compiled[f"const {name}"]), name
    assert compiled["magic"] == XEN_PCI_MAGIC


def test_layout_is_the_documented_abi() -> None:
    # The numbers of the published interface, independent of any compiler on this machine.
    assert ffi.sizeof("struct xen_pci_sharedinfo") == 572
    assert ffi.sizeof("struct xen_pci_op") == 548
    assert ffi.offsetof("struct xen_pci_op", "msix_entries") == 36
    assert ffi.offsetof("struct xen_pci_sharedinfo", "aer_op") == 552
    assert ffi.offsetof("struct xen_msix_entry", "entry") == 2
