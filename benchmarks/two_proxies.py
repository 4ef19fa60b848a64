"""No single proxy (issue 13 point 5): kill one of two proxies under churn.

Two ``zeromesh proxy`` processes (A and B, fixed ports so that A can come back
at the same addresses), N stable peers given both (in this process), each
publishing a sequence number every 50 ms, and a churner that keeps starting
short-lived peers given both. Phases: both proxies up; A SIGKILLed; A
restarted. Counted throughout:

* **false leaves**: a leave event at a stable peer for a stable peer, or for a
  churner whose reason is not "left" (expired); must be 0;
* **lost messages**: gaps in the per-sender sequence numbers at every stable peer;
* **join latency** per phase: a churner's start until every stable peer lists it;
* **relearn**: after A's restart, a peer given only A: start until it lists
  every stable peer (A re-learned everyone).

The same run then repeats everything with A left alone (the control): on a
shared, loaded machine starved loops drop heartbeats, so expiries and losses
that the control shows too are the machine's, not the kill's.

    python benchmarks/two_proxies.py                  # 20 peers, 3 phases of 10 s, twice
    python benchmarks/two_proxies.py --peers 10 --phase 5

Exit 0 when the kill run has no false leave, no lost message and no failed join.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zeromesh import Peer, PeerEvent
from zeromesh.peer import DataMessage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProxyProcess:
    """``zeromesh proxy`` in a child process at fixed addresses."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.xsub = f"tcp://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> None:
        cmd = [sys.executable, "-m", "zeromesh", "proxy", "-q", "--bind", self.endpoint]
        cmd += ["--xsub-bind", self.xsub, "--events", "jsonl"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:  # the ready line (bounded by the deadline below)
            if json.loads(line).get("event") == "ready":
                return
            if time.monotonic() > deadline:
                break
        raise RuntimeError("proxy did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Counting stops before the stable peers leave at the end.
    measuring: bool = True
    phase: str = "both"
    false_leaves: list[tuple[str, str | None, str]] = field(default_factory=list)
    last_seq: dict[tuple[str, str], int] = field(default_factory=dict)
    lost: int = 0
    lost_by_phase: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    received: int = 0


def run(a: argparse.Namespace, kill: bool) -> dict[str, Any]:
    """One scenario: three phases of churn; with *kill*, A is SIGKILLed after
    the first and restarted after the second."""
    pa, pb = ProxyProcess(), ProxyProcess()
    pa.start()
    pb.start()
    both = [pa.endpoint, pb.endpoint]
    tally = Tally()
    stable: list[Peer] = []
    stable_ids: set[str] = set()

    def on_event(ev: PeerEvent) -> None:
        if ev.kind == "leave" and (ev.uuid in stable_ids or ev.reason != "left"):
            with tally.lock:
                if tally.measuring:
                    tally.false_leaves.append((ev.uuid[:8], ev.reason, tally.phase))

    def receiver(me: str) -> Callable[[DataMessage], None]:
        def on_message(m: DataMessage) -> None:
            seq = int(m.payload)
            with tally.lock:
                tally.received += 1
                last = tally.last_seq.get((me, m.sender))
                if last is not None and seq > last + 1 and tally.measuring:
                    tally.lost += seq - last - 1
                    tally.lost_by_phase[tally.phase] += seq - last - 1
                tally.last_seq[(me, m.sender)] = max(seq, last or 0)

        return on_message

    for _ in range(a.peers):
        u = str(uuidlib.uuid4())
        stable_ids.add(u)
        stable.append(Peer(both, uuid=u, on_event=on_event, on_message=receiver(u)))
    for p in stable:
        p.start()
    for p in stable:
        assert p.wait_ready(30.0), "a stable peer never got ready"
    assert all(p.wait_for_peers(a.peers - 1, 60.0) for p in stable), "stable mesh did not converge"

    stop = threading.Event()
    joins: dict[str, list[float]] = defaultdict(list)
    failed: dict[str, int] = defaultdict(int)

    def publisher() -> None:
        seq = 0
        while not stop.wait(0.05):
            seq += 1
            for p in stable:
                p.publish(b"n", str(seq).encode())

    def churner() -> None:
        while not stop.is_set():
            name = tally.phase
            t0 = time.monotonic()
            c = Peer(both, lifetime=a.lifetime).start()
            deadline = t0 + 10.0
            while time.monotonic() < deadline and not all(c.uuid in p.peers() for p in stable):
                time.sleep(0.01)  # sleep: polling interval of a bounded wait
            if all(c.uuid in p.peers() for p in stable):
                joins[name].append(time.monotonic() - t0)
            else:
                failed[name] += 1
            c.wait_done(a.lifetime + 10.0)
            c.stop()

    def set_phase(name: str) -> None:
        with tally.lock:
            tally.phase = name

    threads = [threading.Thread(target=publisher, daemon=True)]
    threads += [threading.Thread(target=churner, daemon=True) for _ in range(a.churners)]
    for t in threads:
        t.start()
    time.sleep(a.phase)  # sleep: the measured phase itself (both proxies up)
    set_phase("A killed")
    if kill:
        pa.kill()
    time.sleep(a.phase)  # sleep: the measured phase (A down)
    set_phase("A restarted")
    relearn = None
    if kill:
        pa.start()
        t0 = time.monotonic()
        fresh = Peer(pa.endpoint).start()
        while time.monotonic() - t0 < 30.0:
            if stable_ids <= set(fresh.peers()):
                relearn = time.monotonic() - t0
                break
            time.sleep(0.01)  # sleep: polling interval of a bounded wait
        fresh.stop()
    time.sleep(a.phase)  # sleep: the measured phase (A back)
    stop.set()
    for t in threads:
        t.join(a.lifetime + 25.0)
    with tally.lock:
        tally.measuring = False
    for p in stable:
        p.stop()
    pa.stop()
    pb.stop()
    return {
        "scenario": "kill A" if kill else "control",
        "false_leaves": len(tally.false_leaves),
        "false_leaf_sample": tally.false_leaves[:5],
        "lost_messages": tally.lost,
        "lost_by_phase": dict(tally.lost_by_phase),
        "received": tally.received,
        "relearn_s": relearn,
        "phases": {
            n: {
                "joins": len(joins[n]),
                "failed": failed[n],
                "join_p50_s": statistics.median(joins[n]) if joins[n] else None,
                "join_p95_s": pct(joins[n], 0.95),
            }
            for n in PHASES
        },
    }


PHASES = ("both", "A killed", "A restarted")


def pct(xs: list[float], q: float) -> float | None:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def secs(x: float | None) -> str:
    return f"{x:.3f} s" if x is not None else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--peers", type=int, default=20, help="stable peers (default %(default)s)")
    ap.add_argument("--phase", type=float, default=10.0, help="seconds per phase (default %(default)s)")
    ap.add_argument("--churners", type=int, default=3, help="churners running at once (default %(default)s)")
    ap.add_argument("--lifetime", type=float, default=2.0, help="churner lifetime (default %(default)s)")
    ap.add_argument("--json", help="write the result here too")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    results = [run(a, kill=True), run(a, kill=False)]
    print(f"{a.peers} stable peers given both proxies, {a.churners} churners ({a.lifetime:g} s lives), "
          f"{a.phase:g} s per phase, load average {load:.0f} on {os.cpu_count()} cores")  # fmt: skip
    print("| scenario | phase | churner joins | failed | join p50 | join p95 | lost messages |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for n in PHASES:
            ph = r["phases"][n]
            lost = r["lost_by_phase"].get(n, 0)
            print(f"| {r['scenario']} | {n} | {ph['joins']} | {ph['failed']} | {secs(ph['join_p50_s'])} "
                  f"| {secs(ph['join_p95_s'])} | {lost} |")  # fmt: skip
    for r in results:
        print(f"{r['scenario']}: false leaves {r['false_leaves']} {r['false_leaf_sample']}, lost {r['lost_messages']}"
              f" of {r['received']} received, relearn through restarted A: {secs(r['relearn_s'])}")  # fmt: skip
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"load": load, "command": "python benchmarks/two_proxies.py " + " ".join(sys.argv[1:]),
                       "results": results}, f, indent=2)  # fmt: skip
    k = results[0]
    ok = not k["false_leaves"] and not k["lost_messages"] and not any(ph["failed"] for ph in k["phases"].values())
    return 0 if ok and k["relearn_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
