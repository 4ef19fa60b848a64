"""Mixed meshes: zeromesh with the seed's C programs (emulated byte for byte in
:mod:`cpeer`), in both directions, converging to a full mesh and all leaving."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from conftest import wait_for
from zeromesh import Peer, Proxy
from zeromesh.proxy import ProxyMode
from zeromesh.testing.cpeer import CPeer, CProxy

pytestmark = pytest.mark.timeout(40)

#: The C peer joins on its second 1 s poll turn; allow for a loaded machine.
C_JOIN = 8.0


Member = Peer | CPeer


def view(m: Member) -> set[str]:
    return set(m.peers()) if isinstance(m, Peer) else set(m.table())


def full_mesh(members: list[Member]) -> bool:
    want = {m.uuid for m in members}
    return all(view(m) == want for m in members)


@pytest.fixture
def cpeers() -> Iterator[list[CPeer]]:
    started: list[CPeer] = []
    yield started
    for c in started:
        c.leave()  # all at once: each needs up to one 1 s turn to notice
    for c in started:
        c.stop()


def leave_all(members: list[Member]) -> None:
    """Every member leaves at once; each must hear its own D (no timeouts)."""
    for m in members:
        m.leave()
    for m in members:
        if isinstance(m, Peer):
            assert m.stop(6.0), f"zeromesh peer {m.uuid} did not stop"
            assert m.exit_reason == "left", m.exit_reason
        else:
            assert m.stop(6.0), f"C peer {m.uuid} did not hear its own D ({m.exit_reason})"


def test_zeromesh_peers_on_a_c_proxy(peers: list[Peer]) -> None:
    with CProxy() as cproxy:
        peers.extend(Peer(cproxy.endpoint).start() for _ in range(4))
        assert wait_for(lambda: full_mesh(list(peers)), 5.0)
        assert all(not p.bad for p in peers), [p.bad for p in peers]  # the C welcome's garbage decodes
        leave_all(list(peers))


def test_c_peers_on_a_zeromesh_proxy(proxy: Proxy, cpeers: list[CPeer]) -> None:
    cpeers.extend(CPeer(proxy.endpoint).start() for _ in range(3))
    assert wait_for(lambda: full_mesh(list(cpeers)), C_JOIN)
    # The zeromesh proxy's welcome and stamped C frames carry the extension;
    # the C peers truncate them to 295 bytes and read the classic fields.
    assert all(c.long_frames > 0 and c.short_frames == 0 for c in cpeers)
    assert all(set(c.table().values()) == {x.endpoint for x in cpeers} for c in cpeers)
    assert not proxy.bad, proxy.bad  # their garbage-filled frames are valid
    assert wait_for(lambda: len(proxy.directory.entries) == 3, 2.0)
    leave_all(list(cpeers))
    assert wait_for(lambda: not proxy.directory.entries, 2.0)


@pytest.mark.parametrize("proxy_kind", ["zeromesh", "zeromesh-classic", "c"])
def test_mixed_peers_on_one_proxy(proxy_kind: str, peers: list[Peer], cpeers: list[CPeer]) -> None:
    with ExitStack() as stack:
        if proxy_kind == "c":
            endpoint = stack.enter_context(CProxy()).endpoint
        else:
            mode: ProxyMode = "classic" if proxy_kind == "zeromesh-classic" else "directory"
            endpoint = stack.enter_context(Proxy("tcp://127.0.0.1:0", mode=mode)).endpoint
        # Interleave joins so each kind meets the other as newcomer and as old-timer.
        peers.append(Peer(endpoint).start())
        cpeers.append(CPeer(endpoint).start())
        peers.append(Peer(endpoint).start())
        cpeers.append(CPeer(endpoint).start())
        members: list[Member] = [*peers, *cpeers]
        assert wait_for(lambda: full_mesh(members), C_JOIN)
        for m in members:  # the same endpoints everywhere: no garbage leaked into a table
            assert set((m.peers() if isinstance(m, Peer) else m.table()).items()) == {
                (x.uuid, x.endpoint) for x in members
            }
        assert all(not p.bad for p in peers), [p.bad for p in peers]
        if proxy_kind == "zeromesh":
            assert all(c.long_frames > 0 for c in cpeers)

        # A C peer leaves: the zeromesh peers see it go; then everyone leaves.
        gone = cpeers[0]
        assert gone.stop(6.0)
        rest = [m for m in members if m is not gone]
        assert wait_for(lambda: full_mesh(rest), 4.0)
        leave_all(rest)


def test_a_late_zeromesh_peer_learns_of_c_peers_through_their_reannounce(
    cpeers: list[CPeer], peers: list[Peer]
) -> None:
    """On a C proxy there is no directory: a newcomer depends on the seed's
    rule that everybody re-announces to every newcomer."""
    with CProxy() as cproxy:
        cpeers.extend(CPeer(cproxy.endpoint).start() for _ in range(2))
        assert wait_for(lambda: full_mesh(list(cpeers)), C_JOIN)
        late = Peer(cproxy.endpoint).start()
        peers.append(late)
        assert late.wait_ready(2.0)
        members: list[Member] = [late, *cpeers]
        assert wait_for(lambda: full_mesh(members), 4.0)
        leave_all(members)
