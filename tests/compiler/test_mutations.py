"""No input makes the compiler crash: random mutations of the real policy files.

Each case is the real prelude and one real policy file, one of them mutated (lines deleted or
duplicated, tokens swapped, random bytes, deep nesting, huge numbers and shifts, misspellings),
checked with `pciback-dsl check`. Every run must end with status 0 or 1 and write nothing on
stderr but `FILE:LINE:COL: error|warning: message` lines and a summary: never a traceback. The
cases run in one child process whose address space is limited, so that a value allowed to grow
without bound fails the test instead of the machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import resource
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261125
CASES = 400
MEMORY_LIMIT = 1 << 30  # bytes of address space for the child running every case

DIAGNOSTIC = re.compile(r"[^\s:][^:]*:\d+:\d+: (error|warning): \S.*")
SUMMARY = re.compile(r"(\d+ errors?(, \d+ warnings?)?|\d+ warnings?)( \(--werror: .*\))?")
_TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|[A-Za-z0-9_]+|[^\sA-Za-z0-9_]')
_NUMBER = re.compile(r"\b(0x[0-9a-fA-F_]+|0b[01_]+|[0-9][0-9_]*)\b")

Mutation = Callable[[random.Random, str], str]


def _lines(rng: random.Random, text: str) -> tuple[list[str], int]:
    lines = text.split("\n")
    return lines, rng.randrange(len(lines))


def delete_line(rng: random.Random, text: str) -> str:
    lines, i = _lines(rng, text)
    del lines[i]
    return "\n".join(lines)


def duplicate_line(rng: random.Random, text: str) -> str:
    lines, i = _lines(rng, text)
    lines.insert(i, lines[i])
    return "\n".join(lines)


def _spans(text: str, pattern: re.Pattern[str] = _TOKEN) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def _replace(text: str, span: tuple[int, int], new: str) -> str:
    return text[: span[0]] + new + text[span[1] :]


def swap_tokens(rng: random.Random, text: str) -> str:
    spans = _spans(text)
    if len(spans) < 2:
        return text
    i = rng.randrange(len(spans) - 1)
    j = i + 1 if rng.random() < 0.5 else rng.randrange(len(spans))
    a, b = sorted((spans[i], spans[j]))
    if a == b:
        return text
    return text[: a[0]] + text[b[0] : b[1]] + text[a[1] : b[0]] + text[a[0] : a[1]] + text[b[1] :]


def delete_token(rng: random.Random, text: str) -> str:
    spans = _spans(text)
    return _replace(text, rng.choice(spans), "") if spans else text


def duplicate_token(rng: random.Random, text: str) -> str:
    spans = _spans(text)
    if not spans:
        return text
    start, end = rng.choice(spans)
    return text[:end] + " " + text[start:end] + text[end:]


_ODD = "\x00\t\r\x0b\x0c\u00e9\u2028\ufeff{}[]()@:#=.,/\"'$\\<>*+-!~`|"


def random_chars(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    pool = _ODD + "abcdefghijklmnopqrstuvwxyz0123456789 \n"
    junk = "".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))
    return text[:at] + junk + text[at:]


def _on_a_number(rng: random.Random, text: str, make: Callable[[str], str]) -> str:
    """`make(number)` in place of a number that stands in an expression (not a bit index)."""
    spans = [s for s in _spans(text, _NUMBER) if text[: s[0]].rstrip()[-1:] not in ("[", ":")]
    if not spans:
        return text + "\nconst MUTANT = " + make("1") + "\n"
    span = rng.choice(spans)
    return _replace(text, span, make(text[span[0] : span[1]]))


def deep_nesting(rng: random.Random, text: str) -> str:
    depth = rng.choice((50, 99, 101, 150, 1000, 5000))
    shape = rng.choice(("parens", "sum", "not", "chain"))

    def make(number: str) -> str:
        if shape == "parens":
            return "(" * depth + number + ")" * depth
        if shape == "sum":
            return "(1 + " * depth + number + ")" * depth
        if shape == "not":
            return "(" + "not " * depth + number + ")"
        return "(" + " + ".join([number] * depth) + ")"

    return _on_a_number(rng, text, make)


_HUGE = (
    "0x1_0000_0000_0000_0000",
    "18446744073709551616",
    "0b" + "1" * 65,
    "9" * 5000,
    "0x" + "f" * 100_000,
    "0x_",
    "0x0000_0000_0000_0000_0000_0000_0001",
)
_HUGE_EXPR = (
    "(1 << 1000000)",
    "(1 << (1 << 40))",  # 128 GiB if ever computed: the memory limit would stop it
    "(3 << 0xffff_ffff_ffff)",
    "(1 << 64)",
    "(1 << (0 - 1))",
    "((1 << 63) * (1 << 63))",
    "(0xffff_ffff_ffff_ffff + 1)",
    "(0 - 0xffff_ffff_ffff_ffff - 2)",
)


def huge_number(rng: random.Random, text: str) -> str:
    return _on_a_number(rng, text, lambda _: rng.choice(_HUGE))


def huge_value(rng: random.Random, text: str) -> str:
    if rng.random() < 0.5:
        return _on_a_number(rng, text, lambda _: rng.choice(_HUGE_EXPR))
    consts = (
        "const SHIFTED = 1 << 1000000\n"
        "const BIG = 1 << 63\nconst SQUARED = BIG * BIG\nconst FOURTH = SQUARED * SQUARED\n"
        "const EIGHTH = FOURTH * FOURTH * SHIFTED\n"
    )
    return consts + _on_a_number(rng, text, lambda _: rng.choice(("SHIFTED", "EIGHTH", "BIG")))


def misspell(rng: random.Random, text: str) -> str:
    spans = [s for s in _spans(text) if text[s[0]].isalpha() and s[1] - s[0] > 1]
    if not spans:
        return text
    span = rng.choice(spans)
    word = list(text[span[0] : span[1]])
    i = rng.randrange(len(word) - 1)
    how = rng.randrange(3)
    if how == 0:
        word[i], word[i + 1] = word[i + 1], word[i]
    elif how == 1:
        del word[i]
    else:
        word.insert(i, word[i])
    return _replace(text, span, "".join(word))


def truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


MUTATIONS: tuple[Mutation, ...] = (
    delete_line,
    duplicate_line,
    swap_tokens,
    delete_token,
    duplicate_token,
    random_chars,
    deep_nesting,
    huge_number,
    huge_value,
    misspell,
    truncate,
)


# Added to a real file before the random cases: the worst of each kind, every time.
HOSTILE = (
    "const HOSTILE = 1 << (1 << 40)\ncapability hostile id HOSTILE { }\n",
    "const HOSTILE = (1 << 63) * (1 << 63) * (1 << 63) * (1 << 63)\n",
    "capability hostile id 1 length " + "(1 + " * 5000 + "1" + ")" * 5000 + " { }\n",
    "capability hostile id " + "(" * 10_000 + "1" + ")" * 10_000 + " { }\n",
    "capability hostile id (" + "not " * 5000 + "1) { }\n",
    "const HOSTILE = " + "9" * 100_000 + "\n",
    "const HOSTILE = 0x" + "f" * 1_000_000 + "\n",
    "capability hostile id 5 {\n    register r @0x04 u8 { f [" + "9" * 5000 + ":0] hw ro }\n}\n",
)


def make_case(rng: random.Random, sources: dict[str, str]) -> tuple[str, dict[str, str], str]:
    """(the policy file checked, the files with one mutated, what was done)."""
    target = rng.choice(sorted(n for n in sources if n != "prelude.pci"))
    files = {"prelude.pci": sources["prelude.pci"], target: sources[target]}
    victim = "prelude.pci" if rng.random() < 0.2 else target
    done = []
    text = files[victim]
    for _ in range(rng.choice((1, 1, 2, 3))):
        mutation = rng.choice(MUTATIONS)
        text = mutation(rng, text)
        done.append(mutation.__name__)
    files[victim] = text
    return target, files, f"{victim}: {', '.join(done)}"


def problems(status: object, out: str, err: str) -> list[str]:
    """What is wrong with one run's result ([] when it is a clean pass or a clean failure)."""
    if status not in (0, 1):
        return [f"exit status {status!r}"]
    lines = err.splitlines()
    if status == 1 and not lines:
        return ["failed without a diagnostic"]
    if not lines:
        return [] if out.startswith("ok: ") else [f"passed without 'ok': {out[:200]!r}"]
    found = [f"not a diagnostic: {line[:300]!r}" for line in lines[:-1] if not _diagnostic(line)]
    if not SUMMARY.fullmatch(lines[-1]):
        found.append(f"not a summary: {lines[-1][:300]!r}")
    return found


