"""Which policy a trace was recorded or replayed under: a digest of the policy's sources.

Each compiled file carries the sha256 of the DSL file it came from, so the committed tables
and the same dsl/ tree compiled on the fly have one identity, wherever the tree lies (the
file's name, not its path, goes into the digest)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import PurePath

from pciback.tables import PolicyModule

SHORT = 12  # hex digits shown to people; the file keeps the whole digest


def identity(modules: Iterable[PolicyModule]) -> str:
    lines = sorted(f"{PurePath(m.source).name} {m.sha256}\n" for m in modules)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def installed_identity() -> str:
    """The identity of the tables the daemon runs (generated/)."""
    from pciback.generated import MODULES

    return identity(MODULES)
