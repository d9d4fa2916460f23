"""A simulated guest's kernel as a process of its own, as a real guest is to dom0: forked, it
works on the guest's shared page (shared memory) and event channel (eventfds) with nothing but
system calls, so that the benchmarking interpreter runs only the backend. A guest thread in the
same interpreter would compete with the service threads for the GIL and measure the simulation,
not the backend."""

from __future__ import annotations

import array
import os
import select
import time
from contextlib import suppress

from pciback.protocol.abi import FLAGS_OFFSET, FLAGS_SIZE, OP_OFFSET, OP_SIZE, Cmd
from pciback.protocol.transport import OP_PENDING
from pciback.sim import SimGuest
from pciback.sim.frontend import op_bytes

_ONE = (1).to_bytes(8, "little")


def guest_loop(
    guest: SimGuest, address: str, count: int | None, pause: float
) -> array.array[float]:
    """What the forked guest kernel does: `count` conf_reads (None: until killed), each posted
    on the page, notified, and waited for on the guest's event channel; their latencies (µs)."""
    buffer = guest.page.buffer
    flags = memoryview(buffer)[FLAGS_OFFSET : FLAGS_OFFSET + FLAGS_SIZE].cast("I")
    own, backend = guest.channel.frontend.fileno(), guest.channel.backend.fileno()
    op = op_bytes(Cmd.CONF_READ, address, offset=0, size=4)
    poller = select.poll()
    poller.register(own, select.POLLIN)
    latencies = array.array("d")
    done = 0
    while count is None or done < count:
        start = time.perf_counter_ns()
        buffer[OP_OFFSET : OP_OFFSET + OP_SIZE] = op
        flags[0] |= OP_PENDING  # the backend clears it only once it is set: no race on it
        os.write(backend, _ONE)
        while flags[0] & OP_PENDING:
            poller.poll()
            with suppress(BlockingIOError):  # the backend's ring taken by an earlier read
                os.read(own, 8)
        latencies.append((time.perf_counter_ns() - start) / 1000)
        done += 1
        if pause:
            time.sleep(pause)
    err = guest.page.info.op.err
    if err:  # a refused op is a different, shorter path: its latencies would flatter the backend
        raise RuntimeError(f"the backend answered the guest's conf_read of {address} with {err}")
    return latencies


def fork_guest(guest: SimGuest, address: str, count: int | None, pause: float) -> tuple[int, int]:
    """(pid, the read end of a pipe that gets the latencies when the guest is done)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the guest's kernel: system calls only, nothing of the parent's threads
        code = 1
        try:
            os.close(read_end)
            data = guest_loop(guest, address, count, pause).tobytes()
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def collect(pid: int, read_end: int) -> array.array[float]:
    with os.fdopen(read_end, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("a forked guest process failed")
    latencies = array.array("d")
    latencies.frombytes(data)
    return latencies
