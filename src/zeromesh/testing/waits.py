"""The one bounded wait of the tests and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import timing


def wait_for(cond: Callable[[], object], timeout: float = 5.0, interval: float = timing.BENCH_POLL) -> bool:
    """Poll *cond* until it is true (True) or *timeout* passes (False). The
    deadline makes it a bounded wait on a condition, not a sleep to let
    things settle; the interval is well under the millisecond-scale figures
    the benchmarks measure."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)  # sleep: polling interval of a bounded wait
