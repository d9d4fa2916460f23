"""The example configuration the README points at loads and names real fixtures."""

from __future__ import annotations

from pathlib import Path

from pciback.daemon.config import load_config
from pciback.sim.fixtures import fixture

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pciback-sim.toml"


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.backend == "sim"
    assert config.hide == "(0000:03:00.0)(04:00.*)"
    for name in ("virtio-net-1af4-1041.bin", "virtio-blk-1af4-1042.bin"):
        assert fixture(name).is_file()
