"""A fuzzer that drives the *running* processes, not only the codec: generated
discovery frames (endpoint grammar edge cases, extension JSON that is
malformed, huge, deep or of the wrong types, multipart messages), data
messages and subscriptions go to a directory proxy, a classic proxy and a
hostile proxy (raw sockets the peers are connected to), and to the peers'
data sockets. Afterwards every loop is alive, none failed on an item, and
every mesh still works."""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import data_flows, full_mesh, wait_for
from zeromesh import Peer, Proxy, transport
from zeromesh.testing.cpeer import C_STRUCT

pytestmark = pytest.mark.timeout(120)

#: Failure counters of the per-item guards: a fuzzed input must never reach one.
LOOP_FAILURES = ("frame-handler", "action", "monitor-event", "data-subscriptions", "proxy-subscriptions")

# --- strategies ---------------------------------------------------------------

TRICKY_HOSTS = [
    "127.0.0.1", "localhost", "LOCALHOST", "[::1]", "::1", "[1.2.3.4]", "[abc]", "[]", "[", "]",
    "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "256.1.1.1", "1.2.3", "1.2.3.4.5", "*", "0.0.0.0",
    "[::]", "a..b", "-a.b", "a-.b", "é.example", "xn--e1a.example", "a" * 64, ".".join(["a" * 63] * 5),
    "[fe80::1%eth0]", "[::ffff:127.0.0.1]", "host name", "h\x00st", "",
]  # fmt: skip
TRICKY_PORTS = ["1", "65535", "0", "65536", "-1", "", "*", "00080", "8o", "99999999999", "1 "]
SCHEMES = ["tcp", "ipc", "inproc", "udp", "pgm", "epgm", "vmci", "ws", "TCP", ""]

endpoints = st.one_of(
    st.builds(lambda s, h, p: f"{s}://{h}:{p}", st.sampled_from(SCHEMES), st.sampled_from(TRICKY_HOSTS),
              st.sampled_from(TRICKY_PORTS)),
    st.builds(lambda p: f"ipc://{p}", st.text(max_size=130)),
    st.sampled_from(["ipc://[x", "ipc://a]b", "ipc://*", "ipc://", "tcp://", "tcp://:5", "://x", "tcp:/x:1"]),
    st.text(max_size=300),
)  # fmt: skip

KNOWN_KEYS = ["k", "r", "m", "p", "s", "dir", "dx", "meta", "o", "t", "st"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=25,
)


@st.composite
def extensions(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["none", "json", "wrong-types", "deep", "huge", "garbage", "bad-json"]))
    if kind == "none":
        return b""
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "bad-json":
        return b"ZMX1" + draw(st.sampled_from([b"{", b"[1,", b'{"k":}', b"\xff\xfe", b"nul", b"{}}", b""]))
    if kind == "deep":
        depth = draw(st.integers(100, 5000))
        return b"ZMX1" + draw(st.sampled_from([b"[", b'{"k":'])) * depth + b"1" + b"]" * depth
    if kind == "huge":
        # Up to 60 KB: past the proxy XSUB's limit (it drops the connection); a
        # hostile proxy can send it to peers, whose limit is the welcome's.
        n = draw(st.integers(1_000, 60_000))
        return b"ZMX1" + json.dumps({"k": {"p": "x" * n, "s": 1}, "meta": {"a": "b" * 100}}).encode()
    obj: Any
    if kind == "wrong-types":
        obj = draw(st.dictionaries(st.sampled_from(KNOWN_KEYS), json_values, min_size=1, max_size=6))
    else:
        obj = draw(json_values)
    return b"ZMX1" + json.dumps(obj).encode()  # NaN and Infinity included: not strict JSON


