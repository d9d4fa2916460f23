"""What the audit tests share: the QEMU dumps and an audit of one of them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pciback.audit.model import Audit, audit
from pciback.dumps import load_config
from pciback.engine.policy import Policy
from pciback.generated.names import MSI
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

QEMU = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "qemu"
ADDRESS = "0000:00:04.0"
CAP_MSI = MSI.id


def qemu_dumps() -> list[Path]:
    """Every QEMU dump (empty when the shared fixtures are absent: the tests then skip)."""
    return sorted(QEMU.glob("*.bin")) if QEMU.is_dir() else []


def qemu(name: str) -> Path:
    return QEMU / name


def audit_of(
    dump: Path,
    *,
    permissive: bool = False,
    hide: Iterable[int] = (),
    policy: Policy | None = None,
) -> Audit:
    device = SimDevice(ADDRESS, load_config(dump).config)
    space = build_config_space(device, permissive=permissive, hide=hide, policy=policy)
    return audit(space, ADDRESS)
