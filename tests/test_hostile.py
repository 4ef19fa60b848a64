"""Hostile input on the discovery channel: every bad frame is dropped and
counted (by the proxy in directory mode, by peers behind a classic proxy that
forwards everything), and nothing else changes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from conftest import data_flows, full_mesh, wait_for
from zeromesh import Peer, Proxy
from zeromesh.testing.cpeer import C_STRUCT

pytestmark = pytest.mark.timeout(40)

UUID = b"6ba7b810-9dad-41d1-80b4-00c04fd430c8"


def frame(cmd: bytes = b"C", uuid: bytes = UUID, endpoint: bytes = b"tcp://127.0.0.1:7") -> bytes:
    return C_STRUCT.pack(cmd, uuid, endpoint)


#: (case, frames of one message, the reason it is counted under)
BAD: list[tuple[str, list[bytes], str]] = [
    ("short", [frame()[:200]], "short-frame"),
    ("empty", [b""], "short-frame"),
    ("unknown command", [frame(b"Q")], "bad-command"),
    ("bad uuid", [frame(uuid=b"hello")], "bad-uuid"),
    ("disallowed scheme", [frame(endpoint=b"inproc://steal")], "bad-scheme"),
    ("bad scheme", [frame(endpoint=b"gopher://x:1")], "bad-scheme"),
    ("wildcard", [frame(endpoint=b"tcp://*:1")], "bad-endpoint"),
    ("no port", [frame(endpoint=b"tcp://127.0.0.1")], "bad-endpoint"),
    ("IPv4 in brackets", [frame(endpoint=b"tcp://[1.2.3.4]:5")], "bad-endpoint"),
    ("not IPv6 in brackets", [frame(endpoint=b"tcp://[abc]:5")], "bad-endpoint"),
    ("numeric alias", [frame(endpoint=b"tcp://0x7f000001:5")], "bad-endpoint"),
    ("multipart", [frame(), frame()], "multipart"),
    ("garbage extension", [frame() + b"ZMX1\xff\xfe{"], "bad-ext"),
]
IDS = [c for c, _, _ in BAD]


@pytest.fixture
def injector() -> Iterator[Any]:
    """A raw PUB for writing anything at all to a proxy's XSUB side."""
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.linger = 0
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0  # queue, never drop: a flood must arrive in full to be counted in full
    yield pub
    pub.close()
    ctx.term()


def inject_until(pub: Any, frames: list[bytes], counted: Any) -> bool:
    """Resend until *counted* is true: the PUB drops everything until the
    XSUB's subscription has reached it."""
    return wait_for(lambda: pub.send_multipart(frames) or counted(), 3.0, 0.01)


@pytest.mark.parametrize(("frames", "reason"), [(f, r) for _, f, r in BAD], ids=IDS)
def test_directory_proxy_drops_and_counts(
    frames: list[bytes], reason: str, proxy: Proxy, peers: list[Peer], injector: Any
) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(2))
    assert wait_for(lambda: full_mesh(peers), 3.0)
    before = {p.uuid: p.peers() for p in peers}
    entries = dict(proxy.directory.entries)
    injector.connect(proxy.xsub_endpoint)
    assert inject_until(injector, frames, lambda: proxy.bad[reason] > 0)
    assert set(proxy.bad) == {reason}
    # The proxy kept running and its state is intact: a newcomer still joins.
    newcomer = Peer(proxy.endpoint).start()
    peers.append(newcomer)
    assert newcomer.wait_ready(2.0)
    assert wait_for(lambda: full_mesh(peers), 3.0)
    assert all(before[u].items() <= p.peers().items() for u, p in ((p.uuid, p) for p in peers[:2]))
    assert entries.items() <= proxy.directory.entries.items()
    assert all(not p.bad for p in peers)  # nothing bad got through to the peers


@pytest.mark.parametrize(("frames", "reason"), [(f, r) for _, f, r in BAD], ids=IDS)
def test_peers_drop_and_count_behind_a_classic_proxy(
    frames: list[bytes], reason: str, classic_proxy: Proxy, peers: list[Peer], injector: Any
) -> None:
    peers.extend(Peer(classic_proxy.endpoint).start() for _ in range(2))
    assert wait_for(lambda: full_mesh(peers), 3.0)
    before = [p.peers() for p in peers]
    injector.connect(classic_proxy.xsub_endpoint)
    assert inject_until(injector, frames, lambda: all(p.bad[reason] > 0 for p in peers))
    assert all(set(p.bad) == {reason} for p in peers), [p.bad for p in peers]
    assert [p.peers() for p in peers] == before
    assert not any(p.done for p in peers)
    newcomer = Peer(classic_proxy.endpoint).start()
    peers.append(newcomer)
    assert wait_for(lambda: full_mesh(peers), 3.0)


def test_a_foreign_welcome_on_the_xsub_side_is_dropped(proxy: Proxy, peers: list[Peer], injector: Any) -> None:
    """A W from a peer would send everybody's proxy PUB to an attacker's XSUB."""
    peers.append(Peer(proxy.endpoint).start())
    assert peers[0].wait_ready(2.0)
    injector.connect(proxy.xsub_endpoint)
    evil = frame(b"W", endpoint=b"tcp://127.0.0.1:9")
    assert inject_until(injector, [evil], lambda: proxy.bad["foreign-welcome"] > 0)
    proto = peers[0].protocol
    assert proto is not None and proto.proxy_endpoint == proxy.xsub_endpoint
    assert not peers[0].bad


def test_a_flood_is_counted_in_full_and_logged_rarely(
    proxy: Proxy, peers: list[Peer], injector: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zeromesh.proxy")
    peers.append(Peer(proxy.endpoint).start())  # a subscriber, so the XSUB subscribes upstream
    assert peers[0].wait_ready(2.0)
    injector.connect(proxy.xsub_endpoint)
    assert inject_until(injector, [b"junk"], lambda: proxy.bad["short-frame"] > 0)
    for _ in range(2000):
        injector.send(b"junk")
    assert wait_for(lambda: proxy.bad["short-frame"] >= 2001, 5.0)
    assert len([r for r in caplog.records if r.name == "zeromesh.proxy"]) <= 2


#: Endpoints that 0.1.0's urlsplit-based canonicalisation raised on, ending
#: every peer's loop and the proxy's (the first two are refused now; the ipc
#: ones are valid paths and are simply dialled, then expire).
CRASHERS = [b"tcp://[1.2.3.4]:5", b"tcp://[abc]:5", b"ipc://[x", b"ipc://a]b"]


@pytest.mark.parametrize("endpoint", CRASHERS, ids=[e.decode() for e in CRASHERS])
def test_endpoints_that_crashed_every_loop_leave_the_mesh_working(
    endpoint: bytes, proxy: Proxy, peers: list[Peer], injector: Any
) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(3))
    assert wait_for(lambda: full_mesh(peers), 3.0)
    injector.connect(proxy.xsub_endpoint)
    evil = frame(endpoint=endpoint)
    seen = lambda: proxy.forwarded + sum(proxy.bad.values()) > 3  # noqa: E731
    assert inject_until(injector, [evil], seen)
    assert not any(p.done for p in peers)
    assert not proxy.wait_done(0)
    newcomer = Peer(proxy.endpoint).start()
    peers.append(newcomer)
    assert newcomer.wait_ready(2.0), "the proxy's loop died: no welcome"
    assert wait_for(lambda: all(set(p.peers()) >= {q.uuid for q in peers} for p in peers), 5.0)
    assert data_flows(peers[0], peers[1:])
    assert not any(k.endswith(("handler", "event", "action")) for p in peers for k in p.bad), [p.bad for p in peers]
