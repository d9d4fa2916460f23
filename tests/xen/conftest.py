from __future__ import annotations

import ctypes.util
from typing import Any

import pytest

from pciback.xen import _loader, atomic


@pytest.fixture
def no_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without any Xen library (nor libatomic)."""

    def refuse(ffi: Any, soname: str) -> Any:
        raise OSError(f"{soname}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(_loader, "_dlopen", refuse)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(atomic, "_lib", None)
    monkeypatch.setattr(_loader, "_loaded", {})
