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
from zeromesh import Peer, Proxy, timing, transport
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


def newcomer_joins(proxy: Proxy, peers: list[Peer], within: float = 3.0) -> bool:
    """A newcomer joins right after an attack. The issue's 1 s goal is measured
    by benchmarks/attacks.py; here the bound leaves room for a rebuilt XPUB's
    reconnect (up to RECONNECT_IVL_MAX) on a loaded box."""
    p = Peer(proxy.endpoint).start()
    peers.append(p)
    honest = {q.uuid for q in peers}  # fakes that connect (aliases) may be listed too
    return p.wait_ready(within) and wait_for(lambda: all(set(q.peers()) >= honest for q in peers), 3.0)


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
    assert data_flows(peers[0], peers[1:])  # data never goes through the proxy
    # The flooder's XSUB re-sends its subscriptions on every reconnect, and
    # each time the XPUB is rebuilt again (docs/robustness.md); right after:
    flooder.close()
    big.close()
    assert newcomer_joins(proxy, peers)


def test_data_pub_subscription_flood_is_bounded(ctx: zmq.Context[Any], proxy: Proxy, peers: list[Peer]) -> None:
    mesh(proxy, peers)
    victim = peers[0]
    assert victim._sockets is not None and victim.endpoint is not None
    base = rss()
    flooder = subscription_flood(ctx, victim.endpoint, 2000, 40)
    assert wait_for(lambda: victim._sockets is not None and victim._sockets.rebuilds >= 1, 10.0)
    sockets = victim._sockets
    assert wait_for(lambda: sockets.data_filter.junk <= transport.MAX_JUNK_SUBSCRIPTIONS, 5.0)  # (read unlocked)
    assert rss() - base < 30 * MB
    # Subscribers reconnect to the rebuilt PUB on their own.
    flooder.close()
    assert data_flows(victim, peers[1:])
    assert not victim.done


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
    # None of the 3 huge frames went out (an honest peer's periodic re-announce may have).
    assert proxy.forwarded - forwarded < 3
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
    # Expiry grace, then the suspicion period (docs/membership.md), with room for a loaded box.
    limit = timing.EXPIRE_GRACE + timing.SUSPECT_TIMEOUT + 3.0
    assert wait_for(lambda: big_sender.uuid not in small.peers(), limit)
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


# --- connections: aliases, the proxy's own sockets, ghost floods ---------------


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_connection_table_shares_refuses_and_fans_out() -> None:
    calls: list[tuple[str, str]] = []
    t = transport.ConnectionTable(lambda ep: calls.append(("c", ep)), lambda ep: calls.append(("d", ep)))
    t.forbid("tcp://127.0.0.1:5000", "proxy-endpoint")
    assert t.add("tcp://127.0.0.1:6000") == "dialled"
    assert t.add("tcp://localhost:6000") == "shared"  # one address, one connection
    assert t.on_event("tcp://127.0.0.1:6000", True) == ["tcp://127.0.0.1:6000", "tcp://localhost:6000"]
    assert t.add("tcp://LOCALHOST:6000") == "up"  # joins a live connection: up at once
    assert t.add("tcp://localhost:5000") == "proxy-endpoint"  # any spelling of a forbidden one
    assert t.add("tcp://127.0.0.9:5000") == "proxy-endpoint"  # loopback: the same listener on 0.0.0.0
    assert t.add("tcp://127.0.0.2:6000") == "dialled"  # a second loopback address: allowed...
    assert t.add("tcp://127.0.0.3:6000") == transport.ALIAS_CAP  # ...a third is not
    assert t.add("tcp://127.0.0.3:6001") == "dialled"  # another port is another listener
    t.remove("tcp://127.0.0.3:6000")  # refused: nothing to undo
    t.remove("tcp://127.0.0.1:6000")
    t.remove("tcp://localhost:6000")
    assert ("d", "tcp://127.0.0.1:6000") not in calls  # LOCALHOST still uses it
    t.remove("tcp://LOCALHOST:6000", times=2)
    assert calls.count(("d", "tcp://127.0.0.1:6000")) == 2
    assert [ep for op, ep in calls if op == "c"] == [
        "tcp://127.0.0.1:6000",
        "tcp://127.0.0.2:6000",
        "tcp://127.0.0.3:6001",
    ]
    assert len(t) == 2 and t.refusals == {"proxy-endpoint": 2, transport.ALIAS_CAP: 1}


