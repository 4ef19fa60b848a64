"""The pure protocol state machine, driven by hand: no sockets, no clock."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zeromesh import timing
from zeromesh.protocol import (
    Action,
    Behaviour,
    ConnectData,
    ConnectProxy,
    DisconnectData,
    DisconnectProxy,
    Exit,
    Notify,
    PeerProtocol,
    Phase,
    Send,
)
from zeromesh.wire import Command, Message

pytestmark = pytest.mark.timeout(60)

ME = "00000000-0000-4000-8000-000000000001"
MY_EP = "tcp://127.0.0.1:40000"
PROXY = "00000000-0000-4000-8000-0000000000ff"
XSUB = "tcp://127.0.0.1:39999"


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def ep(n: int) -> str:
    return f"tcp://127.0.0.1:{41000 + n}"


def W(ext: dict[str, Any] | None = None, uuid: str = PROXY, endpoint: str = XSUB) -> Message:
    return Message(Command.WELCOME, uuid, endpoint, ext or {})


def C(uuid: str, endpoint: str, ext: dict[str, Any] | None = None) -> Message:
    return Message(Command.CONNECT, uuid, endpoint, ext or {})


def D(uuid: str, endpoint: str, ext: dict[str, Any] | None = None) -> Message:
    return Message(Command.DISCONNECT, uuid, endpoint, ext or {})


#: Our own C as a zeromesh peer sends it (incarnation 0).
MY_C = C(ME, MY_EP, {"i": 0})


def sends(actions: list[Action], command: Command) -> list[Message]:
    return [a.msg for a in actions if isinstance(a, Send) and a.msg.command is command]


def events(actions: list[Action], kind: str) -> list[Any]:
    return [a.event for a in actions if isinstance(a, Notify) and a.event.kind == kind]


def ready_peer(behaviour: Behaviour | None = None, stamp: int | None = None) -> PeerProtocol:
    """A peer that got the welcome and heard its own C (stamped *stamp* by a directory proxy)."""
    p = PeerProtocol(ME, MY_EP, behaviour)
    p.start(0.0)
    p.on_frame(W(), 0.0)
    p.on_frame(C(ME, MY_EP, {"p": PROXY, "s": stamp} if stamp is not None else None), 0.001)
    assert p.ready and p.phase is Phase.READY
    return p


# --- joining ------------------------------------------------------------------------------


def test_welcome_connects_the_proxy_pub_and_announces() -> None:
    p = PeerProtocol(ME, MY_EP)
    assert p.start(0.0) == []
    out = p.on_frame(W(), 0.0)
    assert out[0] == ConnectProxy(XSUB)
    assert sends(out, Command.CONNECT) == [MY_C]
    assert p.phase is Phase.ANNOUNCING and not p.ready


def test_a_second_welcome_from_the_same_proxy_does_not_reconnect() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.on_frame(W(), 0.0)
    assert not any(isinstance(a, ConnectProxy) for a in p.on_frame(W(), 0.1))


def test_a_welcome_with_a_new_xsub_moves_the_proxy_pub() -> None:
    p = ready_peer()
    out = p.on_frame(W(uuid=uid(900), endpoint="tcp://127.0.0.1:38888"), 1.0)
    assert out[:2] == [DisconnectProxy(XSUB), ConnectProxy("tcp://127.0.0.1:38888")]
    assert sends(out, Command.CONNECT)  # a restarted proxy must learn about us again


def test_own_c_makes_the_peer_ready_and_connects_its_own_pub() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.on_frame(W(), 0.0)
    out = p.on_frame(C(ME, MY_EP), 0.003)
    assert ConnectData(MY_EP) in out
    assert [e.uuid for e in events(out, "ready")] == [ME]
    assert p.ready and p.phase is Phase.READY and p.snapshot() == {ME: MY_EP}
    assert p.next_deadline() is None  # no more retries
    assert sends(p.tick(5.0), Command.CONNECT) == []


def test_own_uuid_with_another_endpoint_is_ignored() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.on_frame(W(), 0.0)
    out = p.on_frame(C(ME, ep(1)), 0.01)
    assert not p.ready and p.counters.ignored["own-uuid-other-endpoint"] == 1
    # Somebody claims our uuid elsewhere: we re-assert ourselves (refutation).
    assert sends(out, Command.CONNECT) == [C(ME, MY_EP, {"i": 1})]


def test_unknown_c_joins_connects_and_reannounces_without_a_stamp() -> None:
    p = ready_peer()
    out = p.on_frame(C(uid(2), ep(2)), 1.0)
    assert ConnectData(ep(2)) in out
    assert [(e.uuid, e.endpoint) for e in events(out, "join")] == [(uid(2), ep(2))]
    assert sends(out, Command.CONNECT) == [MY_C]  # classic newcomer: tell it about us
    assert p.snapshot() == {ME: MY_EP, uid(2): ep(2)}


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [
        (5, {"p": PROXY, "s": 5}, False),  # their directory already lists us
        (5, {"p": PROXY, "s": 9}, False),
        (5, {"p": PROXY, "s": 3}, False),
        (5, {"p": PROXY, "s": 4}, False),  # we joined after their welcome: they heard our C
        (5, {"p": uid(77), "s": 99}, True),  # another proxy's directory says nothing about us
        (5, None, True),  # a classic newcomer
        (5, {"p": PROXY, "s": "5"}, True),  # a malformed stamp counts as none
        (None, {"p": PROXY, "s": 99}, True),  # we never had a stamp (C proxy)
        (5, {"p": PROXY, "s": 10}, True),  # a k at or past its own entry: forged, not believed
        (5, {"p": PROXY, "s": 99}, True),
    ],
)
def test_default_reannounces_only_when_the_newcomers_directory_lacks_us(
    mine: int | None, theirs: dict[str, Any] | None, expected: bool
) -> None:
    p = ready_peer(stamp=mine)
    # The proxy stamped the newcomer's own C as entry 10 (after its welcome, which listed up to k).
    stamped = {"k": theirs, "p": PROXY, "s": 10} if theirs is not None else None
    out = p.on_frame(C(uid(2), ep(2), stamped), 1.0)
    assert bool(sends(out, Command.CONNECT)) is expected
    assert p.counters.reannounced == int(expected)


def test_a_reannounce_does_not_arm_the_retry_timer() -> None:
    # Regression: a one-off re-announce in READY used to leave a retry deadline
    # that nothing cleared, and the peer's loop spun at 100% CPU on it.
    # watch=0: the watch set's own deadline is another test's (test_watch_*).
    for b in (Behaviour(watch=0), Behaviour.classic()):
        p = ready_peer(b)
        assert sends(p.on_frame(C(uid(2), ep(2)), 1.0), Command.CONNECT)
        deadline = p.next_deadline()
        assert deadline is None or deadline > 1.0 + b.expire_grace - 1e-9


def test_classic_always_reannounces() -> None:
    p = ready_peer(Behaviour.classic(), stamp=5)
    out = p.on_frame(C(uid(2), ep(2), {"k": {"p": PROXY, "s": 99}}), 1.0)
    assert sends(out, Command.CONNECT) == [C(ME, MY_EP)]


def test_duplicate_c_changes_nothing() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)
    before = p.snapshot()
    assert p.on_frame(C(uid(2), ep(2)), 1.1) == []
    assert p.snapshot() == before and p.connected_endpoints()[ep(2)] == 1


def test_known_uuid_at_a_new_endpoint_is_followed() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)
    out = p.on_frame(C(uid(2), ep(3)), 1.1)
    assert DisconnectData(ep(2)) in out and ConnectData(ep(3)) in out
    assert [e.kind for e in (a.event for a in out if isinstance(a, Notify))] == ["leave", "join"]
    assert p.snapshot()[uid(2)] == ep(3) and ep(2) not in p.connected_endpoints()


def test_new_uuid_on_a_known_endpoint_replaces_the_old_peer_keeping_the_connection() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)
    p.on_data_connected(ep(2), 1.5)  # the connection is up: the successor inherits it
    # A claim on an endpoint a live peer holds is not believed yet (a forged C
    # there used to evict the victim) ...
    out = p.on_frame(C(uid(3), ep(2)), 2.0)
    assert not any(isinstance(a, (Notify, ConnectData, DisconnectData)) for a in out)
    assert p.snapshot() == {ME: MY_EP, uid(2): ep(2)}
    # ... until the holder's connection drops and a new one is made there (a
    # new process on the reused port: the seed's trust goes to the claim).
    p.on_data_disconnected(ep(2), 2.1)
    out = p.on_data_connected(ep(2), 2.2)
    assert not any(isinstance(a, (ConnectData, DisconnectData)) for a in out)
    left = events(out, "leave")
    assert [(e.uuid, e.reason) for e in left] == [(uid(2), "replaced")]
    assert [e.uuid for e in events(out, "join")] == [uid(3)]
    assert p.connected_endpoints() == {MY_EP: 1, ep(2): 1}
    assert p.snapshot() == {ME: MY_EP, uid(3): ep(2)}
    assert p.counters.replaced == 1
    # ...and the successor's D does drop the connection.
    assert DisconnectData(ep(2)) in p.on_frame(D(uid(3), ep(2)), 3.0)


def test_a_successor_on_a_dead_connection_is_dialled_afresh() -> None:
    p = ready_peer(Behaviour(watch=0))  # only the data connection's deadlines
    p.on_frame(C(uid(2), ep(2)), 1.0)
    p.on_data_connected(ep(2), 1.1)
    p.on_data_disconnected(ep(2), 1.5)  # the predecessor died
    out = p.on_frame(C(uid(3), ep(2)), 2.0)
    conn = [a for a in out if isinstance(a, (ConnectData, DisconnectData))]
    assert conn == [DisconnectData(ep(2)), ConnectData(ep(2))]
    assert p.connected_endpoints()[ep(2)] == 1
    # ...with a grace of its own, not the dead predecessor's.
    assert p.next_deadline() == pytest.approx(2.0 + Behaviour().expire_grace)


def test_another_uuid_claiming_our_own_endpoint_cannot_evict_us() -> None:
    p = ready_peer()
    out = p.on_frame(C(uid(2), MY_EP), 1.0)
    assert out == []
    assert p.ready and p.snapshot() == {ME: MY_EP}
    assert p.counters.ignored["other-uuid-own-endpoint"] == 1


def test_directory_in_the_welcome_is_imported() -> None:
    p = PeerProtocol(ME, MY_EP)
    ext = {"p": PROXY, "s": 12, "dir": [[uid(2), ep(2)], [uid(3), ep(3)], [ME, MY_EP], ["x"], [1, 2], "junk"]}
    out = p.on_frame(W(ext), 0.0)
    assert [a for a in out if isinstance(a, ConnectData)] == [ConnectData(ep(2)), ConnectData(ep(3))]
    assert {e.uuid for e in events(out, "join")} == {uid(2), uid(3)}
    assert ME not in p.snapshot()  # we are listed (an old entry) but not ready until we hear our own C
    # Our C tells the others which directory we have: they need not re-announce.
    assert sends(out, Command.CONNECT)[0].ext == {"i": 0, "k": {"p": PROXY, "s": 12}}


def test_directory_is_ignored_by_classic_behaviour() -> None:
    p = PeerProtocol(ME, MY_EP, Behaviour.classic())
    out = p.on_frame(W({"p": PROXY, "s": 1, "dir": [[uid(2), ep(2)]]}), 0.0)
    assert not any(isinstance(a, ConnectData) for a in out)
    assert all(m.ext == {} for m in sends(out, Command.CONNECT))


# --- leaving -------------------------------------------------------------------------------


def test_d_from_a_known_peer_leaves_and_disconnects() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)
    out = p.on_frame(D(uid(2), ep(2)), 2.0)
    assert DisconnectData(ep(2)) in out
    assert [(e.uuid, e.reason) for e in events(out, "leave")] == [(uid(2), "left")]
    assert uid(2) not in p.snapshot() and p.counters.leaves == 1


def test_d_for_an_unknown_uuid_or_a_stale_endpoint_is_ignored_and_counted() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)
    assert p.on_frame(D(uid(9), ep(9)), 2.0) == []
    assert p.on_frame(D(uid(2), ep(3)), 2.0) == []
    assert p.counters.ignored == Counter({"unknown-disconnect": 1, "stale-disconnect": 1})
    assert uid(2) in p.snapshot()


def test_own_d_while_not_leaving_is_refuted() -> None:
    p = ready_peer()
    out = p.on_frame(D(ME, MY_EP), 1.0)
    assert sends(out, Command.CONNECT) == [C(ME, MY_EP, {"i": 1})]  # back, as a new incarnation
    assert p.ready and p.counters.ignored["own-disconnect-not-leaving"] == 1
    assert p.counters.refuted == 1 and p.incarnation == 1
    # An obituary (or a forged D) at a higher incarnation is outbid.
    assert sends(p.on_frame(D(ME, MY_EP, {"i": 7, "o": 1}), 1.5), Command.CONNECT) == [C(ME, MY_EP, {"i": 8})]
    classic = ready_peer(Behaviour.classic())
    assert classic.on_frame(D(ME, MY_EP), 1.0) == []  # the seed ignores it


def test_leave_sends_d_and_own_d_ends_the_loop() -> None:
    p = ready_peer()
    out = p.leave(5.0)
    assert sends(out, Command.DISCONNECT) == [D(ME, MY_EP, {"i": 0})]
    assert p.leave(5.1) == []  # idempotent
    out = p.on_frame(D(ME, MY_EP), 5.01)
    assert DisconnectData(MY_EP, own=True) in out
    assert out[-1] == Exit("left") and p.phase is Phase.DONE
    assert events(out, "leave") == []  # we do not tell ourselves we left


def test_a_leaving_peer_never_reannounces_by_default() -> None:
    p = ready_peer()
    p.leave(5.0)
    out = p.on_frame(C(uid(2), ep(2)), 5.01)
    assert sends(out, Command.CONNECT) == []
    for t in (5.02, 5.1, 6.0):
        assert sends(p.tick(t), Command.CONNECT) == []
    out = p.on_frame(W(), 6.0)  # even a welcome (proxy restart) does not bring us back
    assert sends(out, Command.CONNECT) == [] and sends(out, Command.DISCONNECT)


def test_a_leaving_classic_peer_reannounces_as_the_seed_does() -> None:
    p = ready_peer(Behaviour.classic())
    p.leave(5.0)
    assert sends(p.on_frame(C(uid(2), ep(2)), 5.01), Command.CONNECT) == [C(ME, MY_EP)]


def test_leave_times_out_when_our_d_never_comes_back() -> None:
    b = Behaviour()
    p = ready_peer(b)
    p.leave(10.0)
    deadline = p.next_deadline()
    assert deadline is not None and deadline <= 10.0 + b.retry_first
    out = p.tick(10.0 + b.leave_timeout - 0.001)
    assert Exit("timeout") not in out
    assert p.tick(10.0 + b.leave_timeout) == [Exit("timeout")]
    assert p.phase is Phase.DONE and p.tick(99.0) == []


def test_d_is_retried_with_backoff_while_leaving() -> None:
    p = ready_peer()
    p.leave(0.0)
    t, sent = 0.0, 0
    while p.phase is Phase.LEAVING:
        deadline = p.next_deadline()
        assert deadline is not None
        t = deadline
        out = p.tick(t)
        sent += len(sends(out, Command.DISCONNECT))
    assert t == pytest.approx(timing.LEAVE_TIMEOUT)
    assert 3 <= sent <= 2 + timing.LEAVE_TIMEOUT / timing.ANNOUNCE_RETRY_MAX + 8


def test_immediate_exit_does_not_wait_for_our_d() -> None:
    p = ready_peer(Behaviour(immediate_exit=True))
    out = p.leave(1.0)
    assert sends(out, Command.DISCONNECT) and out[-1] == Exit("immediate")


def test_duplicate_disconnect_asks_for_two_calls() -> None:
    p = ready_peer(Behaviour(duplicate_disconnect=True))
    p.on_frame(C(uid(2), ep(2)), 1.0)
    assert DisconnectData(ep(2), times=2) in p.on_frame(D(uid(2), ep(2)), 2.0)


# --- the announce backoff -------------------------------------------------------------------


def test_c_retries_back_off_from_milliseconds_to_the_cap() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.on_frame(W(), 0.0)  # first C at once
    times = [0.0]
    for _ in range(40):
        deadline = p.next_deadline()
        assert deadline is not None
        assert sends(p.tick(deadline - 1e-6), Command.CONNECT) == []  # not early
        out = p.tick(deadline)
        assert sends(out, Command.CONNECT) == [MY_C]
        times.append(deadline)
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps[0] <= 0.010  # the first retry comes within 10 ms
    assert all(b >= a - 1e-9 for a, b in pairwise(gaps))  # non-decreasing
    assert max(gaps) == pytest.approx(timing.ANNOUNCE_RETRY_MAX)
    assert gaps[-1] == pytest.approx(timing.ANNOUNCE_RETRY_MAX)
    # ready in the first second needs only a handful of frames
    assert sum(1 for t in times if t <= 1.0) < 15


def test_classic_sends_c_every_turn_until_it_hears_itself() -> None:
    p = PeerProtocol(ME, MY_EP, Behaviour.classic())
    p.start(0.0)
    assert p.phase is Phase.ANNOUNCING
    for turn in range(1, 4):
        assert sends(p.tick(float(turn)), Command.CONNECT) == [C(ME, MY_EP)]
    p.on_frame(W(), 3.5)
    p.on_frame(C(ME, MY_EP), 3.6)
    assert sends(p.tick(4.0), Command.CONNECT) == []


def test_a_welcome_restarts_the_backoff() -> None:
    p = ready_peer()
    out = p.on_frame(W(uuid=uid(901)), 100.0)  # restarted proxy, same XSUB
    assert sends(out, Command.CONNECT) and p.phase is Phase.ANNOUNCING
    deadline = p.next_deadline()
    assert deadline is not None and deadline - 100.0 <= 0.010
    assert p.ready  # still in its own table: the application sees no leave


# --- expiry -------------------------------------------------------------------------------------


def test_expiry_after_the_grace_of_a_data_connection_down_and_not_before() -> None:
    b = Behaviour(watch=0)  # only the data connection's deadlines
    p = ready_peer(b)
    p.on_frame(C(uid(2), ep(2)), 1.0)
    p.on_data_connected(ep(2), 1.01)
    assert p.next_deadline() is None
    p.on_data_disconnected(ep(2), 2.0)
    assert p.next_deadline() == pytest.approx(2.0 + b.expire_grace)
    assert p.tick(2.0 + b.expire_grace - 0.001) == []
    p.on_data_connected(ep(2), 2.5)  # it came back within the grace: nothing happens
    assert p.tick(10.0) == [] and uid(2) in p.snapshot()
    p.on_data_disconnected(ep(2), 20.0)
    assert p.tick(20.0 + b.expire_grace) == []  # suspected first: still listed (docs/membership.md)
    assert uid(2) in p.snapshot()
    out = p.tick(20.0 + b.expire_grace + b.suspect_timeout)  # nothing confirmed or cleared it: declared
    assert [(e.uuid, e.reason) for e in events(out, "leave")] == [(uid(2), "expired")]
    assert p.counters.expired == 1 and uid(2) not in p.snapshot()
    # A suspicion, not a verdict: its endpoint is still dialled for the revive window ...
    assert DisconnectData(ep(2)) not in out and p.connected_endpoints()[ep(2)] == 1
    declared = 20.0 + b.expire_grace + b.suspect_timeout
    assert p.next_deadline() == pytest.approx(declared + b.revive_window)
    # ... and given up silently after it.
    out = p.tick(declared + b.revive_window)
    assert out == [DisconnectData(ep(2))] and ep(2) not in p.connected_endpoints()


def test_a_peer_that_never_connects_expires_too() -> None:
    p = ready_peer()
    p.on_frame(C(uid(2), ep(2)), 1.0)
    p.tick(1.0 + timing.EXPIRE_GRACE)
    assert [e.reason for e in events(p.tick(1.0 + timing.EXPIRE_GRACE + timing.SUSPECT_TIMEOUT), "leave")] == [
        "expired"
    ]


def test_no_expiry_without_it_or_for_ourselves() -> None:
    p = ready_peer(Behaviour(expire=False))
    p.on_frame(C(uid(2), ep(2)), 1.0)
    p.on_data_disconnected(ep(2), 1.0)
    assert p.tick(100.0) == []
    q = ready_peer()
    q.on_data_disconnected(MY_EP, 1.0)
    assert q.tick(100.0) == [] and q.ready


# --- random event sequences ------------------------------------------------------------------

UUIDS = [uid(n) for n in range(2, 8)]
ENDPOINTS = [ep(n) for n in range(2, 6)]


class ProtocolMachine(RuleBasedStateMachine):
    """Feed random frames, ticks and connection events; carry out the actions on
    a model of the data SUB and check that the protocol's books always balance."""

    def __init__(self) -> None:
        super().__init__()
        self.p: PeerProtocol | None = None
        self.now = 0.0
        self.connected: set[str] = set()
        self.members: set[str] = set()  # from join/ready/leave notifications
        self.left_phase_seen = False

    @rule(classic=st.booleans(), stamp=st.none() | st.integers(0, 5))
    @precondition(lambda self: self.p is None)
    def create(self, classic: bool, stamp: int | None) -> None:
        self.p = PeerProtocol(ME, MY_EP, Behaviour.classic() if classic else Behaviour())
        self.stamp = stamp
        self.apply(self.p.start(self.now))

    def apply(self, actions: list[Action]) -> None:
        assert self.p is not None
        for a in actions:
            if isinstance(a, ConnectData):
                assert a.endpoint not in self.connected, "connect twice"
                self.connected.add(a.endpoint)
            elif isinstance(a, DisconnectData):
                assert a.endpoint in self.connected, "disconnect of an endpoint not connected"
                self.connected.discard(a.endpoint)
            elif isinstance(a, Notify):
                ev = a.event
                if ev.kind in ("join", "ready"):
                    assert ev.uuid not in self.members
                    self.members.add(ev.uuid)
                elif ev.kind == "leave":
                    assert ev.uuid in self.members
                    self.members.discard(ev.uuid)
            elif isinstance(a, Send):
                assert a.msg.uuid == ME and a.msg.endpoint == MY_EP
                if self.p.phase in (Phase.LEAVING, Phase.DONE) and not self.p.behaviour.reannounce_while_leaving:
                    assert a.msg.command is not Command.CONNECT, "re-announced after D"
                if self.p.phase is Phase.DONE:
                    raise AssertionError("sent after exit")
            elif isinstance(a, Exit):
                assert self.p.phase is Phase.DONE

    def alive(self) -> bool:
        return self.p is not None and self.p.phase is not Phase.DONE

    @rule(dt=st.floats(0, 3))
    @precondition(lambda self: self.alive())
    def tick(self, dt: float) -> None:
        assert self.p is not None
        self.now += dt
        self.apply(self.p.tick(self.now))

    @rule(with_dir=st.booleans(), proxy=st.sampled_from([PROXY, uid(900)]))
    @precondition(lambda self: self.alive())
    def welcome(self, with_dir: bool, proxy: str) -> None:
        assert self.p is not None
        ext: dict[str, Any] = {}
        if with_dir:
            ext = {"p": proxy, "s": 3, "dir": [[UUIDS[0], ENDPOINTS[0]], [UUIDS[1], ENDPOINTS[1]]]}
        self.apply(self.p.on_frame(W(ext, uuid=proxy), self.now))

    @rule(
        u=st.sampled_from([*UUIDS, ME]),
        e=st.sampled_from([*ENDPOINTS, MY_EP]),
        k=st.none() | st.integers(0, 6),
        i=st.none() | st.integers(0, 3),
    )
    @precondition(lambda self: self.alive())
    def connect(self, u: str, e: str, k: int | None, i: int | None) -> None:
        assert self.p is not None
        ext: dict[str, Any] = {}
        if u == ME and self.stamp is not None:
            ext = {"p": PROXY, "s": self.stamp}
        elif k is not None:
            ext = {"k": {"p": PROXY, "s": k}}
        if i is not None:
            ext["i"] = i
        self.apply(self.p.on_frame(C(u, e, ext), self.now))

    @rule(
        u=st.sampled_from([*UUIDS, ME]),
        e=st.sampled_from([*ENDPOINTS, MY_EP]),
        i=st.none() | st.integers(0, 3),
        obituary=st.booleans(),
    )
    @precondition(lambda self: self.alive())
    def disconnect(self, u: str, e: str, i: int | None, obituary: bool) -> None:
        assert self.p is not None
        ext: dict[str, Any] = {} if i is None else {"i": i}
        if obituary:
            ext["o"] = 1
        self.apply(self.p.on_frame(D(u, e, ext), self.now))

    @rule(u=st.sampled_from([*UUIDS, ME]), e=st.sampled_from([*ENDPOINTS, MY_EP]))
    @precondition(lambda self: self.alive())
    def proof(self, u: str, e: str) -> None:
        assert self.p is not None
        self.apply(self.p.on_proof(u, e, self.now))

    @rule(e=st.sampled_from([*ENDPOINTS, MY_EP]), up=st.booleans())
    @precondition(lambda self: self.alive())
    def data_event(self, e: str, up: bool) -> None:
        assert self.p is not None
        if up:
            self.apply(self.p.on_data_connected(e, self.now))
        else:
            self.p.on_data_disconnected(e, self.now)

    @rule()
    @precondition(lambda self: self.alive())
    def leave(self) -> None:
        assert self.p is not None
        self.apply(self.p.leave(self.now))

    @rule()
    @precondition(lambda self: self.p is not None and self.p.phase is Phase.DONE)
    def exited(self) -> None:
        assert self.p is not None
        assert self.p.tick(self.now + 100.0) == []
        self.p, self.connected, self.members = None, set(), set()

    @invariant()
    def books_balance(self) -> None:
        if self.p is None:
            return
        per_endpoint = Counter(ep for ep, _ in self.p.entries().values())
        assert self.p.connected_endpoints() == dict(per_endpoint), "refcount != entries per endpoint"
        assert set(per_endpoint) == self.connected, "connect/disconnect actions do not balance"
        if self.p.phase is not Phase.DONE:  # after the exit, the table is history
            assert set(self.p.snapshot()) == self.members, "notifications do not match the table"
        listed = Counter(self.p.snapshot().values())
        assert all(n == 1 for n in listed.values()), "two listed peers share an endpoint"
        assert self.p.ready == (ME in self.p.snapshot())
        if self.p.phase is Phase.READY:
            assert self.p.ready
        d = self.p.next_deadline()
        assert d is None or d >= 0


