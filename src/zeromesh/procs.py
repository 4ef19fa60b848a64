"""Stopping the processes we start: by PID, with a bounded wait, then SIGKILL."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from typing import Any

from . import timing


def stop(
    p: subprocess.Popen[Any],
    sig: int | None,
    grace: float = timing.STOP_GRACE,
    reader: threading.Thread | None = None,
) -> None:
    """Send *sig* to child *p* (None: just wait for it to exit), wait *grace*,
    then SIGKILL it and wait again (bounded). Then let its stdout *reader*
    finish, and close its pipes."""
    if p.poll() is None:
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(grace, 5.0))
    if reader is not None:
        reader.join(5.0)
    for f in (p.stdin, p.stdout):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
