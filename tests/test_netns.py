"""A mesh across hosts built with network namespaces: a proxy on one host, peers
on two others, every process a real ``zeromesh`` child. Cutting one host's link
expires its peers on the other side within the bound; healing lets them rejoin.

Needs root and iproute2 (skipped with the reason otherwise); CI here runs as
root. Nothing may be left behind: namespaces, links and processes are checked.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from conftest import wait_for
from zeromesh import timing
from zeromesh.testing.netns import HostMesh, Topology, available, cleanup_stale, netns_names

OK, WHY = available()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(60),
    pytest.mark.skipif(not OK, reason=f"network namespaces unavailable: {WHY}"),
]

PREFIX = "zmtest"
#: The issue's bound on detecting a vanished peer (default settings).
EXPIRE_BOUND = 3.0
#: Rejoin after the link is back: reconnect (CONNECT_TIMEOUT bounded) + welcome + C.
HEAL_BOUND = 3.0
START = 10.0


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True, timeout=10)
    return sorted(line.split(":", 2)[1].strip() for line in out.stdout.splitlines())


@pytest.fixture
def mesh() -> Iterator[HostMesh]:
    cleanup_stale(PREFIX)  # leftovers of a killed run (never a live run's)
    links_before = root_links()
    topo = Topology(["px", "a", "b"], prefix=PREFIX)
    try:
        m = HostMesh(topo, per_host=2, start_timeout=START)
        try:
            yield m
        finally:
            m.close()
    finally:
        topo.close()
    assert not [n for n in netns_names() if n.startswith(topo.id)], "namespaces left behind"
    assert root_links() == links_before, "links left behind in the root namespace"


def test_mesh_spans_hosts_and_heals_after_a_partition(mesh: HostMesh) -> None:
    for host, cs in mesh.peers.items():  # each announces its host's address, not the wildcard
        assert all(mesh.endpoint[c].startswith(f"tcp://{mesh.topo.addr(host)}:") for c in cs)
    assert wait_for(mesh.full, START), "no full mesh across hosts"

    marks = mesh.marks()
    cut_at = time.time()
    mesh.topo.cut("b")
    # Each side expires the other: no RST ever arrives, only heartbeats tell.
    for gone in mesh.across("leave", marks, EXPIRE_BOUND + 3.0):
        assert len(gone) == 2, f"not expired across the cut: {gone}"
        assert all(e["reason"] == "expired" for e in gone.values())
        worst = max(float(e["t"]) for e in gone.values()) - cut_at
        assert worst <= EXPIRE_BOUND, f"expired {worst:.2f} s after the cut"

    marks = mesh.marks()
    healed_at = time.time()
    mesh.topo.heal("b")
    for back in mesh.across("join", marks, HEAL_BOUND + 3.0):
        assert len(back) == 2, f"did not rejoin after the heal: {back}"
        worst = max(float(e["t"]) for e in back.values()) - healed_at
        assert worst <= HEAL_BOUND, f"rejoined {worst:.2f} s after the heal"
    assert mesh.full()


def settle_watch() -> None:
    """The detection bounds are a settled mesh's: each peer dials its probes
    of the members it watches (heartbeated; data connections have none) up to
    WATCH_SETTLE after its ring last changed, and their handshakes follow."""
    time.sleep(timing.WATCH_SETTLE + 0.5)  # sleep: the watchers' probes come up (docs/liveness.md)


def blackhole(topo: Topology, host: str, other: str, on: bool) -> None:
    """Drop everything *host* sends to *other* (a route to nowhere)."""
    verb = "add" if on else "del"
    r = topo.run(host, ["ip", "route", verb, "blackhole", f"{topo.addr(other)}/32"], timeout=10)
    assert r.returncode == 0, r.stderr


def test_a_partial_partition_heals_by_itself(mesh: HostMesh) -> None:
    """a cannot reach b nor b a, yet both reach the proxy: each side expires
    the other (a suspicion), keeps dialling it at libzmq's reconnect pace, and
    lists it again once it proves itself after the path returns (it used to
    stay apart for good: docs/liveness.md)."""
    assert wait_for(mesh.full, START), "no full mesh across hosts"
    settle_watch()
    marks = mesh.marks()
    cut_at = time.time()
    blackhole(mesh.topo, "a", "b", True)
    blackhole(mesh.topo, "b", "a", True)
    try:
        # Nobody confirms these suspicions (the proxy sees both sides): declared
        # after the suspicion timeout (docs/membership.md).
        bound = timing.WATCH_HEARTBEAT_IVL + timing.HEARTBEAT_TIMEOUT + timing.EXPIRE_GRACE + timing.SUSPECT_TIMEOUT
        for gone in mesh.across("leave", marks, bound + 3.0):
            assert len(gone) == 2, f"not expired across the partial partition: {gone}"
            worst = max(float(e["t"]) for e in gone.values()) - cut_at
            assert worst <= bound + 0.5, f"expired {worst:.2f} s after the cut"
        marks = mesh.marks()
        # The proxy still sees everyone: no obituary, so nobody gives up.
        time.sleep(2.0)  # sleep: the partition lasts a while (the watch must outlive it)
    finally:
        blackhole(mesh.topo, "a", "b", False)
        blackhole(mesh.topo, "b", "a", False)
    healed_at = time.time()
    for back in mesh.across("join", marks, HEAL_BOUND + 3.0):
        assert len(back) == 2, f"did not meet again after the heal: {back}"
        worst = max(float(e["t"]) for e in back.values()) - healed_at
        assert worst <= HEAL_BOUND, f"met again {worst:.2f} s after the heal"
    assert wait_for(mesh.full, 2.0)
