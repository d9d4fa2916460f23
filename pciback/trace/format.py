"""The trace file: JSON lines, a header first, then device and op lines, then an end line
(docs/trace-format.md). Written by `pciback trace record`, read back as untrusted input by
`pciback trace replay`: every line is bounded, typed and checked, and a bad one is reported as
one `FILE:LINE: message`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from pciback.control.hide import format_address
from pciback.errors import XenPciError
from pciback.protocol.abi import Cmd
from pciback.trace.limits import MAX_OPS

FORMAT = "pciback-trace"
VERSION = 1
MAX_IRQ = 0xFFFFFFFF  # a dom0 IRQ number (sparse IRQs on a big host go past 16 bits)
BAR_SLOTS = 7  # six BARs and the expansion ROM
MAX_BAR_SIZE = 1 << 63
MAX_LINE = 4096  # bytes; an op line is under 300, a device line with 64 quirks under 2000
MAX_DEVICES = 256  # a guest has at most 32 slots of 8 functions
MAX_QUIRKS = 64
# Lines beyond the ops: the header, the device lines and the end line.
MAX_LINES = MAX_OPS + MAX_DEVICES + 2

CONFIG_CMDS = frozenset({Cmd.CONF_READ, Cmd.CONF_WRITE})
CMD_NAMES = {int(c): c.name.lower() for c in Cmd}
_CMD_NUMBERS = {name: number for number, name in CMD_NAMES.items()}
_ERRORS = frozenset(int(e) for e in XenPciError)
END_REASONS = ("stopped", "limit", "disconnected", "expired", "lost")
_BDF = r"[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]"
_ADDRESS = re.compile(_BDF)
_QUIRK = re.compile(_BDF + r"-[0-9a-f]{1,3}:[124]:[0-9a-f]{1,8}")
_INT32 = (-(1 << 31), (1 << 31) - 1)
_UINT32 = (0, (1 << 32) - 1)


class TraceFileError(Exception):
    """A trace that cannot be used; the message is one line naming the file and line."""


class TraceOp(NamedTuple):
    """One op as recorded: what the guest asked and what it was answered. `device` is the
    physical function the op reached (None: it named no device the guest held); `offset`,
    `size`, `written` and `value` are None where the op carries none (interrupt ops keep only
    their command and error)."""

    seq: int
    cmd: int
    device: str | None
    address: str | None
    err: int
    offset: int | None = None
    size: int | None = None
    written: int | None = None
    value: int | None = None

    @property
    def is_config(self) -> bool:
        return self.cmd in CONFIG_CMDS


@dataclass(frozen=True, slots=True)
class Header:
    domid: int
    device: str | None  # the --device filter, if any
    policy: str  # pciback.trace.identity of the daemon's tables
    started: str  # UTC, ISO 8601
    max_ops: int
    from_connect: bool  # armed before the guest connected: the stream starts at its first op

    def line(self) -> dict[str, Any]:
        return {
            "type": "header",
            "format": FORMAT,
            "version": VERSION,
            "domid": self.domid,
            "device": self.device,
            "policy": self.policy,
            "started": self.started,
            "max_ops": self.max_ops,
            "from_connect": self.from_connect,
        }


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device the trace's ops reached, with the flags its view was built with."""

    device: str
    guest: str
    permissive: bool
    interrupt_control: bool
    quirks: tuple[str, ...] = ()
    # What a config dump does not hold and a replay needs to answer as the host did: the IRQ
    # dom0 routed for the function (its interrupt line as a guest reads it) and the BARs'
    # sizes (a sizing write's answer). None and () in traces written before they were kept.
    host_irq: int | None = None
    bar_sizes: tuple[tuple[int, int], ...] = ()  # (BAR index, 6 for the ROM; size in bytes)

    def line(self) -> dict[str, Any]:
        return {
            "type": "device",
            "device": self.device,
            "guest": self.guest,
            "permissive": self.permissive,
            "interrupt_control": self.interrupt_control,
            "quirks": list(self.quirks),
            "host_irq": self.host_irq,
            "bar_sizes": [list(pair) for pair in self.bar_sizes],
        }


@dataclass(frozen=True, slots=True)
class End:
    ops: int
    reason: str

    @property
    def truncated(self) -> bool:
        return self.reason == "limit"

    def line(self) -> dict[str, Any]:
        return {"type": "end", "ops": self.ops, "reason": self.reason}


