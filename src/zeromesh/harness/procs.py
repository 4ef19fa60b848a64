"""Child processes that cannot outlive us, and their bounded stop.

:func:`spawn` starts a child in a process group of its own (a terminal's
Ctrl+C reaches the harness only, which stops its children in order, and a
stop takes the whole group, grandchildren included) with a parent-death
signal: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child before ``exec``, so
the kernel kills it when the thread that started it ends, even when the
harness itself is SIGKILLed and runs no cleanup at all.

:func:`stop` is the one bounded stop (signal, wait, SIGKILL, wait), also used
by the benchmarks.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from .. import timing

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[[int, int], int] | None:
    """libc's prctl, resolved once here: after fork, the child must only call it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


_prctl = _load_prctl()


def _die_with(parent: int) -> Callable[[], None]:
    """The child's preexec: SIGKILL when the parent (thread) dies; and if the
    parent is already gone (it died between fork and here), die now."""
    prctl = _prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def spawn(
    cmd: list[str],
    *,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start *cmd* in its own session and process group, bound to our life.

    The parent-death signal follows the *thread* that forks (Linux semantics):
    call this from a thread that outlives the child (the main thread, or a
    slot thread that stops its children before it ends).
    """
    # preexec_fn forks without posix_spawn and runs Python in the child; ours
    # only calls one pre-resolved C function and getppid, no lock involved.
    return subprocess.Popen(
        cmd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 (see above)
    )


def _kill_group(pid: int) -> None:
    """SIGKILL the process group *pid* leads, if it leads one (children of
    :func:`spawn` do; others are left to :meth:`Popen.kill`)."""
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)


def stop(
    p: subprocess.Popen[Any],
    sig: int | None,
    grace: float = timing.STOP_GRACE,
    reader: threading.Thread | None = None,
) -> None:
    """Send *sig* to child *p* (None: just wait for it to exit), wait *grace*,
    then SIGKILL it (its whole group when it leads one) and wait again
    (bounded). Then let its stdout *reader* finish, and close its pipes."""
    if p.poll() is None:
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            _kill_group(p.pid)
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
