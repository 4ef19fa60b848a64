"""The churn: N slots, each running peer lifetimes one after the other, and
the watchdog that catches a lifetime that does not end.

Two strategies share the bookkeeping in :class:`Churn`:

* :class:`ProcessSlot`: a fresh process per lifetime, as the seed's
  ``repeat.sh`` (``zeromesh peer --seconds N`` or any ``--peer-cmd``);
* :class:`InprocSlot`: one ``zeromesh churn-worker`` per slot, paced by one
  ``go`` line per lifetime, a fresh :class:`~zeromesh.peer.Peer` (own context)
  per lifetime; cheap enough for 50 churners on 2 cores.

A lifetime that has not ended ``lifetime + LEAVE_TIMEOUT + hang_grace`` after
it started is hung: its process's stacks go to ``hangs/``, then it is killed
(an inproc slot replaces its worker) and the churn carries on. Departures are
counted here, from the churners' own ends, whatever their program.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from .. import timing
from ..lines import LineReader
from . import stacks
from .children import Children, LogFiles
from .model import Lifetime, SoakConfig

log = logging.getLogger(__name__)

#: The reason of a lifetime that outlived the hang deadline but ended by itself.
LATE_EXIT = "late exit"

#: Builds the command of one lifetime (process mode) or one worker (inproc), given a uuid.
CommandFor = Callable[[str], list[str]]


class Churn:
    """The state every slot shares: lifetime tickets, records, the watchdog."""

    def __init__(self, cfg: SoakConfig, children: Children, logs: LogFiles, out: Path) -> None:
        self.cfg = cfg
        self.children = children
        self.logs = logs
        self.out = out
        self.lock = threading.Lock()
        self.stop_new = threading.Event()  # drain: finish running lifetimes, start none
        self.abort = threading.Event()  # Ctrl+C or error: stop now
        self.lifetimes: list[Lifetime] = []
        self.running: dict[int, float] = {}  # slot -> monotonic start of its lifetime
        self.worker_pids: list[int] = []
        self.stack_tools: Counter[str] = Counter()
        self.errors: list[str] = []
        self._claimed = 0

    def claim(self, slot: int) -> int | None:
        """A ticket for one more lifetime, or None when the churn is winding down."""
        with self.lock:
            if self.stop_new.is_set() or self.abort.is_set():
                return None
            if self.cfg.lifetimes is not None and self._claimed >= self.cfg.lifetimes:
                self.stop_new.set()
                return None
            self._claimed += 1
            self.running[slot] = time.monotonic()
            return self._claimed

    def record(self, rec: Lifetime) -> None:
        if rec.end is None:
            rec.end = time.time()
        with self.lock:
            self.lifetimes.append(rec)
            self.running.pop(rec.slot, None)

    def unclaim(self, slot: int) -> None:
        with self.lock:
            self.running.pop(slot, None)

    def deadline(self, started: float) -> float:
        return started + self.cfg.lifetime + timing.LEAVE_TIMEOUT + self.cfg.hang_grace

    def counts(self) -> tuple[int, int, int]:
        """(departures, lifetimes recorded, hangs), one consistent snapshot."""
        with self.lock:
            return (
                sum(r.departed for r in self.lifetimes),
                len(self.lifetimes),
                sum(r.hung for r in self.lifetimes),
            )

    def hung(self, rec: Lifetime, pid: int) -> None:
        """Stacks of a hung lifetime's process into hangs/ (before it is killed)."""
        rec.hung = True
        rec.reason = "hung"
        name = f"hangs/lifetime-{rec.n:05d}-pid{pid}.txt"
        started = datetime.fromtimestamp(rec.start, timezone.utc).isoformat()
        header = (
            f"lifetime {rec.n} (slot {rec.slot}, peer {rec.peer_id or '?'}) started {started}, not ended "
            f"{self.cfg.lifetime:g} + {timing.LEAVE_TIMEOUT:g} + {self.cfg.hang_grace:g} s later\n"
        )
        tool = stacks.save(pid, self.out / name, header)
        with self.lock:
            self.stack_tools[tool] += 1
        rec.stacks = name
        # The verdict says where it hung only from evidence: the seed's C peer
        # also "hangs" in its own loop, waiting forever for its own D.
        rec.in_ctx_term = "zmq_ctx_term" in (self.out / name).read_text(errors="replace")
        log.warning("lifetime %d (pid %d) hung; stacks in %s", rec.n, pid, name)

    def run_slot(self, slot: int, mode: Literal["process", "inproc"], command: CommandFor) -> None:
        """A slot's thread. A slot that fails (a --peer-cmd that cannot start,
        say) stops the soak with the reason, rather than churning with fewer."""
        # Stagger the first lifetimes over one period, so the churn is steady
        # rather than waves of every slot joining and leaving at once.
        period = self.cfg.lifetime + self.cfg.pause
        if self.abort.wait(period * slot / self.cfg.churners):
            return
        runner = InprocSlot(self, slot, command) if mode == "inproc" else ProcessSlot(self, slot, command)
        try:
            runner.run()
        except Exception as exc:
            with self.lock:
                self.errors.append(f"churn slot {slot}: {type(exc).__name__}: {exc}")
                self.running.pop(slot, None)
            self.abort.set()


