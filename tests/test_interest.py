"""Interest-scoped connections (issue 13.4): peers announce the topic prefixes
they publish and subscribe to; a peer connects only to the publishers of what
it subscribes to, and still lists every member."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from test_cli import run
from test_protocol import ME, MY_EP, C, D, W, ep, events, sends, uid
from zeromesh import Peer, Proxy, ext, timing
from zeromesh.directory import Directory
from zeromesh.errors import ConfigError
from zeromesh.protocol import Behaviour, ConnectData, PeerProtocol, Phase, State
from zeromesh.sockets import SocketPolicy
from zeromesh.testing.cpeer import CPeer
from zeromesh.testing.waits import wait_for
from zeromesh.wire import Command

pytestmark = pytest.mark.timeout(60)


def b64(*topics: bytes) -> list[str]:
    return [base64.b64encode(t).decode() for t in topics]


def pub(*topics: bytes, inc: int = 0) -> dict[str, Any]:
    """A zeromesh member's C extension: publishes *topics*."""
    return {"i": inc, "pub": b64(*topics)}


def scoped(subscribes: tuple[bytes, ...] | None, publishes: tuple[bytes, ...] | None = None) -> PeerProtocol:
    p = PeerProtocol(ME, MY_EP, Behaviour(), publishes=publishes, subscribes=subscribes)
    p.start(0.0)
    p.on_frame(W(), 0.0)
    p.on_frame(C(ME, MY_EP, {"i": 0}), 0.001)
    assert p.ready and p.phase is Phase.READY
    return p


# --- ext.py: encoding, bounds, matching ---------------------------------------------------------


def test_topic_lists_round_trip_and_hostile_ones_read_as_everything() -> None:
    assert ext.read_topics({"pub": b64(b"a", b"\x00\xff")}, "pub") == ((b"a", b"\x00\xff"), False)
    assert ext.read_topics({}, "pub") == (None, False)  # absent: everything, not an error
    assert ext.read_topics({"pub": []}, "pub") == ((), False)  # declared: publishes nothing
    too_long = base64.b64encode(b"x" * (ext.MAX_TOPIC_BYTES + 1)).decode()
    for junk in ["YQ==", {"a": 1}, [1], [None], ["not base64!"], [too_long], b64(*[b"t"] * (ext.MAX_TOPICS + 1))]:
        assert ext.read_topics({"pub": junk}, "pub") == (None, True), junk


def test_local_topics_are_checked_naming_the_argument() -> None:
    assert ext.validate_topics(None, "subscribes") is None
    assert ext.validate_topics([b"a", b"a", b""], "subscribes") == (b"a", b"")
    for bad in [b"a", "a", ["a"], [1], 3]:
        with pytest.raises(TypeError, match="subscribes"):
            ext.validate_topics(bad, "subscribes")
    for bad in [[b"x" * (ext.MAX_TOPIC_BYTES + 1)], [bytes([i]) for i in range(ext.MAX_TOPICS + 1)]]:
        with pytest.raises(ConfigError, match="publishes"):
            ext.validate_topics(bad, "publishes")


def test_overlap_is_a_prefix_match_either_way() -> None:
    assert ext.overlaps((b"a",), (b"ab",))  # the publisher of a.. may carry ab..
    assert ext.overlaps((b"abc",), (b"a",))  # within what the subscriber wants
    assert not ext.overlaps((b"b",), (b"a",))
    assert ext.overlaps(None, (b"a",)) and ext.overlaps((b"a",), None) and ext.overlaps(None, None)
    assert not ext.overlaps((), None) and not ext.overlaps(None, ())  # declared nothing
    assert ext.covers((b"a",), b"abc") and not ext.covers((b"a",), b"b") and ext.covers(None, b"z")


# --- the protocol: who is connected, who is listed ----------------------------------------------


