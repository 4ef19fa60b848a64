"""Membership that heals itself and that a forged frame cannot rewrite (issue 9,
docs/membership.md): the pure directory and peer state machine, driven by hand."""

from __future__ import annotations

from typing import Any

import pytest

from test_protocol import ME, MY_EP, PROXY, C, D, W, ep, events, ready_peer, sends, uid
from zeromesh import ext, timing
from zeromesh.directory import Directory
from zeromesh.protocol import Behaviour, ConnectData, DisconnectData, PeerProtocol, State
from zeromesh.wire import Command, Message

pytestmark = pytest.mark.timeout(60)

K1 = "A" * 40
K2 = "B" * 40


def zc(uuid: str, endpoint: str, inc: int = 0, **more: Any) -> Message:
    """A zeromesh member's C: its incarnation, and "my data PUB proves me"."""
    return C(uuid, endpoint, {"i": inc, "v": 1, **more})


def zd(uuid: str, endpoint: str, inc: int = 0, **more: Any) -> Message:
    return D(uuid, endpoint, {"i": inc, **more})


def listed_peer(*members: tuple[str, str], behaviour: Behaviour | None = None) -> PeerProtocol:
    """A ready peer that has proven zeromesh *members* (connections up)."""
    p = ready_peer(behaviour)
    for u, e in members:
        p.on_frame(zc(u, e), 1.0)
        p.on_data_connected(e, 1.0)
        p.on_proof(u, e, 1.0)
    assert set(p.snapshot()) == {ME} | {u for u, _ in members}
    return p


# --- ext.py: the schema's readers never raise and never accept a wrong type ----------------


@pytest.mark.parametrize("value", [None, -1, True, "3", 3.0, 2**53, [1]])
def test_incarnation_reader_rejects_what_is_not_a_small_natural(value: object) -> None:
    assert ext.incarnation({"i": value}) is None
    assert ext.incarnation({"i": 7}) == 7


def test_directory_reader_keeps_incarnations_and_skips_junk() -> None:
    got = ext.directory({"dir": [[uid(1), ep(1)], [uid(2), ep(2), 4], [uid(3), ep(3), -2], ["x"], 5]})
    assert got == [ext.DirEntry(uid(1), ep(1)), ext.DirEntry(uid(2), ep(2), 4), ext.DirEntry(uid(3), ep(3))]
    assert ext.directory({}) is None


def test_proof_round_trip_and_junk() -> None:
    assert ext.decode_proof(ext.encode_proof(uid(1), ep(1), 3)) == (uid(1), ep(1))
    for junk in (
        b"",
        b"hello",
        ext.PROOF_MAGIC + b"{",
        ext.PROOF_MAGIC + b"[1]",
        ext.PROOF_MAGIC + b"x" * 600,
    ):
        assert ext.decode_proof(junk) is None


def test_tombstones_are_bounded_in_number_and_time() -> None:
    t = ext.Tombstones(limit=3, ttl=10.0)
    for n in range(5):
        t.add(uid(n), 0, 0.0)
    assert len(t) == 3 and not t.blocks(uid(0), 0, 1.0) and t.blocks(uid(4), 0, 1.0)
    assert not t.blocks(uid(4), 0, 10.5)  # past its time
    t.add(uid(9), None, 0.0)  # a C peer's own D: final, whatever a later frame claims
    assert t.blocks(uid(9), None, 1.0) and t.blocks(uid(9), 5, 1.0)
    t.add(uid(8), 2, 0.0, obituary=True)  # declared dead: a classic C or a newer incarnation may return
    assert not t.blocks(uid(8), None, 1.0) and t.blocks(uid(8), 2, 1.0) and not t.blocks(uid(8), 3, 1.0)


# --- the directory (proxy) ---------------------------------------------------------------


def directory_with(*members: tuple[str, str, int | None], now: float = 0.0) -> Directory:
    d = Directory(PROXY)
    for u, e, inc in members:
        assert d.on_frame(C(u, e, {} if inc is None else {"i": inc}), now)
        d.on_up(e)
    return d


