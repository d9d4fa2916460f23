"""Each benchmark stops with one line and a non-zero exit when its fixture is missing, instead of
measuring something else (bench_engine once benchmarked an all-zero device)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Both places pciback.sim.fixtures looks in made to point nowhere, then the script run as
# `python bench/NAME.py` runs it (its directory first on sys.path).
RUN_WITHOUT_FIXTURES = """
import runpy, sys
from pathlib import Path
import pciback.sim.fixtures as fixtures
fixtures._SHARED = fixtures._HERE = Path("/nonexistent/fixtures")
script = sys.argv[1]
sys.path.insert(0, str(Path(script).parent))
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""
NEEDS_A_FIXTURE = (
    "bench_engine.py",
    "bench_fairness.py",
    "bench_roundtrip.py",
    "bench_op_cost.py",
    "bench_physical_reads.py",
    "bench_scale.py",
    "bench_trace_overhead.py",
)


@pytest.mark.parametrize("name", NEEDS_A_FIXTURE)
def test_a_missing_fixture_fails_loudly(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_FIXTURES, str(BENCH / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # nothing measured
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"{name}: cannot run: ")
    assert "/nonexistent/fixtures" in lines[0]


def test_every_benchmark_is_listed_or_needs_no_fixture() -> None:
    """A new benchmark is added to NEEDS_A_FIXTURE, or here when it builds its device itself."""
    builds_its_own = {"bench_state_disk.py"}
    present = {p.name for p in BENCH.glob("bench_*.py")}
    assert present == set(NEEDS_A_FIXTURE) | builds_its_own