def test_aliases_of_a_live_peer_share_one_connection(ctx: zmq.Context[Any], proxy: Proxy, peers: list[Peer]) -> None:
    mesh(proxy, peers)
    a, b = peers
    assert b.endpoint is not None
    port = port_of(b.endpoint)
    # (The exact spelling under another uuid "replaces" b: issue 9's ground, not this test's.)
    spellings = ["localhost", "LOCALHOST", "LocalHost", "localHost", "lOcAlHoSt"]
    fakes = [str(uuidlib.uuid4()) for _ in spellings]
    frames = [frame(b"C", f"tcp://{h}:{port}", u) for h, u in zip(spellings, fakes, strict=True)]
    before = proxy.forwarded  # the peers' own frames count too: wait for the first fake's
    inject(ctx, proxy, frames, lambda: proxy.forwarded > before)
    assert wait_for(lambda: set(fakes) <= set(a.peers()), 3.0)
    assert a._conns is not None and len(a._conns) == 1  # b, under six names (and the proxy's probe: once)
    assert data_flows(b, [a])
    for k in range(50):
        b.publish(b"count", str(k).encode())
    got: list[bytes] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (m := a.recv(0.5)) is not None:  # until 0.5 s of silence
        if m.topic == b"count":  # (data_flows' extra "news" copies may still arrive)
            got.append(m.payload)
    assert got == [str(k).encode() for k in range(50)]  # each once: no duplicates
    time.sleep(transport_grace())  # sleep: the fakes must survive an expiry grace (they are up)
    assert set(fakes) <= set(a.peers())


def transport_grace() -> float:
    from zeromesh import timing

    return timing.EXPIRE_GRACE + 0.3


@pytest.mark.parametrize("which", ["proxy", "classic_proxy"])
def test_a_proxy_never_forwards_its_own_sockets(
    which: str, ctx: zmq.Context[Any], request: pytest.FixtureRequest
) -> None:
    proxy: Proxy = request.getfixturevalue(which)
    peers: list[Peer] = request.getfixturevalue("peers")
    mesh(proxy, peers)
    xpub_port, xsub_port = port_of(proxy.endpoint), port_of(proxy.xsub_endpoint)
    evil = [frame(b"C", ep) for ep in (proxy.endpoint, f"tcp://localhost:{xpub_port}", f"tcp://127.0.0.5:{xsub_port}")]
    inject(ctx, proxy, evil, lambda: proxy.bad["proxy-endpoint"] >= 1)
    assert wait_for(lambda: proxy.bad["proxy-endpoint"] >= 3, 2.0)
    assert data_flows(peers[0], peers[1:])
    assert all(len(p.peers()) == 2 and not p.bad["foreign-data"] for p in peers)


def test_peers_refuse_their_proxys_sockets_behind_a_seed_proxy(ctx: zmq.Context[Any], peers: list[Peer]) -> None:
    from zeromesh.testing.cpeer import CProxy

    with CProxy() as cproxy:
        peers.extend(Peer(cproxy.endpoint).start() for _ in range(2))
        assert wait_for(lambda: full_mesh(peers), 5.0)
        pub = ctx.socket(zmq.PUB)
        pub.connect(cproxy.xsub_endpoint)
        evil = frame(b"C", f"tcp://localhost:{port_of(cproxy.endpoint)}")
        assert wait_for(lambda: pub.send(evil) or all(p.bad["refused-proxy-endpoint"] for p in peers), 3.0, 0.01)
        assert data_flows(peers[0], peers[1:])
        assert not any(p.bad["foreign-data"] for p in peers)  # no discovery stream on the data SUBs
        for p in peers:
            p.stop()
        peers.clear()