def test_directory_d_is_final_and_the_c_after_it_is_dropped_and_counted() -> None:
    d = directory_with((uid(1), ep(1), None), (uid(2), ep(2), 0))
    assert [m.command for m in d.on_frame(D(uid(1), ep(1)), 1.0)] == [Command.DISCONNECT]
    assert d.on_frame(C(uid(1), ep(1)), 1.1) == []  # the seed's C peer re-announcing after its D
    assert d.on_frame(zd(uid(2), ep(2)), 1.0)
    assert d.on_frame(zc(uid(2), ep(2)), 1.1) == []  # a replay of its last C
    assert d.dropped["tombstoned"] == 2 and not d.entries
    # ...but a live member refuting a forged D comes back with a newer incarnation.
    assert d.on_frame(zc(uid(2), ep(2), 1), 1.2) and uid(2) in d.entries


def test_directory_drops_stale_and_misaddressed_disconnects() -> None:
    d = directory_with((uid(1), ep(1), 3))
    assert d.on_frame(zd(uid(1), ep(1), 2), 1.0) == []  # an older incarnation
    assert d.on_frame(D(uid(1), ep(1)), 1.0) == []  # a classic D for a zeromesh member
    assert d.on_frame(zd(uid(1), ep(2), 3), 1.0) == []  # not where it is
    assert d.dropped == {"stale-incarnation": 2, "stale-disconnect": 1}
    assert uid(1) in d.entries


def test_directory_refuses_claims_on_a_live_members_endpoint_or_uuid() -> None:
    d = directory_with((uid(1), ep(1), 0), (uid(2), ep(2), None))
    assert d.on_frame(C(uid(3), ep(1)), 1.0) == []  # C(new uuid, victim's endpoint)
    assert d.on_frame(C(uid(2), ep(3)), 1.0) == []  # a C peer's uuid, attacker's endpoint
    assert d.on_frame(zc(uid(1), ep(3), 0), 1.0) == []  # same incarnation elsewhere
    assert d.dropped == {"endpoint-taken": 1, "competing-claim": 2}
    assert {u: e.endpoint for u, e in d.entries.items()} == {uid(1): ep(1), uid(2): ep(2)}


def test_a_successor_on_a_dead_members_endpoint_gets_it_and_the_old_one_an_obituary() -> None:
    d = directory_with((uid(1), ep(1), None))
    d.on_down(ep(1), 1.0)  # the probe saw it die (a reset: at once)
    out = d.on_frame(C(uid(2), ep(1)), 1.01)
    assert [(m.command, m.uuid, m.ext.get("o")) for m in out] == [
        (Command.DISCONNECT, uid(1), 1),  # first, so C peers free the endpoint
        (Command.CONNECT, uid(2), None),
    ]
    assert list(d.entries) == [uid(2)]


def test_expiry_publishes_classic_obituaries() -> None:
    d = directory_with((uid(1), ep(1), None), (uid(2), ep(2), 4))
    d.on_down(ep(1), 1.0)
    d.on_down(ep(2), 1.0)
    assert d.next_deadline() == pytest.approx(1.0 + timing.EXPIRE_GRACE)
    out = d.expire_due(1.0 + timing.EXPIRE_GRACE)
    assert {(m.command, m.uuid, m.endpoint) for m in out} == {
        (Command.DISCONNECT, uid(1), ep(1)),
        (Command.DISCONNECT, uid(2), ep(2)),
    }
    assert all(m.ext["o"] == 1 for m in out) and next(m for m in out if m.uuid == uid(2)).ext["i"] == 4
    assert not d.entries and d.expired == 2
    # An obituary is not the member's word: a C peer (no incarnation) may come back.
    assert d.on_frame(C(uid(1), ep(1)), 3.0)


def test_a_zeromesh_member_that_never_answered_gets_the_proof_timeout() -> None:
    d = Directory(PROXY)
    d.on_frame(zc(uid(1), ep(1)), 0.0)  # under load its first handshake may take seconds
    d.on_frame(C(uid(2), ep(2)), 0.0)  # a classic one: the expiry grace, as before
    assert d.expire_due(timing.EXPIRE_GRACE)[0].uuid == uid(2)
    assert uid(1) in d.entries
    assert [m.uuid for m in d.expire_due(timing.PROOF_TIMEOUT)] == [uid(1)]


