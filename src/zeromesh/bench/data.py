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
from ..sockets import DEFAULT_DATA_HWM, PeerSockets, SocketPolicy
from ..testing.waits import wait_for
from ..transport import NOBLOCK, SNDMORE_NOBLOCK, backend_send
from .common import WAIT_CAP, Result, stop_all


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
    stall: float = 0.5,
    rate: float | None = None,
) -> dict[str, float]:
    """Send *frames* *count* times (as fast as possible, or at *rate* a
    second), then wait until every receiver has all of them or nothing arrived
    for *stall* seconds (what is missing then is lost)."""
    for c in counters:
        c.n = 0
    t0 = time.perf_counter()
    for i in range(count):
        send(frames)
        if rate and i % 64 == 63:
            ahead = t0 + (i + 1) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)  # sleep: pacing the offered rate
    t_sent = time.perf_counter()
    total = count * receivers
    last = -1
    since = time.monotonic()
    while sum(c.n for c in counters) < total:  # until all arrived, or no progress for *stall* s
        got = sum(c.n for c in counters)
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > stall:
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

    if not wait_for(probe, WAIT_CAP, 0.01):
        raise RuntimeError("receivers never got a message")
    last = -1
    while (now := sum(c.n for c in counters)) != last:  # the last warm-ups have landed
        last = now
        time.sleep(0.05)  # sleep: polling interval; ends when the count stops moving


#: Socket options a zeromesh data socket sets that the raw rows copy (ints
#: only; read back from a zeromesh peer's own sockets, so the raw rows follow
#: whatever zeromesh sets, the robustness bounds included).
COPIED_OPTIONS = (
    "SNDHWM",
    "RCVHWM",
    "LINGER",
    "MAXMSGSIZE",
    "HEARTBEAT_IVL",
    "HEARTBEAT_TIMEOUT",
    "HEARTBEAT_TTL",
    "RECONNECT_IVL",
    "RECONNECT_IVL_MAX",
    "CONNECT_TIMEOUT",
    "HANDSHAKE_IVL",
    "SNDBUF",
    "RCVBUF",
    "TCP_KEEPALIVE",
)

#: The "large" data HWM of the row pair where nobody should lose anything.
LARGE_HWM = 1_000_000


def zeromesh_options(data_hwm: int) -> tuple[dict[str, int], dict[str, int]]:
    """The data PUB's and data SUB's option values of a zeromesh peer with
    *data_hwm* (read from a real :class:`PeerSockets`, then closed)."""
    s = PeerSockets(SocketPolicy(), "tcp://127.0.0.1:0", None, "tcp://127.0.0.1:9", False, data_hwm=data_hwm)
    try:
        return _options(s.data_pub), _options(s.data_sub)
    finally:
        s.close(term=True)


def _options(sock: zmq.Socket[Any]) -> dict[str, int]:
    out = {}
    for name in COPIED_OPTIONS:
        try:
            out[name] = int(sock.getsockopt(getattr(zmq, name)))
        except (AttributeError, zmq.ZMQError):
            continue  # not in this libzmq
    if out.get("HEARTBEAT_TIMEOUT", 0) < 0:
        # libzmq reads back -1 ("the interval") when unset but refuses to be set to it.
        del out["HEARTBEAT_TIMEOUT"]
    return out


def _apply(sock: zmq.Socket[Any], options: dict[str, int]) -> None:
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)


def _raw_run(
    receivers: int, payload: int, count: int, data_hwm: int, stall: float, rate: float | None = None
) -> dict[str, float]:
    """Raw pyzmq: one PUB, *receivers* + 1 SUBs (a zeromesh publisher's data
    SUB gets its own messages too), one context and one blocking receive
    thread per SUB: as many sockets and threads doing data as zeromesh's,
    with exactly the options zeromesh's data PUB and SUB have for *data_hwm*
    (:func:`zeromesh_options`), so both drop under the same rules.
    Sends and receives the 3 frames with the fastest plain pyzmq calls (int
    flags: ``send_multipart``'s enum arithmetic would make raw the slower)."""
    pub_opts, sub_opts = zeromesh_options(data_hwm)
    pctx: zmq.Context[Any] = zmq.Context()
    pub = pctx.socket(zmq.PUB)
    _apply(pub, pub_opts)
    pub.bind("tcp://127.0.0.1:0")
    ep = pub.last_endpoint.decode()
    counters = [Counter() for _ in range(receivers + 1)]
    stop = threading.Event()
    ctxs: list[zmq.Context[Any]] = []

    def rx(c: Counter, ctx: zmq.Context[Any]) -> None:
        s = ctx.socket(zmq.SUB)
        try:
            _apply(s, sub_opts)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.setsockopt(zmq.RCVTIMEO, 100)  # to see the stop flag
            s.connect(ep)
            recv = s.recv
            while not stop.is_set():
                try:
                    frame = recv(0, copy=False)  # the fastest read pyzmq has, as zeromesh's
                except zmq.Again:
                    continue
                frames = [frame.bytes]
                while frame.more:
                    frame = recv(0, copy=False)
                    frames.append(frame.bytes)
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

        def send(frames: list[bytes]) -> None:  # the fastest send pyzmq has, as zeromesh's
            backend_send(pub, frames[0], SNDMORE_NOBLOCK)
            backend_send(pub, frames[1], SNDMORE_NOBLOCK)
            backend_send(pub, frames[2], NOBLOCK)

        warm(send, counters)
        frames = [b"bench", b"00000000-0000-4000-8000-000000000000", os.urandom(payload)]
        return blast(send, frames, count, counters[:receivers], receivers, stall, rate)
    finally:
        stop.set()
        for t in threads:
            t.join(5.0)
        pub.close()
        pctx.term()
        for ctx in ctxs:
            ctx.term()