TestProtocolMachine = ProtocolMachine.TestCase
TestProtocolMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


# --- O(N) joins under concurrent starts (k advances; resync names what was missed) ---------


def dir_welcome(seq: int, entries: list[tuple[str, str]]) -> Message:
    return W({"p": PROXY, "s": seq, "dir": [list(e) for e in entries]})


def test_known_position_advances_over_stamps_heard_in_order() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.start(0.0)
    p.on_frame(dir_welcome(3, [(uid(1), ep(1)), (uid(2), ep(2)), (uid(3), ep(3))]), 0.0)
    p.on_frame(C(uid(5), ep(5), {"p": PROXY, "s": 5}), 0.01)  # 4 not heard yet: k stays
    assert sends(p.tick(1.0), Command.CONNECT)[0].ext["k"] == {"p": PROXY, "s": 3}
    p.on_frame(C(uid(4), ep(4), {"p": PROXY, "s": 4}), 0.02)  # gap filled: k jumps to 5
    assert sends(p.tick(2.0), Command.CONNECT)[0].ext["k"] == {"p": PROXY, "s": 5}


def test_no_reannounce_to_a_newcomer_that_carries_a_position_unless_it_names_us() -> None:
    p = ready_peer(stamp=7)
    out = p.on_frame(C(uid(2), ep(2), {"k": {"p": PROXY, "s": 3}, "p": PROXY, "s": 9}), 1.0)
    assert ConnectData(ep(2)) in out and not sends(out, Command.CONNECT)  # it heard our C after its welcome
    asked = {"k": {"p": PROXY, "s": 3}, "r": 1, "m": [7], "p": PROXY, "s": 9}
    assert sends(p.on_frame(C(uid(2), ep(2), asked), 1.1), Command.CONNECT) == [MY_C]
    not_us = dict(asked, m=[5, 6])
    assert not sends(p.on_frame(C(uid(2), ep(2), not_us), 1.2), Command.CONNECT)


