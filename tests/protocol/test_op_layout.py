"""The op path's `struct` formats against the cffi declarations they are derived from, and its
two rules: each op is read from the page exactly once, and only the answer is written back."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from pciback.errors import XenPciError
from pciback.protocol.abi import OP_OFFSET, PAGE_SIZE, SH_INFO_MAX_VEC, Cmd, Flag, ffi
from pciback.protocol.connection import BackendConnection
from pciback.protocol.layout import fields_struct, integer_code, offset_of
from pciback.protocol.ops import OpRequest, OpResult, snapshot
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim.hypervisor import SimHypervisor

from .simconfig import export, nic, post_op

HEADER = ("cmd", "domain", "bus", "devfn", "offset", "size", "value", "info")


def random_op(rng: random.Random) -> Any:
    """A cffi op with every field, signed ones included, drawn at random across its range."""
    op = ffi.new("struct xen_pci_op *")
    ffi.buffer(op)[:] = rng.randbytes(ffi.sizeof(op[0]))
    return op


def page_with(op: Any) -> SharedPage:
    page = SharedPage()
    page.buffer[OP_OFFSET : OP_OFFSET + ffi.sizeof(op[0])] = ffi.buffer(op)[:]
    return page


def test_integer_codes_follow_cffi_types() -> None:
    codes = {name: integer_code(ffi.typeof(name)) for name in ("uint32_t", "int32_t", "uint16_t")}
    assert codes == {"uint32_t": "I", "int32_t": "i", "uint16_t": "H"}
    with pytest.raises(TypeError, match="not an integer"):
        integer_code(ffi.typeof("struct xen_msix_entry"))


def test_a_format_starts_at_its_first_field_and_keeps_address_order() -> None:
    assert fields_struct("struct xen_pci_op", ("err",)).size == 4
    assert fields_struct("struct xen_pci_op", ("bus", "value")).format == "=I12xI"
    with pytest.raises(ValueError, match="not after"):
        fields_struct("struct xen_pci_op", ("value", "bus"))


def test_snapshot_fields_match_cffi_reads_of_random_ops() -> None:
    rng = random.Random(155)
    for _ in range(200):
        op = random_op(rng)
        req = snapshot(page_with(op))
        assert {name: getattr(req, name) for name in HEADER} == {
            name: int(getattr(op, name)) for name in HEADER
        }
        count = rng.randrange(0, SH_INFO_MAX_VEC + 2)
        assert req.msix_entries(count) == tuple(
            (int(op.msix_entries[i].entry), int(op.msix_entries[i].vector))
            for i in range(min(count, SH_INFO_MAX_VEC))
        )
    assert req.msix_entries(-1) == ()


def test_write_back_changes_exactly_what_cffi_would_and_nothing_else() -> None:
    rng = random.Random(128)
    for _ in range(100):
        noise = rng.randbytes(PAGE_SIZE)
        ours, expected = SharedPage(bytearray(noise)), SharedPage(bytearray(noise))
        vectors = tuple(rng.randrange(1 << 20) for _ in range(rng.randrange(0, 6)))
        info = rng.choice([None, rng.randrange(1 << 34)])
        result = OpResult(rng.choice(list(XenPciError)), rng.randrange(1 << 36), info, vectors)
        result.write_back(ours)
        op = expected.info.op  # the same answer, field by field through cffi
        op.err = int(result.err)
        op.value = result.value & 0xFFFFFFFF
        if info is not None:
            op.info = info & 0xFFFFFFFF
        for i, vector in enumerate(vectors):
            op.msix_entries[i].vector = vector & 0xFFFF
        assert ours.buffer == expected.buffer


def test_every_msix_slot_can_be_answered_and_no_more() -> None:
    page = SharedPage(bytearray(PAGE_SIZE))
    OpResult(XenPciError.SUCCESS, 0, vectors=tuple(range(1, SH_INFO_MAX_VEC + 5))).write_back(page)
    entries = page.info.op.msix_entries
    assert [int(entries[i].vector) for i in range(SH_INFO_MAX_VEC)] == list(
        range(1, SH_INFO_MAX_VEC + 1)
    )
    after = offset_of("struct xen_pci_sharedinfo", "aer_op")
    assert page.buffer[after:] == bytes(PAGE_SIZE - after)


class Tripwire:
    """Stands for `page.info` while an op is served: the op path must not read the page any
    other way than its one copy."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the op path read page.info.{name}")


class RewrittenAfterCopy(SharedPage):
    """A page whose guest rewrites the whole op the instant the backend has copied it."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0
        self._copy = self.copy_op
        self.copy_op = self._copy_and_rewrite

    def _copy_and_rewrite(self) -> bytes:
        private = self._copy()
        self.copies += 1
        self.buffer[OP_OFFSET : OP_OFFSET + len(private)] = bytes(
            b ^ 0xFF for b in private
        )  # every bit of every field flipped, the MSI-X entries too
        return private


@pytest.fixture
def channel() -> Iterator[EventChannel]:
    channel = EventChannel()
    yield channel
    channel.close()


def test_an_op_is_copied_once_and_served_as_copied(channel: EventChannel) -> None:
    device = nic()
    devices, view = export(device, SimHypervisor())
    page = RewrittenAfterCopy()
    conn = BackendConnection(1, page, channel.backend, devices)
    post_op(page, cmd=Cmd.CONF_READ, bus=3, offset=0x2C, size=2)
    cffi_view, page.info = page.info, Tripwire()
    assert conn.process_pending() == 1
    assert page.copies == 1
    assert view.reads == [(0x2C, 2)]  # the access as posted, not as rewritten
    assert (int(cffi_view.op.err), int(cffi_view.op.value)) == (0, 0x8086)
    assert not page.test_bit(Flag.PCIF_ACTIVE)


def test_msix_entries_come_from_the_copy_even_when_read_late(channel: EventChannel) -> None:
    seen: list[tuple[tuple[int, int], ...]] = []

    def handler(req: OpRequest) -> OpResult:
        seen.append(req.msix_entries(req.value))  # long after the guest rewrote the page
        return OpResult(XenPciError.SUCCESS, 0, vectors=(70, 71))

    page = RewrittenAfterCopy()
    conn = BackendConnection(1, page, channel.backend, devices=None, handler=handler)  # type: ignore[arg-type]
    post_op(page, cmd=Cmd.ENABLE_MSIX, bus=3, value=2)
    for i, entry in enumerate((5, 6)):
        page.info.op.msix_entries[i].entry = entry
    assert conn.process_pending() == 1
    assert page.copies == 1
    assert seen == [((5, 0), (6, 0))]
    entries = page.info.op.msix_entries
    assert [int(entries[i].vector) for i in range(3)] == [70, 71, 0xFFFF]  # slot 2: the guest's