def test_eviction_at_the_cap_prefers_unverified_entries() -> None:
    d = Directory(PROXY, max_entries=3)
    for n in (1, 2):
        d.on_frame(zc(uid(n), ep(n)), 0.0)
        d.on_up(ep(n))
    d.on_frame(zc(uid(3), ep(3)), 0.0)  # a flood of unverified claims...
    d.on_frame(zc(uid(4), ep(4)), 0.0)
    assert list(d.entries) == [uid(1), uid(2), uid(4)]  # ...evicts among themselves


def test_proxy_only_fields_are_stripped_and_the_sender_key_stamped() -> None:
    d = Directory(PROXY)
    (out,) = d.on_frame(zc(uid(1), ep(1), o=1, b=K2), 0.0, key=K1)
    assert out.ext["b"] == K1 and "o" not in out.ext
    (out,) = Directory(PROXY).on_frame(zc(uid(1), ep(1), b=K2), 0.0)
    assert "b" not in out.ext  # not secured: no key at all


def test_under_curve_a_uuid_belongs_to_the_key_that_first_spoke_for_it() -> None:
    d = Directory(PROXY)
    assert d.on_frame(zc(uid(1), ep(1)), 0.0, key=K1)
    d.on_up(ep(1))
    assert d.on_frame(zd(uid(1), ep(1), 9), 1.0, key=K2) == []  # an insider's forged D
    assert d.on_frame(zc(uid(1), ep(2), 9), 1.0, key=K2) == []  # ...or hijack
    assert d.dropped["foreign-key"] == 2 and d.entries[uid(1)].endpoint == ep(1)
    assert d.on_frame(zd(uid(1), ep(1)), 2.0, key=K1)  # its owner leaves
    assert d.on_frame(zc(uid(1), ep(1), 5), 3.0, key=K2) == []  # a replay from another key: still refused


def test_welcome_lists_incarnations() -> None:
    d = directory_with((uid(1), ep(1), None), (uid(2), ep(2), 3))
    assert d.welcome_ext()["dir"] == [[uid(1), ep(1)], [uid(2), ep(2), 3]]


# --- the peer: incarnations and refutation ------------------------------------------------


def test_a_competing_c_for_our_uuid_is_refuted_at_once_and_rate_limited() -> None:
    p = ready_peer()
    out = p.on_frame(zc(ME, ep(9), 5), 1.0)  # a hijack at a higher incarnation
    assert sends(out, Command.CONNECT) == [C(ME, MY_EP, {"i": 6})]
    assert p.on_frame(zc(ME, ep(9), 6), 1.01) == []  # a flood is answered once per interval...
    deadline = p.next_deadline()
    assert deadline is not None and deadline == pytest.approx(1.0 + timing.REFUTE_INTERVAL)
    assert sends(p.tick(deadline), Command.CONNECT) == [C(ME, MY_EP, {"i": 7})]  # ...with the latest incarnation
    assert p.counters.refuted == 2 and p.ready


def test_a_replayed_c_at_a_higher_incarnation_than_ours_is_outbid() -> None:
    p = ready_peer()
    assert sends(p.on_frame(zc(ME, MY_EP, 4), 1.0), Command.CONNECT) == [C(ME, MY_EP, {"i": 5})]
    assert sends(p.leave(2.0), Command.DISCONNECT) == [zd(ME, MY_EP, 5)]  # our D is not stale anywhere


def test_a_leaving_peer_does_not_refute_its_own_d() -> None:
    p = ready_peer()
    p.leave(1.0)
    assert not sends(p.on_frame(zd(ME, MY_EP, 0), 1.01), Command.CONNECT)


def test_a_rewelcome_raises_the_incarnation() -> None:
    # Away from the proxy, we may have been declared dead (an obituary we never heard).
    p = ready_peer()
    assert sends(p.on_frame(W(), 5.0), Command.CONNECT)[0].ext["i"] == 1


