"""Prepare the shared-page ABI once, at build time: `python -m pciback.protocol.abi_prepare`.

cffi parses C declarations with pycparser, which costs the daemon and every CLI command that
touches the page tens of milliseconds at each start. cffi's out-of-line ABI mode writes the
parsed declarations as a small Python module instead (abi_prepared.py, committed, never edited
by hand), which loads in about a millisecond. `--check` fails when it no longer matches
abi.CDEF (`make generate` rewrites it; `make test` checks it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.protocol.abi import CDEF

MODULE = "pciback.protocol.abi_prepared"
TARGET = Path(__file__).resolve().parent / "abi_prepared.py"
HEADER = (
    "# Written by `python -m pciback.protocol.abi_prepare` from pciback.protocol.abi.CDEF;\n"
    "# never edit it by hand (`make generate` rewrites it, `make test` checks it).\n"
)


def prepared_source() -> str:
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(MODULE, None)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "abi_prepared.py"
        with contextlib.redirect_stdout(io.StringIO()):  # cffi says "generating FILE"
            builder.emit_python_code(str(out))
        code = out.read_text(encoding="utf-8")
    # abi.py takes the prepared module only when it was made from the CDEF it has now.
    return f"{HEADER}{code}\nCDEF = {CDEF!r}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pciback.protocol.abi_prepare")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("-o", "--output", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    wanted = prepared_source()
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != wanted:
            print(
                f"{args.output} is stale: run make generate and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    if current != wanted:
        args.output.write_text(wanted, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
