"""Reading a child process's output one line at a time, with a deadline.

One reader for every place that talks to child processes (the soak's slots,
the benchmarks' hosts, the tests' CLI children, the network-namespace hosts):
``select`` + ``os.read`` on the pipe's descriptor, so a wait is bounded by its
timeout, needs no reader thread, and a child that never writes cannot block
its parent. Standard library only.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import weakref
from typing import IO, Any


class LineReader:
    """Lines from a pipe with a timeout per line. Once a pipe is read through
    a LineReader, read it only through that reader (it keeps what it buffered)."""

    def __init__(self, stream: IO[Any]) -> None:
        self._fd = stream.fileno()
        self._buf = b""
        self.eof = False

    def readline(self, timeout: float) -> str | None:
        """The next line with its newline, ``""`` at EOF, None on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            if self.eof:
                rest, self._buf = self._buf, b""
                return rest.decode(errors="replace")
            # A timeout of 0 still reads what is there: one select of what is left.
            ready, _, _ = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self.eof = True
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace") + "\n"

    def read_json(self, timeout: float) -> dict[str, Any] | None:
        """The next non-empty line as a JSON object (``{"raw": text}`` when it
        is not one); None on timeout or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if not line:
                return None
            text = line.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            return obj if isinstance(obj, dict) else {"raw": text}


_readers: weakref.WeakKeyDictionary[subprocess.Popen[Any], LineReader] = weakref.WeakKeyDictionary()


def reader_of(proc: subprocess.Popen[Any]) -> LineReader:
    """The one :class:`LineReader` of *proc*'s stdout (made on first use)."""
    if proc.stdout is None:
        raise ValueError("the child's stdout is not a pipe")
    r = _readers.get(proc)
    if r is None:
        r = _readers[proc] = LineReader(proc.stdout)
    return r


def read_json_line(proc: subprocess.Popen[Any], timeout: float) -> dict[str, Any]:
    """The next JSON line *proc* prints within *timeout*; RuntimeError if none."""
    obj = reader_of(proc).read_json(timeout)
    if obj is None:
        raise RuntimeError(f"child {proc.pid} printed no line within {timeout} s")
    return obj