def test_our_c_carries_our_topics_and_a_default_peer_sends_none() -> None:
    p = PeerProtocol(ME, MY_EP, publishes=(b"a",), subscribes=(b"b", b"c"))
    c = sends(p.on_frame(W(), 0.0), Command.CONNECT)[0]
    assert c.ext["pub"] == b64(b"a") and c.ext["sub"] == b64(b"b", b"c")
    c = sends(PeerProtocol(ME, MY_EP).on_frame(W(), 0.0), Command.CONNECT)[0]
    assert "pub" not in c.ext and "sub" not in c.ext


def test_a_subscriber_connects_only_to_the_publishers_of_its_topics_and_lists_everyone() -> None:
    p = scoped(subscribes=(b"a",))
    out = p.on_frame(C(uid(2), ep(2), pub(b"a1")), 1.0)
    assert ConnectData(ep(2)) in out and events(out, "join")
    out = p.on_frame(C(uid(3), ep(3), pub(b"b")), 1.0)  # a B-only publisher
    assert not [a for a in out if isinstance(a, ConnectData)] and [e.uuid for e in events(out, "join")] == [uid(3)]
    out = p.on_frame(C(uid(4), ep(4)), 1.0)  # a classic peer: publishes everything
    assert ConnectData(ep(4)) in out
    out = p.on_frame(C(uid(5), ep(5), {"i": 0}), 1.0)  # an older zeromesh peer: no topics
    assert ConnectData(ep(5)) in out
    out = p.on_frame(C(uid(6), ep(6), pub()), 1.0)  # publishes nothing at all
    assert not [a for a in out if isinstance(a, ConnectData)]
    assert set(p.snapshot()) == {ME, uid(2), uid(3), uid(4), uid(5), uid(6)}
    assert set(p.connected_endpoints()) == {MY_EP, ep(2), ep(4), ep(5)} and p.data_connections() == 3
    assert p.wants(uid(2)) and not p.wants(uid(3))
    # Converged = every wanted connection up; the unconnected are not waited for.
    assert p.pending_connections() == 3
    for n in (2, 4, 5):
        p.on_data_connected(ep(n), 1.1)
    assert p.pending_connections() == 0


def test_a_default_peer_keeps_the_full_mesh() -> None:
    p = scoped(subscribes=None)
    for n, topics in ((2, pub(b"a")), (3, pub(b"b")), (4, {})):
        assert ConnectData(ep(n)) in p.on_frame(C(uid(n), ep(n), topics), 1.0)
    assert set(p.connected_endpoints()) == {MY_EP, ep(2), ep(3), ep(4)}


def test_an_unconnected_member_never_expires_and_leaves_on_d_or_the_proxys_obituary() -> None:
    p = scoped(subscribes=(b"a",))
    p.on_frame(C(uid(2), ep(2), pub(b"b")), 1.0)
    p.on_frame(C(uid(3), ep(3), pub(b"b")), 1.0)
    p.on_data_disconnected(ep(2), 1.5)  # not ours: a stray monitor event changes nothing
    far = 1.0 + 10 * (timing.EXPIRE_GRACE + timing.SUSPECT_TIMEOUT + timing.PROOF_TIMEOUT)
    assert not events(p.tick(far), "leave") and p.next_deadline() is None
    assert {uid(2), uid(3)} <= set(p.snapshot()) and p.counters.expired == 0
    # The proxy's obituary is the way out of a crash (a connected member whose
    # connection is up would be kept: we could tell it is alive; here we cannot).
    out = p.on_frame(D(uid(2), ep(2), {"i": 0, "o": 1}), far)
    assert [(e.uuid, e.reason) for e in events(out, "leave")] == [(uid(2), "expired")]
    out = p.on_frame(D(uid(3), ep(3), {"i": 0}), far)
    assert [(e.uuid, e.reason) for e in events(out, "leave")] == [(uid(3), "left")]
    assert set(p.snapshot()) == {ME}