def _zeromesh_run(
    receivers: int, payload: int, count: int, data_hwm: int, stall: float, rate: float | None = None
) -> dict[str, float]:
    counters = [Counter() for _ in range(receivers)]
    with Proxy("tcp://127.0.0.1:0") as proxy:
        # The sender gets its own messages (receive_own), as raw's extra SUB.
        sender = Peer(proxy.endpoint, on_message=Counter(), data_hwm=data_hwm, receive_own=True).start()
        rx = [Peer(proxy.endpoint, on_message=c, data_hwm=data_hwm).start() for c in counters]
        everyone = [sender, *rx]
        try:
            want = {p.uuid for p in everyone}
            if not wait_for(lambda: all(set(p.peers()) == want for p in everyone), WAIT_CAP):
                raise RuntimeError("data mesh did not converge")
            warm(lambda f: sender.publish(f[0], f[2]), counters)
            frames = [b"bench", b"", os.urandom(payload)]
            res = blast(lambda f: sender.publish(f[0], f[2]), frames, count, counters, receivers, stall, rate)
            res["dropped (counted)"] = sum(p.stats().dropped_messages for p in rx)
            return res
        finally:
            stop_all(everyone)


def bench_data(
    receivers: int = 4,
    rounds: int = 3,
    counts: dict[int, int] | None = None,
    hwms: Sequence[int] = (DEFAULT_DATA_HWM, LARGE_HWM),
    stall: float = 0.5,
    paced: dict[int, int] | None = None,
) -> Result:
    """One publisher, *receivers* subscribers: zeromesh (``Peer.publish`` to
    ``on_message``) against raw pyzmq with the same socket options, alternating,
    *rounds* each, for each payload size and data HWM (``Peer(data_hwm=)``;
    zeromesh's default, and one large enough that nobody should lose). The
    rate counts delivered messages (publish all, until the last arrives, or
    until nothing arrived for *stall* s): what the receivers absorb. Loss is what
    never arrived: a PUB drops for a subscriber whose queue is at the HWM.
    A publisher that is faster offers more and so loses more: *paced* (offered
    msgs/s per payload) adds a row pair at the first HWM where both publish at
    the same rate, which compares the loss like with like."""
    counts = counts or {64: 100_000, 4096: 20_000}
    paced = {64: 25_000, 4096: 15_000} if paced is None else paced
    rows = []
    summary: dict[str, Any] = {}
    for payload, count in counts.items():
        lanes: list[tuple[int, int | None]] = [(hwm, None) for hwm in hwms]
        if payload in paced:
            lanes.append((hwms[0], paced[payload]))
        for hwm, rate in lanes:
            res: dict[str, list[dict[str, float]]] = {"raw pyzmq": [], "zeromesh": []}
            for _ in range(rounds):
                res["raw pyzmq"].append(_raw_run(receivers, payload, count, hwm, stall, rate))
                res["zeromesh"].append(_zeromesh_run(receivers, payload, count, hwm, stall, rate))
            rates, losses = {}, {}
            for name, runs in res.items():
                rates[name] = statistics.median(r["delivered"] / r["elapsed"] for r in runs)
                losses[name] = 100 * statistics.median(r["loss"] for r in runs)
                rows.append(
                    {
                        "payload B": payload,
                        "data HWM": hwm,
                        "offered": rate or "max",
                        "impl": name,
                        "msgs/s (delivered, all receivers)": round(rates[name]),
                        "MB/s": round(rates[name] * payload / 1e6, 1),
                        "publish msgs/s": round(statistics.median(r["send_rate"] for r in runs)),
                        "loss %": round(losses[name], 2),
                        "all rates": [round(r["delivered"] / r["elapsed"]) for r in runs],
                    }
                )
            ratio = rates["zeromesh"] / rates["raw pyzmq"]
            rows[-1]["ratio vs raw"] = round(ratio, 3)
            rows[-1]["loss - raw's (pp)"] = round(losses["zeromesh"] - losses["raw pyzmq"], 2)
            rows[-1]["dropped by zeromesh (counted)"] = statistics.median(
                r["dropped (counted)"] for r in res["zeromesh"]
            )
            lane = f"{payload}B_hwm{hwm}" + (f"_paced{rate}" if rate else "")
            summary[f"ratio_{lane}"] = round(ratio, 3)
            summary[f"loss_pp_vs_raw_{lane}"] = rows[-1]["loss - raw's (pp)"]
    return {
        "name": "data",
        "title": f"Data plane: one publisher to {receivers} receivers, medians of {rounds} alternating runs",
        "params": {"receivers": receivers, "rounds": rounds, "counts": counts, "hwms": list(hwms), "paced": paced},
        "rows": rows,
        "summary": summary | {"goal": ">= 0.95x raw, loss within 1 pp of raw's"},
    }
