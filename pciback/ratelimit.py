"""Rate-limited logging, as the kernel's printk_ratelimit: a burst, then silence until the
interval ends, then one line saying how many were dropped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping


class RateLimit:
    """At most `burst` messages every `interval` seconds, as the kernel's ratelimited printk:
    whoever repeats a refused request at their own pace must not flood dom0's log.

    The op dispatcher keeps one per guest connection (the data path gives every device a
    connection exports the same one), so a guest flooding its own limit silences no other
    guest's lines; a few integers each, living and dying with the connection: memory bounded by
    the connections served. The control socket keeps one for its refusals."""

    def __init__(self, burst: int = 10, interval: float = 5.0) -> None:
        self.burst = burst
        self.interval = interval
        self._lock = threading.Lock()
        self._start = -interval
        self._count = 0
        self._suppressed = 0

    def allow(self) -> int | None:
        """None when this message is to be dropped; else how many were dropped before it."""
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self.interval:
                self._start, self._count = now, 0
            if self._count >= self.burst:
                self._suppressed += 1
                return None
            self._count += 1
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


def log_limited(
    logger: logging.Logger,
    limit: RateLimit,
    level: int,
    message: str,
    *args: object,
    exc_info: bool | BaseException = False,
    extra: Mapping[str, object] | None = None,
) -> None:
    """Log through `limit`: dropped when over it, else with the count dropped before it.
    `extra`: the record's fields (domid, device) for the JSON log."""
    suppressed = limit.allow()
    if suppressed is None:
        return
    if suppressed:
        message += f" ({suppressed} similar message(s) suppressed)"
    logger.log(level, message, *args, exc_info=exc_info, extra=extra)
