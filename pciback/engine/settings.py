"""One device's operator settings: permissive mode and interrupt control, owned in one place.

The stub pool keeps one `DeviceSettings` per seized device (and persists what the operator sets
on it); every guest view of that device holds the same object, so a change reaches the views at
once and nobody keeps a copy to bring up to date. A view built without the pool (tests, replay,
audit) gets one of its own.

A view reads its mode on every guest access (its plans are kept per mode). So the settings push
their values into plain attributes of each view when they change, instead of the view asking:
a property or a call there would cost every access. Those attributes are the settings' to
write, never anyone else's.
"""

from __future__ import annotations

import weakref
from typing import Protocol


class Follower(Protocol):
    """What a view exposes for the settings to keep current (its access path reads these)."""

    permissive: bool
    allow_interrupt_control: bool


class DeviceSettings:
    def __init__(
        self,
        *,
        permissive: bool = False,
        interrupt_control: bool = False,
        permissive_all: bool = False,
    ) -> None:
        """`permissive_all`: the pool-wide mode (the Linux module parameter), fixed at start;
        it makes the device's views permissive whatever the device's own flag says."""
        self._permissive = permissive
        self._interrupt_control = interrupt_control
        self.permissive_all = permissive_all
        # Weak: a view given back is dropped by whoever served it; nothing here must keep it.
        self._views: weakref.WeakSet[Follower] = weakref.WeakSet()

    @property
    def permissive(self) -> bool:
        """The device's own flag, as the operator set it (listed and persisted as such)."""
        return self._permissive

    @permissive.setter
    def permissive(self, on: bool) -> None:
        self._permissive = on
        self._push()

    @property
    def interrupt_control(self) -> bool:
        """Linux's allow_interrupt_control: a guest's INTx-disable and MSI/MSI-X enable
        writes reach the device."""
        return self._interrupt_control

    @interrupt_control.setter
    def interrupt_control(self, on: bool) -> None:
        self._interrupt_control = on
        self._push()

    @property
    def guest_permissive(self) -> bool:
        """The mode the device's views apply: its own flag or the pool-wide one."""
        return self.permissive_all or self._permissive

    def follow(self, view: Follower) -> None:
        """`view` takes these settings now and after every change."""
        self._views.add(view)
        self._apply(view)

    def _push(self) -> None:
        for view in list(self._views):  # a copy: a view may be collected meanwhile
            self._apply(view)

    def _apply(self, view: Follower) -> None:
        view.permissive = self.guest_permissive
        view.allow_interrupt_control = self._interrupt_control
