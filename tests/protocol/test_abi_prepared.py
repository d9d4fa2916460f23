"""The shared-page ABI prepared at build time: current, identical in layout to what cffi parses
from abi.CDEF, taken at import without pycparser, and not taken once it no longer matches."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from cffi import FFI  # type: ignore[import-untyped]

from pciback.protocol import abi, abi_prepared
from pciback.protocol.abi_prepare import TARGET, prepared_source

STRUCTS = (
    "struct xen_msix_entry",
    "struct xen_pci_op",
    "struct xen_pcie_aer_op",
    "struct xen_pci_sharedinfo",
)


def layout(ffi: Any) -> dict[str, tuple[int, list[tuple[str, int, int]]]]:
    return {
        name: (
            ffi.sizeof(name),
            [(f, field.offset, ffi.sizeof(field.type)) for f, field in ffi.typeof(name).fields],
        )
        for name in STRUCTS
    }


def parsed() -> Any:
    fresh = FFI()
    fresh.cdef(abi.CDEF)
    return fresh


def test_the_prepared_module_is_current() -> None:
    assert TARGET.read_text(encoding="utf-8") == prepared_source(), "run make generate"


def test_the_prepared_layout_is_the_parsed_one() -> None:
    assert abi.ffi is abi_prepared.ffi
    assert layout(abi.ffi) == layout(parsed())
    assert abi.SHAREDINFO_SIZE == 572  # flags, op with 128 MSI-X entries, aer_op


def test_a_prepared_module_made_from_other_declarations_is_not_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(abi_prepared, "CDEF", abi.CDEF.replace("uint32_t info;", ""))
    ffi = abi._declare()
    assert ffi is not abi_prepared.ffi
    assert layout(ffi) == layout(parsed())


def test_importing_the_abi_does_not_load_the_c_parser() -> None:
    probe = "import sys, pciback.protocol.abi; print('pycparser' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