def test_stale_and_classic_frames_cannot_touch_a_zeromesh_member() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_frame(zc(uid(2), ep(2), 3), 2.0)  # it refuted something: incarnation 3
    assert p.on_frame(zd(uid(2), ep(2), 2), 2.1) == []
    assert p.on_frame(D(uid(2), ep(2)), 2.1) == []  # a classic D carries no incarnation
    assert p.on_frame(C(uid(2), ep(3)), 2.1) == []
    assert p.counters.ignored["stale-incarnation"] == 3 and uid(2) in p.snapshot()


def test_a_live_member_does_not_move_whatever_the_incarnation() -> None:
    p = listed_peer((uid(2), ep(2)))
    out = p.on_frame(zc(uid(2), ep(9), 99), 2.0)  # a hijack: the attacker's PUB
    assert not events(out, "leave") and not any(isinstance(a, ConnectData) for a in out)
    assert p.snapshot()[uid(2)] == ep(2) and p.counters.ignored["competing-claim"] == 1


# --- the peer: D is final ------------------------------------------------------------------


def test_d_is_final_for_the_peer_too() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)  # a C peer
    p.on_frame(D(uid(2), ep(2)), 2.0)
    assert p.on_frame(C(uid(2), ep(2)), 2.1) == []  # its post-D re-announce (seen through a C proxy)
    assert p.counters.ignored["tombstoned"] == 1 and p.counters.joins == 1 and p.counters.leaves == 1
    p2 = listed_peer((uid(3), ep(3)))
    p2.on_frame(zd(uid(3), ep(3), 0), 2.0)
    assert p2.on_frame(zc(uid(3), ep(3), 0), 2.1) == []
    assert p2.on_frame(W({"p": PROXY, "s": 1, "dir": [[uid(3), ep(3), 0]]}), 2.2)  # nor from a directory
    assert uid(3) not in p2.entries()
    # A refutation (newer incarnation) is not blocked.
    assert any(isinstance(a, ConnectData) for a in p2.on_frame(zc(uid(3), ep(3), 1), 2.3))


def test_classic_behaviour_keeps_the_seeds_flaps() -> None:
    p = ready_peer(Behaviour.classic())
    p.on_frame(C(uid(2), ep(2)), 1.0)
    p.on_frame(D(uid(2), ep(2)), 2.0)
    assert events(p.on_frame(C(uid(2), ep(2)), 2.1), "join")


# --- the peer: proof of identity ---------------------------------------------------------------


def test_a_zeromesh_member_is_listed_only_once_its_pub_proves_it() -> None:
    p = ready_peer()
    out = p.on_frame(zc(uid(2), ep(2)), 1.0)
    assert ConnectData(ep(2)) in out and not events(out, "join")
    assert p.entries()[uid(2)] == (ep(2), State.PENDING) and uid(2) not in p.snapshot()
    assert p.pending_connections() == 1
    assert p.on_proof(uid(2), ep(9), 1.1) == []  # a proof for another endpoint proves nothing
    assert [e.uuid for e in events(p.on_proof(uid(2), ep(2), 1.1), "join")] == [uid(2)]
    assert p.snapshot()[uid(2)] == ep(2) and p.pending_connections() == 0


def test_a_claim_that_never_proves_itself_goes_silently() -> None:
    p = ready_peer()
    p.on_frame(zc(uid(2), ep(2)), 1.0)
    out = p.tick(1.0 + timing.PROOF_TIMEOUT)
    assert out == [DisconnectData(ep(2))] and p.counters.unproven == 1 and not p.entries().get(uid(2))


