"""Leave and exit: ``leave()`` to every other peer having dropped the leaver;
a ``zeromesh peer`` process's D to its exit."""

from __future__ import annotations

import functools
import json
import subprocess
import threading
import time
from typing import Any

from .. import timing
from ..peer import Peer
from ..protocol import Behaviour
from ..proxy import Proxy
from ..sockets import SocketPolicy
from ..testing.netns import zeromesh_argv
from ..testing.waits import wait_for
from .common import WAIT_CAP, Recorder, Result, classic_config, mesh, ms, percentiles


def _leave_lane(classic: bool, existing: int, leaves: int) -> tuple[list[float], list[float]]:
    """Per leaver: leave() to every other peer's leave event, and to its own exit."""
    rec = Recorder()
    b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
    dropped: list[float] = []
    done: list[float] = []
    with mesh(existing, mode="classic" if classic else "directory", classic=classic, recorder=rec) as (
        proxy,
        peers,
    ):

        def known_to_all(uuid: str, known: bool) -> bool:
            return all((uuid in q.peers()) is known for q in peers)

        for _ in range(leaves):
            p = Peer(proxy.endpoint, layers=(b, pol), on_event=rec).start()
            try:
                if not rec.wait([("join", p.uuid)], WAIT_CAP) or not wait_for(
                    functools.partial(known_to_all, p.uuid, True), WAIT_CAP
                ):
                    continue
                with rec.cond:
                    rec.t.pop(("leave", p.uuid), None)
                t0 = time.perf_counter()
                p.leave()
                if p.wait_done(WAIT_CAP):
                    done.append(time.perf_counter() - t0)
                if wait_for(functools.partial(known_to_all, p.uuid, False), WAIT_CAP):
                    # The last drop is when the last peer's snapshot changed;
                    # the leave event of any peer marks the first. Poll is 2 ms.
                    dropped.append(time.perf_counter() - t0)
            finally:
                p.stop(10.0)
    return dropped, done


def _process_exit(proxy: str, lifetime: float, classic: bool, rec: Recorder, timeout: float) -> dict[str, Any] | None:
    """Run ``zeromesh peer --seconds`` and time its D (seen by an observer
    peer) to the process's exit (``waitpid`` returned)."""
    cmd = zeromesh_argv("peer", "--proxy", proxy, "--seconds", str(lifetime)) + (["--classic"] if classic else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    exited: list[float] = []

    def wait_exit() -> None:  # a blocking waitpid: Popen.wait(timeout) would poll
        p.wait()
        exited.extend((time.perf_counter(), time.time()))

    waiter = threading.Thread(target=wait_exit, daemon=True)
    waiter.start()
    waiter.join(timeout)
    if waiter.is_alive():
        p.kill()
        waiter.join(5.0)
        if p.stdout:
            p.stdout.close()
        return None
    lines = [json.loads(x) for x in (p.stdout.read().splitlines() if p.stdout else []) if x.startswith("{")]
    if p.stdout:
        p.stdout.close()
    ready = [e for e in lines if e["event"] == "ready"]
    if not ready:
        return None
    t_d = rec.t.get(("leave", ready[0]["uuid"]))
    if t_d is None or not exited:
        return None
    done = [e for e in lines if e["event"] == "exit"]
    # The exit event is emitted after zmq_ctx_term: from it on, it is the interpreter's shutdown.
    shutdown = exited[1] - done[0]["t"] if done else None
    return {"d_to_exit": exited[0] - t_d, "shutdown": shutdown, "rc": p.returncode}


def bench_leave(
    leaves: int = 50,
    existing: int = 10,
    processes: int = 10,
    lifetime: float = 0.5,
    with_classic: bool = True,
) -> Result:
    """In-process: leave() to every other peer having dropped the leaver, and
    to the leaver's own loop end. Processes: ``zeromesh peer --seconds``, its
    D (seen by an observer) to the process's exit. zeromesh, then classic."""
    rows = []
    for classic in (False, True) if with_classic else (False,):
        dropped, done = _leave_lane(classic, existing, leaves)
        ex: list[float] = []
        shutdown: list[float] = []
        rcs: list[int] = []
        rec = Recorder()
        b, pol = classic_config() if classic else (Behaviour(), SocketPolicy())
        with Proxy("tcp://127.0.0.1:0", mode="classic" if classic else "directory") as proxy:
            observer = Peer(proxy.endpoint, layers=(b, pol), on_event=rec).start()
            try:
                observer.wait_ready(WAIT_CAP)
                for _ in range(processes):
                    # A classic peer needs a couple of its 1 s turns to get in before it leaves.
                    life = lifetime + (2 * timing.CLASSIC_TURN if classic else 0.0)
                    r = _process_exit(proxy.endpoint, life, classic, rec, life + 30.0)
                    if r is not None:
                        ex.append(r["d_to_exit"])
                        rcs.append(r["rc"])
                        if r["shutdown"] is not None:
                            shutdown.append(r["shutdown"])
            finally:
                observer.stop(10.0)
        d, e, x = percentiles(dropped), percentiles(done), percentiles(ex)
        rows.append(
            {
                "peer": "classic" if classic else "zeromesh",
                "leaves": d["n"],
                "leave() to all dropped p50 ms": ms(d.get("p50")),
                "p99 ms": ms(d.get("p99")),
                "leave() to loop done p50 ms": ms(e.get("p50")),
                "process runs": x["n"],
                "D to process exit p50 ms": ms(x.get("p50")),
                "max ms": ms(x.get("max")),
                "of which interpreter exit p50 ms": ms(percentiles(shutdown).get("p50")),
                "nonzero rc": sum(1 for rc in rcs if rc != 0),
            }
        )
    return {
        "name": "leave",
        "title": "Leave and exit: D to every other peer dropped it; D to process exit",
        "params": {"leaves": leaves, "existing": existing, "processes": processes, "lifetime": lifetime},
        "rows": rows,
        "summary": {
            "goal": "<= 20 ms each on loopback",
            "zeromesh_drop_p50_ms": rows[0]["leave() to all dropped p50 ms"],
            "zeromesh_exit_p50_ms": rows[0]["D to process exit p50 ms"],
        },
    }
