"""What a recording costs the op path, and that nothing of it is left once it ends.

A connection's handler is timed on one config read (the op as the service thread hands it
over, without the shared page and the wake-ups around it): the plain handler and the wrapping
one the daemon puts in its place while the domain is recorded, in alternating rounds so that
the load of the machine weighs on both alike. After the recording stops, the connection's
handler is the plain one again (the same object): a read costs what it cost before. It prints
the ratio measured in this run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from required import fixture_or_exit

from pciback.control.hide import parse_address
from pciback.protocol.abi import Cmd
from pciback.protocol.ops import OpRequest, OpResult
from pciback.sim import SimHost

OPS = 10_000
ROUNDS = 10
DEVICE = "0000:03:00.0"


def ns_per_op(handler: Callable[[OpRequest], OpResult], req: OpRequest) -> float:
    start = time.perf_counter_ns()
    for _ in range(OPS):
        handler(req)
    return (time.perf_counter_ns() - start) / OPS


def main() -> None:
    dump = fixture_or_exit("virtio-net-1af4-1041.bin")
    with SimHost() as host:
        host.add_device(DEVICE, dump)
        guest = host.attach(1, [DEVICE])
        domain, bus, slot, function = parse_address(guest.devices[0])
        req = OpRequest(Cmd.CONF_READ, domain, bus, slot << 3 | function, 0x04, 2, 0, 0, b"")
        connection = guest.backend
        plain = connection.handler
        started = host.daemon.handle({"op": "trace_start", "domid": 1, "max_ops": 200_000})
        which = {"domid": 1, "id": started["id"]}
        traced = connection.handler
        best_plain = best_traced = float("inf")
        for _ in range(ROUNDS):
            best_plain = min(best_plain, ns_per_op(plain, req))
            best_traced = min(best_traced, ns_per_op(traced, req))
            # Taken as the recorder takes them, so the daemon holds no more than a batch.
            while host.daemon.handle({"op": "trace_read", **which})["ops"]:
                pass
        host.daemon.handle({"op": "trace_stop", **which})
        restored = connection.handler is plain
    print(f"config read through the handler, best of {ROUNDS} rounds of {OPS}:")
    print(f"  plain      {best_plain:7.0f} ns")
    print(f"  recording  {best_traced:7.0f} ns  ratio {best_traced / best_plain:4.2f}")
    print(f"  after the recording stopped, the plain handler is back: {restored}")


if __name__ == "__main__":
    main()
