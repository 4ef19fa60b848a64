"""Liveness at O(N): each peer watches a few members with heartbeated probes.

Data connections carry no ZMTP heartbeats (a full mesh of 100 pinging on every
connection burned 1-2% of a core per peer); a crash still resets every one of
them, and a freeze or a partition is seen by the member's watchers (the next
``watch`` uuids before it on the ring) and by the proxy's probe, whose
obituary tells everyone (docs/liveness.md). The state machine's part is tested
without sockets; the last tests freeze a real peer process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from conftest import wait_for
from test_liveness import START, children, collect, data_up, knows, spawn_peer  # noqa: F401 (children: a fixture)
from test_membership import listed_peer, zd
from test_protocol import C, W, ep, events, uid
from zeromesh import Peer, Proxy, Tuning, timing
from zeromesh.protocol import CUT_OFF_WATCHED, Behaviour, ConnectData, DisconnectData, PeerProtocol, Probe
from zeromesh.testing.netns import Child

pytestmark = pytest.mark.timeout(30)

SETTLE = timing.WATCH_SETTLE


def probes(actions: list[object], on: bool = True) -> list[str]:
    return [a.endpoint for a in actions if isinstance(a, Probe) and a.on is on]


def ring_peer(n: int, behaviour: Behaviour | None = None) -> PeerProtocol:
    """A ready peer (uuid 1) that knows members 2..n, their probes not dialled yet."""
    p = listed_peer(*((uid(i), ep(i)) for i in range(2, n + 1)), behaviour=behaviour)
    assert not [a for a in p.tick(0.5) if isinstance(a, Probe)], "probed before the settle time"
    return p


def test_a_peer_probes_the_next_uuids_on_the_ring_once_settled() -> None:
    p = ring_peer(7)
    out = p.tick(1.0 + SETTLE)
    assert sorted(probes(out)) == [ep(2), ep(3), ep(4)]
    assert p.watched() == {ep(2): False, ep(3): False, ep(4): False}
    assert p.next_deadline() is not None  # the new probes' first-handshake allowance


def test_the_ring_wraps_around() -> None:
    p = PeerProtocol(uid(6), ep(6))
    p.start(0.0)
    p.on_frame(W(), 0.0)
    p.on_frame(C(uid(6), ep(6), {"i": 0}), 0.001)
    for i in (2, 3, 4, 5, 7):
        p.on_frame(C(uid(i), ep(i)), 0.1)
    assert sorted(probes(p.tick(0.1 + 2 * SETTLE))) == [ep(2), ep(3), ep(7)]


def test_every_member_is_watched_by_exactly_k_others() -> None:
    n, k = 12, Behaviour().watch
    watchers: dict[str, int] = {}
    for i in range(1, n + 1):
        p = PeerProtocol(uid(i), ep(i))
        p.start(0.0)
        p.on_frame(W(), 0.0)
        p.on_frame(C(uid(i), ep(i), {"i": 0}), 0.001)
        for j in range(1, n + 1):
            if j != i:
                p.on_frame(C(uid(j), ep(j)), 0.1)
        for e in probes(p.tick(5.0)):
            watchers[e] = watchers.get(e, 0) + 1
    assert watchers == {ep(i): k for i in range(1, n + 1)}


def test_watch_changes_are_applied_at_most_once_per_settle() -> None:
    p = ring_peer(7)
    p.tick(2.0)  # watching 2, 3, 4
    p.on_frame(C("00000000-0000-4000-8000-000000000001a", ep(20)), 2.1)  # between us and 2
    assert not probes(p.tick(2.2)), "re-dialled before the settle time"
    out = p.tick(2.0 + SETTLE)
    assert probes(out) == [ep(20)] and probes(out, on=False) == [ep(4)]


def test_a_probe_that_goes_down_raises_a_suspicion_then_a_declaration() -> None:
    p = ring_peer(4)
    p.tick(2.0)
    p.on_probe_connected(ep(2), 2.1)
    assert p.watched()[ep(2)]
    p.on_probe_disconnected(ep(2), 3.0)  # heartbeats unanswered: a freeze, a partition
    assert not events(p.tick(3.0 + timing.EXPIRE_GRACE - 0.01), "leave")
    assert not events(p.tick(3.0 + timing.EXPIRE_GRACE), "leave")  # suspected: still listed
    assert uid(2) in p.snapshot()
    out = p.tick(3.0 + timing.EXPIRE_GRACE + timing.SUSPECT_TIMEOUT)
    assert [e.uuid for e in events(out, "leave")] == [uid(2)]
    # Declared: no longer probed, and its data connection (no heartbeats: it
    # may be a zombie) is dialled afresh, so that its handshake revives it.
    assert probes(out, on=False) == [ep(2)]
    assert DisconnectData(ep(2)) in out and ConnectData(ep(2)) in out


def test_a_probe_that_comes_back_clears_the_suspicion() -> None:
    p = ring_peer(4)
    p.tick(2.0)
    p.on_probe_connected(ep(2), 2.1)
    p.on_probe_disconnected(ep(2), 3.0)
    p.tick(3.0 + timing.EXPIRE_GRACE)
    p.on_probe_connected(ep(2), 4.5)
    assert not events(p.tick(10.0), "leave") and p.counters.cleared == 1


def test_a_new_probe_has_an_allowance_for_its_first_handshake() -> None:
    p = ring_peer(4)
    p.tick(2.0)  # dialled at 2.0, never up (a slow handshake under load)
    assert p.next_deadline() == pytest.approx(2.0 + timing.PROBE_FIRST_UP + timing.EXPIRE_GRACE)
    p.tick(2.0 + timing.PROBE_FIRST_UP + timing.EXPIRE_GRACE - 0.01)
    assert not p._suspected
    p.tick(2.0 + timing.PROBE_FIRST_UP + timing.EXPIRE_GRACE)
    assert set(p._suspected) == {uid(2), uid(3), uid(4)}


def test_a_starved_observer_does_not_blame_its_probes() -> None:
    p = ring_peer(4)
    p.tick(2.0)
    p.on_probe_connected(ep(2), 2.1)
    p.on_probe_disconnected(ep(2), 3.0)
    p.on_stall(5.0)
    p.tick(3.0 + timing.EXPIRE_GRACE + 1.0)
    assert uid(2) not in p._suspected


def test_an_obituary_is_believed_unless_our_heartbeated_probe_vouches() -> None:
    p = ring_peer(6)
    p.tick(2.0)
    p.on_probe_connected(ep(2), 2.1)
    # Watched, probe up: one overloaded observer's word against ours.
    assert not events(p.on_frame(zd(uid(2), ep(2), 0, o=1), 2.5), "leave")
    assert p.counters.ignored["obituary-alive-here"] == 1
    # Not watched: our data connection has no heartbeats and proves nothing
    # about a freeze, so the proxy's obituary is the verdict.
    assert [e.uuid for e in events(p.on_frame(zd(uid(6), ep(6), 0, o=1), 2.5), "leave")] == [uid(6)]


def test_a_departed_member_is_unprobed_at_once() -> None:
    p = ring_peer(4)
    p.tick(2.0)
    out = p.on_frame(zd(uid(3), ep(3)), 2.5)
    assert probes(out, on=False) == [ep(3)] and ep(3) not in p.watched()


def test_cut_off_from_the_proxy_a_peer_watches_everyone() -> None:
    p = ring_peer(7)
    p.tick(2.0)
    p.on_proxy_health(False, 2.5)
    assert sorted(probes(p.tick(2.0 + SETTLE))) == [ep(5), ep(6), ep(7)]
    p.on_proxy_health(True, 3.5)
    assert sorted(probes(p.tick(3.0 + SETTLE), on=False)) == [ep(5), ep(6), ep(7)]


def test_losing_the_proxy_redials_the_probes_without_allowance() -> None:
    """A probe up through the cut would take another ping cycle to notice it:
    re-dialled, it is down from the proxy's loss until its handshake comes."""
    p = ring_peer(5)
    p.tick(2.0)
    for i in (2, 3, 4):
        p.on_probe_connected(ep(i), 2.1)
    out = p.on_proxy_health(False, 3.0)
    assert sorted(probes(out, on=False)) == sorted(probes(out)) == [ep(2), ep(3), ep(4)]
    assert sorted(probes(p.tick(3.0))) == [ep(5)]  # everyone, now, no first-handshake allowance
    out = p.tick(3.0 + timing.EXPIRE_GRACE)
    assert sorted(e.uuid for e in events(out, "leave")) == [uid(2), uid(3), uid(4), uid(5)]