def test_a_claim_on_a_live_members_endpoint_is_never_listed_and_never_evicts_it() -> None:
    p = listed_peer((uid(2), ep(2)))
    out = p.on_frame(C(uid(3), ep(2)), 2.0)  # C(new uuid, victim's endpoint), classic
    out += p.on_frame(zc(uid(4), ep(2)), 2.0)  # ...and zeromesh-style
    out += p.on_proof(uid(2), ep(2), 2.1)  # the PUB there says who it is
    out += p.on_frame(D(uid(3), ep(2)), 2.2)  # the second half of the attack
    assert not events(out, "leave") and not events(out, "join")
    assert p.snapshot()[uid(2)] == ep(2) and p.connected_endpoints()[ep(2)] == 2  # uid(4) still pending
    p.tick(2.0 + timing.PROOF_TIMEOUT)
    assert p.connected_endpoints()[ep(2)] == 1 and set(p.entries()) == {ME, uid(2)}


def test_a_successors_proof_replaces_a_dead_member_on_its_endpoint() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)  # killed
    out = p.on_frame(zc(uid(3), ep(2)), 2.1)  # a new process on the reused port
    assert out[:2] == [DisconnectData(ep(2)), ConnectData(ep(2))]  # dialled afresh
    out = p.on_proof(uid(3), ep(2), 2.2)
    assert [(e.uuid, e.reason) for e in events(out, "leave")] == [(uid(2), "replaced")]
    assert [e.uuid for e in events(out, "join")] == [uid(3)] and p.connected_endpoints()[ep(2)] == 1


# --- the peer: suspicion, revival, obituaries ---------------------------------------------------

#: From the data connection going down to the expiry being declared (no obituary, proxy up).
DECLARED = timing.EXPIRE_GRACE + timing.SUSPECT_TIMEOUT


def expire(p: PeerProtocol, down_at: float) -> list[Any]:
    """Tick through the grace (suspected) and the suspicion timeout (declared)."""
    p.tick(down_at + timing.EXPIRE_GRACE)
    return p.tick(down_at + DECLARED)


def test_a_suspicion_is_silent_and_cleared_by_the_connection_coming_back() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)
    assert not events(p.tick(2.0 + timing.EXPIRE_GRACE), "leave")  # suspected: still listed
    assert uid(2) in p.snapshot() and p.pending_connections() == 1
    p.on_data_connected(ep(2), 3.5)  # a load-induced heartbeat timeout: it reconnected
    assert p.on_proof(uid(2), ep(2), 3.5) == []
    assert not events(p.tick(2.0 + DECLARED), "leave") and p.counters.cleared == 1
    assert p.counters.leaves == 0 and uid(2) in p.snapshot()


def test_an_obituary_confirms_a_suspicion_at_once() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)
    p.tick(2.0 + timing.EXPIRE_GRACE)
    out = p.on_frame(zd(uid(2), ep(2), 0, o=1), 2.0 + timing.EXPIRE_GRACE + 0.01)  # the proxy lost it too
    assert [(e.uuid, e.reason) for e in events(out, "leave")] == [(uid(2), "expired")]


def test_cut_off_from_the_proxy_a_peer_declares_at_the_grace() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)
    p.tick(2.0 + timing.EXPIRE_GRACE)
    out = p.on_proxy_health(False, 2.0 + timing.EXPIRE_GRACE + 0.1)  # nobody left to confirm with
    assert [e.uuid for e in events(out, "leave")] == [uid(2)]
    q = listed_peer((uid(3), ep(3)))
    q.on_proxy_health(False, 1.5)
    q.on_data_disconnected(ep(3), 2.0)
    assert events(q.tick(2.0 + timing.EXPIRE_GRACE), "leave")


def test_an_expired_member_that_proves_itself_again_is_revived() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)
    assert events(expire(p, 2.0), "leave")
    assert p.entries()[uid(2)] == (ep(2), State.SUSPECT) and p.connected_endpoints()[ep(2)] == 1
    p.on_data_connected(ep(2), 5.0)  # a partial partition healed: the handshake, then its welcome
    out = p.on_proof(uid(2), ep(2), 5.0)
    assert [e.uuid for e in events(out, "join")] == [uid(2)] and p.counters.revived == 1


def test_a_classic_suspect_is_revived_by_its_handshake() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)
    expire(p, 1.0)  # never connected: a false expiry under load
    assert uid(2) not in p.snapshot()
    assert events(p.on_data_connected(ep(2), 4.0), "join")


