"""Every process a soak starts, registered by PID and stopped by PID."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

from .. import timing
from . import procs


class Children:
    """The soak's children: started through :func:`procs.spawn` (they die
    with us), remembered until stopped, all stopped by :meth:`kill_all`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        #: Every PID ever started (summary.json ``pids``: tests check none is left).
        self.all_pids: list[int] = []

    def spawn(self, cmd: list[str], *, stdin: Any, stdout: Any, stderr: IO[bytes]) -> subprocess.Popen[bytes] | None:
        """Start and register a child; None once the soak is closing."""
        with self._lock:
            if self._closed:
                return None
            p = procs.spawn(cmd, stdin=stdin, stdout=stdout, stderr=stderr)
            self._procs[p.pid] = p
            self.all_pids.append(p.pid)
            return p

    def stop(self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = timing.STOP_GRACE) -> None:
        """Stop one child: *sig*, bounded wait, SIGKILL; then forget it."""
        procs.stop(p, sig, grace)
        with self._lock:
            self._procs.pop(p.pid, None)

    def kill_all(self) -> None:
        """Refuse new children and SIGKILL those left (bounded)."""
        with self._lock:
            self._closed = True
            left = list(self._procs.values())
        for p in left:
            self.stop(p, signal.SIGKILL, 1.0)

    def live_pids(self) -> list[int]:
        with self._lock:
            return [pid for pid, p in self._procs.items() if p.poll() is None]


class LogFiles:
    """The children's stderr files under ``logs/``, all closed at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._files: list[IO[Any]] = []

    def open(self, name: str) -> IO[bytes]:
        f = (self.folder / f"{name}.log").open("ab")
        with self._lock:
            self._files.append(f)
        return f

    def adopt(self, f: IO[Any]) -> None:
        """Close *f* with the logs."""
        with self._lock:
            self._files.append(f)

    def close(self) -> None:
        with self._lock:
            files, self._files = self._files, []
        for f in files:
            f.close()