def test_a_starved_peer_losing_its_proxy_does_not_act_cut_off() -> None:
    """Lifeguard's local health: the proxy link of a peer whose own loop just
    stalled dropped most likely for its own delay; probing everyone then is
    the load that melted a 500-peer mesh down."""
    p = ring_peer(6)
    p.tick(2.0)
    p.on_stall(1.5, now=2.5)
    out = p.on_proxy_health(False, 3.0)
    assert not probes(out) and not probes(p.tick(3.0))
    p.on_proxy_health(True, 4.0)
    out = p.on_proxy_health(False, 2.5 + timing.LOCAL_HEALTH_WINDOW + 1.0)  # the stall is old: a cut
    assert probes(out)


def test_cut_off_a_peer_watches_a_bounded_number() -> None:
    p = ring_peer(CUT_OFF_WATCHED + 10)
    p.tick(2.0)
    p.on_proxy_health(False, 3.0)
    p.tick(3.0)
    assert len(p.watched()) == CUT_OFF_WATCHED


def test_a_short_lived_peer_never_probes() -> None:
    p = ring_peer(4)
    p.leave(0.5)
    assert not probes(p.tick(5.0))


@pytest.mark.parametrize("behaviour", [Behaviour(watch=None), Behaviour(watch=0), Behaviour(expire=False)])
def test_no_probes_when_not_watching(behaviour: Behaviour) -> None:
    p = ring_peer(4, behaviour)
    assert not probes(p.tick(5.0)) and p.watched() == {}


