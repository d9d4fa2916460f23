"""A guest posting garbage: every op is answered with an ABI error code, the backend keeps
serving, and interrupts mapped match exactly what the backend believes is enabled."""

from __future__ import annotations

import random

from pciback.errors import XenPciError
from pciback.generated.names import COMMON_HEADER
from pciback.protocol.abi import SH_INFO_MAX_VEC, Cmd, ffi
from pciback.sim import SimHost

from .simconfig import nic_config

VENDOR_ID = COMMON_HEADER.VENDOR_ID


ADDR = "0000:03:00.0"
ERRORS = {int(e) for e in XenPciError}


def random_op(rng: random.Random) -> bytes:
    """An op with a plausible command and device most of the time and noise everywhere else."""
    op = ffi.new("struct xen_pci_op *")
    raw = ffi.buffer(op)
    raw[:] = rng.randbytes(len(raw))
    if rng.random() < 0.8:
        op.cmd = rng.choice(list(Cmd))
    if rng.random() < 0.8:
        op.domain, op.bus, op.devfn = 0, 3, 0
    if rng.random() < 0.5:
        op.offset, op.size = rng.randrange(-8, 0x110), rng.choice([1, 2, 4, 3, 0, 8])
    if rng.random() < 0.6:
        entries = rng.sample(range(10), rng.randrange(0, 5))
        op.value = len(entries) if rng.random() < 0.9 else SH_INFO_MAX_VEC + 1
        for i, entry in enumerate(entries):
            op.msix_entries[i].entry = entry
    if rng.random() < 0.5:
        op.info = rng.choice([0, 1, 2, 3, 4, 8, 16, 1 << 31])
    return bytes(raw)


def test_garbage_ops_get_abi_answers_and_leak_nothing(host: SimHost) -> None:
    host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    exported = guest.exported(ADDR)
    rng = random.Random(157)
    for _ in range(400):
        reply = guest.frontend.do_raw_op(random_op(rng))
        assert int(reply.err) in ERRORS
        irq = exported.irq
        assert not (irq.msi_enabled and irq.msix_enabled)
        believed = set(irq.msi_pirqs) | {p for _, p in irq.msix_pirqs}
        assert set(host.hypervisor.pirqs_of(1)) == believed
    assert guest.conf_read(ADDR, VENDOR_ID.offset, VENDOR_ID.width) == 0x8086  # still serving
    host.destroy_guest(1)
    assert host.hypervisor.mapped == {}