def test_ghost_flood_is_capped_and_expires(ctx: zmq.Context[Any], proxy: Proxy, peers: list[Peer]) -> None:
    """300 fake C at 127.x.y.z spellings of one attacker PUB bound on 0.0.0.0."""
    mesh(proxy, peers)
    attacker = ctx.socket(zmq.PUB)
    attacker.bind("tcp://0.0.0.0:0")
    port = port_of(attacker.getsockopt_string(zmq.LAST_ENDPOINT))
    first = str(uuidlib.uuid4())
    fakes = [
        frame(b"C", f"tcp://127.{k // 250}.{k % 250}.{1 + k % 7}:{port}", first if k == 0 else None) for k in range(300)
    ]

    def handled() -> int:  # forwarded, or dropped by the directory (alias caps, stale claims) or the proxy
        return proxy.forwarded + sum(proxy.directory.dropped.values()) + sum(proxy.bad.values())

    # In bursts of 50, each one read before the next: the flood is the same,
    # and no burst outruns a loaded proxy's inbound queue.
    before = handled()
    pub = inject(ctx, proxy, fakes[:1], lambda: first in proxy.directory.entries)
    for k in range(1, len(fakes), 50):
        for f in fakes[k : k + 50]:
            pub.send(f)
        want = before + k + len(fakes[k : k + 50])
        assert wait_for(lambda want=want: handled() >= want, 10.0), (handled() - before, dict(proxy.bad))

    def attacker_conns() -> int:
        conns = psutil.Process().net_connections("tcp")
        return sum(1 for c in conns if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)

    # Each peer and the proxy's probe dial at most MAX_ALIASES_PER_PORT of them.
    bound = (len(peers) + 1) * transport.MAX_ALIASES_PER_PORT
    assert attacker_conns() <= bound
    # The rest never come up and expire everywhere within the grace.
    limit = 2 + transport.MAX_ALIASES_PER_PORT
    assert wait_for(lambda: all(len(p.peers()) <= limit for p in peers), 4.0), [len(p.peers()) for p in peers]
    assert wait_for(lambda: len(proxy.directory.entries) <= limit, 2.0)
    assert attacker_conns() <= bound
    assert data_flows(peers[0], peers[1:])
    assert newcomer_joins(proxy, peers)


# --- the size limits are upper bounds of what honest parties send ------------------


