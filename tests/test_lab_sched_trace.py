"""lab/sched_trace.py on a trace of Xen's scheduler written out by hand in xenalyze's dump
format (two pCPUs, dom0's two vCPUs, one guest), whose figures are worked out below; and the
line lab/bench_report.py prints for a round that has one. The lab itself needs root and
minutes of emulation; its report must not break unseen between runs."""

from __future__ import annotations

import gzip
import importlib
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

LAB = Path(__file__).parents[1] / "lab"
RUN = Path(__file__).parent / "fixtures" / "lab" / "bench"

# pCPU 0 runs dom0's vCPU 0 throughout. The guest, on pCPU 1, is kept running once, preempted
# at 0.2 ms by dom0's vCPU 1 (dom0 then holds both pCPUs) and back at 2.2 ms: a wait of 2 ms
# over 1 ms, with dom0 on both pCPUs all along. It blocks at 3.0 ms (pCPU 1 goes idle), is
# woken at 3.5 ms and runs again at 3.6 ms (a wait of 0.1 ms), and is kept running once more.
TRACE = """\
Using VMX hardware-assisted virtualization.
                x. d32768v0 runstate_change d0v0 running->blocked
   0.000000000 x- d32767v0 runstate_change d0v0 runnable->running
   0.000000000 -x d32767v1 runstate_change d1v0 runnable->running
   0.000100000 -x d1v0 runstate_continue d1v0 running->running
   0.000200000 -x d1v0 runstate_change d1v0 running->runnable
   0.000200000 -x d?v? runstate_change d0v1 runnable->running
   0.002200000 -x d0v1 runstate_change d0v1 running->blocked
   0.002200000 -x d?v? runstate_change d1v0 runnable->running
   0.003000000 -x d1v0 runstate_change d1v0 running->blocked
   0.003000000 -x d?v? runstate_change d32767v1 runnable->running
   0.003500000 x- d0v0 runstate_change d1v0 blocked->runnable
   0.003600000 -x d32767v1 runstate_change d1v0 runnable->running
   0.004000000 -x d1v0 runstate_continue d1v0 running->running
"""


@pytest.fixture(scope="module")
def lab_modules() -> tuple[ModuleType, ModuleType]:
    sys.path.insert(0, str(LAB))  # the lab's scripts import each other as top-level modules
    try:
        return importlib.import_module("sched_trace"), importlib.import_module("bench_report")
    finally:
        sys.path.remove(str(LAB))


def test_the_guests_waits_and_who_held_the_pcpus(
    lab_modules: tuple[ModuleType, ModuleType],
) -> None:
    sched_trace, _ = lab_modules
    result = sched_trace.figures(TRACE.splitlines())
    assert result.guest == "d1v0"
    assert result.span_s == pytest.approx(0.004)
    assert result.waits == 2
    assert result.waited_s == pytest.approx(0.0021)
    assert (result.long_waits, result.long_waited_s) == (1, pytest.approx(0.002))
    # Both pCPUs, 2 ms each, held by dom0 during the long wait; nothing else counted.
    assert dict(result.long_wait_holders) == {"dom0": pytest.approx(0.004)}
    assert (result.blocked, result.kept) == (1, 2)
    assert result.dom0_on_all_s == pytest.approx(0.002)
    assert sched_trace.summary(result) == (
        "over 0.00 s the guest's vCPU waited for a pCPU 2 times, 2 ms in all (1 over 1 ms:"
        " 2 ms; the pCPUs meanwhile: dom0 100%); it blocked 1 times and was kept running 2"
        " times; dom0 held every pCPU 2 ms"
    )


def test_a_wait_beside_an_idle_pcpu_is_shown_as_such(
    lab_modules: tuple[ModuleType, ModuleType],
) -> None:
    sched_trace, _ = lab_modules
    # The same long wait, but dom0's vCPU 0 leaves pCPU 0 to the idle vCPU half-way (1.2 ms).
    trace = TRACE.replace(
        "   0.002200000 -x d0v1 runstate_change d0v1 running->blocked\n",
        "   0.001200000 x- d0v0 runstate_change d0v0 running->blocked\n"
        "   0.001200000 x- d?v? runstate_change d32767v0 runnable->running\n"
        "   0.002200000 -x d0v1 runstate_change d0v1 running->blocked\n",
    )
    result = sched_trace.figures(trace.splitlines())
    assert dict(result.long_wait_holders) == {
        "dom0": pytest.approx(0.003),
        "idle": pytest.approx(0.001),
    }
    assert result.dom0_on_all_s == pytest.approx(0.001)
    assert "the pCPUs meanwhile: dom0 75%, idle 25%" in sched_trace.summary(result)


def test_a_trace_without_a_guest_says_so(lab_modules: tuple[ModuleType, ModuleType]) -> None:
    sched_trace, _ = lab_modules
    dom0_only = [line for line in TRACE.splitlines() if "d1v0" not in line]
    assert sched_trace.summary(sched_trace.figures(dom0_only)) == "no guest vCPU in the trace"


def test_the_bench_report_shows_a_rounds_trace(
    lab_modules: tuple[ModuleType, ModuleType],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sched_trace, bench_report = lab_modules
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    dump = run / "bench" / "results" / "bench" / "2-kernel" / sched_trace.SCHED_DUMP
    with gzip.open(dump, "wt") as out:
        out.write(TRACE)
    assert bench_report.report(run) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "Xen's scheduler" in line]
    assert lines == [
        "  Xen's scheduler in the kernel's lspci loop (LAB_TRACE): "
        + sched_trace.summary(sched_trace.figures(TRACE.splitlines()))
    ]
