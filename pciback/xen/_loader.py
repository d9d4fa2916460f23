"""Finding the Xen libraries and the dom0 device nodes, and saying precisely what is missing."""

from __future__ import annotations

import ctypes.util
import threading
from pathlib import Path
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

PROC_XEN = Path("/proc/xen")
DEV_XEN = Path("/dev/xen")


class XenUnavailable(RuntimeError):
    """Something a real dom0 has is missing here; the message names it."""


# Keyed by library and FFI: a library opened through two FFIs (two adapters declaring different
# functions of libxenctrl) is two handles, each knowing its own declarations.
_loaded: dict[tuple[str, int], Any] = {}
_loaded_lock = threading.Lock()


def _dlopen(ffi: FFI, soname: str) -> Any:
    return ffi.dlopen(soname)


def load(ffi: FFI, name: str, sonames: tuple[str, ...], package: str) -> Any:
    """dlopen lib`name`, once: the soname ldconfig knows first, then the fixed `sonames`
    (libxenctrl's soname carries the Xen release, so a fixed list alone would miss newer ones).
    Cached because find_library runs ldconfig, and every connection asks for libxenevtchn."""
    with _loaded_lock:
        lib = _loaded.get((name, id(ffi)))
        if lib is None:
            lib = _loaded[(name, id(ffi))] = _load(ffi, name, sonames, package)
        return lib


def _load(ffi: FFI, name: str, sonames: tuple[str, ...], package: str) -> Any:
    found = ctypes.util.find_library(name)
    candidates = ([found] if found else []) + [s for s in sonames if s != found]
    errors = []
    for soname in candidates:
        try:
            return _dlopen(ffi, soname)
        except OSError as exc:
            errors.append(str(exc))
    tried = ", ".join(candidates)
    raise XenUnavailable(
        f"lib{name} not found (tried {tried}); install the Xen tools library "
        f"(Debian: {package})" + (f" [{errors[-1]}]" if errors else "")
    )


def missing_nodes(proc_xen: Path = PROC_XEN, dev_xen: Path = DEV_XEN) -> list[str]:
    """The dom0 interfaces that are absent: a kernel not running on Xen has neither."""
    missing = []
    if not proc_xen.is_dir():
        missing.append(f"{proc_xen} (is this a Xen dom0? is xenfs mounted?)")
    if not dev_xen.is_dir():
        missing.append(f"{dev_xen} (the xen device nodes: evtchn, gntdev, privcmd, xenbus)")
    return missing


def check_domid(domid: int, *, allow_dom0: bool = False) -> int:
    """A guest domain id; DOMID_FIRST_RESERVED (0x7ff0) and above name special domains."""
    if not isinstance(domid, int) or isinstance(domid, bool):
        raise ValueError(f"domain id must be an int, not {type(domid).__name__}")
    if not (0 if allow_dom0 else 1) <= domid < 0x7FF0:
        raise ValueError(f"domain id {domid} out of range")
    return domid
