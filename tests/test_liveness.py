"""Liveness on loopback: crashed, frozen and never-reachable peers expire, a
restarted proxy heals the mesh, a reused endpoint hands over cleanly, and a
silent C peer is not expired (see docs/liveness.md).

Crashes are real: ``zeromesh peer`` child processes killed with SIGKILL (or
stopped with SIGSTOP), so no ``D`` is ever sent. The observers are in-process
peers, whose events carry the time they were emitted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from conftest import full_mesh, wait_for
from zeromesh import Peer, PeerEvent, Proxy, timing
from zeromesh.testing.cpeer import CPeer, c_message
from zeromesh.testing.netns import Child, spawn_zeromesh
from zeromesh.testing.ports import PortTrap

pytestmark = pytest.mark.timeout(30)

#: The issue's bound on crash detection with default settings.
CRASH_BOUND = 3.0
#: The issue's bound on recovery after a proxy restart (10 peers).
RESTART_BOUND = 2.0
#: Generous deadline for a child process to start and join (loaded 2-core box).
START = 10.0


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Child processes to stop (bounded) and reap at the end of the test."""
    started: list[Child] = []
    yield started
    for c in started:
        c.close()


def spawn_peer(children: list[Child], proxy: str, *extra: str) -> tuple[Child, str, str]:
    """A ``zeromesh peer`` child, once ready: (child, uuid, endpoint)."""
    c = spawn_zeromesh("peer", "--proxy", proxy, *extra)
    children.append(c)
    ready = c.wait(lambda e: e.get("event") == "ready", START)
    assert ready is not None, f"peer child did not get ready: {c.drain()}"
    return c, ready["uuid"], ready["endpoint"]


def spawn_proxy(children: list[Child], bind: str, *extra: str) -> tuple[Child, dict[str, object]]:
    c = spawn_zeromesh("proxy", "--bind", bind, *extra)
    children.append(c)
    ready = c.wait(lambda e: e.get("event") == "ready", START)
    assert ready is not None, f"proxy child did not start: {c.drain()}"
    return c, ready


def collect(peer: Peer, pred: Callable[[PeerEvent], bool], n: int, timeout: float) -> list[PeerEvent]:
    """The next *n* events of *peer* matching *pred* (fewer if *timeout* runs out);
    other events are consumed and dropped."""
    got: list[PeerEvent] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ev = peer.next_event(left)
        if ev is not None and pred(ev):
            got.append(ev)
    return got


def data_up(peers: list[Peer]) -> bool:
    """Every known peer's data connection reported up by the monitor."""
    return all(p.protocol is not None and p.protocol.pending_connections() == 0 for p in peers)


@pytest.fixture
def inject(proxy: Proxy) -> Iterator[Callable[[bytes, Callable[[], bool]], bool]]:
    """Send a raw discovery frame through *proxy*, as a C peer would, until
    *delivered()* says it arrived (a fresh PUB's first frames race the
    subscription); returns False if it never did."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(proxy.xsub_endpoint)

    def send(frame: bytes, delivered: Callable[[], bool]) -> bool:
        def once() -> bool:
            pub.send(frame)
            return delivered()

        return wait_for(once, 3.0, 0.02)

    yield send
    pub.close()
    ctx.term()


def nobody_dials(endpoint: str) -> bool:
    """Listen on *endpoint*'s port for three times libzmq's reconnect backoff
    cap: True if no connection arrives (nobody still dials it). A port that
    someone else took meanwhile cannot tell, and fails the test."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    try:
        trap = PortTrap(host, int(port))
    except OSError as exc:
        pytest.fail(f"cannot watch {endpoint} (taken meanwhile: {exc}); nothing was checked")
    with trap:
        return trap.dialled_within(3 * timing.RECONNECT_IVL_MAX_MS / 1000) == 0


def knows(peer: Peer, uuids: set[str]) -> bool:
    return uuids <= set(peer.peers())


