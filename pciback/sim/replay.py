"""A recorded op stream served again, by one policy or two, on a simulated device built from a
dump: every answer that differs from the recorded one, and, between two policies, every op
whose physical writes differ.

The device is prepared as the daemon prepares one it seizes (the stub pool's reset, restore
and bus-master off), the view is built with the flags the trace recorded for the device, and
each op goes through the daemon's own dispatcher, so an access the daemon refused is refused
the same way here. Interrupt ops are not replayed: a trace keeps none of their data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pciback.control.hide import HideSyntaxError, parse_address, parse_quirk
from pciback.control.ownership import Ownership
from pciback.control.quirks import quirk_register
from pciback.control.stub import StubPool
from pciback.engine.policy import Policy
from pciback.policy import build_config_space
from pciback.protocol.dispatch import ExportedDevice, dispatch
from pciback.protocol.interrupts import InterruptControl
from pciback.protocol.ops import OpRequest
from pciback.sim.device import SimDevice
from pciback.sim.hostbus import SimHostBus
from pciback.sim.hypervisor import SimHypervisor
from pciback.trace.format import DeviceInfo, Trace, TraceOp

Write = tuple[int, int, int]  # (offset, size, value), as SimDevice records them


class ReplayError(Exception):
    """A trace and a dump or device that do not go together; the message is one line."""


@dataclass(frozen=True, slots=True)
class PolicyUnder:
    """A policy to replay under, with the name it is shown by and its identity."""

    name: str
    policy: Policy
    identity: str


@dataclass(frozen=True, slots=True)
class Served:
    err: int
    value: int
    writes: tuple[Write, ...]  # what reached the device while serving the op


@dataclass(frozen=True, slots=True)
class Difference:
    op: TraceOp
    served: tuple[Served, ...]  # one per policy, in the order given
    answer_differs: tuple[bool, ...]  # per policy: not the recorded answer
    writes_differ: bool  # the policies wrote differently to the device


@dataclass(frozen=True, slots=True)
class Replay:
    device: DeviceInfo
    ops: list[TraceOp]  # the device's config ops, replayed
    elsewhere: int  # ops of other devices or of none: not replayed
    interrupts: list[TraceOp]  # the device's interrupt ops: not replayed
    served: list[list[Served]]  # per policy, per replayed op

    def differences(self) -> list[Difference]:
        found = []
        for i, op in enumerate(self.ops):
            served = tuple(answers[i] for answers in self.served)
            differs = tuple((s.err, s.value) != (op.err, op.value) for s in served)
            writes_differ = len({s.writes for s in served}) > 1
            if any(differs) or writes_differ:
                found.append(Difference(op, served, differs, writes_differ))
        return found


def choose_device(trace: Trace, device: str | None) -> DeviceInfo:
    """The device to replay: `device`, else the one the trace was recorded for or holds."""
    if device is not None:
        info = trace.devices.get(device)
        if info is None:
            held = ", ".join(sorted(trace.devices)) or "none"
            raise ReplayError(f"the trace holds no op of {device} (devices: {held})")
        return info
    if trace.header.device is not None and trace.header.device in trace.devices:
        return trace.devices[trace.header.device]
    if len(trace.devices) == 1:
        return next(iter(trace.devices.values()))
    if not trace.devices:
        raise ReplayError("the trace holds no op that reached a device")
    held = ", ".join(sorted(trace.devices))
    raise ReplayError(f"the trace holds ops of {len(trace.devices)} devices ({held}): name one")


def replay(
    trace: Trace, info: DeviceInfo, config: bytes, policies: Sequence[PolicyUnder]
) -> Replay:
    ops = [op for op in trace.ops if op.device == info.device]
    config_ops = [op for op in ops if op.is_config]
    served = [_serve(trace, info, config, p.policy, config_ops) for p in policies]
    return Replay(
        info,
        config_ops,
        len(trace.ops) - len(ops),
        [op for op in ops if not op.is_config],
        served,
    )


class _OneDevice:
    """The DeviceLookup of the replay: the device at the guest address it was recorded at."""

    def __init__(self, at: tuple[int, int, int], exported: ExportedDevice) -> None:
        self.at = at
        self.exported = exported

    def lookup(self, domain: int, bus: int, devfn: int) -> ExportedDevice | None:
        return self.exported if (domain, bus, devfn) == self.at else None


def _serve(
    trace: Trace, info: DeviceInfo, config: bytes, policy: Policy, ops: list[TraceOp]
) -> list[Served]:
    # The host's facts the trace kept (a dump has neither): sizing answers, interrupt line.
    device = SimDevice(info.device, config, bar_sizes=dict(info.bar_sizes))
    if info.host_irq is not None:
        device.irq = info.host_irq
    pool = StubPool(SimHostBus({info.device: device}), Ownership())
    if not pool.add_slot(info.device):
        raise ReplayError(f"{info.device}: the dump's header type cannot be passed through")
    try:
        quirks = [quirk_register(parse_quirk(q)) for q in info.quirks]
    except HideSyntaxError as exc:
        raise ReplayError(f"{info.device}: a recorded quirk is not usable: {exc}") from None
    # The recorded mode, on the settings of the replay's pool as an operator's would be.
    settings = pool.settings(info.device)
    settings.permissive, settings.interrupt_control = info.permissive, info.interrupt_control
    view = build_config_space(device, settings=settings, policy=policy, extra_registers=quirks)
    device.hand_over()  # what the guest caused, from here on
    irq = InterruptControl(trace.header.domid, device, SimHypervisor(), view)
    view.interrupts = irq
    domain, bus, slot, function = parse_address(info.guest)
    devfn = slot << 3 | function
    lookup = _OneDevice((domain, bus, devfn), ExportedDevice(info.guest, device, view, irq))
    served = []
    for op in ops:
        assert op.offset is not None and op.size is not None  # a config op carries them
        req = OpRequest(op.cmd, domain, bus, devfn, op.offset, op.size, op.written or 0, 0, b"")
        before = len(device.writes)
        result = dispatch(req, lookup)
        writes = tuple(device.writes[before:])
        served.append(Served(int(result.err), result.value & 0xFFFFFFFF, writes))
    return served
