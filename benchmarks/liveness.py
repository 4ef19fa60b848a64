"""Liveness figures: crash detection, proxy-restart recovery, partition detection and heal.

    .venv/bin/python benchmarks/liveness.py --kills 50 --freezes 20 --restarts 10 --partitions 5 \\
        --json docs/liveness.json

* **crash**: a ``zeromesh peer`` child joins a mesh of 3 in-process observers and is
  killed with SIGKILL; latency = kill -> each observer's ``leave`` (reason ``expired``).
* **freeze**: a ``zeromesh peer`` child joins a mesh of 9 in-process observers and
  is stopped with SIGSTOP (no reset: only heartbeats tell); latency = stop -> each
  observer's ``leave``, split into its 3 watchers (their probes) and the 6 others
  (the proxy's probe and its obituary); then SIGCONT -> back in every table.
* **restart**: a ``zeromesh proxy`` child on a fixed address serves 10 in-process
  peers; it is killed with SIGKILL and started again on the same address; recovery =
  new proxy ready -> every peer re-welcomed, re-heard through the new proxy (own ``C``
  echoed) and still in a full mesh (also given from the kill).
* **partition** (root + ``ip`` only): proxy on host ``px``, 2 peers on each of hosts
  ``a`` and ``b``, every one a child process in its own network namespace; host ``b``'s
  link is cut (detached from the bridge): detection = cut -> last ``expired`` on
  either side; then healed: heal = heal -> last ``join`` back on either side.

Prints a markdown table; ``--json`` also writes the figures with the settings and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import zmq

from zeromesh import Peer, PeerEvent, Proxy, __version__, timing
from zeromesh.testing.netns import Child, HostMesh, JsonLine, Topology, available, spawn_zeromesh

START = 10.0


def ready_line(c: Child) -> JsonLine:
    line = c.wait(lambda e: e.get("event") == "ready", START)
    if line is None:
        raise RuntimeError(f"child did not get ready: {c.drain()}")
    return line


def until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else xs * 99
    return {"n": len(xs), "min": xs[0], "p50": statistics.median(xs), "p99": q[98], "max": xs[-1]}


def next_event(p: Peer, pred: Callable[[PeerEvent], bool], timeout: float) -> PeerEvent | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ev = p.next_event(left)
        if ev is not None and pred(ev):
            return ev
    return None


# --- crash detection ----------------------------------------------------------------


def connected_to_all(observers: list[Peer], uuid: str) -> bool:
    """Every observer knows *uuid* and has every data connection up."""
    return all(
        uuid in o.peers() and o.protocol is not None and o.protocol.pending_connections() == 0 for o in observers
    )


def join_victim(px: Proxy, observers: list[Peer]) -> tuple[Child, str]:
    """A ``zeromesh peer`` child joined and connected to every observer: (child, uuid)."""
    c = spawn_zeromesh("peer", "--proxy", px.endpoint)
    try:
        uuid = str(ready_line(c)["uuid"])
        if not until(partial(connected_to_all, observers, uuid), START):
            raise RuntimeError("victim not connected to every observer")
    except BaseException:
        c.close()
        raise
    return c, uuid


def is_leave(uuid: str, e: PeerEvent) -> bool:
    return e.kind == "leave" and e.uuid == uuid


def crash(kills: int) -> dict[str, Any]:
    samples: list[float] = []
    worst: list[float] = []
    reasons: set[str | None] = set()
    with Proxy() as px:
        observers = [Peer(px.endpoint).start() for _ in range(3)]
        try:
            for i in range(kills):
                c, uuid = join_victim(px, observers)
                try:
                    t0 = time.time()
                    c.kill()
                    lat = []
                    for o in observers:
                        ev = next_event(o, partial(is_leave, uuid), 10.0)
                        if ev is None:
                            raise RuntimeError(f"kill {i}: never expired")
                        reasons.add(ev.reason)
                        lat.append(ev.t - t0)
                    samples.extend(lat)
                    worst.append(max(lat))
                finally:
                    c.close()
        finally:
            for o in observers:
                o.stop()
    return {
        "kills": kills,
        "observers": 3,
        "reasons": sorted(str(r) for r in reasons),
        "latency_s": summary(samples),
        "worst_per_kill_s": summary(worst),
    }


# --- freeze detection -----------------------------------------------------------------


def freeze(trials: int, n: int = 9) -> dict[str, Any]:
    watchers: list[float] = []
    others: list[float] = []
    back: list[float] = []
    with Proxy() as px:
        observers = [Peer(px.endpoint).start() for _ in range(n)]
        try:
            for i in range(trials):
                c, uuid = join_victim(px, observers)
                try:
                    # A settled mesh: the victim's 3 watchers' probes of it are up.
                    if not until(partial(watched_by, observers, uuid, 3), START):
                        raise RuntimeError("the victim's watchers' probes are not up")
                    watching = {o.uuid for o in observers if uuid in _watched(o)}
                    t0 = time.time()
                    os.kill(c.pid, signal.SIGSTOP)
                    try:
                        for o in observers:
                            ev = next_event(o, partial(is_leave, uuid), 15.0)
                            if ev is None:
                                raise RuntimeError(f"freeze {i}: never expired")
                            (watchers if o.uuid in watching else others).append(ev.t - t0)
                    finally:
                        t1 = time.time()
                        os.kill(c.pid, signal.SIGCONT)
                    if not until(partial(known_to_all, observers, uuid), 15.0):
                        raise RuntimeError(f"freeze {i}: never back")
                    back.append(time.time() - t1)
                finally:
                    c.close()
        finally:
            for o in observers:
                o.stop()
    return {
        "trials": trials,
        "observers": n,
        "watchers_s": summary(watchers),
        "others_s": summary(others),
        "thaw_to_back_s": summary(back),
    }


def known_to_all(observers: list[Peer], uuid: str) -> bool:
    return all(uuid in o.peers() for o in observers)


def watched_by(observers: list[Peer], uuid: str, k: int) -> bool:
    return sum(uuid in _watched(o) for o in observers) == k


def _watched(p: Peer) -> set[str]:
    """The uuids *p* watches with a probe that is up."""
    return p.protocol.watched_members(up=True) if p.protocol is not None else set()


# --- proxy restart --------------------------------------------------------------------


def restart(restarts: int, n: int = 10) -> dict[str, Any]:
    from_ready: list[float] = []
    from_kill: list[float] = []
    proxy = spawn_zeromesh("proxy", "--bind", "tcp://127.0.0.1:0")
    well_known = str(ready_line(proxy)["endpoint"])  # each restart binds what the first proxy got
    peers = [Peer(well_known).start() for _ in range(n)]
    want = {p.uuid for p in peers}
    try:
        if not until(lambda: all(set(p.peers()) == want for p in peers), START):
            raise RuntimeError("no full mesh")
        for i in range(restarts):
            t_kill = time.monotonic()
            proxy.kill()
            proxy.close()
            proxy = spawn_zeromesh("proxy", "--bind", well_known)
            info = ready_line(proxy)
            t_ready = time.monotonic()

            def healed(info: JsonLine = info) -> bool:
                return all(
                    p.protocol is not None
                    and p.protocol.proxy_uuid == info["uuid"]
                    and p.protocol.phase.value == "ready"
                    and set(p.peers()) == want
                    and set(p.protocol.connected_endpoints().values()) == {1}
                    for p in peers
                )

            if not until(healed, 10.0):
                raise RuntimeError(f"restart {i}: mesh not healed")
            t = time.monotonic()
            from_ready.append(t - t_ready)
            from_kill.append(t - t_kill)
    finally:
        for p in peers:
            p.stop()
        proxy.close()
    return {
        "restarts": restarts,
        "peers": n,
        "from_new_proxy_ready_s": summary(from_ready),
        "from_kill_s": summary(from_kill),
    }


# --- partition in network namespaces ----------------------------------------------------


def partition(trials: int) -> dict[str, Any]:
    ok, why = available()
    if not ok:
        return {"skipped": why}
    detect: list[float] = []
    heal: list[float] = []
    with Topology(["px", "a", "b"], prefix="zmbench") as topo:
        mesh = HostMesh(topo, per_host=2, start_timeout=START)
        try:
            for trial in range(trials):
                if not until(mesh.full, 15.0):
                    raise RuntimeError(f"trial {trial}: no full mesh")
                for action, event, out in ((topo.cut, "leave", detect), (topo.heal, "join", heal)):
                    marks = mesh.marks()
                    t0 = time.time()
                    action("b")
                    seen = mesh.across(event, marks, 15.0)
                    if any(len(s) != 2 for s in seen):
                        raise RuntimeError(f"trial {trial}: {event} events missing after {action.__name__}")
                    out.append(max(float(e["t"]) for s in seen for e in s.values()) - t0)
        finally:
            mesh.close()
    return {
        "trials": trials,
        "peers_per_side": 2,
        "cut_mode": "detach",
        "detection_s": summary(detect),
        "heal_s": summary(heal),
    }


# --- report ----------------------------------------------------------------------------


def table(res: dict[str, Any]) -> str:
    rows = ["| measure | n | p50 (s) | p99 (s) | max (s) | bound |", "|---|---|---|---|---|---|"]

    def row(name: str, s: dict[str, float], bound: str) -> None:
        rows.append(f"| {name} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['max']:.3f} | {bound} |")

    if "crash" in res:
        row("crash detection (SIGKILL -> leave at each observer)", res["crash"]["latency_s"], "<= 3 s")
    if "freeze" in res:
        f = res["freeze"]
        row("freeze detection, the 3 watchers (SIGSTOP -> leave)", f["watchers_s"], "<= 3 s")
        row(f"freeze detection, the {f['observers'] - 3} others (proxy's obituary)", f["others_s"], "<= 3 s")
        row("freeze: SIGCONT -> back in every table", f["thaw_to_back_s"], "-")
    if "restart" in res:
        r = res["restart"]
        row(
            f"proxy restart, {r['peers']} peers (new proxy ready -> mesh whole)",
            r["from_new_proxy_ready_s"],
            "<= 2 s",
        )
        row(f"proxy restart, {r['peers']} peers (kill -> mesh whole)", r["from_kill_s"], "-")
    part = res.get("partition", {})
    if "skipped" in part:
        rows.append(f"| partition | skipped: {part['skipped']} | | | | |")
    elif part:
        row("partition detection (cut -> last expired)", part["detection_s"], "<= 3 s")
        row("partition heal (heal -> last join)", part["heal_s"], "-")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--kills", type=int, default=50, help="SIGKILLs for crash detection (default %(default)s)")
    ap.add_argument("--freezes", type=int, default=20, help="SIGSTOPs for freeze detection (default %(default)s)")
    ap.add_argument("--restarts", type=int, default=10, help="proxy restarts (default %(default)s)")
    ap.add_argument("--partitions", type=int, default=5, help="cut/heal cycles in netns (default %(default)s)")
    ap.add_argument("--json", type=Path, help="write all figures here")
    a = ap.parse_args()
    res: dict[str, Any] = {
        "zeromesh": __version__,
        "libzmq": zmq.zmq_version(),
        "pyzmq": zmq.__version__,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "timing": {
            k: getattr(timing, k)
            for k in (
                "HEARTBEAT_IVL",
                "WATCH_HEARTBEAT_IVL",
                "HEARTBEAT_TIMEOUT",
                "EXPIRE_GRACE",
                "RECONNECT_IVL_MS",
                "RECONNECT_IVL_MAX_MS",
                "CONNECT_TIMEOUT_MS",
            )
        },
    }
    if a.kills:
        res["crash"] = crash(a.kills)
    if a.freezes:
        res["freeze"] = freeze(a.freezes)
    if a.restarts:
        res["restart"] = restart(a.restarts)
    if a.partitions:
        res["partition"] = partition(a.partitions)
    res["loadavg_at_end"] = os.getloadavg()
    print(table(res))
    print(
        f"\nlibzmq {res['libzmq']}, pyzmq {res['pyzmq']}, {res['cpus']} CPUs, load average "
        f"{res['loadavg_at_start'][0]:.1f} at start, {res['loadavg_at_end'][0]:.1f} at end"
    )
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
