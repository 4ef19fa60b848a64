"""Shared fixtures. Every test runs under :func:`no_leaks`: a test that leaves
a thread, a child process or open file descriptors (zmq contexts and sockets
hold several each) behind fails."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import psutil
import pytest

from zeromesh.peer import Peer
from zeromesh.proxy import Proxy
from zeromesh.testing.waits import wait_for  # the one bounded wait; tests import it from here

#: How long a test's leftovers may take to wind down before they count as leaks.
LEAK_GRACE = 3.0


def data_flows(sender: Peer, receivers: list[Peer], payload: bytes = b"payload", timeout: float = 5.0) -> bool:
    """Publish until every receiver got one message (data SUBs connect
    asynchronously after the mesh view converges), then check what arrived."""
    got: dict[str, object] = {}

    def delivered() -> bool:
        sender.publish(b"news", payload)
        for r in receivers:
            m = r.recv(0.01)
            if m is not None:
                got[r.uuid] = m
        return len(got) == len(receivers)

    return wait_for(delivered, timeout) and all(
        getattr(m, "topic", None) == b"news"
        and getattr(m, "payload", None) == payload
        and getattr(m, "sender", None) == sender.uuid
        for m in got.values()
    )


def _snapshot() -> tuple[set[int], set[int], int]:
    me = psutil.Process()
    threads = {t.ident for t in threading.enumerate() if t.ident is not None}
    children = {c.pid for c in me.children(recursive=True)}
    return threads, children, me.num_fds()


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    threads0, children0, fds0 = _snapshot()
    yield

    def clean() -> bool:
        threads, children, fds = _snapshot()
        return threads <= threads0 and children <= children0 and fds <= fds0

    if wait_for(clean, LEAK_GRACE, 0.02):
        return
    _, children, fds = _snapshot()
    problems = []
    extra_threads = [t for t in threading.enumerate() if t.ident not in threads0]
    if extra_threads:
        problems.append(f"threads left running: {[t.name for t in extra_threads]}")
    extra_children = children - children0
    if extra_children:
        problems.append(f"child processes left: {sorted(extra_children)}")
        for pid in extra_children:  # stop them so later tests start clean
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
    if fds > fds0:
        problems.append(f"{fds - fds0} file descriptors left open (sockets or contexts not closed)")
    pytest.fail("test leaked: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    with Proxy("tcp://127.0.0.1:0") as p:
        yield p


@pytest.fixture
def classic_proxy() -> Iterator[Proxy]:
    with Proxy("tcp://127.0.0.1:0", mode="classic") as p:
        yield p


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """A list to put started peers in; all are stopped (bounded) at the end."""
    started: list[Peer] = []
    yield started
    for p in started:
        assert p.stop(5.0), f"peer {p.uuid} did not stop"


def full_mesh(peers: list[Peer]) -> bool:
    want = {p.uuid for p in peers}
    return all(set(p.peers()) == want for p in peers)


@pytest.fixture(scope="session")
def zeromesh_exe() -> list[str]:
    """How tests run the CLI in a child process (the venv's own interpreter)."""
    import sys

    return [sys.executable, "-m", "zeromesh"]


os.environ.setdefault("PYTHONUNBUFFERED", "1")