def test_tuning_checks_the_watch_count() -> None:
    with pytest.raises(TypeError, match="watch"):
        Tuning(watch=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="watch"):
        Tuning(watch=-1)


# --- real processes ---------------------------------------------------------------------------


@pytest.fixture
def quiet_proxy() -> Iterator[Proxy]:
    """A proxy whose probe has no heartbeats: it never publishes an obituary
    for a frozen peer, so only the peers' own watchers can tell."""
    with Proxy(heartbeats=False) as p:
        yield p


def test_only_the_watchers_expire_a_frozen_peer(
    quiet_proxy: Proxy,
    peers: list[Peer],
    children: list[Child],  # noqa: F811 (the imported fixture)
) -> None:
    """5 observers and a frozen member: exactly its 3 watchers expire it; the 2
    others' data connections carry no heartbeats and keep it (with heartbeats
    on every data connection, as in 0.2.0, all 5 would)."""
    peers.extend(Peer(quiet_proxy.endpoint).start() for _ in range(5))
    frozen, uuid, _ = spawn_peer(children, quiet_proxy.endpoint)
    everyone = {p.uuid for p in peers} | {uuid}
    assert wait_for(lambda: all(knows(p, everyone - {p.uuid}) and data_up([p]) for p in peers), START)
    assert wait_for(lambda: all(p.stats().watched_up == 3 for p in peers), START), [p.stats() for p in peers]
    watchers = [p for p in peers if uuid in _watched_uuids(p)]
    assert len(watchers) == 3

    stopped_at = time.time()
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        bound = timing.WATCH_HEARTBEAT_IVL + timing.HEARTBEAT_TIMEOUT + timing.EXPIRE_GRACE + timing.SUSPECT_TIMEOUT
        for p in watchers:
            [ev] = collect(p, lambda e: e.kind == "leave" and e.uuid == uuid, 1, bound + 3.0)
            assert ev.reason == "expired" and ev.t - stopped_at <= bound + 1.0
        for p in peers:
            if p not in watchers:
                assert knows(p, {uuid}), "an unwatched link detected a freeze: it heartbeats"
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    # Thawed: its watchers' fresh data connections complete their handshake.
    for p in watchers:
        assert collect(p, lambda e: e.kind == "join" and e.uuid == uuid, 1, 5.0)


def test_a_frozen_peer_leaves_every_table_through_the_obituary(
    proxy: Proxy,
    peers: list[Peer],
    children: list[Child],  # noqa: F811 (the imported fixture)
) -> None:
    """With the default proxy, its probe (heartbeated) tells everyone,
    watchers or not, within the crash bound."""
    peers.extend(Peer(proxy.endpoint).start() for _ in range(5))
    frozen, uuid, _ = spawn_peer(children, proxy.endpoint)
    assert wait_for(lambda: all(knows(p, {uuid}) for p in peers) and data_up(peers), START)
    stopped_at = time.time()
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        for p in peers:
            [ev] = collect(p, lambda e: e.kind == "leave" and e.uuid == uuid, 1, 8.0)
            assert ev.reason == "expired" and ev.t - stopped_at <= 3.5
    finally:
        os.kill(frozen.pid, signal.SIGCONT)


def _watched_uuids(p: Peer) -> set[str]:
    return p.protocol.watched_members() if p.protocol is not None else set()
