"""Resource attacks on a running mesh (issue 8), small enough for every run:
raw pyzmq attackers against in-process Proxy and Peer objects. The full-size
versions, with RSS measured per process, are in ``benchmarks/attacks.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import zmq

from conftest import data_flows, full_mesh, wait_for
from zeromesh import Peer, Proxy, transport
from zeromesh.harness import procs
from zeromesh.testing.cpeer import C_STRUCT

pytestmark = pytest.mark.timeout(40)

MB = 1024 * 1024


def frame(cmd: bytes, endpoint: str, uuid: str | None = None, tail: bytes = b"") -> bytes:
    u = (uuid or str(uuidlib.uuid4())).encode()
    return C_STRUCT.pack(cmd, u, endpoint.encode()) + tail


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    c.linger = 0
    yield c
    c.destroy(linger=0)


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def mesh(proxy: Proxy, peers: list[Peer], n: int = 2) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(n))
    assert wait_for(lambda: full_mesh(peers), 3.0)


def newcomer_joins(proxy: Proxy, peers: list[Peer], within: float = 1.0) -> bool:
    p = Peer(proxy.endpoint).start()
    peers.append(p)
    return p.wait_ready(within) and wait_for(lambda: full_mesh(peers), 3.0)


def inject(ctx: zmq.Context[Any], proxy: Proxy, frames: list[bytes], until: Any) -> zmq.Socket[Any]:
    """A raw PUB on the proxy's XSUB, resending the first frame until *until*
    (a PUB drops until the XSUB's subscription arrives), then the rest."""
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0
    pub.connect(proxy.xsub_endpoint)
    assert wait_for(lambda: pub.send(frames[0]) or until(), 3.0, 0.01)
    for f in frames[1:]:
        pub.send(f)
    return pub


def subscription_flood(ctx: zmq.Context[Any], endpoint: str, n: int, size: int) -> zmq.Socket[Any]:
    """An XSUB that sends *n* distinct subscriptions of *size* bytes."""
    xsub = ctx.socket(zmq.XSUB)
    xsub.sndhwm = 0
    xsub.connect(endpoint)
    for _ in range(n):
        xsub.send(b"\x01" + os.urandom(size))
    return xsub


@pytest.mark.parametrize("which", ["proxy", "classic_proxy"])
def test_subscription_flood_is_neither_stored_nor_forwarded(
    which: str, ctx: zmq.Context[Any], request: pytest.FixtureRequest
) -> None:
    proxy: Proxy = request.getfixturevalue(which)
    peers: list[Peer] = request.getfixturevalue("peers")  # stopped before the proxy
    mesh(proxy, peers)
    base = rss()
    flooder = subscription_flood(ctx, proxy.endpoint, 3000, 40)
    # Past the cap the XPUB is rebuilt, which drops the flooder's connection
    # and the rest of its flood with it.
    assert wait_for(lambda: proxy.rebuilds >= 1, 10.0)
    assert wait_for(lambda: proxy.filter.junk <= transport.MAX_JUNK_SUBSCRIPTIONS, 5.0)
    assert proxy.filter.refused > transport.MAX_JUNK_SUBSCRIPTIONS
    # Nothing but the empty topic went upstream: no peer saw junk.
    assert all(p._sockets is not None and p._sockets.proxy_filter.refused == 0 for p in peers)
    # One 1 KB subscription: over MAXMSGSIZE, the connection is dropped unread.
    big = subscription_flood(ctx, proxy.endpoint, 1, 1024)
    big.send(b"\x01" + b"x" * 10)  # sketchy follow-up on the same connection: never seen
    assert rss() - base < 30 * MB
    assert data_flows(peers[0], peers[1:])
    assert newcomer_joins(proxy, peers)
    flooder.close()


def test_data_pub_subscription_flood_is_bounded(ctx: zmq.Context[Any], proxy: Proxy, peers: list[Peer]) -> None:
    mesh(proxy, peers)
    victim = peers[0]
    assert victim._sockets is not None and victim.endpoint is not None
    base = rss()
    flooder = subscription_flood(ctx, victim.endpoint, 2000, 40)
    assert wait_for(lambda: victim._sockets is not None and victim._sockets.rebuilds >= 1, 10.0)
    assert victim._sockets.data_filter.junk <= transport.MAX_JUNK_SUBSCRIPTIONS
    assert rss() - base < 30 * MB
    # Subscribers reconnect to the rebuilt PUB on their own.
    assert data_flows(victim, peers[1:])
    assert not victim.done
    flooder.close()


#: An attacker in a process of its own (its buffers must not count as ours):
#: sends one frame of argv[2] MB to argv[1] until three connections dropped.
HUGE_SENDER = """
import sys, zmq
ctx = zmq.Context(); pub = ctx.socket(zmq.PUB); pub.sndhwm = 1
mon = pub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
pub.connect(sys.argv[1])
big = b"C" + bytes(294) + b"ZMX1" + b" " * (int(sys.argv[2]) << 20)
drops = 0
while drops < 3:
    pub.send(big)
    if mon.poll(50):
        mon.recv_multipart(); drops += 1
print(drops, flush=True)
pub.disable_monitor(); mon.close(); pub.close(0); ctx.term()
"""


def test_huge_frame_costs_nothing(proxy: Proxy, peers: list[Peer]) -> None:
    mesh(proxy, peers)
    forwarded = proxy.forwarded
    base = rss()
    child = subprocess.Popen([sys.executable, "-c", HUGE_SENDER, proxy.xsub_endpoint, "64"], stdout=subprocess.PIPE)
    peak = 0
    try:
        deadline = time.monotonic() + 15
        while child.poll() is None and time.monotonic() < deadline:
            peak = max(peak, rss() - base)
            time.sleep(0.02)  # sleep: RSS sampling interval
        assert child.stdout is not None
        out = child.stdout.read() if child.poll() is not None else b""
    finally:
        procs.stop(child, signal.SIGTERM)
    assert out.strip() == b"3"  # the XSUB read each header and dropped the connection
    assert peak < 50 * MB, peak / MB
    assert proxy.forwarded == forwarded
    assert newcomer_joins(proxy, peers)


def test_data_message_over_the_limit_drops_its_publisher(proxy: Proxy, peers: list[Peer]) -> None:
    """libzmq takes an oversized message as a protocol error: it drops the
    connection and never redials it, so the publisher expires for this
    receiver, the bytes are never spent, and other publishers are unaffected."""
    small = Peer(proxy.endpoint, max_message_size=1024).start()
    peers.append(small)
    mesh(proxy, peers, 2)
    big_sender, other = peers[1], peers[2]
    assert data_flows(big_sender, [small], b"x" * 512)
    big_sender.publish(b"news", b"y" * 4096)
    assert wait_for(lambda: big_sender.uuid not in small.peers(), 3.0)
    assert data_flows(other, [small])
    while (m := small.recv(0)) is not None:
        assert len(m.payload) < 1024
    assert not small.done
    with pytest.raises(ValueError, match="max_message_size"):
        Peer(proxy.endpoint, max_message_size=0)


def test_classic_proxy_drops_a_foreign_welcome(ctx: zmq.Context[Any], classic_proxy: Proxy, peers: list[Peer]) -> None:
    mesh(classic_proxy, peers)
    evil = frame(b"W", "tcp://127.0.0.1:9")
    inject(ctx, classic_proxy, [evil], lambda: classic_proxy.bad["foreign-welcome"] > 0)
    time.sleep(0.2)  # sleep: a forwarded W would reach the peers within milliseconds
    for p in peers:
        assert p.protocol is not None and p.protocol.proxy_endpoint == classic_proxy.xsub_endpoint
    assert newcomer_joins(classic_proxy, peers)
