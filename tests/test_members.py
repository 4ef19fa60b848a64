"""Seeing the mesh from outside (``zeromesh members``, :mod:`zeromesh.members`):
the listing comes from the proxy's welcome, nothing is announced, and watching
turns forwarded C/D frames into joins and leaves."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import zmq

from conftest import full_mesh, wait_for
from test_cli import Children, children, read_line, run  # noqa: F401 (children: fixture)
from zeromesh import Peer, Proxy
from zeromesh.cli.members import table
from zeromesh.members import Change, Watcher, list_members, listing_of
from zeromesh.protocol import PeerEvent
from zeromesh.security import Security, keygen
from zeromesh.wire import Command, Message, encode

pytestmark = pytest.mark.timeout(60)


def seen_kind(w: Watcher, seen: list[Change], kind: str) -> bool:
    """Read the watcher's next changes into *seen*; True once one is a *kind*."""
    seen.extend(w.changes(0.05))
    return any(c.kind == kind for c in seen)


def drain(p: Peer) -> list[PeerEvent]:
    out = []
    while (ev := p.next_event(0)) is not None:
        out.append(ev)
    return out


def test_listing_shows_every_member_with_its_meta_and_state(proxy: Proxy, peers: list[Peer]) -> None:
    peers.extend(Peer(proxy.endpoint, meta={"role": f"r{i}", "zone": "a"}).start() for i in range(3))
    assert wait_for(lambda: full_mesh(peers))
    want = {p.uuid: (p.endpoint, {"role": f"r{i}", "zone": "a"}) for i, p in enumerate(peers)}

    def alive() -> bool:
        listing = list_members(proxy.endpoint)
        return listing.has_directory and all(m.state == "alive" for m in listing.members)

    assert wait_for(alive)  # "joining" until the proxy's probe reached each one
    listing = list_members(proxy.endpoint)
    assert listing.proxy_uuid == proxy.uuid and listing.xsub == proxy.xsub_endpoint
    assert {m.uuid: (m.endpoint, dict(m.meta)) for m in listing.members} == want
    assert all(m.since is not None and abs(m.since - listing.t) < 30 for m in listing.members)
    text = table(listing.members, listing.t)
    assert text.splitlines()[0].split() == ["UUID", "ENDPOINT", "STATE", "AGE", "META"]
    assert "role=r1,zone=a" in text


def test_listing_announces_nothing_and_no_peer_sees_an_event(proxy: Proxy, peers: list[Peer]) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(3))
    assert wait_for(lambda: full_mesh(peers))
    assert wait_for(lambda: all(p.protocol is not None and p.protocol.pending_connections() == 0 for p in peers))
    for p in peers:
        drain(p)
    forwarded = proxy.forwarded
    for _ in range(3):
        assert len(list_members(proxy.endpoint).members) == 3
    with Watcher(proxy.endpoint, watch=True) as w:
        w.listing()
    assert proxy.forwarded == forwarded  # not one frame went through the proxy
    # A sentinel join: frames are forwarded in order, so anything a listing
    # had caused would reach every peer before it.
    sentinel = Peer(proxy.endpoint).start()
    peers.append(sentinel)
    for p in peers[:3]:
        assert wait_for(lambda p=p: sentinel.uuid in p.peers())  # type: ignore[misc]
        assert [(e.kind, e.uuid) for e in drain(p)] == [("join", sentinel.uuid)]


def test_watch_streams_joins_and_leaves_with_meta(proxy: Proxy, peers: list[Peer]) -> None:
    first = Peer(proxy.endpoint).start()
    peers.append(first)
    assert first.wait_ready(5)
    with Watcher(proxy.endpoint, watch=True) as w:
        assert [m.uuid for m in w.listing().members] == [first.uuid]
        newcomer = Peer(proxy.endpoint, meta={"app": "web"}).start()
        seen: list[Change] = []
        assert wait_for(lambda: seen_kind(w, seen, "join"))
        join = next(c for c in seen if c.kind == "join")
        assert (join.uuid, join.endpoint, dict(join.meta)) == (newcomer.uuid, newcomer.endpoint, {"app": "web"})
        assert join.as_dict()["meta"] == {"app": "web"}
        assert newcomer.stop()
        seen.clear()
        assert wait_for(lambda: seen_kind(w, seen, "leave"))
        leave = next(c for c in seen if c.kind == "leave")
        assert (leave.uuid, leave.reason) == (newcomer.uuid, "left")
        assert set(w.view) == {first.uuid}