uuids = st.one_of(st.just(None), st.text(max_size=40), st.builds(lambda: str(uuidlib.uuid4())))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=400))  # anything at all
    cmd = draw(st.sampled_from([b"W", b"C", b"D", b"C", b"C", b"D", b"X", b"\x00"]))
    u = draw(uuids)
    ub = (u if u is not None else str(uuidlib.uuid4())).encode("utf-8", "replace")[:37]
    ep = draw(endpoints).encode("utf-8", "replace")[:257]
    raw = C_STRUCT.pack(cmd, ub, ep)
    if draw(st.booleans()):  # C senders leave garbage after each NUL
        raw = bytes(b if b else draw(st.integers(0, 255)) for b in raw[:60]) + raw[60:]
    cut = draw(st.sampled_from([None, None, None, 0, 1, 100, 294]))
    return (raw[:cut] if cut is not None else raw) + draw(extensions())


messages = st.lists(frames(), min_size=1, max_size=4)  # multipart when more than one
data_messages = st.lists(st.binary(max_size=300), min_size=0, max_size=5)
subscriptions = st.binary(max_size=60)


# --- the targets ------------------------------------------------------------------


@dataclass
class Targets:
    proxies: list[Proxy]
    meshes: list[list[Peer]]
    #: raw PUBs on each proxy's XSUB, a raw XPUB the hostile-proxy peers use
    injectors: list[zmq.Socket[Any]]
    hostile: zmq.Socket[Any]
    hostile_peers: list[Peer]
    #: an attacker PUB announced to the directory mesh, and XSUBs on publishers
    data_pub: zmq.Socket[Any]
    subscribers: list[zmq.Socket[Any]]
    sent: int = 0
    sockets: list[zmq.Socket[Any]] = field(default_factory=list)

    @property
    def all_peers(self) -> list[Peer]:
        return [p for m in self.meshes for p in m] + self.hostile_peers


def c_frame(peer: Peer) -> bytes:
    assert peer.endpoint is not None
    return C_STRUCT.pack(b"C", peer.uuid.encode(), peer.endpoint.encode())


@pytest.fixture
def targets() -> Iterator[Targets]:
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.linger = 0
    started: list[Peer] = []
    meshes: list[list[Peer]] = []
    proxies = [Proxy().start(), Proxy(mode="classic").start()]
    try:
        for proxy in proxies:
            mesh = [Peer(proxy.endpoint).start() for _ in range(2)]
            started += mesh
            meshes.append(mesh)
            assert wait_for(lambda m=mesh: full_mesh(m), 5.0)  # type: ignore[misc]
        # A hostile proxy: a raw XPUB whose welcome names a raw XSUB.
        xsub = ctx.socket(zmq.XSUB)
        xsub.bind("tcp://127.0.0.1:0")
        hostile = ctx.socket(zmq.XPUB)
        hostile.sndhwm = 0
        welcome = C_STRUCT.pack(b"W", str(uuidlib.uuid4()).encode(), xsub.getsockopt(zmq.LAST_ENDPOINT))
        hostile.setsockopt(zmq.XPUB_WELCOME_MSG, welcome)
        hostile.bind("tcp://127.0.0.1:0")
        hostile_peers = [Peer(hostile.getsockopt_string(zmq.LAST_ENDPOINT)).start() for _ in range(2)]
        started += hostile_peers
        injectors = []
        for proxy in proxies:
            pub = ctx.socket(zmq.PUB)
            pub.sndhwm = 0
            pub.connect(proxy.xsub_endpoint)
            injectors.append(pub)
        data_pub = ctx.socket(zmq.PUB)
        data_pub.bind("tcp://127.0.0.1:0")
        subscribers = []
        for ep in [p.endpoint for p in proxies] + [meshes[0][0].endpoint]:
            s = ctx.socket(zmq.XSUB)
            s.sndhwm = 0
            s.connect(ep)
            subscribers.append(s)
        t = Targets(proxies, meshes, injectors, hostile, hostile_peers, data_pub, subscribers)
        # Every injector reaches its proxy before fuzzing starts (a PUB drops until subscribed).
        for pub, proxy in zip(injectors, proxies, strict=True):
            probe = C_STRUCT.pack(b"C", str(uuidlib.uuid4()).encode(), b"tcp://127.0.0.1:9")
            assert wait_for(lambda p=pub, x=proxy, f=probe: p.send(f) or x.forwarded > 2, 3.0, 0.01)  # type: ignore[misc]
        # The attacker's data PUB, announced to the directory mesh as a peer.
        attacker = C_STRUCT.pack(b"C", str(uuidlib.uuid4()).encode(), data_pub.getsockopt(zmq.LAST_ENDPOINT))
        assert wait_for(lambda: injectors[0].send(attacker) or len(meshes[0][0].peers()) > 2, 3.0, 0.01)
        yield t
    finally:
        everyone = started + [p for m in meshes for p in m if p not in started]  # newcomers too
        for p in everyone:
            p.leave()  # all at once: the hostile proxy's peers wait LEAVE_TIMEOUT for their D
        for p in everyone:
            assert p.stop(5.0)
        for proxy in proxies:
            proxy.stop()
        ctx.destroy(linger=0)


