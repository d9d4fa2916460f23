"""PCIe error recovery on a real dom0: the kernel's recovery uevents for a function a guest
holds, or for a bridge above it, start the recovery flow of pciback.protocol.aer (the guest's
AER handler asked through the shared page with its timeout; the guest killed and the function
reset when it cannot recover), as Linux's pciback does from its error handlers.

The stub that holds a seized function has no error handlers, so the kernel's own recovery of
the function gives up ("no AER driver"); the uevents are how user space hears of it at all
(see pciback.ports.uevents). Which state the guest is told comes from the function's AER
registers, read when the event arrives: an unmasked error whose severity is fatal freezes the
function's I/O (io_frozen), a non-fatal one does not (io_normal); a function that reads all
ones is gone (perm_failure), as is one whose recovery the kernel announced as failed.

Events are handled one at a time on one thread; a recovery waits for the guest (Linux's 300 s
at most per step), and the events meanwhile queue in the socket's buffer (the kernel reports
an overflow, which is logged).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from pciback.engine.chain import walk
from pciback.generated.names import COMMON_HEADER
from pciback.policy import default_policy
from pciback.ports.bus import PhysicalDevice
from pciback.ports.uevents import UeventSource, parse_uevent
from pciback.protocol.abi import ChannelState

log = logging.getLogger(__name__)

BEGIN = "BEGIN_RECOVERY"
SUCCESS = "SUCCESSFUL_RECOVERY"
FAILED = "FAILED_RECOVERY"
_ALL_ONES = 0xFFFFFFFF
ERROR_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class AerLayout:
    """Where the AER capability keeps what decides the state, as the policy names it."""

    ident: int
    status: int
    mask: int
    severity: int


@cache
def aer_layout() -> AerLayout:
    block = next(b for b in default_policy().extended.values() if b.name == "aer")
    # Fixed offsets in this table (a register placed by a layout function has none).
    offsets = {r.name: r.offset for r in block.registers if isinstance(r.offset, int)}
    return AerLayout(
        block.ident,
        offsets["uncorrectable_status"],
        offsets["uncorrectable_mask"],
        offsets["uncorrectable_severity"],
    )


def channel_state(device: PhysicalDevice) -> ChannelState:
    """What an error on `device` means for its I/O, read from its AER registers now."""
    read = device.read
    if read(COMMON_HEADER.VENDOR_ID.offset, 4) == _ALL_ONES:  # vendor and device IDs
        return ChannelState.IO_PERM_FAILURE
    layout = aer_layout()
    found = walk(read, device.config_size).extended
    aer = next((cap.offset for cap in found if cap.ident == layout.ident), None)
    if aer is None:
        return ChannelState.IO_FROZEN  # severity unknown: the safer assumption
    status = read(aer + layout.status, 4)
    if status == _ALL_ONES:
        return ChannelState.IO_PERM_FAILURE
    unmasked = status & ~read(aer + layout.mask, 4)
    fatal = unmasked & read(aer + layout.severity, 4)
    return ChannelState.IO_FROZEN if fatal or not unmasked else ChannelState.IO_NORMAL


class AerEvents:
    """`held()`: the functions connected guests hold now; `upstream(address)`: the bridges above
    a function; `state(address)`: what an error means for it (`channel_state` of the device);
    `recover(address, state)`: the recovery flow."""

    def __init__(
        self,
        source: UeventSource,
        held: Callable[[], Iterable[str]],
        upstream: Callable[[str], tuple[str, ...]],
        state: Callable[[str], ChannelState],
        recover: Callable[[str, ChannelState], None],
    ) -> None:
        self.source = source
        self.held = held
        self.upstream = upstream
        self.state = state
        self.recover = recover
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pciback-aer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        self.source.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.source.receive(None)
                if data is not None:
                    self.handle(data)
            except Exception:  # the thread outlives a bug: the next error must still be seen
                if self._stop:
                    return
                log.exception("reading or handling a kernel uevent failed")
                time.sleep(ERROR_PAUSE_S)  # a source failing at once must not spin

    def handle(self, data: bytes) -> list[str]:
        """One uevent; returns the held functions whose recovery it started."""
        event = parse_uevent(data)
        if event is None or event.subsystem != "pci":
            return []
        kind = event.env.get("ERROR_EVENT")
        if kind is None:
            return []
        about = event.pci_address or event.devpath.rsplit("/", 1)[-1]
        targets = [a for a in self.held() if a == about or self._below(about, a)]
        if not targets:
            log.debug("%s: %s, and no guest holds it or a function below it", about, kind)
            return []
        if kind == SUCCESS:
            log.info("%s: the kernel recovered it (%s)", about, ", ".join(targets))
            return []
        if kind not in (BEGIN, FAILED):
            log.warning("%s: unknown recovery event %r; ignored", about, kind)
            return []
        for address in targets:
            try:
                state = ChannelState.IO_PERM_FAILURE if kind == FAILED else self.state(address)
                log.warning(
                    "%s: PCIe error recovery (%s on %s): asking its guest, state %s",
                    address,
                    kind,
                    about,
                    state.name.lower(),
                )
                self.recover(address, state)
            except Exception:  # one function's trouble must not cost the others theirs
                log.exception("%s: the recovery failed", address)
        return targets

    def _below(self, bridge: str, address: str) -> bool:
        """Whether `address` sits below `bridge`; a function gone from the bus (surprise
        removal, a link down: when these events come) is taken to be, so that it is
        recovered (its guest told, or killed) rather than forgotten."""
        try:
            return bridge in self.upstream(address)
        except (KeyError, OSError):
            return True


__all__ = ["AerEvents", "aer_layout", "channel_state"]
