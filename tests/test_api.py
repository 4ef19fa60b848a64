"""The public API: what is exported, how bad arguments are refused (before
anything starts), and the thread-safe views (stats, wait_for_peers)."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
import zmq

import zeromesh
from conftest import wait_for
from zeromesh import ConfigError, LingerWhen, Peer, Proxy, SeedBehaviour, Tuning, WireError, ZeromeshError

pytestmark = pytest.mark.timeout(30)


def test_what_users_pass_in_is_exported() -> None:
    for name in ("Peer", "Proxy", "Security", "Tuning", "SeedBehaviour", "LingerWhen", "PeerEvent", "DataMessage"):
        assert name in zeromesh.__all__ and hasattr(zeromesh, name)
    for exc in (ConfigError, WireError, zeromesh.SecurityError):
        assert issubclass(exc, ZeromeshError) and issubclass(exc, ValueError)


BAD_PEER_ARGS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"lifetime": "5"}, TypeError, "lifetime"),
    ({"lifetime": math.nan}, ConfigError, "lifetime"),
    ({"lifetime": -1.0}, ConfigError, "lifetime"),
    ({"lifetime": 1e9}, ConfigError, "lifetime"),
    ({"on_event": 42}, TypeError, "on_event"),
    ({"on_message": "print"}, TypeError, "on_message"),
    ({"max_queued": 0}, ConfigError, "max_queued"),
    ({"max_queued": 1.5}, TypeError, "max_queued"),
    ({"uuid": "bad"}, WireError, "uuid"),
    ({"bind": "inproc://x"}, WireError, "bind"),
    ({"advertise": "[1.2.3.4]"}, WireError, "IPv6"),
    ({"advertise": "a b"}, WireError, "host"),
    ({"advertise": "a" * 300}, WireError, "host"),
    ({"security": "keys/"}, TypeError, "security"),
    ({"tuning": {"heartbeats": False}}, TypeError, "tuning"),
]


@pytest.mark.parametrize(("kw", "exc", "needle"), BAD_PEER_ARGS, ids=[next(iter(k)) for k, _, _ in BAD_PEER_ARGS])
def test_bad_peer_arguments_are_refused_before_anything_starts(
    kw: dict[str, Any], exc: type[Exception], needle: str
) -> None:
    threads = threading.active_count()
    with pytest.raises(exc, match=needle):
        Peer("tcp://127.0.0.1:9", **kw)
    assert threading.active_count() == threads


def test_bad_proxy_endpoint_is_refused() -> None:
    with pytest.raises(WireError):
        Peer("tcp://[1.2.3.4]:5")


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"bind": "bogus"}, WireError),
        ({"xsub_bind": 5}, TypeError),
        ({"advertise": "[abc]"}, WireError),  # message: "host in brackets ..."
        ({"mode": "fast"}, ConfigError),
        ({"heartbeats": "yes"}, TypeError),
        ({"security": object()}, TypeError),
    ],
)
def test_bad_proxy_arguments_are_refused_before_binding(kw: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc, match=next(iter(kw)) if exc is not WireError else "endpoint"):
        Proxy(**{"bind": "tcp://127.0.0.1:0", **kw})


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: Tuning(expire_after=-1.0), "expire_after"),
        (lambda: Tuning(expire_after=0.0), "expire_after"),
        (lambda: Tuning(leave_timeout=math.inf), "leave_timeout"),
        (lambda: Tuning(schemes=frozenset({"inproc"})), "schemes"),
        (lambda: SeedBehaviour(linger_ms=-5), "linger_ms"),
        (lambda: SeedBehaviour(sleep_at_exit=math.nan), "sleep_at_exit"),
        (lambda: SeedBehaviour(linger_when="late"), "linger_when"),  # type: ignore[arg-type]
        (lambda: SeedBehaviour(no_kick=1), "no_kick"),  # type: ignore[arg-type]
    ],
)
def test_settings_are_checked_when_made(make: Any, needle: str) -> None:
    with pytest.raises((ConfigError, TypeError), match=needle):
        make()


def test_the_seed_switches_map_onto_the_layers() -> None:
    from zeromesh.options import layer_settings

    b, pol = layer_settings(Tuning(), SeedBehaviour())
    assert pol.kick and pol.linger_when is LingerWhen.CREATION and b.expire and not b.announce_every_turn
    b, pol = layer_settings(Tuning(), SeedBehaviour.classic())
    assert not pol.kick and pol.linger_when is LingerWhen.BEFORE_CLOSE and not b.expire and b.announce_every_turn
    b, pol = layer_settings(Tuning(expire_after=None, heartbeats=False), SeedBehaviour(immediate_exit=True))
    assert not b.expire and not pol.heartbeats and b.immediate_exit


def test_a_failing_socket_option_leaves_nothing_behind() -> None:
    """A bind that fails half-way closes what it opened: no hang in term."""
    with zmq.Context() as ctx, ctx.socket(zmq.PUB) as taken:
        taken.linger = 0
        port = taken.bind_to_random_port("tcp://127.0.0.1")
        p = Peer("tcp://127.0.0.1:9", bind=f"tcp://127.0.0.1:{port}")
        with pytest.raises(zmq.ZMQError):
            p.start(2.0)
        assert p.stop(2.0)


def test_stats_and_wait_for_peers(proxy: Proxy, peers: list[Peer]) -> None:
    first = Peer(proxy.endpoint).start()
    peers.append(first)
    assert not first.wait_for_peers(1, 0.2)  # alone: the deadline passes
    done = threading.Event()

    def waiter() -> None:
        if first.wait_for_peers(2, 5.0):
            done.set()

    t = threading.Thread(target=waiter)
    t.start()
    peers.extend(Peer(proxy.endpoint).start() for _ in range(2))
    t.join(6.0)
    assert done.is_set()
    assert wait_for(lambda: first.stats().joins == 2, 3.0)
    s = first.stats()
    assert s.uuid == first.uuid and s.peers == 2 and s.phase == "ready" and s.frames > 0 and s.frames_sent > 0
    peers[1].publish(b"t", b"x")
    assert wait_for(lambda: first.stats().received >= 1 or (peers[1].publish(b"t", b"x") and False), 3.0)
    assert peers[1].stats().published >= 1


def test_the_event_queue_is_bounded(proxy: Proxy, peers: list[Peer]) -> None:
    """Remote joins must not grow memory when nobody reads next_event()."""
    p = Peer(proxy.endpoint, max_queued=2).start()
    peers.append(p)
    peers.extend(Peer(proxy.endpoint).start() for _ in range(3))
    assert p.wait_for_peers(3, 5.0)
    # At least ready and 3 joins (and proxy_up) went into 2 places.
    assert p.stats().dropped_events >= 2
    assert len(list(iter(lambda: p.next_event(0), None))) == 2
