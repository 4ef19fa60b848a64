"""Health: a peer says when it loses and regains its proxy (``proxy_down`` /
``proxy_up``, within 3 s), and the proxy logs joins and leaves at INFO."""

from __future__ import annotations

import json
import logging
import signal
import time

import pytest

from conftest import wait_for
from test_cli import Children, children, read_line  # noqa: F401 (children: fixture)
from zeromesh import Peer, PeerEvent, Proxy
from zeromesh.members import MemberInfo, list_members

pytestmark = pytest.mark.timeout(60)

#: The bound the issue sets on noticing a lost or regained proxy.
HEALTH_BOUND = 3.0


def next_kind(p: Peer, kinds: set[str], timeout: float) -> tuple[PeerEvent | None, float]:
    """The next event of one of *kinds* (others skipped), and when it came."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ev = p.next_event(left)
        if ev is not None and ev.kind in kinds:
            return ev, time.monotonic()
    return None, time.monotonic()


def test_proxy_down_and_up_when_the_proxy_stops_and_returns(peers: list[Peer]) -> None:
    first = Proxy("tcp://127.0.0.1:0").start()
    endpoint = first.endpoint
    try:
        p = Peer(endpoint).start()
        peers.append(p)
        assert p.wait_ready(5)
    finally:
        t0 = time.monotonic()
        assert first.stop()
    ev, t = next_kind(p, {"proxy_down", "proxy_up"}, 10)
    assert ev is not None and ev.kind == "proxy_down" and t - t0 < HEALTH_BOUND
    assert (ev.uuid, ev.endpoint) == (first.uuid, endpoint)
    assert ev.as_dict()["event"] == "proxy_down"
    with Proxy(endpoint) as second:
        t0 = time.monotonic()
        ev, t = next_kind(p, {"proxy_down", "proxy_up"}, 10)
        assert ev is not None and ev.kind == "proxy_up" and t - t0 < HEALTH_BOUND
        assert p.stats().proxy_reconnects == 1
        assert wait_for(lambda: p.uuid in {m.uuid for m in _listing(second)})  # and it joined the new proxy


def _listing(proxy: Proxy) -> list[MemberInfo]:
    return list_members(proxy.endpoint).members


def test_a_frozen_proxy_is_down_by_heartbeats_and_up_when_it_thaws(children: Children, peers: list[Peer]) -> None:  # noqa: F811
    px = children.start("proxy", "--bind", "tcp://127.0.0.1:0", "--events", "jsonl")
    endpoint = json.loads(read_line(px, 10))["endpoint"]
    p = Peer(endpoint).start()
    peers.append(p)
    assert p.wait_ready(5)
    px.send_signal(signal.SIGSTOP)  # no reset: only unanswered heartbeats tell
    try:
        t0 = time.monotonic()
        ev, t = next_kind(p, {"proxy_down", "proxy_up"}, 10)
        assert ev is not None and ev.kind == "proxy_down" and t - t0 < HEALTH_BOUND, (ev, t - t0)
    finally:
        px.send_signal(signal.SIGCONT)
    t0 = time.monotonic()
    ev, t = next_kind(p, {"proxy_down", "proxy_up"}, 10)
    assert ev is not None and ev.kind == "proxy_up" and t - t0 < HEALTH_BOUND, (ev, t - t0)


def test_proxy_events_in_json_lines(children: Children) -> None:  # noqa: F811
    proxy = Proxy("tcp://127.0.0.1:0").start()
    try:
        p = children.start("peer", "--proxy", proxy.endpoint, "--events", "jsonl")
        assert json.loads(read_line(p, 10))["event"] == "ready"
    finally:
        assert proxy.stop()
    line = json.loads(read_line(p, 10))
    assert (line["event"], line["endpoint"], line["uuid"]) == ("proxy_down", proxy.endpoint, proxy.uuid)


def test_the_proxy_logs_joins_and_leaves_at_info(
    proxy: Proxy, peers: list[Peer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zeromesh.proxy")
    p = Peer(proxy.endpoint).start()
    assert p.wait_ready(5)
    assert wait_for(lambda: f"join {p.uuid} {p.endpoint}" in caplog.text)
    assert p.stop()
    assert wait_for(lambda: f"leave {p.uuid} {p.endpoint} (left)" in caplog.text)
    levels = {r.levelno for r in caplog.records if p.uuid in r.getMessage()}
    assert levels == {logging.INFO}