def worst_meta() -> dict[str, str]:
    """Metadata at its bound, in the characters JSON escapes most (6 bytes each)."""
    from zeromesh import metadata

    per_pair = metadata.MAX_TOTAL_BYTES // metadata.MAX_PAIRS
    return {f"{k:02d}" + "\x01" * (per_pair // 2 - 2): "\x02" * (per_pair // 2) for k in range(metadata.MAX_PAIRS)}


def test_largest_honest_announcement_fits_the_xsub_limit() -> None:
    from zeromesh import ext, metadata, wire

    meta = worst_meta()
    assert metadata.validate(meta) == meta
    big = {
        ext.META: meta,
        ext.KNOWN: {ext.PROXY: str(uuidlib.uuid4()), ext.SEQ: 2**63 - 1},
        ext.RESYNC: 1,
        ext.MISSING: [2**31 + k for k in range(256)],
        ext.INCARNATION: 2**63 - 1,
        ext.PROVES: 1,
    }
    endpoint = "tcp://" + ".".join(["a" * 63] * 3) + ".a" * 25 + ":65535"
    assert len(endpoint) <= 256
    frame = wire.encode(wire.Message(wire.Command.CONNECT, str(uuidlib.uuid4()), endpoint, big))
    assert len(frame) <= transport.MAX_DISCOVERY_FRAME, len(frame)


def test_largest_welcome_entry_fits_its_share_of_the_welcome_limit() -> None:
    import json

    from zeromesh import ext

    u = str(uuidlib.uuid4())
    endpoint = "ipc://" + "é" * 50  # 2-byte characters: escaped to 6 bytes each
    entry = json.dumps(ext.DirEntry(u, endpoint, 2**63 - 1, True).as_ext())
    info = json.dumps({u: {"t": 9_999_999_999.999, "m": worst_meta(), "st": "suspect"}})
    assert len(entry) + 1 + len(info) - 2 + 1 <= transport.MAX_ENTRY_JSON


def test_behind_a_seed_proxy_a_flooded_proxy_pub_is_rebuilt(ctx: zmq.Context[Any], peers: list[Peer]) -> None:
    """The seed's zmq_proxy forwards every subscription to every peer's proxy PUB."""
    from zeromesh.testing.cpeer import CProxy

    with CProxy() as cproxy:
        peers.extend(Peer(cproxy.endpoint).start() for _ in range(2))
        assert wait_for(lambda: full_mesh(peers), 5.0)
        base = rss()
        flooder = subscription_flood(ctx, cproxy.endpoint, 2000, 40)
        assert wait_for(lambda: all(p.bad["junk-subscriptions"] for p in peers), 10.0)
        flooder.close()
        assert rss() - base < 40 * MB
        # sleep: zmq_proxy passes the flooder's unsubscriptions upstream once its
        # XPUB notices it left; until then each reconnect of a proxy PUB gets the junk again
        time.sleep(1.0)  # sleep: the scenario, as said above
        # Each peer's rebuilt proxy PUB reconnected: a newcomer still hears from them.
        assert newcomer_joins(cproxy, peers, within=3.0)  # type: ignore[arg-type]
        assert data_flows(peers[0], peers[1:])
        for p in peers:
            p.stop()
        peers.clear()


def test_a_raising_callback_never_ends_a_peer(
    proxy: Proxy, peers: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 8: an exception in on_message ended the loop (others saw it expire 3 s later)."""

    def boom(_: object) -> None:
        raise RuntimeError("user bug")

    victim = Peer(proxy.endpoint, on_message=boom, on_event=boom).start()
    peers.append(victim)
    mesh(proxy, peers, 1)
    other = peers[1]
    # Publish until 20 arrived: the data connection comes up after the tables converge.
    assert wait_for(lambda: other.publish(b"news", b"x") or victim.bad["on_message-callback"] >= 20, 10.0, 0.01)
    assert victim.bad["on_event-callback"] >= 1
    # The first traceback of each kind is logged, the rest only counted.
    assert len([r for r in caplog.records if r.name == "zeromesh.peer" and r.exc_info]) == 2
    time.sleep(transport_grace())  # sleep: it would have expired in the others' view by now
    assert not victim.done and victim.uuid in other.peers()
    assert data_flows(victim, [other])


def test_token_bucket() -> None:
    b = transport.TokenBucket(rate=10.0, burst=3)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.05) and b.take(0.1)  # one token per 0.1 s
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_new_members_are_rate_limited_known_ones_are_not(
    ctx: zmq.Context[Any], proxy: Proxy, peers: list[Peer]
) -> None:
    """A flood of valid C frames with fresh uuids: each one would be a join in every peer."""
    mesh(proxy, peers)
    # Far smaller than timing.NEW_MEMBER_*: a loaded box that takes seconds to
    # read the 300 frames must not refill the bucket as fast as it drains it.
    rate, burst = 0.01, 5
    proxy._newcomers = transport.TokenBucket(rate, burst)
    joins0 = proxy.stats().joins
    first = str(uuidlib.uuid4())
    fakes = [frame(b"C", "tcp://127.0.0.1:9", first if k == 0 else None) for k in range(300)]
    t0 = time.monotonic()
    inject(ctx, proxy, fakes, lambda: first in proxy.directory.entries)
    assert wait_for(lambda: proxy.bad["rate-limited"] > 0, 5.0)
    assert proxy.stats().joins - joins0 <= burst + rate * (time.monotonic() - t0)
    # Known members are not counted: the mesh keeps working. A newcomer joins
    # right after at the shipped rate (this test's bucket would make it wait
    # a second for a token).
    assert data_flows(peers[0], peers[1:])
    proxy._newcomers = transport.TokenBucket(timing.NEW_MEMBER_RATE, timing.NEW_MEMBER_BURST)
    assert newcomer_joins(proxy, peers)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_attack_script_meets_the_goal() -> None:
    """benchmarks/attacks.py against real processes, two of its attacks (the
    whole suite takes minutes: run it by hand, docs/robustness.md)."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "attacks.py")
    r = subprocess.run(
        [sys.executable, script, "--only", "huge-proxy", "--only", "aliases", "--duration", "2"],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" OK ") == 2, r.stdout
