"""Per-peer metadata: checked locally, bounded and counted when it comes from
the wire, shown in join events, members() and the proxy's directory; and the
peer's own messages are not delivered to it unless asked for."""

from __future__ import annotations

import json

import pytest

from conftest import data_flows, full_mesh, wait_for
from test_cli import run
from zeromesh import ConfigError, DataMessage, Peer, Proxy, ext
from zeromesh import metadata as md
from zeromesh.directory import Directory
from zeromesh.members import list_members
from zeromesh.protocol import PeerProtocol, Send
from zeromesh.testing.cpeer import CPeer
from zeromesh.wire import Command, Message, decode, encode

pytestmark = pytest.mark.timeout(60)

U1 = "00000000-0000-4000-8000-000000000001"
U2 = "00000000-0000-4000-8000-000000000002"


@pytest.mark.parametrize(
    ("meta", "exc", "needle"),
    [
        ("role=web", TypeError, "meta must be a mapping"),
        ({"role": 1}, TypeError, "must be a str"),
        ({1: "x"}, TypeError, "keys must be str"),
        ({"": "x"}, ConfigError, "1-64 bytes"),
        ({"k" * 65: "x"}, ConfigError, "1-64 bytes"),
        ({"k": "v" * 257}, ConfigError, "longer than 256"),
        ({f"k{i}": "v" for i in range(17)}, ConfigError, "at most 16"),
        ({f"k{i}": "v" * 250 for i in range(5)}, ConfigError, "at most 1024"),
        ({"k": "\udc80"}, ConfigError, "surrogate"),
    ],
)
def test_local_meta_is_checked_naming_the_argument(meta: object, exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc, match="meta") as info:
        Peer("tcp://127.0.0.1:1", meta=meta)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_meta_at_the_bound_fits_in_one_frame_and_round_trips() -> None:
    meta = {f"k{i:02d}": "v" * 60 for i in range(16)}
    assert md.validate(meta) == meta
    proto = PeerProtocol(U1, "tcp://127.0.0.1:1", meta=meta)
    proto.on_frame(Message(Command.WELCOME, U2, "tcp://127.0.0.1:2"), 0.0)
    sent = [a for a in proto.tick(1.0) + proto.on_proxy_subscription(True, 1.0) if isinstance(a, Send)]
    frame = encode(sent[0].msg)
    assert decode(frame).ext[ext.META] == meta
    assert len(frame) < 295 + 1400


def test_remote_meta_is_hostile_input_dropped_and_counted() -> None:
    proto = PeerProtocol(U1, "tcp://127.0.0.1:1")
    bad = {"ok": "yes", "n": 3, "long": "x" * 300, "k" * 70: "v", **{f"f{i}": "v" for i in range(20)}}
    proto.on_frame(Message(Command.CONNECT, U2, "tcp://127.0.0.1:2", {ext.META: bad}), 0.0)
    meta = proto.members()[U2][1]
    assert meta["ok"] == "yes" and "n" not in meta and "long" not in meta and len(meta) == md.MAX_PAIRS
    assert proto.counters.ignored["bad-meta"] == len(bad) - md.MAX_PAIRS
    other = PeerProtocol(U1, "tcp://127.0.0.1:1")
    other.on_frame(Message(Command.CONNECT, U2, "tcp://127.0.0.1:2", {ext.META: ["not", "a", "dict"]}), 0.0)
    assert other.members()[U2][1] == {} and other.counters.ignored["bad-meta"] == 1
    d = Directory("00000000-0000-4000-8000-0000000000ff")
    d.on_frame(Message(Command.CONNECT, U2, "tcp://127.0.0.1:2", {ext.META: {"a": "b", "c": None}}), 0.0)
    assert d.entries[U2].meta == {"a": "b"} and d.bad_meta == 1
    assert d.welcome_ext()[ext.DIR_INFO][U2]["m"] == {"a": "b"}


def test_meta_reaches_join_events_members_and_the_directory(proxy: Proxy, peers: list[Peer]) -> None:
    a = Peer(proxy.endpoint, meta={"role": "a"}).start()
    peers.append(a)
    assert a.wait_ready(5)
    ready = a.next_event(5)
    assert ready is not None and ready.kind == "ready" and dict(ready.meta) == {"role": "a"}
    b = Peer(proxy.endpoint, meta={"role": "b"}).start()  # learns a from the welcome's directory
    peers.append(b)
    assert wait_for(lambda: full_mesh(peers))
    join_at_a = next(e for e in iter(lambda: a.next_event(5), None) if e.kind == "join")
    assert (join_at_a.uuid, dict(join_at_a.meta)) == (b.uuid, {"role": "b"})
    assert join_at_a.as_dict()["meta"] == {"role": "b"}
    join_at_b = next(e for e in iter(lambda: b.next_event(5), None) if e.kind == "join")
    assert (join_at_b.uuid, dict(join_at_b.meta)) == (a.uuid, {"role": "a"})
    for p in (a, b):
        m = p.members()
        assert {u: dict(x.meta) for u, x in m.items()} == {a.uuid: {"role": "a"}, b.uuid: {"role": "b"}}
        assert {u: x.endpoint for u, x in m.items()} == p.peers()
    listing = list_members(proxy.endpoint)
    assert {m.uuid: dict(m.meta) for m in listing.members} == {a.uuid: {"role": "a"}, b.uuid: {"role": "b"}}