def test_classic_proxy_has_no_directory_but_can_be_watched(classic_proxy: Proxy, peers: list[Peer]) -> None:
    listing = list_members(classic_proxy.endpoint)
    assert not listing.has_directory and listing.members == []
    with Watcher(classic_proxy.endpoint, watch=True) as w:
        w.listing()
        p = Peer(classic_proxy.endpoint, meta={"k": "v"}).start()
        peers.append(p)
        seen: list[Change] = []
        assert wait_for(lambda: seen_kind(w, seen, "join"))
        assert next(c for c in seen if c.kind == "join").uuid == p.uuid


def test_no_proxy_is_a_timeout() -> None:
    with pytest.raises(TimeoutError, match="no welcome"):
        list_members("tcp://127.0.0.1:1", timeout=0.2)


# --- the command ------------------------------------------------------------------------------


def test_members_json_and_table(zeromesh_exe: list[str], proxy: Proxy, peers: list[Peer]) -> None:
    peers.extend(Peer(proxy.endpoint, meta={"i": str(i)}).start() for i in range(2))
    assert wait_for(lambda: full_mesh(peers))
    r = run(zeromesh_exe, "members", "--proxy", proxy.endpoint, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {row["uuid"]: row["meta"] for row in rows} == {p.uuid: {"i": str(i)} for i, p in enumerate(peers)}
    assert all({"uuid", "endpoint", "meta", "state", "since"} <= set(row) for row in rows)
    r = run(zeromesh_exe, "members", "--proxy", proxy.endpoint)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:5] == ["UUID", "ENDPOINT", "STATE", "AGE", "META"]
    assert all(p.uuid in r.stdout for p in peers)


def test_members_says_plainly_when_the_proxy_is_classic_or_absent(
    zeromesh_exe: list[str], classic_proxy: Proxy
) -> None:
    r = run(zeromesh_exe, "members", "--proxy", classic_proxy.endpoint)
    assert r.returncode == 1
    assert "classic proxy" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run(zeromesh_exe, "members", "--proxy", "tcp://127.0.0.1:1", "--timeout", "0.2")
    assert r.returncode == 1 and "no welcome" in r.stderr and "Traceback" not in r.stderr


def test_members_watch_prints_joins_and_leaves_then_exits_130(children: Children, proxy: Proxy) -> None:  # noqa: F811
    w = children.start("members", "--proxy", proxy.endpoint, "--watch", "--format", "json")
    p = Peer(proxy.endpoint, meta={"role": "db"})
    try:
        # The watcher is connected once the proxy has forwarded its subscription.
        assert wait_for(lambda: proxy.subscriptions > 0, 10.0)
        p.start()
        line = json.loads(read_line(w, 10.0))
        assert (line["event"], line["uuid"], line["meta"]) == ("join", p.uuid, {"role": "db"})
    finally:
        assert p.stop()
    line = json.loads(read_line(w, 10.0))
    assert (line["event"], line["uuid"], line["reason"]) == ("leave", p.uuid, "left")
    w.send_signal(signal.SIGINT)
    assert w.wait(5.0) == 130


def test_listing_a_secured_proxy_needs_member_keys(tmp_path: Path, peers: list[Peer]) -> None:
    keygen(tmp_path / "keys", 2)
    keys = tmp_path / "keys"
    with Proxy(security=Security.from_dir(keys / "proxy", keys / "allow")) as proxy:
        p = Peer(proxy.endpoint, security=Security.from_dir(keys / "member-1"), meta={"s": "1"}).start()
        peers.append(p)
        assert p.wait_ready(5)
        listing = list_members(proxy.endpoint, security=Security.from_dir(keys / "member-2"))
        assert [(m.uuid, dict(m.meta)) for m in listing.members] == [(p.uuid, {"s": "1"})]
        with pytest.raises(TimeoutError):  # no keys: the CURVE handshake never completes
            list_members(proxy.endpoint, timeout=0.5)


