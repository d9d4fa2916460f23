"""How many ops one recording may hold: here, apart from the file format, so that the CLI's
parser can say it without importing the ABI."""

from __future__ import annotations

DEFAULT_MAX_OPS = 50_000
# What one recording may hold: it sizes the daemon's buffer (about 100 bytes an op) and the
# file (about 130 bytes a line), so it is a hard bound, not a default.
MAX_OPS = 200_000
