"""The replay as text: what was replayed under which policy, then every op that differs."""

from __future__ import annotations

from collections.abc import Sequence

from pciback.errors import XenPciError
from pciback.protocol.abi import Cmd
from pciback.sim.replay import Difference, PolicyUnder, Replay, Served, Write
from pciback.trace.format import Trace, TraceOp
from pciback.trace.identity import SHORT

_ERR_NAMES = {int(e): e.name.lower() for e in XenPciError}


def render(
    name: str, dump: str, trace: Trace, result: Replay, policies: Sequence[PolicyUnder]
) -> str:
    header, info = trace.header, result.device
    ended = trace.end.reason if trace.end else "without an end line (cut short)"
    lines = [
        f"trace {name}: domain {header.domid}, {len(trace.ops)} ops, ended {ended}; "
        f"recorded under policy {header.policy[:SHORT]}"
    ]
    if not header.from_connect:
        lines.append(
            "note: recorded from a guest already connected: answers that depend on what it "
            "wrote before may differ"
        )
    flags = ", permissive" if info.permissive else ""
    flags += ", interrupt control" if info.interrupt_control else ""
    lines.append(
        f"device {info.device} (guest {info.guest}{flags}) from {dump}: "
        f"{len(result.ops)} config ops replayed"
    )
    if result.elsewhere:
        lines.append(f"{result.elsewhere} ops of other devices or of none not replayed")
    if result.interrupts:
        first = result.interrupts[0].seq
        lines.append(
            f"{len(result.interrupts)} interrupt ops not replayed (a trace keeps none of their "
            f"data): answers from op #{first} on may differ for that"
        )
    for letter, policy in zip(_letters(policies), policies, strict=True):
        same = " (the recorded one)" if policy.identity == header.policy else ""
        lines.append(f"policy {letter}: {policy.name} {policy.identity[:SHORT]}{same}")
    found = result.differences()
    for diff in found:
        lines += _difference(diff, policies)
    lines.append(_summary(found, result, policies))
    return "\n".join(lines) + "\n"


def _letters(policies: Sequence[PolicyUnder]) -> list[str]:
    return [chr(ord("A") + i) for i in range(len(policies))]


def _difference(diff: Difference, policies: Sequence[PolicyUnder]) -> list[str]:
    op = diff.op
    size = op.size or 0
    lines = [f"#{op.seq} {_describe(op)}", f"  recorded  {_answer(op.err, op.value or 0, size)}"]
    for letter, served, differs in zip(
        _letters(policies), diff.served, diff.answer_differs, strict=True
    ):
        mark = "*" if differs else " "
        lines.append(
            f"  {letter}       {mark} {_answer(served.err, served.value, size)}"
            f"  writes {_writes(served)}"
        )
    return lines


def _describe(op: TraceOp) -> str:
    text = f"{Cmd(op.cmd).name.lower()} {op.offset or 0:#05x}/{op.size}"
    if op.written is not None:
        text += f" <- {_hex(op.written, op.size or 0)}"
    return text


def _answer(err: int, value: int, size: int) -> str:
    name = _ERR_NAMES.get(err, str(err))
    return f"{name:<14} {_hex(value, size)}"


def _hex(value: int, size: int) -> str:
    digits = 2 * size if size in (1, 2, 4) else 8
    return f"0x{value:0{digits}x}"


def _writes(served: Served) -> str:
    return ", ".join(_write(w) for w in served.writes) or "none"


def _write(write: Write) -> str:
    offset, size, value = write
    return f"{offset:#05x}/{size}={_hex(value, size)}"


def _summary(found: list[Difference], result: Replay, policies: Sequence[PolicyUnder]) -> str:
    if not found:
        return f"no difference in {len(result.ops)} ops"
    parts = [
        f"{letter} answers {sum(d.answer_differs[i] for d in found)} differently"
        for i, letter in enumerate(_letters(policies))
    ]
    if len(policies) > 1:
        parts.append(f"physical writes differ in {sum(d.writes_differ for d in found)}")
    return f"{len(found)} of {len(result.ops)} ops differ: " + "; ".join(parts)