def test_c_peers_have_empty_meta(proxy: Proxy, peers: list[Peer]) -> None:
    z = Peer(proxy.endpoint, meta={"x": "y"}).start()
    peers.append(z)
    c = CPeer(proxy.endpoint).start()
    try:
        assert wait_for(lambda: c.uuid in z.peers(), 8.0)
        assert z.members()[c.uuid].meta == {}
        assert {m.uuid: dict(m.meta) for m in list_members(proxy.endpoint).members}[c.uuid] == {}
    finally:
        c.leave()
        assert c.stop()


def test_cli_meta_reaches_the_join_line_and_bad_meta_is_a_usage_error(zeromesh_exe: list[str], proxy: Proxy) -> None:
    r = run(zeromesh_exe, "peer", "--proxy", proxy.endpoint, "--seconds", "0.1", "--meta", "novalue")
    assert r.returncode == 2 and "--meta wants KEY=VALUE" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run(zeromesh_exe, "peer", "--proxy", proxy.endpoint, "--seconds", "0.1", "--meta", "k=" + "v" * 300)
    assert r.returncode == 2 and "--meta" in r.stderr and "Traceback" not in r.stderr
    with Peer(proxy.endpoint) as watcher:
        assert watcher.wait_ready(5)
        r = run(
            zeromesh_exe,
            *("peer", "--proxy", proxy.endpoint, "--seconds", "0.5", "--events", "jsonl"),
            *("--meta", "role=web", "--meta", "zone=eu=1"),
        )
        assert r.returncode == 0, r.stderr
        lines = [json.loads(line) for line in r.stdout.splitlines()]
        ready = next(e for e in lines if e["event"] == "ready")
        assert ready["meta"] == {"role": "web", "zone": "eu=1"}
        join = next(e for e in iter(lambda: watcher.next_event(5), None) if e.kind == "join")
        assert dict(join.meta) == {"role": "web", "zone": "eu=1"}


# --- self-delivery ----------------------------------------------------------------------------


def test_a_peer_does_not_receive_its_own_messages_unless_asked(proxy: Proxy, peers: list[Peer]) -> None:
    quiet = Peer(proxy.endpoint).start()
    own = Peer(proxy.endpoint, receive_own=True).start()
    other = Peer(proxy.endpoint).start()
    peers.extend([quiet, own, other])
    assert wait_for(lambda: full_mesh(peers))
    assert quiet._conns is not None and quiet.endpoint not in quiet._conns  # never dialled its own PUB
    assert own._conns is not None and own.endpoint in own._conns
    assert data_flows(quiet, [other, own])  # others still get it
    assert data_flows(own, [own, other])  # receive_own: its own come back too
    quiet.publish(b"news", b"marker")
    assert wait_for(lambda: (m := other.recv(0.01)) is not None and m.payload == b"marker")
    other.publish(b"news", b"after")  # sent after the marker reached other: quiet gets it after any own copy
    got: list[DataMessage] = []

    def after_arrived() -> bool:
        m = quiet.recv(0.01)
        if m is not None:
            got.append(m)
        return m is not None and m.payload == b"after"

    assert wait_for(after_arrived)
    assert all(m.sender != quiet.uuid for m in got)
    assert not quiet.bad


def test_receive_own_is_checked() -> None:
    with pytest.raises(TypeError, match="receive_own"):
        Peer("tcp://127.0.0.1:1", receive_own=1)  # type: ignore[arg-type]


def test_receive_own_from_the_command_line(zeromesh_exe: list[str], proxy: Proxy) -> None:
    """--receive-own: a peer that publishes nothing still starts and leaves cleanly with it."""
    from zeromesh.cli import build_parser

    assert build_parser("peer").parse_args(["peer", "--receive-own"]).receive_own is True
    assert build_parser("peer").parse_args(["peer"]).receive_own is False
    r = run(zeromesh_exe, "peer", "--proxy", proxy.endpoint, "--seconds", "0.3", "--receive-own", "--events", "jsonl")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["event"] for line in r.stdout.splitlines()] == ["ready", "exit"]
