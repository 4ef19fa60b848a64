"""In-process meshes: convergence, data delivery, leaving, bounded shutdown."""

from __future__ import annotations

import time

import pytest

from conftest import data_flows, full_mesh, wait_for
from zeromesh import Peer, Proxy, SeedBehaviour, Tuning

pytestmark = pytest.mark.timeout(30)


def test_full_mesh_of_ten_converges_and_leaves(proxy: Proxy, peers: list[Peer]) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(10))
    assert all(p.wait_ready(2.0) for p in peers)
    assert wait_for(lambda: full_mesh(peers), 3.0)
    assert wait_for(lambda: len(proxy.directory.entries) == 10, 2.0)
    leaver = peers.pop()
    assert leaver.stop(3.0)
    assert leaver.exit_reason == "left"
    assert wait_for(lambda: full_mesh(peers), 2.0)
    assert wait_for(lambda: leaver.uuid not in proxy.directory.entries, 2.0)


def test_data_reaches_every_other_peer(proxy: Proxy, peers: list[Peer]) -> None:
    peers.extend(Peer(proxy.endpoint).start() for _ in range(4))
    assert wait_for(lambda: full_mesh(peers), 3.0)
    assert data_flows(peers[0], peers[1:])


def test_join_is_fast(proxy: Proxy, peers: list[Peer]) -> None:
    t0 = time.monotonic()
    peers.append(Peer(proxy.endpoint).start())
    assert peers[0].wait_ready(1.0)
    # The seed's peer needs a full 1 s poll turn; the backoff retry must beat it by far.
    assert time.monotonic() - t0 < 0.5


def test_lifetime_ends_in_bounded_exit(proxy: Proxy) -> None:
    p = Peer(proxy.endpoint, lifetime=0.2).start()
    assert p.wait_done(3.0)
    assert p.exit_reason == "left"
    assert p.stop(1.0)


def test_exit_is_bounded_when_proxy_is_gone() -> None:
    px = Proxy("tcp://127.0.0.1:0").start()
    p = Peer(px.endpoint, tuning=Tuning(leave_timeout=0.5)).start()
    assert p.wait_ready(2.0)
    px.stop()
    t0 = time.monotonic()
    assert p.stop(3.0)
    assert p.exit_reason == "timeout"
    assert time.monotonic() - t0 < 2.0


def test_classic_peer_meets_default_peer(proxy: Proxy, peers: list[Peer]) -> None:
    classic = Peer(proxy.endpoint, seed=SeedBehaviour.classic())
    peers.append(Peer(proxy.endpoint).start())
    peers.append(classic.start())
    assert wait_for(lambda: full_mesh(peers), 5.0)
