"""The short way for config reads and writes, which are nearly every op a guest sends (its boot
scan, lspci, its drivers): one function from the op in the page to its answer there.

The general way (pciback.protocol.dispatch behind the connection's serving gate) passes an op
through eight Python frames: the snapshot tuple, the gate, the data path's wrapper, dispatch,
the lookup, the command's handler, the result tuple and its write-back. Natively that is a few
µs; in the lab's dom0 under emulation every frame and line costs tens of µs, and they made up
most of the daemon's time per op (lab run 48: 1.1 ms per op against 0.48 ms for the guest's
whole round trip through Linux's backend). Here the same op is one frame that does the same
checks in the same order and gives the same answers, refusals included: an address that names
no device (most of a guest's boot scan, which probes every slot of its bus), whatever the
command, and an access dispatch refuses. It leaves the rest untouched to the general way,
which takes its own snapshot: the interrupt commands and unknown ones, and every op while a
change holds the gate (the general way waits for it). An op that raises is answered as
dispatch answers it (`dispatch.failed`).

The op's header is read out of the page once, by one unpack, and every decision is made on
those values: the MSI-X entries, which a config op does not use, are not copied.

tests/protocol/test_config_ops.py holds the two ways to the same answers, page bytes and device
effects, over every access of a real device.
"""

from __future__ import annotations

from collections.abc import Callable

from pciback.daemon.serving_gate import ServingGate
from pciback.errors import XenPciError
from pciback.protocol.abi import Cmd
from pciback.protocol.dispatch import ACCESS_MASK, DeviceLookup, ExportedDevice, failed
from pciback.protocol.ops import ERR_WORD, HEADER_IN_PAGE, VALUE_WORD, OpRequest, unpack_header
from pciback.protocol.transport import SharedPage

# Plain ints: an IntEnum compares through a Python-level method.
_CONF_READ = int(Cmd.CONF_READ)
_CONF_WRITE = int(Cmd.CONF_WRITE)
# As the page's unsigned words hold them.
_SUCCESS = XenPciError.SUCCESS & 0xFFFFFFFF
_DEV_NOT_FOUND = XenPciError.DEV_NOT_FOUND & 0xFFFFFFFF
_INVALID_OFFSET = XenPciError.INVALID_OFFSET & 0xFFFFFFFF

#: Answers the op on the page if it is a config op it can serve, and says whether it did.
ConfigOps = Callable[[SharedPage], bool]


def config_ops(
    gate: ServingGate,
    by_devfn: dict[tuple[int, int, int], ExportedDevice],
    devices: DeviceLookup,
    written: set[str],
) -> ConfigOps:
    """The short way for one connection: `by_devfn` its devices by guest address (changed only
    inside `gate`), `devices` the same as a lookup (for a failed op's log line), `written` the
    set that a successful write adds its physical device to (the data path's dirty views)."""

    def serve(page: SharedPage) -> bool:
        cmd, domain, bus, devfn, offset, size, value, info = unpack_header(
            page.buffer, HEADER_IN_PAGE
        )
        err = _SUCCESS
        gate.op = True  # as ServingGate.serve: no change may start before it drops again
        try:
            if gate.held:
                return False
            dev = by_devfn.get((domain, bus, devfn))
            if dev is None:  # whatever the command (dispatch looks the device up first)
                err = _DEV_NOT_FOUND  # and the value as posted: a guest's scan of empty slots
            elif cmd > _CONF_WRITE:
                return False
            else:
                mask = ACCESS_MASK.get(size)
                if mask is None or offset < 0 or offset % size or offset + size > dev.config_size:
                    err, value = _INVALID_OFFSET, 0
                elif cmd == _CONF_READ:
                    value = dev.view.read(offset, size) & mask
                else:
                    dev.view.write(offset, size, value & mask)
                    written.add(dev.physical.address)
        except Exception as error:
            request = OpRequest(cmd, domain, bus, devfn, offset, size, value, info, b"")
            failed(request, devices, error).write_back(page)
            return True
        finally:
            gate.op = False
        words = page.op_words
        words[ERR_WORD] = err
        words[VALUE_WORD] = value
        return True

    return serve


__all__ = ["ConfigOps", "config_ops"]
