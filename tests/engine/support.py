"""Test support: policies compiled from inline source, and a plain memory-backed device."""

from __future__ import annotations

from pathlib import Path

from pciback.compiler.emit import NAMES
from pciback.compiler.pipeline import compile_paths
from pciback.engine import Policy
from pciback.engine.hookapi import HookSet
from pciback.policy import installed_hooks
from pciback.ports.bus import BarKind, BarResource
from pciback.sim.fixtures import fixture_dir
from pciback.tables import PolicyModule

FIXTURES = fixture_dir()  # ../shared/fixtures, or the copies shipped with the package


def compile_policy(
    text: str, tmp_path: Path, name: str = "policy", implementations: HookSet | None = None
) -> Policy:
    """Compile `text` as a policy file and load it the way the runtime loads generated/, with
    `implementations` (default: pciback/hooks) serving its hooks."""
    path = tmp_path / f"{name}.pci"
    path.write_text(text, encoding="utf-8")
    modules: list[PolicyModule] = []
    for out in compile_paths([path]):
        if out.name in ("__init__.py", NAMES):  # the index, and the names (no tables)
            continue
        namespace: dict[str, object] = {}
        exec(compile(out.text, out.name, "exec"), namespace)
        module = namespace["MODULE"]
        assert isinstance(module, PolicyModule)
        modules.append(module)
    return Policy.from_modules(modules, implementations or installed_hooks())


class MemoryDevice:
    """Config space as plain memory: every bit writable, except `rw1c` bits that clear on 1."""

    def __init__(self, size: int = 256, rw1c: dict[int, int] | None = None) -> None:
        self.config = bytearray(size)
        self.writes: list[tuple[int, int, int]] = []
        self.rw1c = rw1c or {}
        self.reads = 0

    @property
    def address(self) -> str:
        return "0000:00:01.0"

    @property
    def config_size(self) -> int:
        return len(self.config)

    def poke(self, offset: int, size: int, value: int) -> None:
        self.config[offset : offset + size] = value.to_bytes(size, "little")

    def read(self, offset: int, size: int) -> int:
        self.reads += 1
        return int.from_bytes(self.config[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))
        for i in range(size):
            byte = (value >> (8 * i)) & 0xFF
            clear = self.rw1c.get(offset + i, 0)
            old = self.config[offset + i]
            self.config[offset + i] = (byte & ~clear) | (old & clear & ~byte)

    def bars(self) -> tuple[BarResource, ...]:
        return tuple(BarResource(i, BarKind.UNUSED, 0) for i in range(7))

    def host_irq(self) -> int:
        return 0  # never routed by a host

    def enable(self) -> None:
        pass

    def set_power_state(self, state: int) -> None:
        pass

    def reset(self) -> None:
        pass

    # A memory-backed device has no interrupt hardware to program.
    def enable_msi(self, vectors: int) -> None:
        raise ValueError("no MSI on a memory device")

    def disable_msi(self) -> None:
        pass

    def enable_msix(self, entries: tuple[int, ...]) -> None:
        raise ValueError("no MSI-X on a memory device")

    def disable_msix(self) -> None:
        pass