def test_sigkill_of_one_peer_expires_it_everywhere(proxy: Proxy, peers: list[Peer], children: list[Child]) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(3))
    victim, uuid, endpoint = spawn_peer(children, proxy.endpoint)
    assert wait_for(lambda: all(knows(p, {uuid}) for p in peers) and data_up(peers), 5.0)

    killed_at = time.time()
    victim.kill()
    for p in peers:
        [ev] = collect(p, lambda e: e.kind == "leave" and e.uuid == uuid, 1, CRASH_BOUND + 2.0)
        assert ev.reason == "expired"
        assert ev.t - killed_at <= CRASH_BOUND, f"expired after {ev.t - killed_at:.2f} s"
        assert uuid not in p.peers()
    # The proxy's liveness probe drops it from the directory too, and its
    # obituary ends every observer's watch of the endpoint (an expiry is a
    # suspicion: the endpoint is still dialled until then).
    assert wait_for(lambda: uuid not in proxy.directory.entries, CRASH_BOUND)
    protos = [p.protocol for p in peers if p.protocol is not None]
    assert wait_for(lambda: all(endpoint not in q.connected_endpoints() for q in protos), CRASH_BOUND)
    assert all(q.tombstoned(uuid, time.monotonic()) for q in protos)
    # And nobody keeps dialling the dead endpoint (the seed did, ~7 times a second).
    assert nobody_dials(endpoint), "the dead peer's endpoint is still being dialled"


def test_sigkill_of_several_peers_at_once(proxy: Proxy, peers: list[Peer], children: list[Child]) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(3))
    victims = [spawn_peer(children, proxy.endpoint) for _ in range(4)]
    gone = {uuid for _, uuid, _ in victims}
    assert wait_for(lambda: all(knows(p, gone) for p in peers) and data_up(peers), 5.0)

    killed_at = time.time()
    for child, _, _ in victims:
        os.kill(child.pid, signal.SIGKILL)
    for child, _, _ in victims:
        child.kill()  # reap
    for p in peers:
        evs = collect(p, lambda e: e.kind == "leave" and e.uuid in gone, len(gone), CRASH_BOUND + 2.0)
        assert {e.uuid for e in evs} == gone
        assert all(e.reason == "expired" for e in evs)
        worst = max(e.t for e in evs) - killed_at
        assert worst <= CRASH_BOUND, f"last expiry after {worst:.2f} s"
    assert wait_for(lambda: full_mesh(peers), 1.0)


def test_frozen_peer_expires_and_rejoins_when_thawed(proxy: Proxy, peers: list[Peer], children: list[Child]) -> None:
    """SIGSTOP: the process is gone for the mesh, yet its kernel still accepts
    TCP; only the heartbeats (and the ZMTP handshake) tell."""
    peers.extend(Peer(proxy.endpoint).start() for _ in range(2))
    frozen, uuid, _ = spawn_peer(children, proxy.endpoint)
    assert wait_for(lambda: all(knows(p, {uuid}) for p in peers) and data_up(peers), 5.0)

    stopped_at = time.time()
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        bound = timing.HEARTBEAT_IVL + timing.HEARTBEAT_TIMEOUT + timing.EXPIRE_GRACE
        for p in peers:
            [ev] = collect(p, lambda e: e.kind == "leave" and e.uuid == uuid, 1, bound + 3.0)
            assert ev.reason == "expired" and ev.t - stopped_at <= CRASH_BOUND
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # Thawed, it finds its proxy connection dropped, is welcomed again and re-announces.
    for p in peers:
        assert collect(p, lambda e: e.kind == "join" and e.uuid == uuid, 1, 3.0)
    assert wait_for(lambda: all(knows(p, {uuid}) for p in peers) and data_up(peers), 3.0)


