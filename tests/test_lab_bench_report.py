"""lab/bench_report.py on the guest output of a real one-boot lab benchmark (bench3 of
2026-12-04, kept in tests/fixtures/lab/bench: the round marks of its serial log, each round's
scan and loops, the daemon's counters): the rounds it counts, the ratios it prints, and its
exit status when a round failed or a guest's pcifront timed out. The lab itself needs root and
minutes of emulation; its report must not break unseen between runs."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

LAB = Path(__file__).parents[1] / "lab"
RUN = Path(__file__).parent / "fixtures" / "lab" / "bench"
ROUNDS = RUN / "bench" / "results" / "bench"


@pytest.fixture(scope="module")
def bench_report() -> ModuleType:
    sys.path.insert(0, str(LAB))  # the lab's scripts import each other as top-level modules
    try:
        return importlib.import_module("bench_report")
    finally:
        sys.path.remove(str(LAB))


def lspci_median(round_dir: Path) -> float:
    """The median lspci time of a round from the guest's kmsg marks, read here apart from the
    lab's own parser."""
    stamps: dict[str, dict[str, float]] = {}
    for line in (round_dir / "bench.txt").read_text().splitlines():
        mark = re.search(r"\[\s*([\d.]+)\] LAB-LSPCI (\d+) (start|end)", line)
        if mark:
            stamps.setdefault(mark[2], {})[mark[3]] = float(mark[1])
    return statistics.median(s["end"] - s["start"] for s in stamps.values())