@dataclass
class Trace:
    header: Header
    devices: dict[str, DeviceInfo] = field(default_factory=dict)
    ops: list[TraceOp] = field(default_factory=list)
    end: End | None = None  # None: the recorder never finished the file


def guest_address(domain: int, bus: int, devfn: int) -> str | None:
    """The address an op names, or None where it is out of range (no device answers it)."""
    if not (0 <= domain <= 0xFFFF and 0 <= bus <= 0xFF and 0 <= devfn <= 0xFF):
        return None
    return format_address(domain, bus, devfn >> 3, devfn & 7)


def op_line(op: TraceOp) -> dict[str, Any]:
    line: dict[str, Any] = {
        "type": "op",
        "seq": op.seq,
        "cmd": CMD_NAMES.get(op.cmd, op.cmd),
        "device": op.device,
        "address": op.address,
        "err": op.err,
    }
    if op.is_config:
        line["offset"] = op.offset
        line["size"] = op.size
        if op.cmd == Cmd.CONF_WRITE:
            line["written"] = op.written
        line["value"] = op.value
    return line


def write_line(out: TextIO, line: dict[str, Any]) -> None:
    out.write(json.dumps(line, separators=(",", ":")) + "\n")


# -- reading ---------------------------------------------------------------------------------
class _Line:
    """One parsed line and where it came from, for messages."""

    def __init__(self, where: str, obj: dict[str, Any]) -> None:
        self.where = where
        self.obj = obj

    def fail(self, message: str) -> TraceFileError:
        return TraceFileError(f"{self.where}: {message}")

    def get(self, key: str) -> Any:
        if key not in self.obj:
            raise self.fail(f'no "{key}"')
        return self.obj[key]

    def integer(self, key: str, bounds: tuple[int, int]) -> int:
        value = self.get(key)
        if type(value) is not int or not bounds[0] <= value <= bounds[1]:
            raise self.fail(f'"{key}" is not an integer in {bounds[0]}..{bounds[1]}')
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if type(value) is not bool:
            raise self.fail(f'"{key}" is not true or false')
        return value

    def text(self, key: str, pattern: re.Pattern[str] | None = None, limit: int = 64) -> str:
        value = self.get(key)
        if not isinstance(value, str) or len(value) > limit:
            raise self.fail(f'"{key}" is not a string of at most {limit} characters')
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(f'"{key}" is not well formed: {value!r}')
        return value

    def address(self, key: str, optional: bool = False) -> str | None:
        if optional and self.get(key) is None:
            return None
        return self.text(key, _ADDRESS)


def read_trace(path: Path) -> Trace:
    """The trace in `path`, checked line by line (TraceFileError on the first problem)."""
    try:
        with path.open("rb") as raw:
            return _read(raw, str(path))
    except IsADirectoryError:
        raise TraceFileError(f"{path}: is a directory, not a trace") from None
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot read: {exc.strerror}") from None


def _read(raw: Any, name: str) -> Trace:
    trace: Trace | None = None
    for number in range(1, MAX_LINES + 2):
        data = raw.readline(MAX_LINE + 1)
        if not data:
            break
        where = f"{name}:{number}"
        if len(data) > MAX_LINE:
            raise TraceFileError(f"{where}: line longer than {MAX_LINE} bytes")
        if number > MAX_LINES:
            raise TraceFileError(f"{where}: more than {MAX_LINES} lines")
        line = _Line(where, _json(data, where))
        kind = line.get("type")
        if trace is None:
            if kind != "header":
                raise line.fail("not a pciback trace: the first line is not its header")
            trace = Trace(_header(line))
            continue
        if trace.end is not None:
            raise line.fail("a line after the end line")
        if kind == "op":
            op = _op(line)
            if op.seq != len(trace.ops):
                raise line.fail(f"op number {op.seq} where {len(trace.ops)} was due")
            if op.device is not None and op.device not in trace.devices:
                raise line.fail(f"op on {op.device} before its device line")
            trace.ops.append(op)
        elif kind == "device":
            info = _device(line)
            if info.device in trace.devices:
                raise line.fail(f"device {info.device} declared twice")
            if len(trace.devices) == MAX_DEVICES:
                raise line.fail(f"more than {MAX_DEVICES} devices")
            trace.devices[info.device] = info
        elif kind == "end":
            trace.end = End(line.integer("ops", (0, MAX_OPS)), _reason(line))
            if trace.end.ops != len(trace.ops):
                held = len(trace.ops)
                raise line.fail(f"the end line counts {trace.end.ops} ops, the file holds {held}")
        else:
            raise line.fail(f"unknown line type {str(kind)[:20]!r}")
    if trace is None:
        raise TraceFileError(f"{name}: empty, not a pciback trace")
    return trace


