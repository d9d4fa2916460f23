"""A device's permissive and interrupt-control settings have one owner: every view of the device
holds the same settings and follows their changes, and a saved view record does not overwrite
settings an operator owns."""

from __future__ import annotations

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.settings import DeviceSettings
from pciback.engine.snapshot import export_state, import_state
from pciback.generated.names import COMMON_HEADER
from pciback.policy import build_config_space
from pciback.sim import SimHost
from pciback.sim.device import SimDevice
from tests.engine.support import FIXTURES

NET = FIXTURES / "virtio-net-1af4-1041.bin"
A = "0000:03:00.0"
pytestmark = pytest.mark.skipif(not NET.exists(), reason="no fixture")


def device() -> SimDevice:
    return SimDevice(A, NET)


def test_every_view_of_the_settings_follows_a_change() -> None:
    settings = DeviceSettings()
    views = [build_config_space(device(), settings=settings) for _ in range(2)]
    assert [(v.permissive, v.allow_interrupt_control) for v in views] == [(False, False)] * 2
    settings.permissive = True
    settings.interrupt_control = True
    assert [(v.permissive, v.allow_interrupt_control) for v in views] == [(True, True)] * 2
    assert all(v.settings is settings for v in views)


def test_the_access_path_reads_no_property() -> None:
    # ConfigSpace.read/write run on every guest access: the interrupt-control flag is a plain
    # attribute, and the mode is not read there at all: a change of mode picks its kept plans.
    view = build_config_space(device())
    assert "allow_interrupt_control" in vars(view)
    assert not hasattr(ConfigSpace, "allow_interrupt_control")
    ids = COMMON_HEADER.VENDOR_ID
    normal = view.read(ids.offset, ids.width), view._readers
    view.settings.permissive = True
    assert view._readers is not normal[1]
    view.settings.permissive = False
    assert view.read(ids.offset, ids.width) == normal[0]
    assert view._readers is normal[1]  # the normal mode's plans kept through the change


def test_the_pool_wide_mode_makes_views_permissive_without_the_devices_flag() -> None:
    settings = DeviceSettings(permissive_all=True)
    view = build_config_space(device(), settings=settings)
    assert view.permissive and not settings.permissive
    settings.permissive = False  # the device's own flag cannot take the pool's mode away
    assert view.permissive


def test_a_mode_is_given_once() -> None:
    with pytest.raises(ValueError):
        build_config_space(device(), permissive=True, settings=DeviceSettings())


def test_a_record_does_not_overwrite_settings_an_operator_owns() -> None:
    loose = build_config_space(device(), permissive=True)
    loose.settings.interrupt_control = True
    saved = export_state(loose)
    owned = DeviceSettings()
    view = build_config_space(device(), settings=owned)
    assert import_state(view, saved, settings=False) == []
    assert not owned.permissive and not owned.interrupt_control
    assert not view.permissive and not view.allow_interrupt_control
    assert import_state(view, saved) == []  # a view of its own adopts them
    assert view.permissive and view.allow_interrupt_control


def test_an_operators_change_reaches_the_served_view_at_once() -> None:
    with SimHost() as h:
        h.add_device(A, NET)
        guest = h.attach(1, [A])
        view = guest.exported(A).view
        assert isinstance(view, ConfigSpace)
        assert view.settings is h.daemon.pool.settings(A)
        h.daemon.handle({"op": "permissive_add", "arg": A})
        assert view.permissive
        h.allow_interrupt_control(A)
        assert view.allow_interrupt_control
        h.daemon.handle({"op": "permissive_remove", "arg": A})
        assert not view.permissive
