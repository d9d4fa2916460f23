# Written by `python -m pciback.protocol.abi_prepare` from pciback.protocol.abi.CDEF;
# never edit it by hand (`make generate` rewrites it, `make test` checks it).
# auto-generated file
import _cffi_backend

ffi = _cffi_backend.FFI('pciback.protocol.abi_prepared',
    _version = 0x2601,
    _types = b'\x00\x00\x15\x01\x00\x00\x00\x09\x00\x00\x01\x05\x00\x00\x00\x80\x00\x00\x01\x09\x00\x00\x02\x09\x00\x00\x03\x09\x00\x00\x14\x01\x00\x00\x16\x01',
    _struct_unions = ((b'\x00\x00\x00\x01\x00\x00\x00\x02xen_msix_entry',b'\x00\x00\x07\x11vector',b'\x00\x00\x07\x11entry'),(b'\x00\x00\x00\x04\x00\x00\x00\x02xen_pci_op',b'\x00\x00\x08\x11cmd',b'\x00\x00\x00\x11err',b'\x00\x00\x08\x11domain',b'\x00\x00\x08\x11bus',b'\x00\x00\x08\x11devfn',b'\x00\x00\x00\x11offset',b'\x00\x00\x00\x11size',b'\x00\x00\x08\x11value',b'\x00\x00\x08\x11info',b'\x00\x00\x02\x11msix_entries'),(b'\x00\x00\x00\x05\x00\x00\x00\x02xen_pci_sharedinfo',b'\x00\x00\x08\x11flags',b'\x00\x00\x04\x11op',b'\x00\x00\x06\x11aer_op'),(b'\x00\x00\x00\x06\x00\x00\x00\x02xen_pcie_aer_op',b'\x00\x00\x08\x11cmd',b'\x00\x00\x00\x11err',b'\x00\x00\x08\x11domain',b'\x00\x00\x08\x11bus',b'\x00\x00\x08\x11devfn')),
)

CDEF = '\nstruct xen_msix_entry {\n    uint16_t vector;\n    uint16_t entry;\n};\n\nstruct xen_pci_op {\n    uint32_t cmd;\n    int32_t err;\n    uint32_t domain;\n    uint32_t bus;\n    uint32_t devfn;\n    int32_t offset;\n    int32_t size;\n    uint32_t value;\n    uint32_t info;\n    struct xen_msix_entry msix_entries[128];\n};\n\nstruct xen_pcie_aer_op {\n    uint32_t cmd;\n    int32_t err;\n    uint32_t domain;\n    uint32_t bus;\n    uint32_t devfn;\n};\n\nstruct xen_pci_sharedinfo {\n    uint32_t flags;\n    struct xen_pci_op op;\n    struct xen_pcie_aer_op aer_op;\n};\n'
