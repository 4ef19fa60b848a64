"""Logging helpers: stderr logging for the CLI, and rate-limited warnings so a
flood of bad input is counted in full but logged only now and then."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Log at most once per *interval*; say how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self._log, self._interval = logger, interval
        self._last = -float("inf")
        self._suppressed = 0

    def warning(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} similar suppressed)" if self._suppressed else ""
        self._log.warning(fmt + extra, *args)
        self._last, self._suppressed = now, 0


def setup(verbosity: int) -> None:
    """Logs go to stderr (stdout is for ``--events jsonl``). One default level
    for every command, INFO (joins, leaves, endpoints); each ``-v`` one level
    more, each ``-q`` one less."""
    level = logging.INFO - 10 * verbosity
    logging.basicConfig(
        level=min(max(level, logging.DEBUG), logging.CRITICAL),
        format="%(asctime)s.%(msecs)03d %(process)d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
