"""Membership on real sockets (issue 9, docs/membership.md): forged frames are
refuted or have no effect, ``D`` is final with the seed's C churners, C peers
drop crashed peers on the proxy's obituary, and under CURVE a member can speak
only for itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from conftest import full_mesh, wait_for
from zeromesh import Peer, PeerEvent, Proxy, ext, wire
from zeromesh.protocol import Behaviour
from zeromesh.security import Security, keygen
from zeromesh.sockets import SocketPolicy
from zeromesh.testing.cpeer import CPeer, c_message
from zeromesh.testing.netns import Child, spawn_zeromesh
from zeromesh.wire import Command, Message

pytestmark = pytest.mark.timeout(40)

#: The issue's goal for a forged frame's effect: back in every table within 1 s
#: (2 s on a loaded machine, which is what a test may assert).
REFUTE_BOUND = 2.0
#: A SIGKILLed peer leaves every C peer's table within this long.
OBITUARY_BOUND = 3.0
#: How long "no effect" is watched for (a forged frame acts in milliseconds).
WATCH = 1.5


class Attacker:
    """A raw PUB on the proxy's XSUB, as anyone who can reach it (optionally a
    CURVE member: an insider). :meth:`warm` waits until frames get through."""

    def __init__(self, proxy: Proxy, security: Security | None = None) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        if security is not None:
            security.apply_client(self.pub)
        self.pub.connect(proxy.xsub_endpoint)
        self.proxy = proxy

    def warm(self) -> None:
        """Send harmless frames (a W, dropped by the proxy) until one arrives."""
        frame = c_message(b"W", "00000000-0000-4000-8000-00000000dead", "tcp://127.0.0.1:9")
        base = self.proxy.bad["foreign-welcome"]

        def through() -> bool:
            self.pub.send(frame)
            return self.proxy.bad["foreign-welcome"] > base

        assert wait_for(through, 5.0, 0.02), "attacker never reached the proxy"

    def send(self, msg: Message) -> None:
        self.pub.send(wire.encode(msg))

    def close(self) -> None:
        self.pub.close()
        self.ctx.term()


@pytest.fixture
def attacker(proxy: Proxy) -> Iterator[Attacker]:
    """Warm it (:meth:`Attacker.warm`) once peers are up: the proxy's XSUB
    subscribes upstream only for subscribers it has."""
    a = Attacker(proxy)
    yield a
    a.close()


def drain(p: Peer) -> list[PeerEvent]:
    out = []
    while (ev := p.next_event(0)) is not None:
        out.append(ev)
    return out


def incarnation(p: Peer) -> int:
    assert p.protocol is not None
    return p.protocol.incarnation


def test_a_forged_d_for_a_live_peer_is_refuted_within_the_bound(
    proxy: Proxy, peers: list[Peer], attacker: Attacker
) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(4))
    victim, observers = peers[0], peers[1:]
    assert wait_for(lambda: full_mesh(peers), 5.0)
    attacker.warm()
    for p in peers:
        drain(p)
    # A classic D (no incarnation) is stale for a zeromesh member: dropped at the proxy.
    attacker.send(Message(Command.DISCONNECT, victim.uuid, str(victim.endpoint)))
    assert wait_for(lambda: proxy.directory.dropped["stale-incarnation"] >= 1, 2.0)
    # One at the victim's current incarnation does remove it... until it refutes.
    sent = time.time()
    attacker.send(Message(Command.DISCONNECT, victim.uuid, str(victim.endpoint), {"i": incarnation(victim)}))
    assert wait_for(lambda: incarnation(victim) >= 1, REFUTE_BOUND)
    assert wait_for(lambda: full_mesh(peers) and victim.uuid in proxy.directory.entries, REFUTE_BOUND)
    back = time.time() - sent
    assert back <= REFUTE_BOUND, f"back after {back:.2f} s"
    assert all(p.peers()[victim.uuid] == victim.endpoint for p in observers)
    assert proxy.directory.entries[victim.uuid].endpoint == victim.endpoint


def test_a_hijack_of_a_live_peers_uuid_changes_nothing(proxy: Proxy, peers: list[Peer], attacker: Attacker) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(3))
    victim, observers = peers[0], peers[1:]
    assert wait_for(lambda: full_mesh(peers), 5.0)
    attacker.warm()
    for p in peers:
        drain(p)
    # The attacker's own data PUB, which even "proves" it is the victim.
    fake = attacker.ctx.socket(zmq.XPUB)
    fake.setsockopt(zmq.LINGER, 0)
    fake.bind("tcp://127.0.0.1:0")
    fake_ep = fake.getsockopt_string(zmq.LAST_ENDPOINT)
    fake.setsockopt(zmq.XPUB_WELCOME_MSG, ext.encode_proof(victim.uuid, fake_ep, 50))
    try:
        attacker.send(Message(Command.CONNECT, victim.uuid, fake_ep, {"i": 50}))
        # The victim hears a competing claim and refutes it above 50.
        assert wait_for(lambda: incarnation(victim) > 50, REFUTE_BOUND)
        assert wait_for(lambda: proxy.directory.entries[victim.uuid].endpoint == victim.endpoint, REFUTE_BOUND)
        time.sleep(0.5)  # sleep: watch for a late effect; there must be none
        for p in observers:
            assert not [e for e in drain(p) if e.uuid == victim.uuid], "the hijack moved the victim"
            assert p.peers()[victim.uuid] == victim.endpoint
    finally:
        fake.close()


def test_a_claim_on_a_victims_endpoint_then_its_d_changes_nothing(
    proxy: Proxy, peers: list[Peer], attacker: Attacker
) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(3))
    victim, observers = peers[0], peers[1:]
    assert wait_for(lambda: full_mesh(peers), 5.0)
    attacker.warm()
    for p in peers:
        drain(p)
    ghost = "0badc0de-0000-4000-8000-000000000001"
    attacker.send(Message(Command.CONNECT, ghost, str(victim.endpoint)))
    attacker.send(Message(Command.DISCONNECT, ghost, str(victim.endpoint)))
    assert wait_for(lambda: proxy.directory.dropped["endpoint-taken"] >= 1, 2.0)
    deadline = time.monotonic() + WATCH
    while time.monotonic() < deadline:
        for p in observers:
            assert not [e for e in drain(p) if e.uuid in (victim.uuid, ghost)], "the victim was touched"
        time.sleep(0.05)  # sleep: polling interval of a bounded watch
    assert full_mesh(peers)


def test_an_unproven_claim_is_never_listed(proxy: Proxy, peers: list[Peer], attacker: Attacker) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(2))
    assert wait_for(lambda: full_mesh(peers), 5.0)
    attacker.warm()
    for p in peers:
        drain(p)
    # A zeromesh-style C at an endpoint that never answers (or answers as somebody else).
    ghost = "0badc0de-0000-4000-8000-000000000002"
    attacker.send(Message(Command.CONNECT, ghost, "tcp://127.0.0.1:9", {"i": 0, "v": 1}))
    assert wait_for(lambda: ghost in proxy.directory.entries, 2.0)
    assert not wait_for(lambda: any(ghost in p.peers() for p in peers), WATCH, 0.02)
    assert not any(e.uuid == ghost for p in peers for e in drain(p))


def test_c_churners_do_not_flap_their_post_d_c_is_dropped(proxy: Proxy, peers: list[Peer], attacker: Attacker) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(2))
    c = CPeer(proxy.endpoint).start()
    try:
        assert wait_for(lambda: all(c.uuid in p.peers() for p in peers), 8.0)
        attacker.warm()
        assert c.stop(6.0)
        assert wait_for(lambda: not any(c.uuid in p.peers() for p in peers), 3.0)
        # The seed's C peer re-sends C when it hears a newcomer while leaving:
        # that C, arriving after its D, must not bring it back.
        before = proxy.directory.dropped["tombstoned"]
        attacker.pub.send(c_message(b"C", c.uuid, str(c.endpoint)))
        assert wait_for(lambda: proxy.directory.dropped["tombstoned"] > before, 2.0)
        assert not wait_for(lambda: any(c.uuid in p.peers() for p in peers), 0.5, 0.02)
        for p in peers:
            evs = [e for e in drain(p) if e.uuid == c.uuid]
            assert [e.kind for e in evs] == ["join", "leave"], evs  # exactly one departure
    finally:
        c.stop(1.0)


def test_a_crashed_peer_leaves_every_c_peers_table_on_the_obituary(proxy: Proxy) -> None:
    cpeers = [CPeer(proxy.endpoint).start() for _ in range(2)]
    child: Child | None = None
    try:
        child = spawn_zeromesh("peer", "--proxy", proxy.endpoint)
        ready = child.wait(lambda e: e.get("event") == "ready", 10.0)
        assert ready is not None, child.drain()
        uuid = ready["uuid"]
        assert wait_for(lambda: all(uuid in c.table() for c in cpeers), 8.0)
        # Alive as far as the proxy's probe knows (a member that never answered gets the proof timeout).
        assert wait_for(lambda: uuid in proxy.directory.entries and proxy.directory.entries[uuid].probed, 5.0)
        killed = time.monotonic()
        child.kill()
        assert wait_for(lambda: not any(uuid in c.table() for c in cpeers), OBITUARY_BOUND + 2.0)
        took = time.monotonic() - killed
        assert took <= OBITUARY_BOUND, f"C peers dropped it after {took:.2f} s"
        assert proxy.obituaries >= 1
    finally:
        if child is not None:
            child.close()
        for c in cpeers:
            c.leave()
        for c in cpeers:
            c.stop()


# --- CURVE: an insider can speak only for itself ---------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys") / "mesh"
    keygen(root, 3)
    return root


def test_under_curve_an_insiders_forgeries_have_zero_effect(keys: Path, peers: list[Peer]) -> None:
    def member(k: int) -> Security:
        return Security.from_dir(keys / f"member-{k}", keys / "allow")

    with Proxy(security=Security.from_dir(keys / "proxy", keys / "allow")) as proxy:
        peers.extend(Peer(proxy.endpoint, security=member(k)).start() for k in (1, 2))
        victim, observer = peers
        assert wait_for(lambda: full_mesh(peers), 5.0)
        drain(observer)
        insider = Attacker(proxy, member(3))  # an allowed member, with its own key
        try:  # (closed however this ends: no socket may leak)
            insider.warm()
            v, ep = victim.uuid, str(victim.endpoint)
            for msg in (
                Message(Command.DISCONNECT, v, ep, {"i": incarnation(victim)}),
                Message(Command.DISCONNECT, v, ep, {"i": 99, "o": 1}),
                Message(Command.CONNECT, v, "tcp://127.0.0.1:9", {"i": 99}),
            ):
                insider.send(msg)
            assert wait_for(lambda: proxy.directory.dropped["foreign-key"] >= 3, 2.0)
            assert not wait_for(lambda: bool(drain(observer)) or incarnation(victim) > 0, WATCH, 0.02)
            assert victim.uuid in observer.peers()
            # A replayed C of a member that left is refused too.
            assert victim.stop(5.0)
            assert wait_for(lambda: victim.uuid not in observer.peers(), 2.0)
            drain(observer)
            insider.send(Message(Command.CONNECT, v, ep, {"i": 100}))
            assert wait_for(lambda: proxy.directory.dropped["foreign-key"] >= 4, 2.0)
            assert not wait_for(lambda: victim.uuid in observer.peers(), WATCH, 0.02)
        finally:
            insider.close()


def test_proving_peers_are_listed_once_their_pub_proved_them(proxy: Proxy, peers: list[Peer]) -> None:
    layers = (Behaviour(), SocketPolicy(prove_identity=True))
    peers.extend(Peer(proxy.endpoint, layers=layers).start() for _ in range(3))
    assert wait_for(lambda: full_mesh(peers), 5.0)
    assert all(proxy.directory.entries[p.uuid].proves for p in peers)  # their C said so (v)
    for p in peers:  # every other member went pending -> live on its proof, none was trusted on its word
        assert p.protocol is not None and p.protocol.counters.ignored["unclaimed-proof"] == 0
        assert all(k.proves for u, k in p.protocol.peers.items() if u != p.uuid)
    # A peer that does not prove itself (the default) mixes in, trusted as a classic member.
    plain = Peer(proxy.endpoint).start()
    peers.append(plain)
    assert wait_for(lambda: full_mesh(peers), 5.0)
    first = peers[0].protocol
    assert first is not None and not first.peers[plain.uuid].proves
