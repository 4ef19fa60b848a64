"""A long-lived peer under watch: its process, its events, its memory samples,
and its exit (a long-lived peer that does not exit when asked has hung too).

A soak runs two side by side in the same churn: the peer under test and a
reference with the seed's behaviour (see :mod:`zeromesh.harness.soak`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import subprocess
import threading
import time
from dataclasses import astuple, fields
from pathlib import Path
from typing import IO

import psutil

from .. import timing
from . import stacks
from .children import Children, LogFiles
from .model import LongLivedRecord, Sample


class LongLived:
    """One long-lived peer. With *events*, its stdout is zeromesh's JSON event
    lines (``--events jsonl``): readiness, joins and leaves (kept as a
    cross-check; departures are counted from the churners)."""

    def __init__(
        self, role: str, cmd: list[str], *, events: bool, children: Children, logs: LogFiles, samples_csv: Path
    ) -> None:
        self.rec = LongLivedRecord(role=role, command=cmd, events=events)
        # Written as sampled: a soak that dies (a libzmq abort, SIGKILL) still leaves its samples.
        self._csv_file = samples_csv.open("w", newline="")
        logs.adopt(self._csv_file)
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow([f.name for f in fields(Sample)])
        self._children = children
        self._logs = logs
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        err = self._logs.open(self.rec.role)
        stdout = subprocess.PIPE if self.rec.events else subprocess.DEVNULL
        self.proc = self._children.spawn(self.rec.command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
        if self.proc is None:
            raise RuntimeError("soak closed before it started")
        self.rec.pid = self.proc.pid
        self._ps = psutil.Process(self.proc.pid)
        self._ps.cpu_percent(None)
        if self.rec.events:
            assert self.proc.stdout is not None
            self._reader = threading.Thread(
                target=self._read, args=(self.proc.stdout,), name=f"soak-{self.rec.role}", daemon=True
            )
            self._reader.start()
        else:
            self._ready.set()  # a foreign peer says nothing: the warm-up covers its start

    def _read(self, stdout: IO[bytes]) -> None:
        for raw in stdout:
            try:
                ev = json.loads(raw)
                kind = ev["event"]
            except (ValueError, KeyError, TypeError):
                with self._lock:
                    self.rec.bad_lines += 1
                continue
            with self._lock:
                if kind == "ready":
                    self.rec.uuid = str(ev.get("uuid", ""))
                    self._ready.set()
                elif kind == "join":
                    self.rec.joins += 1
                elif kind == "leave":
                    self.rec.leave_events += 1
                    self.rec.leave_reasons[str(ev.get("reason", "?"))] += 1

    def wait_ready(self, timeout: float, abort: threading.Event) -> bool:
        """True once it is in the mesh; False when it died, *abort* was set or
        *timeout* passed."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(timing.STOP_POLL):
            if abort.is_set() or not self.alive() or time.monotonic() >= deadline:
                return False
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self, t0: float, departures: int, lifetimes: int, hangs: int) -> Sample | None:
        ps = self._ps
        if ps is None:
            return None
        try:
            with ps.oneshot():
                mem = ps.memory_info()
                s = Sample(
                    t=time.time(),
                    elapsed=time.monotonic() - t0,
                    rss_kb=mem.rss // 1024,
                    vms_kb=mem.vms // 1024,
                    fds=ps.num_fds(),
                    threads=ps.num_threads(),
                    cpu_percent=ps.cpu_percent(None),
                    departures=departures,
                    lifetimes=lifetimes,
                    hangs=hangs,
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        with self._lock:
            self.rec.samples.append(s)
            self._csv.writerow(astuple(s))
            self._csv_file.flush()
        return s

    def ask_stop(self) -> None:
        """Ask it to leave: SIGINT (it sends ``D`` and terminates its context;
        memray writes its file)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)

    def finish(self, out: Path, grace: float) -> None:
        """Wait for it after :meth:`ask_stop`; not gone within *grace*: hung on
        exit, its stacks go to ``hangs/``, then SIGKILL."""
        p = self.proc
        if p is None:
            return
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            name = f"hangs/{self.rec.role}-exit-pid{p.pid}.txt"
            stacks.save(p.pid, out / name, f"long-lived {self.rec.role} peer not gone {grace:g} s after SIGINT\n")
            self.rec.exit_hung = True
            self.rec.exit_stacks = name
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timing.STOP_GRACE)
        if self._reader is not None:
            self._reader.join(timing.STOP_GRACE)  # its pipe is at EOF now
        self._children.stop(p, signal.SIGKILL, timing.STOP_GRACE)
        self.rec.exit_code = p.returncode

    def samples(self) -> list[Sample]:
        """A copy of its samples so far (for the live display)."""
        with self._lock:
            return list(self.rec.samples)
