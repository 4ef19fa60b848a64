"""The churn soak (``zeromesh soak``): the seed's ``runme.sh`` + ``repeat.sh`` +
``top`` + ``pstack``, in one command that ends with numbers and a verdict.

One run: an embedded proxy (a thread of this process), one long-lived peer
(a child process, ``zeromesh peer --long-lived --events jsonl``, whose memory is
sampled every second and whose ``leave`` events count the departures), and N
churn slots, each running peer lifetimes one after the other with a pause:

* ``process`` mode: one fresh process per lifetime, as the seed (``zeromesh
  peer --seconds N``, or any program via ``--peer-cmd``);
* ``inproc`` mode: one ``zeromesh churn-worker`` process per slot, one fresh
  :class:`~zeromesh.peer.Peer` (own context) per lifetime; cheap enough for 50.

A lifetime that has not ended ``lifetime + LEAVE_TIMEOUT + HANG_GRACE`` after
it started is hung: its process's stacks go to ``hangs/``, then it is killed
(in ``inproc`` mode its worker is replaced) and the soak carries on.

Every child is registered by PID and stopped (bounded) on the way out, on
Ctrl+C and on error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Literal

import psutil
import zmq

from . import __version__, procs, stacks, timing
from .proxy import Proxy, ProxyMode

# report and stats pull in matplotlib and scipy (seconds and ~100 MB): imported
# where used, since every `zeromesh peer` builds the CLI that imports this module.
if TYPE_CHECKING:
    from . import report, stats

log = logging.getLogger(__name__)

Mode = Literal["process", "inproc", "auto"]

#: Above this many churners ``--mode auto`` picks ``inproc``: a Python start
#: per lifetime costs ~0.1 s of CPU, too much for 2 cores at 50 churners.
AUTO_PROCESS_MAX_CHURNERS = 10


@dataclass(frozen=True)
class Scenario:
    """Which peer gets which switches. Memory is measured on the long-lived
    peer, so memory switches go there; hangs happen in peers that exit, so
    linger and send switches go to the churners."""

    name: str
    long_lived: tuple[str, ...]
    churner: tuple[str, ...]
    about: str


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("default", (), (), "zeromesh defaults: data PUB kicked every turn and on a timer, linger set at creation"),
    Scenario("baseline", ("--no-kick",), (), "the seed's default for memory: the long-lived peer's data PUB is never kicked"),
    Scenario("poll-after-disconnect", ("--no-kick", "--poll-after-disconnect"), (),
             "seed -poll-after-disconnect on the long-lived peer: poll the data PUB once after each disconnect"),
    Scenario("events-after-disconnect", ("--no-kick", "--events-after-disconnect"), (),
             "getsockopt(EVENTS) once after each disconnect on the long-lived peer (the seed's #1256 attempt)"),
    Scenario("late-linger", (), ("--late-linger",),
             "control: churners set linger just before close but never send on the data PUB"),
    Scenario("send-late-linger", (), ("--send-after-disconnect", "--late-linger"),
             "the seed's -send: churners send on the data PUB after each disconnect, linger set just before close"),
    Scenario("send-early-linger", (), ("--send-after-disconnect", "--early-linger"),
             "the seed's -send -early: the same sends, linger set at socket creation"),
    Scenario("send-linger-after-bind", (), ("--send-after-disconnect", "--linger-after-bind"),
             "the same sends, linger set right after bind/connect"),
    Scenario("seed", ("--classic",), ("--classic", "--send-after-disconnect"),
             "every seed behaviour at once on every peer (1 s loop, no kick, late linger, -send)"),
)}

#: What ``zeromesh matrix`` runs when no ``--scenarios`` are given.
MATRIX_DEFAULT = ("baseline", "poll-after-disconnect", "events-after-disconnect", "default",
                  "late-linger", "send-late-linger", "send-early-linger", "send-linger-after-bind")


@dataclass
class SoakConfig:
    duration: float | None = 60.0
    lifetimes: int | None = None
    churners: int = 5
    lifetime: float = 2.0
    pause: float = 1.0
    scenario: str = "default"
    mode: Mode = "auto"
    out: Path | None = None
    peer_cmd: str | None = None
    peer_args: list[str] = field(default_factory=list)
    long_lived_cmd: str | None = None
    long_lived_args: list[str] = field(default_factory=list)
    proxy_bind: str = "tcp://127.0.0.1:0"
    proxy_mode: ProxyMode = "directory"
    memray: bool = False
    live: bool | None = None  # None: when stdout is a terminal
    hang_grace: float = timing.HANG_GRACE
    command: str = ""

    def resolved_mode(self) -> Literal["process", "inproc"]:
        if self.mode != "auto":
            return self.mode
        if self.peer_cmd or self.churners <= AUTO_PROCESS_MAX_CHURNERS:
            return "process"
        return "inproc"

    def check(self) -> None:
        """Clear errors for impossible settings, before anything starts."""
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; known: {', '.join(SCENARIOS)}")
        if self.churners < 1:
            raise ValueError("--churners must be at least 1")
        if self.lifetime <= 0 or self.pause < 0:
            raise ValueError("--lifetime must be > 0 and --pause >= 0")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("--duration must be > 0")
        if self.duration is None and self.lifetimes is None:
            raise ValueError("give a --duration or a number of --lifetimes")
        if self.lifetimes is not None and self.lifetimes < 1:
            raise ValueError("--lifetimes must be at least 1")
        if self.peer_cmd and self.mode == "inproc":
            raise ValueError("--peer-cmd churns a program, one process per lifetime: use --mode process")
        for opt, template, keys in (("--peer-cmd", self.peer_cmd, ("seconds", "proxy", "uuid", "python")),
                                    ("--long-lived-cmd", self.long_lived_cmd, ("proxy", "python"))):
            if template is None:
                continue
            try:
                parts = shlex.split(template)
                for part in parts:
                    part.format(**dict.fromkeys(keys, "x"))
            except (ValueError, KeyError, IndexError) as exc:
                raise ValueError(f"{opt}: bad template {template!r} ({exc}); placeholders: "
                                 + " ".join(f"{{{k}}}" for k in keys)) from None
            if not parts:
                raise ValueError(f"{opt} is empty")


@dataclass
class Lifetime:
    slot: int
    n: int
    pid: int
    peer_id: str
    start: float
    end: float | None = None
    exit_code: int | None = None
    hung: bool = False
    #: left / timeout / error from the peer; interrupted; worker-died; ...
    reason: str = ""
    stacks: str = ""

    @property
    def counted(self) -> bool:
        """In the hang-rate denominator: it ran to its end or hung (a lifetime
        cut short by Ctrl+C proves nothing either way)."""
        return self.reason != "interrupted"


@dataclass
class Sample:
    t: float
    elapsed: float
    rss_kb: int
    vms_kb: int
    fds: int
    threads: int
    cpu_percent: float
    departures: int
    lifetimes: int
    hangs: int


class LineReader:
    """Lines from a pipe with a timeout per line (select + os.read), so a slot
    can wait for its worker's next line and still notice a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buf = b""
        self._eof = False

    def readline(self, timeout: float) -> str | None:
        """The next line with its newline, ``""`` at EOF, None on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            if self._eof:
                rest, self._buf = self._buf, b""
                return rest.decode(errors="replace")
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self._eof = True
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace") + "\n"


class Soak:
    """One soak run; :meth:`run` returns the summary (also in summary.json)."""

    def __init__(self, cfg: SoakConfig) -> None:
        cfg.check()
        self.cfg = cfg
        self.scenario = SCENARIOS[cfg.scenario]
        self.mode = cfg.resolved_mode()
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = Path(cfg.out) if cfg.out else Path(f"soak-{stamp}")
        self.python = sys.executable
        self._lock = threading.Lock()
        self.stop_new = threading.Event()  # drain: finish running lifetimes, start none
        self.abort = threading.Event()  # Ctrl+C or error: stop now
        self._closed = False
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.all_pids: list[int] = []
        self.worker_pids: list[int] = []
        self.lifetimes: list[Lifetime] = []
        self.samples: list[Sample] = []
        self._claimed = 0
        self.departures = 0
        self.joins = 0
        self.leave_reasons: Counter[str] = Counter()
        self.long_lived_uuid = ""
        self.long_lived_bad_lines = 0
        self.running: dict[int, float] = {}  # slot -> monotonic start of its lifetime
        self.stack_tools: Counter[str] = Counter()
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.proxy: Proxy | None = None
        self.long_lived: subprocess.Popen[bytes] | None = None
        self._t0 = 0.0
        self._wall0 = 0.0
        self._logs: list[IO[bytes]] = []

    # --- children, by PID ----------------------------------------------------

    def _spawn(self, cmd: list[str], *, stdin: Any, stdout: Any, stderr: IO[bytes]) -> subprocess.Popen[bytes] | None:
        """Start and register a child; None once the soak is closing."""
        with self._lock:
            if self._closed:
                return None
            # Own session: the terminal's Ctrl+C reaches the harness only, and
            # the harness stops each child itself, in order.
            p = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
            self._procs[p.pid] = p
            self.all_pids.append(p.pid)
            return p

    def _stop(self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = timing.STOP_GRACE) -> None:
        """Stop one child: *sig*, bounded wait, SIGKILL; then forget it."""
        procs.stop(p, sig, grace)
        with self._lock:
            self._procs.pop(p.pid, None)

    def _kill_all(self) -> None:
        with self._lock:
            self._closed = True
            left = list(self._procs.values())
        for p in left:
            self._stop(p, signal.SIGKILL, 1.0)

    def live_pids(self) -> list[int]:
        with self._lock:
            return [pid for pid, p in self._procs.items() if p.poll() is None]

    # --- commands --------------------------------------------------------------

    def _zeromesh(self) -> list[str]:
        return [self.python, "-m", "zeromesh"]

    def _fill(self, template: str, **kw: str) -> list[str]:
        return [part.format(python=self.python, **kw) for part in shlex.split(template)]

    def long_lived_cmd(self, proxy: str) -> list[str]:
        c = self.cfg
        if c.long_lived_cmd:
            return self._fill(c.long_lived_cmd, proxy=proxy) + c.long_lived_args
        head = self._zeromesh()
        if c.memray:
            head = [self.python, "-m", "memray", "run", "--native", "-q", "-f",
                    "-o", str(self.out / "memray.bin"), "-m", "zeromesh"]
        return head + ["peer", "--long-lived", "--events", "jsonl", "--proxy", proxy,
                       *self.scenario.long_lived, *c.long_lived_args]

    def churner_cmd(self, proxy: str, uid: str) -> list[str]:
        c = self.cfg
        secs = f"{c.lifetime:g}"
        if self.mode == "inproc":
            return self._zeromesh() + ["churn-worker", "--seconds", secs, "--proxy", proxy,
                                       *self.scenario.churner, *c.peer_args]
        if c.peer_cmd:
            cmd = self._fill(c.peer_cmd, seconds=secs, proxy=proxy, uuid=uid)
            if "{seconds}" not in c.peer_cmd:
                cmd += ["-seconds", secs]  # the seed's spelling; zeromesh peer takes it too
            return cmd + c.peer_args
        return self._zeromesh() + ["peer", "--seconds", secs, "--proxy", proxy, "--uuid", uid,
                                   *self.scenario.churner, *c.peer_args]

    # --- lifetimes --------------------------------------------------------------

    def _claim(self, slot: int) -> int | None:
        """A ticket for one more lifetime, or None when the soak is winding down."""
        with self._lock:
            if self.stop_new.is_set() or self.abort.is_set():
                return None
            if self.cfg.lifetimes is not None and self._claimed >= self.cfg.lifetimes:
                self.stop_new.set()
                return None
            self._claimed += 1
            self.running[slot] = time.monotonic()
            return self._claimed

    def _record(self, rec: Lifetime) -> None:
        if rec.end is None:
            rec.end = time.time()
        with self._lock:
            self.lifetimes.append(rec)
            self.running.pop(rec.slot, None)

    def _deadline(self, started: float) -> float:
        return started + self.cfg.lifetime + timing.LEAVE_TIMEOUT + self.cfg.hang_grace

    def _hung(self, rec: Lifetime, pid: int) -> None:
        """Stacks of a hung lifetime's process into hangs/ (before it is killed)."""
        rec.hung = True
        name = f"hangs/lifetime-{rec.n:05d}-pid{pid}.txt"
        header = (f"lifetime {rec.n} (slot {rec.slot}, peer {rec.peer_id or '?'}) started "
                  f"{datetime.fromtimestamp(rec.start, timezone.utc).isoformat()}, "
                  f"not ended {self.cfg.lifetime:g} + {timing.LEAVE_TIMEOUT:g} + {self.cfg.hang_grace:g} s later\n")
        tool = stacks.save(pid, self.out / name, header)
        with self._lock:
            self.stack_tools[tool] += 1
        rec.stacks = name
        log.warning("lifetime %d (pid %d) hung; stacks in %s", rec.n, pid, name)

    def _log_file(self, name: str) -> IO[bytes]:
        f = open(self.out / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (closed at the end)
        with self._lock:
            self._logs.append(f)
        return f

    def _process_slot(self, slot: int, proxy: str) -> None:
        err = self._log_file(f"slot-{slot:02d}")
        while (n := self._claim(slot)) is not None:
            uid = str(uuidlib.uuid4())
            started = time.monotonic()
            p = self._spawn(self.churner_cmd(proxy, uid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err)
            if p is None:
                with self._lock:
                    self.running.pop(slot, None)
                return
            # The peer id is known only when the harness chose it (our peer, or {uuid}).
            mine = not self.cfg.peer_cmd or "{uuid}" in self.cfg.peer_cmd
            rec = Lifetime(slot, n, p.pid, uid if mine else "", time.time())
            while True:
                try:
                    rec.exit_code = p.wait(timing.PROXY_POLL)
                    rec.reason = "exited" if rec.exit_code == 0 else f"exit code {rec.exit_code}"
                    break
                except subprocess.TimeoutExpired:
                    if self.abort.is_set():
                        rec.reason = "interrupted"
                        break
                    if time.monotonic() >= self._deadline(started):
                        rec.reason = "hung"
                        self._hung(rec, p.pid)
                        self._stop(p, signal.SIGKILL)
                        break
            self._stop(p)
            if rec.exit_code is None:
                rec.exit_code = p.returncode
            self._record(rec)
            if self.abort.wait(self.cfg.pause):
                return

    def _inproc_slot(self, slot: int, proxy: str) -> None:
        err = self._log_file(f"slot-{slot:02d}")
        worker: subprocess.Popen[bytes] | None = None
        reader: LineReader | None = None
        try:
            while (n := self._claim(slot)) is not None:
                if worker is None or worker.poll() is not None:
                    if worker is not None:
                        self._stop(worker)
                    worker = self._spawn(self.churner_cmd(proxy, ""), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err)
                    if worker is None:
                        return
                    with self._lock:
                        self.worker_pids.append(worker.pid)
                    assert worker.stdout is not None
                    reader = LineReader(worker.stdout)
                assert worker.stdin is not None and reader is not None
                started = time.monotonic()
                rec = Lifetime(slot, n, worker.pid, "", time.time())
                try:
                    worker.stdin.write(b"go\n")
                    worker.stdin.flush()
                except OSError:
                    pass  # it died: seen as EOF below
                while True:
                    line = reader.readline(min(timing.PROXY_POLL, max(0.0, self._deadline(started) - time.monotonic())))
                    if line == "":
                        rec.exit_code = worker.wait(timing.STOP_GRACE)
                        rec.reason = f"worker died (exit code {rec.exit_code})"
                        break
                    if line is not None:
                        if self._worker_line(rec, line):
                            break
                        continue
                    if self.abort.is_set():
                        rec.reason = "interrupted"
                        break
                    if time.monotonic() >= self._deadline(started):
                        rec.reason = "hung"
                        self._hung(rec, worker.pid)
                        self._stop(worker, signal.SIGKILL, timing.STOP_GRACE)
                        rec.exit_code = worker.returncode
                        worker = None
                        break
                self._record(rec)
                if self.abort.wait(self.cfg.pause):
                    return
        finally:
            if worker is not None:
                if worker.stdin is not None:
                    with contextlib.suppress(OSError):
                        worker.stdin.close()  # EOF: the worker ends after its lifetime
                self._stop(worker, signal.SIGTERM, timing.STOP_GRACE)

    def _slot_main(self, slot: int, proxy: str) -> None:
        """A slot that fails (a --peer-cmd that cannot start, say) stops the
        soak with the reason, rather than leaving it churning with fewer slots."""
        # Stagger the first lifetimes over one period, so the churn is steady
        # rather than waves of every slot joining and leaving at once.
        period = self.cfg.lifetime + self.cfg.pause
        if self.abort.wait(period * slot / self.cfg.churners):
            return
        try:
            if self.mode == "inproc":
                self._inproc_slot(slot, proxy)
            else:
                self._process_slot(slot, proxy)
        except Exception as exc:  # noqa: BLE001 (any failure: report it and stop the soak)
            with self._lock:
                self.errors.append(f"churn slot {slot}: {type(exc).__name__}: {exc}")
                self.running.pop(slot, None)
            self.abort.set()

    def _worker_line(self, rec: Lifetime, line: str) -> bool:
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

    # --- the long-lived peer ----------------------------------------------------

    def _read_long_lived(self, stdout: IO[bytes]) -> None:
        for raw in stdout:
            try:
                ev = json.loads(raw)
                kind = ev["event"]
            except (ValueError, KeyError, TypeError):
                with self._lock:
                    self.long_lived_bad_lines += 1
                continue
            with self._lock:
                if kind == "ready":
                    self.long_lived_uuid = str(ev.get("uuid", ""))
                elif kind == "join":
                    self.joins += 1
                elif kind == "leave":
                    self.departures += 1
                    self.leave_reasons[str(ev.get("reason", "?"))] += 1

    def _sample(self, ps: psutil.Process) -> Sample | None:
        try:
            with ps.oneshot():
                mem = ps.memory_info()
                s = Sample(
                    t=time.time(), elapsed=time.monotonic() - self._t0,
                    rss_kb=mem.rss // 1024, vms_kb=mem.vms // 1024, fds=ps.num_fds(),
                    threads=ps.num_threads(), cpu_percent=ps.cpu_percent(None),
                    departures=0, lifetimes=0, hangs=0,
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        with self._lock:
            s.departures = self._departures_locked()
            s.lifetimes = len(self.lifetimes)
            s.hangs = sum(r.hung for r in self.lifetimes)
            self.samples.append(s)
        return s

    def _departures_locked(self) -> int:
        if self.cfg.long_lived_cmd is None:
            return self.departures
        # A foreign long-lived peer tells us nothing: count churners that ended.
        return sum(1 for r in self.lifetimes if not r.hung and r.reason != "interrupted")

    # --- the run ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from . import report

        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "hangs").mkdir(exist_ok=True)
        if self.cfg.memray and self.cfg.long_lived_cmd:
            self.notes.append("--memray profiles zeromesh's own long-lived peer only; ignored with --long-lived-cmd")
            self.cfg.memray = False
        if self.cfg.memray and not report.memray_available():
            self.notes.append("--memray: memray is not installed (pip install 'zeromesh[profile]'); soak runs without it")
            self.cfg.memray = False
        for n in self.notes:
            print(f"zeromesh soak: {n}", file=sys.stderr)
        restore = self._install_signals()
        display = report.Progress(self, self.cfg.live)
        threads: list[threading.Thread] = []
        reader: threading.Thread | None = None
        try:
            self.proxy = Proxy(self.cfg.proxy_bind, mode=self.cfg.proxy_mode).start()
            proxy = self.proxy.endpoint
            ll_err = self._log_file("long-lived")
            self.long_lived = self._spawn(self.long_lived_cmd(proxy), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=ll_err)
            if self.long_lived is None:
                raise RuntimeError("soak closed before it started")
            assert self.long_lived.stdout is not None
            reader = threading.Thread(target=self._read_long_lived, args=(self.long_lived.stdout,),
                                      name="soak-long-lived", daemon=True)
            reader.start()
            ps = psutil.Process(self.long_lived.pid)
            ps.cpu_percent(None)
            self._t0, self._wall0 = time.monotonic(), time.time()
            for slot in range(self.cfg.churners):
                t = threading.Thread(target=self._slot_main, args=(slot, proxy), name=f"soak-slot-{slot}", daemon=True)
                t.start()
                threads.append(t)
            with display:
                self._main_loop(ps, threads, display)
        except BaseException as exc:
            self.abort.set()
            if not isinstance(exc, KeyboardInterrupt):
                self.errors.append(f"{type(exc).__name__}: {exc}")
                log.exception("soak failed")
        finally:
            self._wind_down(threads, reader)
            restore()
        summary = report.write_soak(self)
        display.final(summary)
        return summary

    def _main_loop(self, ps: psutil.Process, threads: list[threading.Thread], display: report.Progress) -> None:
        c = self.cfg
        next_sample = time.monotonic()
        while not self.abort.is_set():
            now = time.monotonic()
            if c.duration is not None and now - self._t0 >= c.duration:
                self.stop_new.set()
            if self.stop_new.is_set() and not any(t.is_alive() for t in threads):
                break
            assert self.long_lived is not None
            if self.long_lived.poll() is not None:
                self.errors.append(f"the long-lived peer exited early (exit code {self.long_lived.returncode}); "
                                   f"see {self.out / 'logs' / 'long-lived.log'}")
                self.abort.set()
                break
            if now >= next_sample:
                self._sample(ps)
                display.update()
                next_sample += timing.SAMPLE_INTERVAL
                if next_sample < now:  # a slow machine: skip, do not burst
                    next_sample = now + timing.SAMPLE_INTERVAL
            self.abort.wait(max(0.0, min(next_sample - time.monotonic(), timing.PROXY_POLL)))

    def _wind_down(self, threads: list[threading.Thread], reader: threading.Thread | None) -> None:
        self.stop_new.set()
        # Slots end by themselves (drain) or at once (abort); a hang capture may
        # still be running, hence the generous bound.
        bound = time.monotonic() + timing.STOP_GRACE + timing.STACK_CAPTURE_TIMEOUT
        for t in threads:
            t.join(max(0.1, bound - time.monotonic()))
        if self.long_lived is not None and self.long_lived.poll() is None:
            with contextlib.suppress(psutil.Error):
                self._sample(psutil.Process(self.long_lived.pid))
            # SIGINT: it leaves the mesh, and memray (if any) writes its file.
            self._stop(self.long_lived, signal.SIGINT, timing.STOP_GRACE + timing.LEAVE_TIMEOUT)
        self._kill_all()
        if reader is not None:
            reader.join(timing.STOP_GRACE)
        if self.proxy is not None:
            self.proxy.stop()
        with self._lock:
            logs, self._logs = self._logs, []
        for f in logs:
            f.close()
        if any(t.is_alive() for t in threads):
            self.errors.append("a churn slot did not end in time (its processes were killed)")

    def _install_signals(self) -> Any:
        """SIGINT/SIGTERM: stop now, stop every child, still write the report.
        Later ones only say so: the wind-down is bounded, and interrupting it
        could leave children behind."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.abort.is_set():
                print("zeromesh soak: already stopping (every child is stopped within seconds)",
                      file=sys.stderr, flush=True)
                return
            self.notes.append(f"stopped early by {signal.Signals(signum).name}")
            self.abort.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    # --- figures --------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self._t0 if self._t0 else 0.0

    def status(self) -> dict[str, Any]:
        """Figures for the progress display (a consistent snapshot)."""
        with self._lock:
            last = self.samples[-1] if self.samples else None
            return {"elapsed": self.elapsed(), "lifetimes": len(self.lifetimes), "running": len(self.running),
                    "departures": self._departures_locked(), "rss_kb": last.rss_kb if last else None,
                    "hangs": sum(r.hung for r in self.lifetimes)}

    def counted(self) -> list[Lifetime]:
        with self._lock:
            return [r for r in self.lifetimes if r.counted]

    def hang_rate(self) -> stats.Proportion:
        from . import stats

        done = self.counted()
        return stats.wilson(sum(r.hung for r in done), len(done))

    def warmup_s(self) -> float:
        total = self.samples[-1].elapsed if self.samples else 0.0
        return max(timing.SOAK_WARMUP_MIN, 0.2 * total)

    def slope(self) -> stats.Slope | None:
        """KB of long-lived RSS per departure, after the warm-up."""
        from . import stats

        w = self.warmup_s()
        with self._lock:
            pts = [(s.departures, s.rss_kb) for s in self.samples if s.elapsed >= w]
        return stats.slope_ci([p[0] for p in pts], [p[1] for p in pts])


def versions() -> dict[str, str]:
    return {"libzmq_version": zmq.zmq_version(), "pyzmq_version": zmq.pyzmq_version(),
            "zeromesh_version": __version__, "python_version": sys.version.split()[0]}


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    return Soak(cfg).run()


def run_matrix(scenarios: list[str], base: SoakConfig, out: Path) -> dict[str, Any]:
    """Each scenario as one soak with the same budget, into *out*/<scenario>/,
    then one report over all of them."""
    for name in scenarios:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    from . import report

    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for i, name in enumerate(scenarios, 1):
        print(f"zeromesh matrix: [{i}/{len(scenarios)}] {name}", flush=True)
        cfg = SoakConfig(**{**base.__dict__, "scenario": name, "out": out / name})
        s = run_soak(cfg)
        results.append(s)
        if "stopped early" in " ".join(s.get("notes", [])):
            print("zeromesh matrix: interrupted; reporting what ran", file=sys.stderr)
            break
    return report.write_matrix(results, out, base.command)

