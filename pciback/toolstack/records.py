"""The attachments the toolstack role made, one per device, kept in the state database.

A record is written (and committed) before anything is granted to the guest, names everything
that will be granted, and goes only once all of it is revoked. Its phase says how far the last
operation on it went: a daemon that died in the middle finds at its next start what to finish
or undo (pciback.toolstack.attach.Toolstack.reconcile).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from enum import Enum

from pciback.control.hide import HideSyntaxError, parse_device
from pciback.control.state import StateStore
from pciback.toolstack.grants import Grants, GrantsError

log = logging.getLogger("pciback.toolstack")

MAX_DEVID = 15


class Phase(Enum):
    ATTACHING = "attaching"  # recorded; grants and xenstore under way
    ATTACHED = "attached"  # granted and written: the guest has (or will get) the device
    DETACHING = "detaching"  # hot unplug or revocation under way


@dataclass(frozen=True, slots=True)
class Attachment:
    domid: int
    address: str
    grants: Grants
    phase: Phase = Phase.ATTACHING
    devid: int = 0
    vdevfn: int | None = None
    permissive: bool = False
    interrupt_control: bool = False
    # The pool's flags this attachment turned on, which its detach turns off again.
    set_flags: tuple[str, ...] = field(default=())

    def at(self, phase: Phase) -> Attachment:
        return replace(self, phase=phase)

    def to_json(self) -> str:
        return json.dumps(
            {
                "phase": self.phase.value,
                "devid": self.devid,
                "vdevfn": self.vdevfn,
                "permissive": self.permissive,
                "interrupt_control": self.interrupt_control,
                "set_flags": list(self.set_flags),
                "grants": self.grants.to_json(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_record(cls, address: str, domid: int, text: str) -> Attachment:
        """A row read back from the database: every field checked, ValueError otherwise."""
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("not an object")
        try:
            device = parse_device(address)
            phase = Phase(data.get("phase"))
        except (HideSyntaxError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        devid, vdevfn = data.get("devid"), data.get("vdevfn")
        flags = data.get("set_flags")
        if not (isinstance(devid, int) and 0 <= devid <= MAX_DEVID):
            raise ValueError(f"devid {devid!r:.20}")
        if vdevfn is not None and not (isinstance(vdevfn, int) and 0 < vdevfn <= 0xFF):
            raise ValueError(f"vdevfn {vdevfn!r:.20}")
        if not (isinstance(flags, list) and set(flags) <= {"permissive", "interrupt_control"}):
            raise ValueError(f"set_flags {flags!r:.40}")
        try:
            grants = Grants.from_json(data.get("grants"))
        except GrantsError as exc:
            raise ValueError(str(exc)) from None
        return cls(
            domid,
            device,
            grants,
            phase,
            devid,
            vdevfn,
            data.get("permissive") is True,
            data.get("interrupt_control") is True,
            tuple(flags),
        )


class AttachmentRecords:
    """The records, cached here and written through to the state database."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self._records: dict[str, Attachment] = {}
        for address, (domid, text) in state.attachments().items():
            try:
                self._records[address] = Attachment.from_record(address, domid, text)
            except ValueError as exc:
                # Nothing can be undone from a record that cannot be read; say so once.
                log.error("state database: unusable attachment of %.64r dropped: %s", address, exc)
                state.forget_attachment(address)

    def put(self, record: Attachment) -> None:
        self.state.save_attachment(record.address, record.domid, record.to_json())
        self._records[record.address] = record

    def drop(self, address: str) -> None:
        if self._records.pop(address, None) is not None:
            self.state.forget_attachment(address)

    def get(self, address: str) -> Attachment | None:
        return self._records.get(address)

    def all(self) -> list[Attachment]:
        return sorted(self._records.values(), key=lambda r: (r.domid, r.address))

    def of_domain(self, domid: int) -> list[Attachment]:
        return [r for r in self.all() if r.domid == domid]
