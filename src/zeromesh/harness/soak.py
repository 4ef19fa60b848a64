"""The churn soak (``zeromesh soak``): the seed's ``runme.sh`` + ``repeat.sh`` +
``top`` + ``pstack``, in one command that ends with a verdict and an exit code.

One run, A/B: an embedded proxy (a thread of this process); two long-lived
peers side by side in the same churn, the peer under test and a reference
with the seed's behaviour (its data PUB never kicked), each sampled every
second; and N churn slots (:mod:`zeromesh.harness.slots`). The churn starts
once both long-lived peers are in the mesh; its first ``warmup`` seconds are
not measured (the mesh filling, the allocator's first arenas). Every child
dies with this process (:mod:`zeromesh.harness.procs`), and is stopped by PID
on the way out, on Ctrl+C and on error.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from .. import timing
from ..proxy import Proxy
from .children import Children, LogFiles
from .commands import Commands, memray_available
from .model import SCENARIOS, SoakConfig, SoakResult
from .progress import Progress
from .sampling import LongLived
from .slots import Churn

log = logging.getLogger(__name__)

#: How long a long-lived peer may take to join before the soak gives up.
READY_TIMEOUT = 30.0


class Soak:
    """One soak run; :meth:`run` returns what happened, for :mod:`report`."""

    def __init__(self, cfg: SoakConfig) -> None:
        cfg.check()
        self.cfg = cfg
        self.scenario = SCENARIOS[cfg.scenario]
        self.mode = cfg.resolved_mode()
        self.out = Path(cfg.out) if cfg.out else Path(f"soak-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        self.children = Children()
        self.logs = LogFiles(self.out / "logs")
        self.churn = Churn(cfg, self.children, self.logs, self.out)
        self.commands = Commands(cfg, self.scenario, self.mode, self.out, sys.executable)
        self.peers: list[LongLived] = []
        self.proxy: Proxy | None = None
        self.notes: list[str] = []
        self.interrupted = False
        self._t0 = 0.0
        self._wall0 = 0.0
        self._threads: list[threading.Thread] = []

    # --- the run ----------------------------------------------------------------

    def run(self, progress: Progress) -> SoakResult:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "hangs").mkdir(exist_ok=True)
        self._check_memray()
        for n in self.notes:
            print(f"zeromesh soak: {n}", file=sys.stderr)
        restore = self._install_signals()
        try:
            self._start()
            with progress:
                self._main_loop(progress)
        except BaseException as exc:
            self.churn.abort.set()
            if not isinstance(exc, KeyboardInterrupt):
                self.churn.errors.append(f"{type(exc).__name__}: {exc}")
                log.exception("soak failed")
            else:
                self._interrupted("SIGINT")
        finally:
            self._wind_down()
            restore()
        return self._result()

    def _check_memray(self) -> None:
        c = self.cfg
        if c.memray and c.long_lived_cmd:
            self.notes.append("--memray profiles zeromesh's own long-lived peer only; ignored with --long-lived-cmd")
            c.memray = False
        if c.memray and not memray_available():
            self.notes.append("--memray: memray is not installed (pip install memray); soak runs without it")
            c.memray = False

    def _start(self) -> None:
        """Proxy, long-lived peers (in the mesh before the churn starts), slots."""
        # No ZMTP heartbeats on the embedded proxy: a soak has no partition to
        # detect (a killed churner resets its connections), and libzmq 4.3.x
        # aborts the process (Assertion failed: !_io_error, libzmq #3937, #4364,
        # #4767) when a heartbeat times out on a connection whose receive queue
        # is full: a proxy behind the seed's C discovery storms on a loaded
        # machine hit it within a minute.
        self.proxy = Proxy(self.cfg.proxy_bind, mode=self.cfg.proxy_mode, heartbeats=False).start()
        endpoint = self.proxy.endpoint
        roles = [("peer", self.commands.peer(endpoint)), ("reference", self.commands.reference(endpoint))]
        for role, spec in roles:
            if spec is not None:
                csv_name = "samples.csv" if role == "peer" else f"{role}-samples.csv"
                cmd, events = spec
                ll = LongLived(role, cmd, events=events, children=self.children, logs=self.logs,
                               samples_csv=self.out / csv_name)  # fmt: skip
                self.peers.append(ll)
                ll.start()
        for ll in self.peers:
            if not ll.wait_ready(READY_TIMEOUT, self.churn.abort):
                if self.churn.abort.is_set():
                    return
                raise RuntimeError(
                    f"the long-lived {ll.rec.role} peer did not join within {READY_TIMEOUT:g} s; "
                    f"see {self.out / 'logs' / (ll.rec.role + '.log')}"
                )
        self._t0, self._wall0 = time.monotonic(), time.time()
        churner = self.commands.churner(endpoint)
        for slot in range(self.cfg.churners):
            t = threading.Thread(
                target=self.churn.run_slot,
                args=(slot, self.mode, churner),
                name=f"soak-slot-{slot}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def _main_loop(self, progress: Progress) -> None:
        c, churn = self.cfg, self.churn
        next_sample = time.monotonic()
        while not churn.abort.is_set():
            now = time.monotonic()
            if c.duration is not None and now - self._t0 >= c.duration:
                churn.stop_new.set()
            if churn.stop_new.is_set() and not any(t.is_alive() for t in self._threads):
                break
            for ll in self.peers:
                if not ll.alive():
                    assert ll.proc is not None
                    churn.errors.append(
                        f"the long-lived {ll.rec.role} peer exited early (exit code {ll.proc.returncode}); "
                        f"see {self.out / 'logs' / (ll.rec.role + '.log')}"
                    )
                    churn.abort.set()
            if churn.abort.is_set():
                break
            if now >= next_sample:
                self._sample()
                progress.update()
                next_sample += timing.SAMPLE_INTERVAL
                if next_sample < now:  # a slow machine: skip, do not burst
                    next_sample = now + timing.SAMPLE_INTERVAL
            churn.abort.wait(max(0.0, min(next_sample - time.monotonic(), timing.STOP_POLL)))

    def _sample(self) -> None:
        departures, lifetimes, hangs = self.churn.counts()
        for ll in self.peers:
            ll.sample(self._t0, departures, lifetimes, hangs)

    def _wind_down(self) -> None:
        churn = self.churn
        churn.stop_new.set()
        # Slots end by themselves (drain) or at once (abort); a hang capture may
        # still be running, hence the generous bound.
        bound = time.monotonic() + timing.STOP_GRACE + timing.STACK_CAPTURE_TIMEOUT
        for t in self._threads:
            t.join(max(0.1, bound - time.monotonic()))
        if self._t0 and any(ll.alive() for ll in self.peers):
            self._sample()
        for ll in self.peers:
            ll.ask_stop()
        grace = timing.STOP_GRACE + timing.LEAVE_TIMEOUT + (timing.MEMRAY_EXIT_GRACE if self.cfg.memray else 0.0)
        for ll in self.peers:
            ll.finish(self.out, grace)
        self.children.kill_all()
        if self.proxy is not None:
            self.proxy.stop()
        self.logs.close()
        if any(t.is_alive() for t in self._threads):
            churn.errors.append("a churn slot did not end in time (its processes were killed)")

    def _interrupted(self, name: str) -> None:
        if not self.interrupted:
            self.interrupted = True
            self.notes.append(f"stopped early by {name}")

    def _install_signals(self) -> Callable[[], None]:
        """SIGINT/SIGTERM: stop now, stop every child, still write the report.
        Later ones only say so: the wind-down is bounded, and interrupting it
        could leave children behind."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.churn.abort.is_set():
                print(
                    "zeromesh soak: already stopping (every child is stopped within seconds)",
                    file=sys.stderr,
                    flush=True,
                )
                return
            self._interrupted(signal.Signals(signum).name)
            self.churn.abort.set()

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    # --- figures ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Figures for the progress display."""
        departures, lifetimes, hangs = self.churn.counts()
        with self.churn.lock:
            running = len(self.churn.running)
        elapsed = time.monotonic() - self._t0 if self._t0 else 0.0
        return {
            "elapsed": elapsed,
            "lifetimes": lifetimes,
            "running": running,
            "departures": departures,
            "hangs": hangs,
            "draining": self.churn.stop_new.is_set(),
            "peers": {ll.rec.role: ll.samples() for ll in self.peers},
        }

    def _result(self) -> SoakResult:
        churn = self.churn
        by_role = {ll.rec.role: ll.rec for ll in self.peers}
        return SoakResult(
            cfg=self.cfg,
            scenario=self.scenario,
            mode=self.mode,
            out=self.out,
            started=self._wall0 or time.time(),
            lifetimes=sorted(churn.lifetimes, key=lambda r: r.n),
            peer=by_role.get("peer"),
            reference=by_role.get("reference"),
            worker_pids=list(churn.worker_pids),
            pids=list(self.children.all_pids),
            stack_tools=dict(churn.stack_tools),
            proxy_endpoint=self.proxy.endpoint if self.proxy else None,
            notes=list(self.notes),
            errors=list(churn.errors),
            interrupted=self.interrupted,
        )


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Run one soak, write its artefacts, print its verdict; the summary."""
    soak = Soak(cfg)
    # The report's matplotlib and scipy take seconds to import (tens on a loaded
    # machine): imported while the churn runs, not before it starts.
    prefetch = threading.Thread(
        target=importlib.import_module, args=(f"{__package__}.report",), name="soak-prefetch", daemon=True
    )
    prefetch.start()
    progress = Progress(soak.status, cfg, soak.mode, soak.out)
    result = soak.run(progress)
    prefetch.join()
    from . import report

    summary = report.write_soak(result)
    progress.final(summary)
    return summary
