"""Churn capacity: long-lived peers watching short-lived ones join and leave.

Child entry point: ``python -m zeromesh.bench.churn --proxy EP --rate R
--seconds S --life L`` (one churn driver).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import psutil

from ..harness import procs
from ..lines import read_json_line
from ..peer import Peer
from ..proxy import Proxy
from ..testing.netns import zeromesh_argv
from ..testing.waits import wait_for
from .common import WAIT_CAP, Result, send_line, stop_all


class _LongLived:
    """A ``zeromesh peer --long-lived`` child whose events are counted."""

    def __init__(self, proxy: str, classic: bool) -> None:
        cmd = zeromesh_argv("peer", "--proxy", proxy, "--long-lived")
        self.proc = subprocess.Popen(
            cmd + (["--classic"] if classic else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.counts: dict[str, int] = {}
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, f: IO[str] | None) -> None:
        for line in f or []:
            try:
                kind = json.loads(line)["event"]
            except (ValueError, KeyError):
                continue
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if kind == "ready":
                self.ready.set()

    def sample(self) -> tuple[float, int, int, int]:
        """CPU seconds, RSS bytes, leave and join events so far."""
        t = self.ps.cpu_times()
        return (
            t.user + t.system,
            self.ps.memory_info().rss,
            self.counts.get("leave", 0),
            self.counts.get("join", 0),
        )

    def close(self) -> None:
        procs.stop(self.proc, signal.SIGTERM, 10.0, self._reader)


def _churn_step(proxy: str, rate: float, seconds: float, life: float) -> int:
    """Start a short-lived peer every 1/*rate* s for *seconds*; collect them. Returns started."""
    live: list[Peer] = []
    started = 0
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < seconds:
        live.append(Peer(proxy, lifetime=life).start())
        started += 1
        for p in [p for p in live if p.done]:
            p.stop(5.0)
            live.remove(p)
        nxt = t0 + started / rate
        if nxt > now:
            time.sleep(nxt - now)  # sleep: pacing the churn rate
    stop_all(live)
    return started


def churner_main(argv: Sequence[str]) -> int:
    """A child process that churns: armed, then on ``go`` one short-lived
    peer every 1/rate s for the given seconds; prints how many it started."""
    ap = argparse.ArgumentParser(prog="python -m zeromesh.bench.churn")
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--life", type=float, required=True)
    a = ap.parse_args(argv)
    print(json.dumps({"armed": True}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    print(json.dumps({"started": _churn_step(a.proxy, a.rate, a.seconds, a.life)}), flush=True)
    return 0


def _churn(proxy: str, rate: float, seconds: float, life: float, drivers: int, at_go: Callable[[], None]) -> int:
    """Churn at *rate* from *drivers* child processes (one process cannot
    create and tear down peers fast enough on its own); *at_go* runs once
    they are all up, right before they start. Returns peers started."""
    cmd = [
        sys.executable,
        "-m",
        "zeromesh.bench.churn",
        "--proxy",
        proxy,
        "--rate",
        str(rate / drivers),
        "--seconds",
        str(seconds),
        "--life",
        str(life),
    ]
    children = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(drivers)]
    try:
        for p in children:
            read_json_line(p, WAIT_CAP)
        at_go()
        for p in children:
            send_line(p, "go")
        return sum(int(read_json_line(p, seconds + WAIT_CAP)["started"]) for p in children)
    finally:
        for p in children:
            procs.stop(p, None, 10.0)


def bench_churn(
    rates: Sequence[float] = (0, 5, 10, 20, 40, 80),
    seconds: float = 10.0,
    life: float = 0.2,
    drivers: int = 2,
) -> Result:
    """Short-lived peers join and leave at each rate in turn while a zeromesh
    and a classic long-lived peer (child processes, side by side) watch:
    their CPU (psutil cpu_times) and RSS per step. The churn comes from
    *drivers* child processes, so the bench process is not the limit."""
    rows: list[dict[str, Any]] = []
    with Proxy("tcp://127.0.0.1:0") as proxy:
        lls = {"zeromesh": _LongLived(proxy.endpoint, False), "classic": _LongLived(proxy.endpoint, True)}
        try:
            for ll in lls.values():
                ll.ready.wait(WAIT_CAP)
            before: dict[str, tuple[float, int, int, int]] = {}
            t_go: list[float] = []

            def mark() -> None:  # the drivers' start-up stays out of the measured interval
                before.update({k: ll.sample() for k, ll in lls.items()})
                t_go[:] = [time.monotonic()]

            for rate in rates:
                if rate:
                    started = _churn(proxy.endpoint, rate, seconds, life, drivers, mark)
                else:
                    mark()
                    started = 0
                    time.sleep(seconds)  # sleep: the idle baseline is a measured interval
                t0 = t_go[0]
                t_churn = time.monotonic() - t0
                # Let the last departures reach the long-lived peers (bounded). A
                # churner that left before it was heard is never seen to join or leave.
                wait_for(
                    lambda: all(
                        ll.sample()[2] - before[k][2] >= ll.sample()[3] - before[k][3] for k, ll in lls.items()
                    ),
                    5.0,
                    0.05,
                )
                dt = time.monotonic() - t0
                for k, ll in lls.items():
                    cpu, rss, leaves, _ = ll.sample()
                    c0, r0, l0, _ = before[k]
                    dl = leaves - l0
                    rows.append(
                        {
                            "rate /s": rate,
                            "long-lived": k,
                            "departures seen": dl,
                            "churned": started,
                            "achieved /s": round(started / t_churn, 1) if rate else 0.0,
                            "CPU % of a core": round(100 * (cpu - c0) / dt, 1),
                            "CPU ms per departure": round(1000 * (cpu - c0) / dl, 2) if dl else None,
                            "RSS MB": round(rss / 1e6, 1),
                            "RSS delta KB": round((rss - r0) / 1e3),
                        }
                    )
        finally:
            for ll in lls.values():
                ll.close()
    ok = [
        r["achieved /s"]
        for r in rows
        if r["long-lived"] == "zeromesh"
        and r["rate /s"]
        and r["CPU % of a core"] < 50
        and r["departures seen"] >= 0.9 * r["churned"]
    ]
    return {
        "name": "churn",
        "title": "Churn capacity: long-lived peers (zeromesh and classic side by side) under join+leave churn",
        "params": {"rates": list(rates), "seconds": seconds, "life": life},
        "rows": rows,
        "summary": {
            "zeromesh_max_rate_under_50pct_cpu": max(ok) if ok else None,
            "goal": "flat memory, < 50% of one core",
        },
    }


if __name__ == "__main__":
    sys.exit(churner_main(sys.argv[1:]))
