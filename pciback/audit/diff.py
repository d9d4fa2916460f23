"""Two audits of the same device under two policies: every bit whose guest access changed."""

from __future__ import annotations

from dataclasses import dataclass

from pciback.audit.model import Audit, FieldAudit, Row


@dataclass(frozen=True, slots=True)
class BitChange:
    offset: int  # of the byte holding the bit
    bit: int  # 0..7 within that byte
    old: str  # "register.field normal/permissive hook"
    new: str

    @property
    def where(self) -> str:
        return f"{self.offset:#05x}.{self.bit}"


def _bit_key(row: Row, fld: FieldAudit) -> str:
    """What a bit's guest access is; the register and field name it for the reader."""
    hook = f" {fld.hook}" if "on_write" in fld.hook else ""
    return f"{fld.normal}/{fld.permissive}{hook}"


def _per_bit(audit: Audit) -> dict[tuple[int, int], tuple[str, str]]:
    bits: dict[tuple[int, int], tuple[str, str]] = {}
    for row in audit.rows:
        for byte in range(row.width):
            for bit in range(8):
                fld = row.field_at(8 * byte + bit)
                bits[(row.offset + byte, bit)] = (
                    _bit_key(row, fld),
                    f"{row.register}.{fld.name}[{8 * byte + bit}]",
                )
    return bits


def diff(old: Audit, new: Audit) -> list[BitChange]:
    before, after = _per_bit(old), _per_bit(new)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        was = before.get(key, ("absent", ""))
        now = after.get(key, ("absent", ""))
        if was[0] != now[0]:
            changes.append(
                BitChange(
                    key[0], key[1], f"{was[1]} {was[0]}".strip(), f"{now[1]} {now[0]}".strip()
                )
            )
    return changes


def render_diff(changes: list[BitChange], old_name: str, new_name: str) -> str:
    lines = [
        f"bits whose guest access (normal/permissive, write hook) changed: {old_name} -> {new_name}"
    ]
    if not changes:
        lines.append("none")
    lines.extend(f"{c.where}  {c.old}  ->  {c.new}" for c in changes)
    return "\n".join(lines) + "\n"