def _diagnostic(line: str) -> bool:
    return DIAGNOSTIC.fullmatch(line) is not None


def run_cases(workdir: Path, cases: int = CASES, seed: int = SEED) -> list[dict[str, str]]:
    """Run every case in this process (in `workdir`); the failures. A case is reproduced by its
    index: the same seed gives the same cases."""
    from pciback.compiler.cli import main

    rng = random.Random(seed)
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "dsl").glob("*.pci"))}
    failures: list[dict[str, str]] = []
    os.chdir(workdir)
    fixed = [
        (
            "type0.pci",
            {"prelude.pci": sources["prelude.pci"], "type0.pci": sources["type0.pci"] + h},
        )
        for h in HOSTILE
    ]
    for index in range(len(fixed) + cases):
        if index < len(fixed):
            target, files = fixed[index]
            what = f"hostile source {index}"
        else:
            target, files, what = make_case(rng, sources)
        case_dir = workdir / "dsl"
        for old in case_dir.glob("*.pci"):
            old.unlink()
        for name, text in files.items():
            data = text.encode("utf-8", "surrogateescape")
            if rng.random() < 0.02:  # now and then a byte that is not UTF-8
                data = data[: len(data) // 2] + b"\xff" + data[len(data) // 2 :]
            (case_dir / name).write_bytes(data)
        argv = ["check", f"dsl/{target}"]
        if rng.random() < 0.3:
            argv.insert(1, rng.choice(("--strict-reasons", "--werror")))
        status, out, err = _run(main, argv)
        found = problems(status, out, err)
        if status == 0 and not found:
            # What checks must also compile (emit and its templates, on odd but valid input).
            argv = ["compile", "--dsl", "dsl", "-o", "out"]
            status, out, err = _run(main, argv)
            # compile says "wrote ...", not "ok: ...": its stderr alone is judged.
            found = problems(status, "ok: " if status == 0 else out, err)
            if status != 0:
                found.append("checked but did not compile")
        if found:
            failures.append(
                {
                    "case": str(index),
                    "what": what,
                    "argv": " ".join(argv),
                    "problems": "; ".join(found),
                    "stderr": err[-2000:],
                }
            )
    return failures


def _run(main: Callable[[list[str]], int], argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status: object = main(argv)
    except BaseException:  # the very thing this test looks for
        status = "exception"
        err.write(traceback.format_exc())
    return status, out.getvalue(), err.getvalue()


def _child(workdir: str) -> None:
    """Entry point of the child process: limited memory, every case, failures as JSON."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    (Path(workdir) / "dsl").mkdir(exist_ok=True)
    sys.setrecursionlimit(1000)  # Python's default, whatever the environment set
    print(json.dumps(run_cases(Path(workdir))))


def test_random_mutations_never_crash_the_compiler(tmp_path: Path) -> None:
    code = f"from tests.compiler.test_mutations import _child; _child({str(tmp_path)!r})"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout)
    shown = "\n\n".join(
        f"case {f['case']} ({f['what']}; pciback-dsl {f['argv']}): {f['problems']}\n{f['stderr']}"
        for f in failures[:5]
    )
    assert failures == [], f"{len(failures)} of {CASES} mutated sources went wrong:\n{shown}"


def test_the_mutations_reach_the_guards() -> None:
    """The seeded cases include the inputs the guards exist for (so the test above tests them)."""
    rng = random.Random(SEED)
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "dsl").glob("*.pci"))}
    done = [make_case(rng, sources)[2] for _ in range(CASES)]
    for name in ("deep_nesting", "huge_number", "huge_value", "random_chars", "swap_tokens"):
        assert sum(name in what for what in done) >= 20, name


def test_a_run_is_judged_by_its_stderr() -> None:
    assert problems(1, "", "a.pci:1:2: error: x\n1 error\n") == []
    assert problems(0, "", "a.pci:1:2: warning: x\n1 warning\n") == []
    assert problems(0, "ok: 1 file(s), 1 block(s)\n", "") == []
    assert problems("exception", "", "Traceback") == ["exit status 'exception'"]
    assert problems(1, "", 'Traceback (most recent call last):\n  File "x"\n1 error\n') != []
    assert problems(1, "", "") == ["failed without a diagnostic"]
