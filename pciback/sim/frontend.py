"""A simulated pcifront: a guest kernel's half of the protocol over a real shared page.

Every request goes through `do_op`: fill `op` on the page, raise _XEN_PCIF_active, notify, sleep
until the backend clears the bit, read the answer back. The op's caller sleeps on the event
channel itself, as pcifront's do_pci_op polls its event channel: an answer is one hand-off
between two threads, the simulation's least (bench/bench_roundtrip.py sets it against the
machine's eventfd floors). Once the guest registers an AER handler (raising
_XEN_PCIB_AERHANDLER, as pcifront does when a driver has one) requests can come outside any
op, so an interrupt thread takes every notification from then on: it answers AER requests and
wakes the op waiting for its answer.

`enumerate` scans like pcifront (every devfn of every root bus) and then like the PCI core
(header, BAR sizing with decoding off, capability chains); `enable_interrupts` sets up MSI-X or
MSI as a driver would.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pciback.control.hide import format_address, parse_address
from pciback.engine.chain import STD_END, walk_extended, walk_standard
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import (
    COMMON_HEADER,
    EXPANSION_ROM,
    IO_BAR,
    MEMORY_BAR,
    MSI,
    MSIX,
    TYPE0,
    TYPE1,
)
from pciback.ports.bus import BarKind
from pciback.protocol.abi import OP_OFFSET, OP_SIZE, SH_INFO_MAX_VEC, Cmd, Flag
from pciback.protocol.layout import fields_struct, offset_of
from pciback.protocol.transport import EventPort, SharedPage

DEFAULT_TIMEOUT = 10.0
# How often an op waiting for the interrupt thread looks at the page itself (`_wait_answer`).
ANSWER_LOOK_S = 0.005
H = COMMON_HEADER
COMMAND = H.COMMAND


_ERRORS = frozenset(int(e) for e in XenPciError)
# The op as pcifront fills it and reads its answer back, as struct formats over the page's
# bytes (offsets from the ABI's declarations, measured from the op's start).
_OP = "struct xen_pci_op"
_REQUEST = fields_struct(
    _OP, ("cmd", "err", "domain", "bus", "devfn", "offset", "size", "value", "info")
)
_REQUEST_AT = offset_of(_OP, "cmd")
_ANSWER = fields_struct(_OP, ("err", "value", "info"))
_ANSWER_AT = OP_OFFSET + offset_of(_OP, "err")
_ENTRY = fields_struct("struct xen_msix_entry", ("entry",))
_ENTRIES_AT = offset_of(_OP, "msix_entries") + offset_of("struct xen_msix_entry", "entry")
_ENTRY_STRIDE = offset_of(_OP, "msix_entries", 1) - offset_of(_OP, "msix_entries", 0)
# Guests address few functions, over and over: parse each once.
_parsed = functools.lru_cache(maxsize=1024)(parse_address)


def op_bytes(
    cmd: int,
    address: str,
    *,
    offset: int = 0,
    size: int = 0,
    value: int = 0,
    info: int = 0,
    entries: Sequence[int] = (),
) -> bytes:
    """The bytes of a `struct xen_pci_op` as pcifront fills it for one request."""
    domain, bus, slot, function = _parsed(address)
    if len(entries) > SH_INFO_MAX_VEC:
        raise ValueError(f"at most {SH_INFO_MAX_VEC} MSI-X entries fit the page")
    op = bytearray(OP_SIZE)
    _REQUEST.pack_into(
        op,
        _REQUEST_AT,
        cmd,
        0,  # err: the backend's to write
        domain,
        bus,
        slot << 3 | function,
        offset,
        size,
        value & 0xFFFFFFFF,
        info & 0xFFFFFFFF,
    )
    for i, entry in enumerate(entries):
        _ENTRY.pack_into(op, _ENTRIES_AT + i * _ENTRY_STRIDE, entry)
    return bytes(op)


@dataclass(frozen=True, slots=True)
class OpReply:
    err: XenPciError | int  # an int only if the backend broke the ABI
    value: int
    info: int
    vectors: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AerRequest:
    cmd: Cmd
    state: int  # pci_channel_state
    domain: int
    bus: int
    devfn: int


class FrontendClosed(PciOpError):
    """The connection is gone (guest destroyed): like a detached device, nothing is found."""

    def __init__(self) -> None:
        super().__init__(XenPciError.DEV_NOT_FOUND, "the PV PCI connection is closed")


class MultiMsiRefused(PciOpError):
    def __init__(self, err: XenPciError, info: int) -> None:
        super().__init__(err, f"multi-MSI refused; the backend would take {info}")
        self.info = info


# Answers a pci_ers_result, or None to leave the request unanswered (a hung guest).
AerHandler = Callable[[AerRequest], "int | None"]


@dataclass(frozen=True, slots=True)
class GuestBar:
    index: int  # 6 is the expansion ROM
    kind: BarKind
    size: int


@dataclass(slots=True)
class GuestDevice:
    address: str
    vendor: int
    device: int
    class_code: int
    header_type: int
    bars: list[GuestBar] = field(default_factory=list)
    capabilities: list[tuple[int, int]] = field(default_factory=list)  # (id, offset)
    ext_capabilities: list[tuple[int, int]] = field(default_factory=list)

    def capability(self, cap_id: int) -> int | None:
        return next((off for cid, off in self.capabilities if cid == cap_id), None)


class SimFrontend:
    def __init__(
        self, page: SharedPage, port: EventPort, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.page = page
        self.port = port
        self.timeout = timeout
        self.aer_requests: list[AerRequest] = []
        self._aer_handler: AerHandler | None = None
        self._op_lock = threading.Lock()
        self._answered = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # the interrupt thread, once needed
        self._started = False
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """The frontend is up: from now on an AER handler gets its interrupt thread."""
        self._started = True
        if self._aer_handler is not None:
            self._start_irq()

    def _start_irq(self) -> None:
        # Under the op lock: an op waiting on the event channel itself must not share it with
        # the new thread, which could take the ring of its answer.
        with self._op_lock:
            if self._thread is None and not self.closed:
                self._thread = threading.Thread(target=self._irq, name="pcifront-irq", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self.closed = True
        self._stop.set()
        self.port.kick_self()  # an op waiting on the event channel itself
        with self._answered:  # one waiting for the interrupt thread
            self._answered.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _irq(self) -> None:
        while not self._stop.is_set():
            self.port.wait(None)
            if self._stop.is_set() or self.port.closed:
                return
            if self.page.test_bit(Flag.PCIB_ACTIVE):
                self._answer_aer()
            with self._answered:
                self._answered.notify_all()

    # -- the op path -----------------------------------------------------------------------------
    def do_op(
        self,
        cmd: int,
        address: str,
        *,
        offset: int = 0,
        size: int = 0,
        value: int = 0,
        info: int = 0,
        entries: Sequence[int] = (),
    ) -> OpReply:
        return self._post(
            op_bytes(
                cmd, address, offset=offset, size=size, value=value, info=info, entries=entries
            ),
            len(entries),
        )

    def do_raw_op(self, op: bytes) -> OpReply:
        """Post `op`, the bytes of a struct xen_pci_op, as they are: the hostile guest's path.
        The reply carries every MSI-X slot's vector."""
        if len(op) != OP_SIZE:
            raise ValueError(f"an op is {OP_SIZE} bytes")
        return self._post(op, SH_INFO_MAX_VEC)

    def _post(self, op: bytes, vectors: int) -> OpReply:
        with self._op_lock:
            if self.closed:
                raise FrontendClosed
            page = self.page
            page.buffer[OP_OFFSET : OP_OFFSET + OP_SIZE] = op
            page.set_bit(Flag.PCIF_ACTIVE)
            self.port.notify()
            self._wait_answer()
            err, value, info = _ANSWER.unpack_from(page.buffer, _ANSWER_AT)
            answer = page.info.op
            return OpReply(
                err=XenPciError(err) if err in _ERRORS else err,
                value=value,
                info=info,
                vectors=tuple(int(answer.msix_entries[i].vector) for i in range(vectors)),
            )

    def _wait_answer(self) -> None:
        # On the interrupt thread (an AER handler's own config access, as a driver's error
        # handler makes) nobody else consumes the channel's events: it waits on them itself.
        if self._thread is None or threading.current_thread() is self._thread:
            self._poll_answer()
            return
        page = self.page
        deadline = time.monotonic() + self.timeout
        with self._answered:
            # In slices, the page looked at after each: an interrupt thread busy in an AER
            # handler passes on no event, and the answer is in the page whether or not.
            while not (self.closed or not page.test_bit(Flag.PCIF_ACTIVE)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the backend did not answer the op")
                self._answered.wait(min(left, ANSWER_LOOK_S))
        if page.test_bit(Flag.PCIF_ACTIVE):
            raise FrontendClosed

    def _poll_answer(self) -> None:
        """Sleep on the event channel until the backend clears _XEN_PCIF_active (no interrupt
        thread runs: the op lock is held, so nothing else waits on it)."""
        deadline = time.monotonic() + self.timeout
        port, page = self.port, self.page
        while page.test_bit(Flag.PCIF_ACTIVE):
            if self.closed or port.closed:
                raise FrontendClosed
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the backend did not answer the op")
            port.wait(left)

    def _checked(self, reply: OpReply) -> OpReply:
        if reply.err != XenPciError.SUCCESS:
            raise PciOpError(XenPciError(reply.err))
        return reply

    def conf_read(self, address: str, offset: int, size: int) -> int:
        return self._checked(self.do_op(Cmd.CONF_READ, address, offset=offset, size=size)).value

    def conf_write(self, address: str, offset: int, size: int, value: int) -> None:
        self._checked(self.do_op(Cmd.CONF_WRITE, address, offset=offset, size=size, value=value))

    def enable_msi(self, address: str) -> int:
        return self._checked(self.do_op(Cmd.ENABLE_MSI, address)).value

    def enable_multi_msi(self, address: str, count: int) -> int:
        """The first of `count` PIRQs. On refusal PciOpError carries `.info`, the count the
        backend would take."""
        reply = self.do_op(Cmd.ENABLE_MULTI_MSI, address, info=count)
        if reply.err != XenPciError.SUCCESS:
            raise MultiMsiRefused(XenPciError(reply.err), reply.info)
        return reply.value

    def disable_msi(self, address: str) -> int:
        return self._checked(self.do_op(Cmd.DISABLE_MSI, address)).value

    def enable_msix(self, address: str, entries: Sequence[int]) -> list[int]:
        reply = self.do_op(Cmd.ENABLE_MSIX, address, value=len(entries), entries=entries)
        return list(self._checked(reply).vectors)

    def disable_msix(self, address: str) -> int:
        return self._checked(self.do_op(Cmd.DISABLE_MSIX, address)).value

    # -- AER -------------------------------------------------------------------------------------
    def set_aer_handler(self, handler: AerHandler | None) -> None:
        self._aer_handler = handler
        if handler is None:
            self.page.clear_bit(Flag.PCIB_AERHANDLER)
        else:
            if self._started:
                self._start_irq()  # before the bit: a request must find someone to take it
            self.page.set_bit(Flag.PCIB_AERHANDLER)

    def _answer_aer(self) -> None:
        aer = self.page.info.aer_op
        try:
            cmd = Cmd(int(aer.cmd))
        except ValueError:
            return
        request = AerRequest(cmd, int(aer.err), int(aer.domain), int(aer.bus), int(aer.devfn))
        self.aer_requests.append(request)
        handler = self._aer_handler
        answer = handler(request) if handler is not None else None
        if answer is None:
            return
        aer.err = answer
        self.page.clear_bit(Flag.PCIB_ACTIVE)
        self.port.notify()

    # -- what a guest kernel does at boot ---------------------------------------------------------
    def enumerate(self, buses: Iterable[tuple[int, int]]) -> list[GuestDevice]:
        found: list[GuestDevice] = []
        for domain, bus in buses:
            for devfn in range(256):
                address = format_address(domain, bus, devfn >> 3, devfn & 7)
                try:
                    ids = self.conf_read(address, H.VENDOR_ID.offset, 4)
                except PciOpError:
                    continue
                if H.VENDOR_ID.VENDOR.get(ids) in (0xFFFF, 0):
                    continue
                found.append(self.probe(address))
        return found

    def probe(self, address: str) -> GuestDevice:
        ids = self.conf_read(address, H.VENDOR_ID.offset, 4)  # and the device ID above it
        dev = GuestDevice(
            address=address,
            vendor=H.VENDOR_ID.VENDOR.get(ids),
            device=ids >> 8 * H.VENDOR_ID.width,
            class_code=self.conf_read(address, H.REVISION_ID.offset, 4) >> 8,
            header_type=self.conf_read(address, H.HEADER_TYPE.offset, H.HEADER_TYPE.width),
        )
        dev.bars = self.size_bars(address, H.HEADER_TYPE.LAYOUT.get(dev.header_type))
        dev.capabilities = self.walk_capabilities(address)
        dev.ext_capabilities = self.walk_ext_capabilities(address)
        return dev

    def size_bars(self, address: str, header_type: int) -> list[GuestBar]:
        count = {TYPE0.header_type: 6, TYPE1.header_type: 2}.get(header_type, 0)
        command = self.conf_read(address, COMMAND.offset, COMMAND.width)
        decode = COMMAND.IO_SPACE.mask | COMMAND.MEMORY_SPACE.mask
        # No decoding while BARs hold masks.
        self.conf_write(address, COMMAND.offset, COMMAND.width, command & ~decode)
        bars: list[GuestBar] = []
        try:
            index = 0
            while index < count:
                bar, width = self._size_bar(address, index)
                bars.append(bar)
                index += width
            rom = TYPE1.ROM.offset if header_type == TYPE1.header_type else TYPE0.ROM.offset
            if header_type in (TYPE0.header_type, TYPE1.header_type):
                address_bits = EXPANSION_ROM.BAR.ADDRESS.mask
                mask = self._probe(address, rom, address_bits) & address_bits
                size = (~mask + 1) & 0xFFFFFFFF if mask else 0
                bars.append(GuestBar(6, BarKind.ROM if size else BarKind.UNUSED, size))
        finally:
            self.conf_write(address, COMMAND.offset, COMMAND.width, command)
        return bars

    def _size_bar(self, address: str, index: int) -> tuple[GuestBar, int]:
        reg = TYPE0.BAR0.offset + TYPE0.BAR0.width * index  # as in a bridge's header
        low = self._probe(address, reg, 0xFFFFFFFF)
        if low == 0:
            return GuestBar(index, BarKind.UNUSED, 0), 1
        if low & IO_BAR.BAR.IO_SPACE.mask:
            mask = low & IO_BAR.BAR.ADDRESS.mask
            return GuestBar(index, BarKind.IO, (~mask + 1) & 0xFFFF), 1
        memory = MEMORY_BAR.LOWER
        if memory.TYPE.get(low) == MEMORY_BAR.TYPE_64 and index < 5:
            high = self._probe(address, reg + TYPE0.BAR0.width, 0xFFFFFFFF)
            mask = (high << 32) | (low & memory.ADDRESS.mask)
            return GuestBar(index, BarKind.MEM64, (~mask + 1) & ((1 << 64) - 1)), 2
        mask = low & memory.ADDRESS.mask
        return GuestBar(index, BarKind.MEM32, (~mask + 1) & 0xFFFFFFFF), 1

    def _probe(self, address: str, reg: int, pattern: int) -> int:
        original = self.conf_read(address, reg, 4)
        self.conf_write(address, reg, 4, pattern)
        answer = self.conf_read(address, reg, 4)
        self.conf_write(address, reg, 4, original)
        return answer

    # The chains through the guest's ops, by the engine's bounded walk (a looping chain must not
    # hang the guest): (capability ID, offset) each.
    def walk_capabilities(self, address: str) -> list[tuple[int, int]]:
        status = H.STATUS
        if not self.conf_read(address, status.offset, status.width) & status.CAPABILITIES_LIST.mask:
            return []
        read = functools.partial(self.conf_read, address)
        return [(cap.ident, cap.offset) for cap in walk_standard(read, STD_END)]

    def walk_ext_capabilities(self, address: str) -> list[tuple[int, int]]:
        try:
            found = walk_extended(functools.partial(self.conf_read, address))
        except PciOpError:  # a function without extended space refuses the first header's read
            return []
        return [(cap.ident, cap.offset) for cap in found]

    def enable_interrupts(self, dev: GuestDevice, vectors: int = 4) -> list[int]:
        """What a driver does: memory decoding and bus mastering on, then MSI-X if the device
        has it, else MSI. Returns the PIRQs (empty when it has neither)."""
        command = self.conf_read(dev.address, COMMAND.offset, COMMAND.width)
        on = COMMAND.MEMORY_SPACE.mask | COMMAND.BUS_MASTER.mask
        self.conf_write(dev.address, COMMAND.offset, COMMAND.width, command | on)
        msix = dev.capability(MSIX.id)
        if msix is not None:
            control = self.conf_read(dev.address, msix + MSIX.CONTROL.offset, MSIX.CONTROL.width)
            table = MSIX.CONTROL.TABLE_SIZE.get(control) + 1
            return self.enable_msix(dev.address, list(range(min(table, vectors))))
        if dev.capability(MSI.id) is not None:
            return [self.enable_msi(dev.address)]
        return []