class ProcessSlot:
    """A fresh process per lifetime."""

    def __init__(self, churn: Churn, slot: int, command: CommandFor) -> None:
        self.churn, self.slot, self.command = churn, slot, command
        self.err = churn.logs.open(f"slot-{slot:02d}")
        # The peer id is known only when the harness chose it (our peer, or {uuid}).
        peer_cmd = churn.cfg.peer_cmd
        self.knows_uuid = not peer_cmd or "{uuid}" in peer_cmd

    def run(self) -> None:
        c = self.churn
        while (n := c.claim(self.slot)) is not None:
            uid = str(uuidlib.uuid4())
            started = time.monotonic()
            p = c.children.spawn(
                self.command(uid), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err
            )
            if p is None:
                c.unclaim(self.slot)
                return
            rec = Lifetime(self.slot, n, p.pid, uid if self.knows_uuid else "", time.time())
            self._watch(p, rec, started)
            c.children.stop(p)
            if rec.exit_code is None:
                rec.exit_code = p.returncode
            c.record(rec)
            if c.abort.wait(c.cfg.pause):
                return

    def _watch(self, p: subprocess.Popen[bytes], rec: Lifetime, started: float) -> None:
        c = self.churn
        while True:
            try:
                rec.exit_code = p.wait(timing.STOP_POLL)
                rec.reason = "exited" if rec.exit_code == 0 else f"exit code {rec.exit_code}"
                return
            except subprocess.TimeoutExpired:
                if c.abort.is_set():
                    rec.reason = "interrupted"
                    return
                if time.monotonic() >= c.deadline(started):
                    c.hung(rec, p.pid)
                    if p.poll() is not None:
                        # It ended while its stacks were being taken: late (a
                        # loaded proxy, a C peer waiting for its own D), not hung:
                        # a ctx_term hang never ends.
                        rec.hung = rec.in_ctx_term = False
                        rec.exit_code = p.returncode
                        rec.reason = LATE_EXIT
                        return
                    c.children.stop(p, signal.SIGKILL)
                    return


class InprocSlot:
    """One worker process per slot, a fresh peer (own context) per lifetime.

    The worker prints one JSON line when a lifetime starts and one when its
    context has terminated; a hung lifetime never prints its end: the worker
    is killed and replaced."""

    def __init__(self, churn: Churn, slot: int, command: CommandFor) -> None:
        self.churn, self.slot, self.command = churn, slot, command
        self.err = churn.logs.open(f"slot-{slot:02d}")
        self.worker: subprocess.Popen[bytes] | None = None
        self.reader: LineReader | None = None

    def _ensure_worker(self) -> bool:
        c = self.churn
        if self.worker is not None and self.worker.poll() is None:
            return True
        if self.worker is not None:
            c.children.stop(self.worker)
        self.worker = c.children.spawn(self.command(""), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err)
        if self.worker is None:
            return False
        with c.lock:
            c.worker_pids.append(self.worker.pid)
        assert self.worker.stdout is not None
        self.reader = LineReader(self.worker.stdout)
        return True

    def run(self) -> None:
        c = self.churn
        try:
            while (n := c.claim(self.slot)) is not None:
                if not self._ensure_worker():
                    c.unclaim(self.slot)
                    return
                assert self.worker is not None
                rec = Lifetime(self.slot, n, self.worker.pid, "", time.time())
                self._lifetime(rec)
                c.record(rec)
                if c.abort.wait(c.cfg.pause):
                    return
        finally:
            self._retire()

    def _lifetime(self, rec: Lifetime) -> None:
        c = self.churn
        worker, reader = self.worker, self.reader
        assert worker is not None and worker.stdin is not None and reader is not None
        started = time.monotonic()
        try:
            worker.stdin.write(b"go\n")
            worker.stdin.flush()
        except OSError:
            pass  # it died: seen as EOF below
        while True:
            line = reader.readline(min(timing.STOP_POLL, max(0.0, c.deadline(started) - time.monotonic())))
            if line == "":
                rec.exit_code = worker.wait(timing.STOP_GRACE)
                rec.reason = f"worker died (exit code {rec.exit_code})"
                return
            if line is not None:
                if _worker_line(rec, line):
                    return
                continue
            if c.abort.is_set():
                rec.reason = "interrupted"
                return
            if time.monotonic() >= c.deadline(started):
                c.hung(rec, worker.pid)
                c.children.stop(worker, signal.SIGKILL, timing.STOP_GRACE)
                rec.exit_code = worker.returncode
                self.worker = None
                return

    def _retire(self) -> None:
        if self.worker is None:
            return
        if self.worker.stdin is not None:
            with contextlib.suppress(OSError):
                self.worker.stdin.close()  # EOF: the worker ends after its lifetime
        self.churn.children.stop(self.worker, signal.SIGTERM, timing.STOP_GRACE)


def _worker_line(rec: Lifetime, line: str) -> bool:
    """Apply one worker line to *rec*; True when the lifetime has ended."""
    try:
        obj = json.loads(line)
        kind = obj["event"]
    except (ValueError, KeyError, TypeError):
        return False  # not ours (a stray print); the worker's stderr has its logs
    if kind == "start":
        rec.peer_id = str(obj.get("uuid", ""))
        return False
    if kind == "end":
        rec.end = float(obj.get("t", time.time()))
        rec.exit_code = 0
        rec.reason = str(obj.get("reason") or "ended")
        return True
    return False