def test_every_round_and_the_lspci_ratios_of_a_real_run(
    bench_report: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_report.report(RUN) == 0
    out = capsys.readouterr().out
    assert "3 rounds of both backends in one boot" in out
    ratios = [
        lspci_median(ROUNDS / f"{n}-daemon") / lspci_median(ROUNDS / f"{n}-kernel")
        for n in (1, 2, 3)
    ]
    printed = re.findall(r"lspci -xxxx -vvv \(median\) .*-> ([\d.]+)x", out)
    assert printed == [f"{ratio:.2f}" for ratio in ratios]
    assert (
        f"min {min(ratios):.2f}x, median {statistics.median(ratios):.2f}x,"
        f" max {max(ratios):.2f}x over 3 rounds" in out
    )
    # The daemon's service per loop, from its counters before, between and after.
    assert len(re.findall(r"the daemon in the lspci loop: \d+ us", out)) == 3
    assert len(re.findall(r"the daemon in the reads loop: \d+ us", out)) == 3


def copy_of_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    return run


def test_a_failed_round_is_left_out_and_fails_the_run(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of_run(tmp_path)
    serial = run / "bench" / "serial.log"
    serial.write_text(
        serial.read_text().replace("LAB-ROUND 3 kernel done", "LAB-ROUND 3 kernel FAIL")
    )
    assert bench_report.report(run) == 1
    out = capsys.readouterr().out
    assert "2 rounds of both backends in one boot; failed: round 3 (kernel)" in out
    assert "## round 3" not in out


def test_a_pcifront_timeout_fails_the_run(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of_run(tmp_path)
    log = run / "bench" / "results" / "guest-d2.log"
    log.write_text("pcifront pci-0: pciback not responding!!!\n")
    assert bench_report.report(run) == 1
    assert "('pciback not responding'): 1 in 1 guest logs" in capsys.readouterr().out


def test_a_warm_up_round_is_shown_but_left_out_of_the_ratios(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of_run(tmp_path)  # its round 1 made round 0, as lab.warmup=1 numbers it
    rounds = run / "bench" / "results" / "bench"
    for backend in ("daemon", "kernel"):
        (rounds / f"1-{backend}").rename(rounds / f"0-{backend}")
    serial = run / "bench" / "serial.log"
    serial.write_text(serial.read_text().replace("LAB-ROUND 1 ", "LAB-ROUND 0 "))
    assert bench_report.report(run) == 0
    out = capsys.readouterr().out
    assert "2 rounds of both backends in one boot after a warm-up round" in out
    assert "## round 0 (warm-up: left out of the ratios below)" in out
    ratios = [
        lspci_median(ROUNDS / f"{n}-daemon") / lspci_median(ROUNDS / f"{n}-kernel") for n in (2, 3)
    ]
    assert f"median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x over 2 rounds" in out


def test_the_bands_of_slow_reads_are_shown_per_backend(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of_run(tmp_path)  # from a guest before cfgbench counted its slow reads by band
    bands = "2-3:7 3-4:2 4-5:11 5-6:0 6-8:1 8-12:0 12+:1"
    with (run / "bench" / "results" / "bench" / "2-daemon" / "bench.txt").open("a") as guest:
        guest.write(f"LAB-OPS slow ops by ms: {bands}\n")
    assert bench_report.report(run) == 0
    out = capsys.readouterr().out
    assert out.count("by ms:") == 1
    round_2 = out[out.index("## round 2") : out.index("## round 3")]
    assert f"  reads over 2 ms, daemon, by ms: {bands}\n" in round_2


BOOT = 1_000_000  # the serial log's second 0, as boot.sh writes it to boot-epoch


def measured(tmp_path: Path, guest: str) -> Path:
    """A copy of the run whose serial log gives every line a time, as boot.sh does, and marks
    `guest`'s measurement from second 100 to 104 after the boot, as scenarios-bench.sh does."""
    run = copy_of_run(tmp_path)
    (run / "bench" / "boot-epoch").write_text(f"{BOOT}\n")
    serial = run / "bench" / "serial.log"
    lines = [f"  10s {line}" for line in serial.read_text().splitlines()]
    lines += [f"  100s LAB-MEASURE {guest} start", f"  104s LAB-MEASURE {guest} end"]
    serial.write_text("\n".join(lines) + "\n")
    return run


def test_the_host_while_each_backend_served_from_its_samples(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lab/host/threads.sh's samples, a line per thread and second (epoch, tid, CPU ticks,
    µs waited for a core, name), between the marks around round 2's daemon measurement."""
    run = measured(tmp_path, "d2")
    samples = []
    for second in range(95, 112):  # before, during and after the window
        step = second - 95
        samples.append(f"{BOOT + second} 11 {500 + 80 * step} {150_000 * step} CPU 0/TCG")
        samples.append(f"{BOOT + second} 12 {20 + 3 * step} 0 qemu-system-x86")
    (run / "bench" / "host-threads.txt").write_text("\n".join(samples) + "\n")
    assert bench_report.report(run) == 0
    out = capsys.readouterr().out
    # 80 ticks (of 100) a second is 80 % of a core; 150 ms waited a second, 15 %.
    assert (
        "  the host while daemon served (QEMU's threads): CPU 0/TCG 80% (waited 15%),"
        " qemu-system-x86 3% (waited 0%); 83% in all, 15% waiting for a core\n"
    ) in out
    assert out.count("the host while") == 1  # the other rounds have no marks


def test_the_time_xen_took_from_the_guest_and_from_dom0(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guest's steal over its reads (cfgbench) and dom0's vCPUs from /proc/stat before and
    after the measurement (scenarios-bench.sh)."""
    run = copy_of_run(tmp_path)
    side = run / "bench" / "results" / "bench" / "2-daemon"
    bench = side / "bench.txt"
    bench.write_text(
        re.sub(r"(LAB-OPS ops=.*)", r"\1 total_ms=950 steal_ms=120", bench.read_text(), count=1)
    )
    # user nice system idle iowait irq softirq steal guest guest_nice, in ticks
    (side / "dom0-stat-before.txt").write_text(
        "cpu  100 0 100 100 0 0 0 0 0 0\ncpu0 50 0 50 50 0 0 0 0 0 0\ncpu1 50 0 50 50 0 0 0 0 0 0\n"
    )
    (side / "dom0-stat-after.txt").write_text(
        "cpu  200 0 150 180 0 0 0 20 0 0\ncpu0 110 0 70 60 0 5 5 10 0 0\n"
        "cpu1 90 0 80 120 0 0 0 10 0 0\n"
    )
    assert bench_report.report(run) == 0
    out = capsys.readouterr().out
    round_2 = out[out.index("## round 2") : out.index("## round 3")]
    assert "the guest's reads, daemon: its vCPU runnable but not running (steal) 120 of 950 ms" in (
        round_2
    )
    # cpu0: 60 + 20 + 5 + 5 busy, 10 idle, 10 stolen of 110; cpu1: 70 busy, 70 idle, 10 of 150
    assert (
        "dom0's vCPUs while daemon served: cpu0 busy 82% idle 9% steal 9%,"
        " cpu1 busy 47% idle 47% steal 7%\n"
    ) in round_2
    assert out.count("dom0's vCPUs") == 1


def test_a_host_without_schedstat_gives_no_waits(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """threads.sh leaves the waited-us field out where /proc has no schedstat: the report then
    gives each thread's CPU alone, never a wait of 0."""
    run = measured(tmp_path, "k3")
    samples = [f"{BOOT + second} 11 {40 * (second - 95)} CPU 1/TCG" for second in range(95, 112)]
    (run / "bench" / "host-threads.txt").write_text("\n".join(samples) + "\n")
    assert bench_report.report(run) == 0
    out = capsys.readouterr().out
    assert "  the host while kernel served (QEMU's threads): CPU 1/TCG 40%; 40% in all\n" in out
    assert "waited" not in out


def test_the_answers_events_are_shown_as_differences_over_the_loops(
    bench_report: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of_run(tmp_path)  # from a daemon before answers' events were deferred
    assert bench_report.report(run) == 0
    assert "events dropped" not in capsys.readouterr().out
    rounds = run / "bench" / "results" / "bench"
    for when, counts in (("before", (10, 2, 0)), ("after", (4010, 52, 1))):
        listing = rounds / "2-daemon" / f"list-{when}-bench.json"
        data = json.loads(listing.read_text())
        data["guests"][0]["ops"]["answer_events"] = dict(
            zip(("dropped", "late", "offs"), counts, strict=True)
        )
        listing.write_text(json.dumps(data))
    assert bench_report.report(run) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "events dropped" in line]
    assert lines == [
        "  the daemon's answers in both loops: 4000 events dropped (the guest's next op came"
        " first), 50 sent late, deferring turned off 1 times"
    ]