def test_a_newcomer_that_missed_entries_asks_for_exactly_those() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.start(0.0)
    p.on_frame(dir_welcome(2, [(uid(1), ep(1)), (uid(2), ep(2))]), 0.0)
    p.on_frame(C(uid(4), ep(4), {"p": PROXY, "s": 4}), 0.01)  # 3 went out before we subscribed
    out = p.on_frame(C(ME, MY_EP, {"p": PROXY, "s": 5}), 0.02)  # our own C, stamped 5
    assert p.ready and p.counters.resyncs == 1
    (resync,) = sends(out, Command.CONNECT)
    assert resync.ext["r"] == 1 and resync.ext["m"] == [3]


def test_no_resync_when_nothing_was_missed() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.start(0.0)
    p.on_frame(dir_welcome(2, [(uid(1), ep(1)), (uid(2), ep(2))]), 0.0)
    p.on_frame(C(uid(3), ep(3), {"p": PROXY, "s": 3}), 0.01)
    out = p.on_frame(C(ME, MY_EP, {"p": PROXY, "s": 4}), 0.02)
    assert p.ready and not sends(out, Command.CONNECT) and p.counters.resyncs == 0


def test_c_waits_for_the_proxy_subscription_when_the_socket_layer_reports_it() -> None:
    p = PeerProtocol(ME, MY_EP)
    p.watch_subscription = True
    p.start(0.0)
    assert sends(p.on_frame(W(), 0.0), Command.CONNECT)  # may be dropped: no fast retry for it
    assert not sends(p.tick(0.1), Command.CONNECT)
    assert sends(p.on_proxy_subscription(True, 0.2), Command.CONNECT)  # now it cannot be dropped
    assert p.next_deadline() == pytest.approx(0.2 + timing.ANNOUNCE_RETRY_SUBSCRIBED)