@pytest.mark.parametrize("xsub", ["ephemeral", "fixed"])
def test_proxy_restart_on_the_same_address_heals_the_mesh(
    xsub: str,
    children: list[Child],
    peers: list[Peer],  # this order: peers leave before the proxy goes
) -> None:
    # The first proxy takes ephemeral ports; its successor binds what it got.
    # An ephemeral XSUB comes back on a new port (peers must move); a fixed
    # one on the same port (peers' proxy PUB reconnects by itself).
    old, old_info = spawn_proxy(children, "tcp://127.0.0.1:0")
    well_known = str(old_info["endpoint"])
    extra = ("--xsub-bind", str(old_info["xsub"])) if xsub == "fixed" else ()
    peers.extend(Peer(well_known).start() for _ in range(10))
    assert wait_for(lambda: full_mesh(peers) and data_up(peers), 5.0)
    old_xsub = str(old_info["xsub"])

    old.kill()
    _, new_info = spawn_proxy(children, well_known, *extra)
    t_ready = time.monotonic()

    def healed() -> bool:
        return full_mesh(peers) and all(
            p.protocol is not None
            and p.protocol.proxy_uuid == new_info["uuid"]
            and p.protocol.proxy_endpoint == new_info["xsub"]
            and p.protocol.phase.value == "ready"  # our own C came back through the new proxy
            for p in peers
        )

    assert wait_for(healed, RESTART_BOUND + 3.0), "mesh not whole after the proxy restart"
    took = time.monotonic() - t_ready
    assert took <= RESTART_BOUND, f"mesh whole again {took:.2f} s after the new proxy started"
    # No duplicate or stale connection anywhere: one per peer, each counted once.
    everyone = {p.endpoint for p in peers}
    for p in peers:
        assert p.protocol is not None
        assert p.protocol.connected_endpoints() == {ep: 1 for ep in everyone}
    # The new proxy's directory is whole: a newcomer learns all ten from it.
    late = Peer(well_known).start()
    peers.append(late)
    assert wait_for(lambda: full_mesh(peers), RESTART_BOUND)
    # The stale XSUB connection was dropped: nobody dials the dead proxy's XSUB.
    if old_xsub != new_info["xsub"]:
        assert nobody_dials(old_xsub), "a peer still connects to the dead proxy's XSUB"


def test_peer_started_before_its_proxy_joins_when_it_appears(peers: list[Peer]) -> None:
    trap = PortTrap()  # the proxy's address, reserved until it binds
    peers.extend(Peer(trap.endpoint).start() for _ in range(2))
    assert not any(p.wait_ready(0.3) for p in peers)  # bounded: nobody to hear them yet
    with Proxy(trap.release()) as px:
        t0 = time.monotonic()
        assert wait_for(lambda: full_mesh(peers), 3.0)
        # libzmq retries the proxy at most every RECONNECT_IVL_MAX_MS.
        assert time.monotonic() - t0 <= timing.RECONNECT_IVL_MAX_MS / 1000 + 1.0
        assert wait_for(lambda: len(px.directory.entries) == 2, 1.0)
        for p in peers:
            assert p.stop(3.0) and p.exit_reason == "left"


def _publish_until_received(sender: Peer, receivers: list[Peer], timeout: float) -> bool:
    got: set[str] = set()

    def delivered() -> bool:
        sender.publish(b"t", b"hello")
        for r in receivers:
            m = r.recv(0.01)
            if m is not None and m.sender == sender.uuid and m.payload == b"hello":
                got.add(r.uuid)
        return len(got) == len(receivers)

    return wait_for(delivered, timeout)


@pytest.mark.parametrize("delay", [0.0, 0.75], ids=["at-once", "late-in-the-grace"])
def test_new_peer_on_a_killed_peers_endpoint_takes_over(
    delay: float,
    proxy: Proxy,
    peers: list[Peer],
    children: list[Child],
    inject: Callable[[bytes, Callable[[], bool]], bool],
) -> None:
    observers = [Peer(proxy.endpoint).start() for _ in range(2)]
    peers.extend(observers)
    old, old_uuid, endpoint = spawn_peer(children, proxy.endpoint)  # the successor binds what it got
    assert wait_for(lambda: all(knows(p, {old_uuid}) for p in observers) and data_up(observers), 5.0)

    old.kill()
    if delay:
        # The scenario, not a settle: a successor as slow as a process start,
        # arriving when the old connection has been down most of the grace and
        # libzmq's reconnect backoff has grown. It must not expire on the dead
        # peer's account (it did, before the handover restarted the clock).
        time.sleep(delay * timing.EXPIRE_GRACE)  # sleep: the scenario's delay, explained above
    new = Peer(proxy.endpoint, bind=endpoint).start()
    peers.append(new)
    new_uuid = new.uuid
    for p in observers:
        [gone] = collect(p, lambda e: e.kind == "leave" and e.uuid == old_uuid, 1, CRASH_BOUND + 2.0)
        assert gone.reason in ("replaced", "expired")
    assert wait_for(lambda: all(knows(p, {new_uuid}) for p in observers) and data_up(observers), 3.0)
    assert _publish_until_received(new, observers, 3.0), "no data from the successor"
    # A late D for the dead peer must not drop its successor's connection.
    stale = sum(p.protocol.counters.ignored["unknown-disconnect"] for p in observers if p.protocol)
    assert inject(
        c_message(b"D", old_uuid, endpoint),
        lambda: sum(p.protocol.counters.ignored["unknown-disconnect"] for p in observers if p.protocol) >= stale + 2,
    )
    # It stays: not expired later, and its endpoint is connected exactly once.
    deadline = time.monotonic() + timing.EXPIRE_GRACE + 0.5
    for p in observers:
        left = collect(p, lambda e: e.kind == "leave" and e.uuid == new_uuid, 1, deadline - time.monotonic())
        assert left == [], f"successor dropped: {left}"
        assert p.protocol is not None and p.protocol.connected_endpoints()[endpoint] == 1
        assert set(p.peers()) == {o.uuid for o in observers} | {new_uuid}