def _json(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise TraceFileError(f"{where}: not a JSON line") from None
    if not isinstance(obj, dict):
        raise TraceFileError(f"{where}: not a JSON object")
    return obj


def _header(line: _Line) -> Header:
    if line.get("format") != FORMAT:
        raise line.fail(f'not a pciback trace (format is not "{FORMAT}")')
    version = line.integer("version", (1, 1 << 16))
    if version > VERSION:
        raise line.fail(f"trace format version {version}; this pciback reads {VERSION}")
    return Header(
        domid=line.integer("domid", (0, 0x7FEF)),
        device=line.address("device", optional=True),
        policy=line.text("policy", re.compile(r"[0-9a-f]{64}")),
        started=line.text("started"),
        max_ops=line.integer("max_ops", (1, MAX_OPS)),
        from_connect=line.flag("from_connect"),
    )


def _device(line: _Line) -> DeviceInfo:
    device = line.address("device")
    guest = line.address("guest")
    assert device is not None and guest is not None
    quirks = line.get("quirks")
    if not isinstance(quirks, list) or len(quirks) > MAX_QUIRKS:
        raise line.fail(f'"quirks" is not a list of at most {MAX_QUIRKS}')
    for quirk in quirks:
        if not isinstance(quirk, str) or not _QUIRK.fullmatch(quirk):
            raise line.fail(f"not a quirk DDDD:BB:DD.F-REG:SIZE:MASK: {str(quirk)[:40]!r}")
    return DeviceInfo(
        device,
        guest,
        line.flag("permissive"),
        line.flag("interrupt_control"),
        tuple(quirks),
        _host_irq(line),
        _bar_sizes(line),
    )


def _host_irq(line: _Line) -> int | None:
    value = line.obj.get("host_irq")  # optional: older traces have none
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_IRQ:
        raise line.fail(f'"host_irq" is not an integer in 0..{MAX_IRQ}')
    return value


def _bar_sizes(line: _Line) -> tuple[tuple[int, int], ...]:
    value = line.obj.get("bar_sizes", [])  # optional: older traces have none
    if not isinstance(value, list) or len(value) > BAR_SLOTS:
        raise line.fail(f'"bar_sizes" is not a list of at most {BAR_SLOTS} pairs')
    pairs: list[tuple[int, int]] = []
    for pair in value:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or any(type(x) is not int for x in pair)
            or not 0 <= pair[0] < BAR_SLOTS
            or not 0 <= pair[1] <= MAX_BAR_SIZE
            or any(pair[0] == index for index, _ in pairs)
        ):
            raise line.fail(f'"bar_sizes" holds something else than [BAR, size]: {str(pair)[:40]}')
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _op(line: _Line) -> TraceOp:
    name = line.get("cmd")
    if isinstance(name, str) and name in _CMD_NUMBERS:
        cmd = _CMD_NUMBERS[name]
    elif type(name) is int and _INT32[0] <= name <= _INT32[1] and name not in CMD_NAMES:
        cmd = name
    else:
        raise line.fail(f"unknown command {str(name)[:20]!r}")
    err = line.integer("err", _INT32)
    op = TraceOp(
        seq=line.integer("seq", (0, MAX_OPS - 1)),
        cmd=cmd,
        device=line.address("device", optional=True),
        address=line.address("address", optional=True),
        err=err,
    )
    if not op.is_config:
        return op
    if err not in _ERRORS:
        raise line.fail(f"error {err} is no XEN_PCI_ERR_* value")
    written = line.integer("written", _UINT32) if cmd == Cmd.CONF_WRITE else None
    return op._replace(
        offset=line.integer("offset", _INT32),
        size=line.integer("size", _INT32),
        written=written,
        value=line.integer("value", _UINT32),
    )


def _reason(line: _Line) -> str:
    reason = line.get("reason")
    if reason not in END_REASONS:
        raise line.fail(f'"reason" is none of {", ".join(END_REASONS)}')
    return str(reason)
