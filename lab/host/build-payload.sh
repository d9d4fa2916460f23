#!/bin/bash
# Step 4 (5-20 s): what dom0 installs offline (it has no network): a wheel of the working tree
# (uncommitted changes included: the lab checks what you are about to commit) and the wheels
# of its dependency (cffi, pycparser) for dom0's CPython 3.11 on x86_64, and py-spy, from PyPI.
. "$(dirname "$0")/lib.sh"
P=$LAB/payload; rm -rf "$P"; mkdir -p "$P/wheels"
python3 -m pip wheel -q --no-deps -w "$P/wheels" "$TREE"
python3 -m pip download -q -d "$P/wheels" --only-binary=:all: --python-version 3.11 \
  --implementation cp --abi cp311 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 'cffi>=1.16'
# py-spy samples the daemon's threads from outside during the benchmark: where the time goes.
python3 -m pip download -q -d "$P/wheels" --only-binary=:all: --python-version 3.11 \
  --implementation cp --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 'py-spy>=0.3'
rm -rf "$TREE/build"   # setuptools' scratch directory
ls "$P/wheels" >&2
