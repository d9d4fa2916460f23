"""PCIe AER recovery for a device a guest owns, driven from the host side.

The host's AER core calls error_detected, then mmio_enabled or slot_reset, then resume; each
step is forwarded to the frontend on the shared page (`aer_op` plus _XEN_PCIB_active) and
waits a bounded time for its answer. A guest that registered no AER handler, does not answer,
or answers "none" / "disconnect" cannot recover the device: the domain is killed through the
hypervisor port and the device reset, as Linux's pciback does.

A recovery can last minutes (each step waits up to DEFAULT_TIMEOUT); meanwhile the device may be
detached, given to another guest, or the daemon may stop. `still_wanted` says whether the
recovery still speaks for the device's owner: asked during every wait and before every kill
or reset, its no ends the recovery with AerAborted, nothing more done to guest or device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pciback.protocol.abi import ChannelState, Cmd, ErsResult
from pciback.protocol.connection import AerAborted, AerTarget, BackendConnection

DEFAULT_TIMEOUT = 300.0  # what Linux waits; tests pass much less

_GIVE_UP = (None, ErsResult.NONE, ErsResult.DISCONNECT)
_KNOWN = frozenset(int(r) for r in ErsResult)


@dataclass(frozen=True, slots=True)
class AerOutcome:
    steps: tuple[tuple[Cmd, int | None], ...]  # each request and the frontend's answer
    killed: bool

    @property
    def recovered(self) -> bool:
        return not self.killed and bool(self.steps) and self.steps[-1][0] is Cmd.AER_RESUME


def recover(
    conn: BackendConnection,
    target: AerTarget,
    state: ChannelState,
    *,
    reset_device: Callable[[], None],
    kill_guest: Callable[[], None],
    timeout: float = DEFAULT_TIMEOUT,
    still_wanted: Callable[[], bool] = lambda: True,
) -> AerOutcome:
    steps: list[tuple[Cmd, int | None]] = []

    def ask(cmd: Cmd) -> int | None:
        answer = conn.aer_request(cmd, int(state), target, timeout, still_wanted)
        if answer is not None and answer not in _KNOWN:
            answer = int(ErsResult.NONE)  # a guest's garbage counts as no answer
        steps.append((cmd, answer))
        return answer

    def check() -> None:
        if not still_wanted():
            raise AerAborted(f"the device at {target} changed hands, or the daemon stops")

    def reset() -> None:
        check()
        reset_device()

    def give_up() -> AerOutcome:
        check()
        kill_guest()
        reset_device()
        return AerOutcome(tuple(steps), killed=True)

    if not conn.has_aer_handler():
        return give_up()
    answer = ask(Cmd.AER_DETECTED)
    if answer in _GIVE_UP:
        return give_up()
    if answer == ErsResult.CAN_RECOVER:
        answer = ask(Cmd.AER_MMIO)
        if answer in _GIVE_UP:
            return give_up()
    if answer == ErsResult.NEED_RESET:
        reset()
        answer = ask(Cmd.AER_SLOTRESET)
        if answer in _GIVE_UP:
            return give_up()
    if answer == ErsResult.RECOVERED:
        ask(Cmd.AER_RESUME)
    return AerOutcome(tuple(steps), killed=False)