def test_announced_endpoint_that_never_comes_up_expires(
    proxy: Proxy, peers: list[Peer], inject: Callable[[bytes, Callable[[], bool]], bool]
) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(2))
    assert wait_for(lambda: full_mesh(peers), 3.0)
    trap = PortTrap()  # dead to ZeroMQ (no handshake), reserved and watched for the whole test
    ghost, dead = "0badc0de-0000-4000-8000-000000000000", trap.endpoint
    sent_at = time.time()
    assert inject(c_message(b"C", ghost, dead), lambda: all(knows(p, {ghost}) for p in peers))
    for p in peers:
        [ev] = collect(p, lambda e: e.kind == "leave" and e.uuid == ghost, 1, CRASH_BOUND + 2.0)
        assert ev.reason == "expired" and ev.t - sent_at <= CRASH_BOUND
    assert wait_for(lambda: ghost not in proxy.directory.entries, CRASH_BOUND)
    with trap:
        trap.dialled_within(0)  # count the dials still waiting in the backlog
        assert trap.dials > 0, "the ghost was never dialled: nothing below would be proved"
        assert wait_for(lambda: trap.dialled_within(3 * timing.RECONNECT_IVL_MAX_MS / 1000) == 0, 10.0), (
            "the dead endpoint is still being dialled"
        )


def test_silent_c_peer_is_not_expired(proxy: Proxy, peers: list[Peer]) -> None:
    zm = [Peer(proxy.endpoint).start() for _ in range(2)]
    peers.extend(zm)
    c = CPeer(proxy.endpoint).start()
    try:
        assert c.ready.wait(5.0)
        assert wait_for(lambda: all(knows(p, {c.uuid}) for p in zm) and data_up(zm), 5.0)
        # The C peer re-sends its C for each newcomer it hears: wait until it has
        # heard everyone, after which it has nothing more to say.
        assert wait_for(lambda: {p.uuid for p in zm} <= set(c.table()), 5.0)
        sent = c.sent_c
        # Longer than the worst expiry path (its watchers' probes come up, then
        # heartbeat timeout + grace): a C peer sends nothing on discovery, yet
        # its libzmq answers the pings.
        silence = (
            timing.WATCH_SETTLE + timing.WATCH_HEARTBEAT_IVL + timing.HEARTBEAT_TIMEOUT + timing.EXPIRE_GRACE + 0.5
        )
        deadline = time.monotonic() + silence
        for p in zm:  # events queue up: each peer is watched over the whole silence
            dropped = collect(p, lambda e: e.kind == "leave" and e.uuid == c.uuid, 1, deadline - time.monotonic())
            assert dropped == [], f"silent C peer expired: {dropped}"
        assert c.sent_c == sent, "the C peer was not silent"
        assert all(knows(p, {c.uuid}) for p in zm)
        assert c.uuid in proxy.directory.entries  # the proxy's probe keeps it listed
    finally:
        assert c.stop(5.0)
    for p in zm:
        [ev] = collect(p, lambda e: e.kind == "leave" and e.uuid == c.uuid, 1, 3.0)
        assert ev.reason == "left"
