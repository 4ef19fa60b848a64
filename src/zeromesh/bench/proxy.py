"""How many discovery frames one proxy forwards, and where it saturates.

The proxy runs in a child process of its own (``python -m
zeromesh.bench.proxy --impl zeromesh|libzmq``): zeromesh's directory proxy
(a Python loop: decode, stamp, encode, send), against libzmq's ``zmq_proxy``
in C (the seed's proxy, emulated in :mod:`zeromesh.testing.cpeer`), the limit.
This process offers ``C`` frames as fast as one raw PUB sends them (re-announcements
of a fixed set of peers, whose endpoints are real listening sockets, so the
directory stays steady and the proxy's probe finds them up) to *S*
subscribers, each drained in C (``zmq_proxy`` into a PUB nobody reads); one
more subscriber counts what arrives.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Sequence
from typing import Any

import zmq

from .. import wire
from ..harness import procs
from ..lines import read_json_line
from ..proxy import Proxy
from ..testing.cpeer import CProxy
from .common import WAIT_CAP, Result, say, send_line


def serve_main(argv: Sequence[str]) -> int:
    """Child: run one proxy until ``stop`` on stdin; report its endpoints,
    then what it forwarded (zeromesh's counter; libzmq's proxy has none)."""
    ap = argparse.ArgumentParser(prog="python -m zeromesh.bench.proxy")
    ap.add_argument("--impl", choices=["zeromesh", "libzmq"], required=True)
    a = ap.parse_args(argv)
    if a.impl == "zeromesh":
        with Proxy("tcp://127.0.0.1:0") as px:
            say(endpoint=px.endpoint, xsub=px.xsub_endpoint)
            sys.stdin.readline()
            say(forwarded=px.forwarded)
        return 0
    with CProxy() as cp:
        say(endpoint=cp.endpoint, xsub=cp.xsub_endpoint)
        sys.stdin.readline()
        say(forwarded=None)
    return 0


def _drain(ctx: zmq.Context[Any], endpoint: str) -> threading.Thread:
    """A subscriber drained in C: ``zmq_proxy`` from it into a PUB nobody
    reads, until the context ends."""

    def run() -> None:
        sub = ctx.socket(zmq.SUB)
        sink = ctx.socket(zmq.PUB)
        try:
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(endpoint)
            sink.bind("inproc://" + uuidlib.uuid4().hex)
            zmq.proxy(sub, sink)
        except zmq.ContextTerminated:
            pass
        finally:
            sub.close(linger=0)
            sink.close(linger=0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def proxy_once(impl: str, subscribers: int, seconds: float, announcers: int = 100) -> dict[str, Any]:
    """Offer ``C`` frames to one proxy with *subscribers* for *seconds*."""
    child = subprocess.Popen(
        [sys.executable, "-m", "zeromesh.bench.proxy", "--impl", impl],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ctx: zmq.Context[Any] = zmq.Context()
    drains: list[threading.Thread] = []
    socks: list[zmq.Socket[Any]] = []
    try:
        eps = read_json_line(child, WAIT_CAP)
        # Real listening endpoints for the announcers, so the proxy's probe finds them up.
        frames = []
        for _ in range(announcers):
            listener = ctx.socket(zmq.PUB)
            listener.setsockopt(zmq.LINGER, 0)
            listener.bind("tcp://127.0.0.1:0")
            socks.append(listener)
            ep = listener.getsockopt_string(zmq.LAST_ENDPOINT)
            frames.append(wire.encode(wire.Message(wire.Command.CONNECT, str(uuidlib.uuid4()), ep)))
        drains = [_drain(ctx, eps["endpoint"]) for _ in range(subscribers)]
        probe = ctx.socket(zmq.SUB)
        probe.setsockopt(zmq.LINGER, 0)
        probe.setsockopt(zmq.RCVHWM, 0)
        probe.setsockopt(zmq.SUBSCRIBE, b"")
        probe.connect(eps["endpoint"])
        socks.append(probe)
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(eps["xsub"])
        socks.append(pub)
        # Until the probe hears the announcers: the subscriptions are in, the directory is full.
        deadline = time.monotonic() + WAIT_CAP
        heard = 0
        while heard < announcers and time.monotonic() < deadline:
            for f in frames:
                pub.send(f, zmq.NOBLOCK)
            while probe.poll(20):
                probe.recv()
                heard += 1
        while probe.poll(200):  # the warm-up's tail
            probe.recv()
        got = 0
        sent = 0
        stop = threading.Event()

        def count() -> None:
            nonlocal got
            while not stop.is_set() or probe.poll(0):
                if probe.poll(50):
                    probe.recv()
                    got += 1

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            for f in frames:
                try:
                    pub.send(f, zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    pass
        t_sent = time.monotonic() - t0
        time.sleep(0.5)  # sleep: what is in flight arrives (the proxy is not waited on)
        stop.set()
        counter.join(WAIT_CAP)
        dt = time.monotonic() - t0
        send_line(child, "stop")
        forwarded = read_json_line(child, WAIT_CAP)["forwarded"]
        return {
            "offered /s": round(sent / t_sent),
            "forwarded /s (probe)": round(got / dt),
            "forwarded /s (proxy)": round(forwarded / dt) if forwarded is not None else None,
            "deliveries /s": round(got / dt * (subscribers + 1)),
        }
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()  # ends the drains' zmq_proxy calls
        for t in drains:
            t.join(5.0)
        procs.stop(child, None, 10.0)


def bench_proxy(subscribers: Sequence[int] = (1, 10, 50, 100), seconds: float = 3.0) -> Result:
    """One proxy's forwarding rate with 1..S subscribers: zeromesh's directory
    proxy against libzmq's ``zmq_proxy`` in C, side by side."""
    rows = []
    for s in subscribers:
        for impl in ("libzmq", "zeromesh"):
            r = proxy_once(impl, s, seconds)
            rows.append(
                {"proxy": "libzmq zmq_proxy (C)" if impl == "libzmq" else "zeromesh directory", "subscribers": s + 1}
                | r
            )
        raw, zm = rows[-2]["forwarded /s (probe)"], rows[-1]["forwarded /s (probe)"]
        rows[-1]["ratio vs C"] = round(zm / raw, 3) if raw else None
    return {
        "name": "proxy",
        "title": f"Discovery frames one proxy forwards (offered as fast as one PUB sends, {seconds:g} s)",
        "params": {"subscribers": list(subscribers), "seconds": seconds},
        "rows": rows,
        "summary": {
            "zeromesh_max_forwarded_per_s": max(
                r["forwarded /s (probe)"] for r in rows if r["proxy"].startswith("zeromesh")
            )
        },
    }


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