def inject(t: Targets, msg: list[bytes], data: list[bytes], sub: bytes) -> None:
    small = all(len(f) <= transport.MAX_DISCOVERY_FRAME for f in msg)
    if small:  # a larger one drops the injector's connection (MAXMSGSIZE): tested in test_attacks
        for pub in t.injectors:
            pub.send_multipart(msg)
    t.hostile.send_multipart(msg)
    if data:
        t.data_pub.send_multipart(data)
    for s in t.subscribers:
        s.send(sub)
    t.sent += 1


def test_fuzzed_input_never_stops_a_loop_and_the_meshes_still_work(targets: Targets) -> None:
    t = targets

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(msg=messages, data=data_messages, sub=subscriptions)
    def fuzz(msg: list[bytes], data: list[bytes], sub: bytes) -> None:
        inject(t, msg, data, sub)
        assert not any(p.done for p in t.all_peers)

    fuzz()
    time.sleep(0.5)  # sleep: let the last fuzzed frames be read before judging
    for p in t.all_peers:
        assert not p.done, p.exit_reason
        assert not any(p.bad[k] for k in LOOP_FAILURES), dict(p.bad)
    for proxy in t.proxies:
        assert not proxy.wait_done(0), proxy.error
        assert not any(proxy.bad[k] for k in LOOP_FAILURES), dict(proxy.bad)
    assert sum(t.proxies[0].bad.values()) > 0  # the fuzzer did reach the decoder
    # A subscriber that keeps junk topics re-sends them on every reconnect, so
    # the publisher it floods is rebuilt again and again while it stays
    # (docs/robustness.md): the meshes must work right after it left.
    for s in t.subscribers:
        s.close()
    t.data_pub.close()  # and drop what it delivered (data_flows reads what comes first)
    for p in t.all_peers:
        while p.recv(0.05) is not None:
            pass
    # Every mesh still works: data flows and a newcomer joins.
    for proxy, mesh in zip(t.proxies, t.meshes, strict=True):
        newcomer = Peer(proxy.endpoint).start()
        mesh.append(newcomer)
        assert newcomer.wait_ready(2.0)
        honest = {p.uuid for p in mesh}
        assert wait_for(lambda m=mesh, h=honest: all(set(p.peers()) >= h for p in m), 5.0)  # type: ignore[misc]
        assert data_flows(mesh[0], mesh[1:])
    # The hostile proxy's peers still take a valid frame and carry data.
    a, b = t.hostile_peers
    assert wait_for(lambda: t.hostile.send_multipart([c_frame(a)]) or t.hostile.send_multipart([c_frame(b)])
                    or (b.uuid in a.peers() and a.uuid in b.peers()), 5.0, 0.05)  # fmt: skip
    assert data_flows(a, [b])