def test_an_unconnected_proving_member_is_listed_on_the_proxys_word() -> None:
    p = scoped(subscribes=(b"a",))
    out = p.on_frame(C(uid(2), ep(2), {**pub(b"b"), "v": 1}), 1.0)  # no connection: no proof can come
    assert events(out, "join") and p.entries()[uid(2)] == (ep(2), State.LIVE)
    out = p.on_frame(C(uid(3), ep(3), {**pub(b"a"), "v": 1}), 1.0)  # connected: its proof is waited for
    assert not events(out, "join") and p.entries()[uid(3)] == (ep(3), State.PENDING)
    assert events(p.on_proof(uid(3), ep(3), 1.1), "join")


def test_hostile_topic_lists_are_counted_and_never_cost_the_data() -> None:
    p = scoped(subscribes=(b"a",))
    hostile: list[object] = ["a", [7], ["%%%"], b64(*[b"b"] * (ext.MAX_TOPICS + 1))]
    for n, junk in enumerate(hostile, start=2):
        out = p.on_frame(C(uid(n), ep(n), {"i": 0, "pub": junk, "sub": junk}), 1.0)
        assert ConnectData(ep(n)) in out  # unreadable: read as everything, connected
    assert p.counters.ignored["bad-topics"] == 2 * len(hostile)
    assert len(p.snapshot()) == 1 + len(hostile)


def test_the_directory_hands_newcomers_every_members_topics() -> None:
    d = Directory("proxy")
    d.on_frame(C(uid(2), ep(2), {"i": 0, "pub": b64(b"a"), "sub": b64(b"b")}), 0.0)
    d.on_frame(C(uid(3), ep(3), pub(b"b")), 0.0)
    d.on_frame(C(uid(4), ep(4), {"i": 0, "pub": ["%%%"]}), 0.0)  # hostile: counted, handed on as everything
    d.on_frame(C(uid(5), ep(5)), 0.0)  # classic
    welcome = d.welcome_ext()
    info = welcome[ext.DIR_INFO]
    assert info[uid(2)]["pub"] == b64(b"a") and info[uid(2)]["sub"] == b64(b"b")
    assert "pub" not in info[uid(4)] and "pub" not in info[uid(5)] and d.bad_topics == 1
    p = PeerProtocol(ME, MY_EP, subscribes=(b"a",))
    out = p.on_frame(W(welcome), 0.0)
    connected = {a.endpoint for a in out if isinstance(a, ConnectData)}
    assert connected == {ep(2), ep(4), ep(5)}
    assert {uid(2), uid(3), uid(4), uid(5)} <= set(p.snapshot())
    # Hostile per-member details in a welcome are counted too, never raised.
    welcome[ext.DIR_INFO][uid(3)] = {"pub": 5}
    q = PeerProtocol(ME, MY_EP, subscribes=(b"a",))
    q.on_frame(W(welcome), 0.0)
    assert q.counters.ignored["bad-topics"] == 1 and ep(3) in q.connected_endpoints()


# --- real peers and a proxy -------------------------------------------------------------------


def started(proxy: Proxy, peers: list[Peer], **kw: Any) -> Peer:
    p = Peer(proxy.endpoint, **kw).start()
    peers.append(p)
    return p


def listed(members: list[Peer]) -> bool:
    want = {p.uuid for p in members}
    return all(set(p.peers()) == want for p in members)


def receives(sender: Peer, receiver: Peer, topic: bytes) -> bool:
    def got() -> bool:
        sender.publish(topic, b"x")
        m = receiver.recv(0.01)
        return m is not None and m.topic == topic and m.sender == sender.uuid

    return wait_for(got, 5.0)


