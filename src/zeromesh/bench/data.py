"""Data plane: one publisher to several receivers, zeromesh against raw pyzmq."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from ..peer import Peer
from ..proxy import Proxy
from ..sockets import NOBLOCK, RCVMORE, SNDMORE_NOBLOCK
from .common import WAIT_CAP, Result, stop_all, wait_until


class Counter:
    """Per-receiver count and time of the last message (one writer thread)."""

    def __init__(self) -> None:
        self.n = 0
        self.last = 0.0

    def __call__(self, _msg: object) -> None:
        self.n += 1
        self.last = time.perf_counter()


def blast(
    send: Callable[[list[bytes]], None],
    frames: list[bytes],
    count: int,
    counters: Sequence[Counter],
    receivers: int,
) -> dict[str, float]:
    for c in counters:
        c.n = 0
    t0 = time.perf_counter()
    for _ in range(count):
        send(frames)
    t_sent = time.perf_counter()
    total = count * receivers
    last = -1
    since = time.monotonic()
    while sum(c.n for c in counters) < total:  # until all arrived, or no progress for 0.5 s
        got = sum(c.n for c in counters)
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > 0.5:
            break
        time.sleep(0.005)  # sleep: polling interval of a bounded wait
    got = sum(c.n for c in counters)
    elapsed = max(c.last for c in counters) - t0
    return {"elapsed": elapsed, "delivered": got, "loss": 1 - got / total, "send_rate": count / (t_sent - t0)}


def warm(send: Callable[[list[bytes]], None], counters: Sequence[Counter]) -> None:
    """Publish until every receiver has one message: the subscriptions are in."""

    def probe() -> bool:
        send([b"w", b"w", b"w"])
        return all(c.n for c in counters)

    if not wait_until(probe, WAIT_CAP, 0.01):
        raise RuntimeError("receivers never got a message")
    last = -1
    while (now := sum(c.n for c in counters)) != last:  # the last warm-ups have landed
        last = now
        time.sleep(0.05)  # sleep: polling interval; ends when the count stops moving


def _raw_run(receivers: int, payload: int, count: int) -> dict[str, float]:
    """Raw pyzmq: one PUB, *receivers* + 1 SUBs (a zeromesh publisher's data
    SUB gets its own messages too), one context and one blocking receive
    thread per SUB: as many sockets and threads doing data as zeromesh's.
    Sends and receives the 3 frames with the fastest plain pyzmq calls (int
    flags: ``send_multipart``'s enum arithmetic would make raw the slower)."""
    pctx: zmq.Context[Any] = zmq.Context()
    pub = pctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 0)  # no drops: the run measures the receivers' capacity
    pub.bind("tcp://127.0.0.1:0")
    ep = pub.last_endpoint.decode()
    counters = [Counter() for _ in range(receivers + 1)]
    stop = threading.Event()
    ctxs: list[zmq.Context[Any]] = []

    def rx(c: Counter, ctx: zmq.Context[Any]) -> None:
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.setsockopt(zmq.RCVTIMEO, 100)  # to see the stop flag
        s.connect(ep)
        recv, more = s.recv, s.getsockopt
        try:
            while not stop.is_set():
                try:
                    frames = [recv(0)]
                except zmq.Again:
                    continue
                while more(RCVMORE):
                    frames.append(recv(0))
                c(frames)
        finally:
            s.close()

    threads = []
    for c in counters:
        ctx: zmq.Context[Any] = zmq.Context()
        ctxs.append(ctx)
        threads.append(threading.Thread(target=rx, args=(c, ctx), daemon=True))
    for t in threads:
        t.start()
    try:

        def send(frames: list[bytes]) -> None:
            pub.send(frames[0], SNDMORE_NOBLOCK)
            pub.send(frames[1], SNDMORE_NOBLOCK)
            pub.send(frames[2], NOBLOCK)

        warm(send, counters)
        frames = [b"bench", b"00000000-0000-4000-8000-000000000000", os.urandom(payload)]
        return blast(send, frames, count, counters[:receivers], receivers)
    finally:
        stop.set()
        for t in threads:
            t.join(5.0)
        pub.close()
        pctx.term()
        for ctx in ctxs:
            ctx.term()


def _zeromesh_run(receivers: int, payload: int, count: int) -> dict[str, float]:
    counters = [Counter() for _ in range(receivers)]
    with Proxy("tcp://127.0.0.1:0") as proxy:
        sender = Peer(proxy.endpoint, on_message=Counter()).start()  # it gets its own, as raw's extra SUB
        rx = [Peer(proxy.endpoint, on_message=c).start() for c in counters]
        everyone = [sender] + rx
        try:
            want = {p.uuid for p in everyone}
            if not wait_until(lambda: all(set(p.peers()) == want for p in everyone), WAIT_CAP):
                raise RuntimeError("data mesh did not converge")
            warm(lambda f: sender.publish(f[0], f[2]), counters)
            frames = [b"bench", b"", os.urandom(payload)]
            return blast(lambda f: sender.publish(f[0], f[2]), frames, count, counters, receivers)
        finally:
            stop_all(everyone)


def bench_data(receivers: int = 4, rounds: int = 3, counts: dict[int, int] | None = None) -> Result:
    """One publisher, *receivers* subscribers: zeromesh (``Peer.publish`` to
    ``on_message``) against raw pyzmq, alternating, *rounds* each. The rate
    counts delivered messages (publish all, until the last arrives): what the
    receivers absorb. Raw's PUB has no HWM (no drops); zeromesh's keeps
    libzmq's default (its options are fixed at bind), so it drops when its
    receivers fall behind, which the loss column shows."""
    counts = counts or {64: 100_000, 4096: 20_000}
    rows = []
    ratios: dict[int, float] = {}
    for payload, count in counts.items():
        res: dict[str, list[dict[str, float]]] = {"raw pyzmq": [], "zeromesh": []}
        for _ in range(rounds):
            res["raw pyzmq"].append(_raw_run(receivers, payload, count))
            res["zeromesh"].append(_zeromesh_run(receivers, payload, count))
        rates = {}
        for name, runs in res.items():
            rate = statistics.median(r["delivered"] / r["elapsed"] for r in runs)
            rates[name] = rate
            rows.append(
                {
                    "payload B": payload,
                    "impl": name,
                    "msgs/s (delivered, all receivers)": round(rate),
                    "MB/s": round(rate * payload / 1e6, 1),
                    "publish msgs/s": round(statistics.median(r["send_rate"] for r in runs)),
                    "loss %": round(100 * statistics.median(r["loss"] for r in runs), 2),
                }
            )
        ratios[payload] = rates["zeromesh"] / rates["raw pyzmq"]
        rows[-1]["ratio vs raw"] = round(ratios[payload], 3)
    return {
        "name": "data",
        "title": f"Data plane: one publisher to {receivers} receivers, medians of {rounds} alternating runs",
        "params": {"receivers": receivers, "rounds": rounds, "counts": counts},
        "rows": rows,
        "summary": {f"ratio_{p}B": round(r, 3) for p, r in ratios.items()} | {"goal": ">= 0.9x raw"},
    }