def test_an_obituary_ends_the_watch_and_a_suspects_leave_is_not_repeated() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)
    expire(p, 2.0)
    out = p.on_frame(zd(uid(2), ep(2), 0, o=1), 2.0 + DECLARED + 0.1)
    assert out == [DisconnectData(ep(2))]  # the leave was told at the expiry
    assert p.tombstoned(uid(2), 2.0 + DECLARED + 0.1) and ep(2) not in p.connected_endpoints()


def test_an_obituary_for_a_listed_member_reads_as_expired() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 1.5)  # we lost it too
    out = p.on_frame(zd(uid(2), ep(2), 0, o=1), 2.0)
    assert [(e.uuid, e.reason) for e in events(out, "leave")] == [(uid(2), "expired")]


def test_an_obituary_for_a_member_alive_here_is_a_suspicion_only() -> None:
    # An overloaded proxy's probe lost it, our heartbeated connection to it is
    # up: it stays (it refutes the obituary anyway), and no reconnection is
    # spent on it. watch=None: every data connection heartbeats.
    p = listed_peer((uid(2), ep(2)), behaviour=Behaviour(watch=None))
    assert p.on_frame(zd(uid(2), ep(2), 0, o=1), 2.0) == []
    assert uid(2) in p.snapshot() and p.counters.ignored["obituary-alive-here"] == 1
    assert not p.tombstoned(uid(2), 2.0)
    p.on_frame(zc(uid(2), ep(2), 1), 2.1)  # its refutation: just a newer incarnation
    assert p.entries()[uid(2)] == (ep(2), State.LIVE)


def test_a_starved_observer_does_not_expire_live_peers() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)
    p.on_stall(3.0)  # our loop did not run for 3 s: nobody can be blamed for that time
    assert not events(expire(p, 2.0), "leave")
    assert events(expire(p, 5.0), "leave")


# --- the peer: CURVE bindings stamped by the proxy -----------------------------------------------


def test_the_peer_keeps_the_first_key_stamped_for_a_uuid() -> None:
    p = ready_peer()
    p.on_frame(zc(uid(2), ep(2), b=K1), 1.0)
    p.on_proof(uid(2), ep(2), 1.0)
    assert p.on_frame(zd(uid(2), ep(2), 5, b=K2), 2.0) == []
    assert p.on_frame(zc(uid(2), ep(3), 5, b=K2), 2.0) == []
    assert p.counters.ignored["foreign-key"] == 2 and uid(2) in p.snapshot()


def test_the_owner_coming_home_at_a_newer_incarnation_undoes_a_hijack() -> None:
    p = listed_peer((uid(2), ep(2)))
    p.on_data_disconnected(ep(2), 2.0)  # a blip: its connection is down right now
    p.on_frame(zc(uid(2), ep(9), 5), 2.1)  # ...when a hijack arrives, which is followed
    p.on_data_connected(ep(9), 2.2)
    p.on_proof(uid(2), ep(9), 2.2)  # the attacker's PUB even "proves" it
    assert p.snapshot()[uid(2)] == ep(9)
    # The owner refutes from where it was first listed: that wins, though the attacker's endpoint is up.
    p.on_frame(zc(uid(2), ep(2), 6), 2.3)
    p.on_data_connected(ep(2), 2.4)
    p.on_proof(uid(2), ep(2), 2.4)
    assert p.snapshot()[uid(2)] == ep(2)
    # And the attacker cannot take it back while it is up there.
    p.on_frame(zc(uid(2), ep(9), 99), 2.5)
    assert p.snapshot()[uid(2)] == ep(2)


def test_a_starved_proxy_does_not_publish_obituaries_for_the_time_it_was_not_looking() -> None:
    d = directory_with((uid(1), ep(1), None))
    d.on_down(ep(1), 1.0)
    d.on_stall(2.0)
    assert d.expire_due(1.0 + timing.EXPIRE_GRACE) == []
    assert [m.uuid for m in d.expire_due(3.0 + timing.EXPIRE_GRACE)] == [uid(1)]
