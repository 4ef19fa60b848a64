"""Native and Python stacks of a running process, as the seed's manual ``pstack``.

``py-spy dump --native`` gives every thread's Python frames interleaved with
the native ones (``zmq_ctx_term`` and libzmq's poll), and attaches in well
under a second. Without py-spy, ``gdb -batch 'thread apply all bt'`` gives
the native stacks (no Python frames). Without either, the capture says so
and how to get one; it never raises.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import timing


def find_tool(name: str) -> str | None:
    """*name* on PATH, or next to this interpreter (a venv's ``bin`` is often
    not on PATH when ``.venv/bin/zeromesh`` is run directly)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() and os.access(beside, os.X_OK) else None


def _run(cmd: list[str], timeout: float) -> tuple[bool, str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"{cmd[0]} did not finish within {timeout:.0f} s\n"
    except OSError as exc:
        return False, f"{cmd[0]} could not run: {exc}\n"
    return r.returncode == 0 and bool(r.stdout.strip()), r.stdout + r.stderr


def capture(pid: int, timeout: float = timing.STACK_CAPTURE_TIMEOUT) -> tuple[str, str]:
    """Stacks of process *pid*: (tool used or ``"none"``, text)."""
    t0 = time.monotonic()
    notes: list[str] = []
    pyspy = find_tool("py-spy")
    if pyspy:
        ok, out = _run([pyspy, "dump", "--native", "--pid", str(pid)], timeout)
        if ok:
            return "py-spy", out
        notes.append(f"py-spy dump --native failed:\n{out}")
    gdb = find_tool("gdb")
    if gdb:
        left = max(1.0, timeout - (time.monotonic() - t0))
        ok, out = _run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"], left)
        if ok:
            return "gdb", "".join(notes) + out
        notes.append(f"gdb failed:\n{out}")
    if not pyspy and not gdb:
        notes.append(
            "no stack tool found: install py-spy (pip install py-spy, native and Python "
            "stacks) or gdb (apt-get install gdb, native stacks only)\n"
        )
    return "none", "".join(notes)


def save(pid: int, path: Path, header: str = "") -> str:
    """Capture *pid*'s stacks into *path*; returns the tool used."""
    t0 = time.monotonic()
    tool, text = capture(pid)
    took = time.monotonic() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{header}pid {pid}, captured with {tool} in {took:.2f} s\n\n{text}")
    return tool