def test_a_subscriber_gets_its_topic_only_from_its_publishers_and_still_lists_the_rest(
    proxy: Proxy, peers: list[Peer]
) -> None:
    pa = started(proxy, peers, publishes=[b"A"])
    pb = started(proxy, peers, publishes=[b"B"])
    sub = started(proxy, peers, subscribes=[b"A"])
    everyone = started(proxy, peers)  # the default: the full mesh
    assert wait_for(lambda: listed(peers), 5.0)
    # sub: to pa and to the default peer (it publishes everything), not to pb.
    assert wait_for(lambda: sub.stats().data_connections == 2 and everyone.stats().data_connections == 3, 5.0)
    proto = sub.protocol
    assert proto is not None and pb.endpoint not in proto.connected_endpoints()
    assert receives(pa, sub, b"A1") and receives(pa, everyone, b"A2") and receives(pb, everyone, b"B1")
    with pytest.raises(ConfigError, match="publishes"):
        pa.publish(b"B", b"x")  # outside what it announced: its subscribers are not connected
    assert sub.stats().rejected == {}
    # The B publisher leaves: the subscriber, not connected to it, sees it go.
    assert pb.stop(5.0)
    assert wait_for(lambda: pb.uuid not in sub.peers(), 5.0)
    ev = [e for e in iter(lambda: sub.next_event(0.01), None) if e.kind == "leave"]
    assert [(e.uuid, e.reason) for e in ev] == [(pb.uuid, "left")]


def test_a_scoped_subscriber_still_gets_the_proof_of_its_publishers(proxy: Proxy, peers: list[Peer]) -> None:
    layers = (Behaviour(), SocketPolicy(prove_identity=True))
    pa = started(proxy, peers, publishes=[b"A"], layers=layers)
    pb = started(proxy, peers, publishes=[b"B"], layers=layers)
    sub = started(proxy, peers, subscribes=[b"A"], layers=layers)
    assert wait_for(lambda: listed(peers), 5.0)
    proto = sub.protocol
    # pa was listed on its PUB's proof (which the SUB's topic filter would have
    # dropped), pb on the proxy's word: no connection, no proof to wait for.
    assert proto is not None and proto.peers[pa.uuid].proves and not proto.peers[pb.uuid].proves
    assert proto.counters.unproven == 0 and receives(pa, sub, b"A")


@pytest.fixture
def cpeers() -> Iterator[list[CPeer]]:
    started_c: list[CPeer] = []
    yield started_c
    for c in started_c:
        c.stop()


def test_scoped_peers_mix_with_a_classic_peer(proxy: Proxy, peers: list[Peer], cpeers: list[CPeer]) -> None:
    pa = started(proxy, peers, publishes=[b"A"])
    sub = started(proxy, peers, subscribes=[b"A"])
    c = CPeer(proxy.endpoint).start()
    cpeers.append(c)
    want = {pa.uuid, sub.uuid, c.uuid}
    assert wait_for(lambda: all(set(p.peers()) == want for p in peers) and set(c.table()) == want, 8.0)
    # The classic peer announces no topics: it publishes everything, so the subscriber connects to it.
    assert wait_for(lambda: sub.stats().data_connections == 2, 5.0)
    assert receives(pa, sub, b"A")
    assert c.stop(6.0)
    assert wait_for(lambda: c.uuid not in sub.peers() and c.uuid not in pa.peers(), 5.0)


def test_the_cli_refuses_bad_topics_before_anything_starts(zeromesh_exe: list[str]) -> None:
    many = [a for i in range(ext.MAX_TOPICS + 1) for a in ("--subscribes", f"t{i}")]
    for args, needle in (
        (many, "--subscribes"),
        (["--publishes", "x" * (ext.MAX_TOPIC_BYTES + 1)], "--publishes"),
    ):
        r = run(zeromesh_exe, "peer", "--proxy", "tcp://127.0.0.1:9", "--seconds", "0.1", *args)
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_api_refuses_bad_topics_naming_the_argument(proxy: Proxy) -> None:
    with pytest.raises(TypeError, match="subscribes"):
        Peer(proxy.endpoint, subscribes=b"A")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="publishes"):
        Peer(proxy.endpoint, publishes=[b"x" * (ext.MAX_TOPIC_BYTES + 1)])