def test_a_hostile_welcome_is_decoded_defensively() -> None:
    good = "00000000-0000-4000-8000-000000000001"
    ext = {
        "p": "x",
        "s": 1,
        "dir": [[good, "tcp://127.0.0.1:1"], ["not-a-uuid", "tcp://127.0.0.1:2"], [good, "bogus"], "junk", [1, 2]],
        "dx": {good: {"t": float("inf"), "st": "pwned", "m": {"ok": "1", "bad": 2}}, "x": "junk"},
    }
    listing = listing_of(Message(Command.WELCOME, good, "tcp://127.0.0.1:9", ext), 0.0)
    assert [(m.uuid, m.endpoint, dict(m.meta), m.since, m.state) for m in listing.members] == [
        (good, "tcp://127.0.0.1:1", {"ok": "1"}, None, "unknown")
    ]
    assert listing.dropped == 5  # four bad entries, one bad metadata pair
    assert "-" in table(listing.members, 0.0)


def test_watch_reports_a_killed_peer_as_failed(children: Children, proxy: Proxy) -> None:  # noqa: F811
    with Watcher(proxy.endpoint, watch=True) as w:
        w.listing()
        victim = children.start("peer", "--proxy", proxy.endpoint, "--events", "jsonl")
        uuid = json.loads(read_line(victim, 10))["uuid"]
        seen: list[Change] = []
        assert wait_for(lambda: seen_kind(w, seen, "join"), 10)
        victim.send_signal(signal.SIGKILL)  # no D: only the proxy's probe finds out
        seen.clear()
        assert wait_for(lambda: seen_kind(w, seen, "leave"), 10)
        leave = next(c for c in seen if c.kind == "leave")
        assert (leave.uuid, leave.reason) == (uuid, "failed")


def _fake_proxy(ctx: zmq.Context[Any], endpoint: str, proxy_uuid: str, entries: list[list[str]]) -> zmq.Socket[Any]:
    """An XPUB that welcomes like a directory proxy listing *entries*."""
    xpub: zmq.Socket[Any] = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    ext = {"p": proxy_uuid, "s": len(entries), "dir": entries}
    xpub.setsockopt(zmq.XPUB_WELCOME_MSG, encode(Message(Command.WELCOME, proxy_uuid, "tcp://127.0.0.1:9", ext)))

    def bound() -> bool:
        try:  # a closed socket's listener goes away asynchronously (libzmq's I/O thread)
            xpub.bind(endpoint)
        except zmq.ZMQError:
            return False
        return True

    assert wait_for(bound)
    return xpub


def test_watch_across_a_proxy_restart_reports_no_false_leaves() -> None:
    a, b, c = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        old = _fake_proxy(ctx, "tcp://127.0.0.1:0", a, [[b, "tcp://127.0.0.1:2"]])
        endpoint = old.getsockopt_string(zmq.LAST_ENDPOINT)
        with Watcher(endpoint, watch=True) as w:
            # A bound socket attaches a new connection (and sends the welcome)
            # only when it processes its commands: the fakes are polled.
            assert wait_for(lambda: old.poll(5) is not None and w.sub.poll(5) != 0)
            assert [m.uuid for m in w.listing().members] == [b]
            old.close()  # the proxy restarts: a new uuid, an empty directory at first
            new = _fake_proxy(ctx, endpoint, c, [])
            seen: list[Change] = []
            assert wait_for(lambda: new.poll(5) is not None and seen_kind(w, seen, "proxy"), 10)
            assert [(x.kind, x.uuid) for x in seen] == [("proxy", c)]  # b is not reported gone
            assert set(w.view) == {b}
            new.close()  # the same proxy again (our connection came back), and b really is gone
            new = _fake_proxy(ctx, endpoint, c, [[a, "tcp://127.0.0.1:1"]])
            seen.clear()
            assert wait_for(lambda: new.poll(5) is not None and seen_kind(w, seen, "proxy"), 10)
            assert sorted((x.kind, x.uuid, x.reason) for x in seen) == [
                ("join", a, None),
                ("leave", b, "gone"),
                ("proxy", c, None),
            ]
            new.close()
    finally:
        ctx.destroy(linger=0)
