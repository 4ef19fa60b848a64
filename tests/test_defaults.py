"""Each zeromesh default of issue 2 section 4, by a test that fails without it:
the seed's behaviour (switched back on) is run next to the default wherever
that is cheap, so each test shows the difference it guards."""

from __future__ import annotations

import statistics
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
import zmq

from conftest import wait_for
from zeromesh import Peer, Proxy, Tuning, timing, transport
from zeromesh.protocol import Behaviour, PeerProtocol, Send
from zeromesh.sockets import LingerWhen, PeerSockets, SocketPolicy
from zeromesh.wire import Command, Message, decode, encode

pytestmark = pytest.mark.timeout(30)

LINGER = 7  # distinct from both 0 and libzmq's -1
NAMES = ("data_pub", "proxy_pub", "proxy_sub", "data_sub")


# --- linger at creation, before bind/connect ------------------------------------------


@pytest.mark.parametrize(
    ("when", "at_creation", "before_close"),
    [
        (LingerWhen.CREATION, LINGER, LINGER),  # zeromesh
        (LingerWhen.AFTER_BIND, -1, LINGER),  # too late: listeners/sessions copied -1
        (LingerWhen.BEFORE_CLOSE, -1, -1),  # the seed's default
    ],
)
def test_linger_is_set_when_each_socket_is_created(
    monkeypatch: pytest.MonkeyPatch, when: LingerWhen, at_creation: int, before_close: int
) -> None:
    """The PUB sockets are the ones that matter (they queue for departed peers);
    libzmq's SUB sockets default to linger 0 anyway."""
    seen: list[tuple[int, int]] = []  # (socket type, LINGER) as _socket returned: before bind/connect
    original = PeerSockets._socket

    def spy(self: PeerSockets, kind: int, name: str) -> zmq.Socket[Any]:
        s = original(self, kind, name)
        linger = s.getsockopt(zmq.LINGER)
        assert isinstance(linger, int)
        seen.append((kind, linger))
        return s

    monkeypatch.setattr(PeerSockets, "_socket", spy)
    s = PeerSockets(
        SocketPolicy(linger_ms=LINGER, linger_when=when),
        "tcp://127.0.0.1:0",
        None,
        "tcp://127.0.0.1:9",
        monitor_data=False,
    )
    try:
        assert len(seen) == 4
        # The proxy PUB is an XPUB by default (it watches the proxy subscribe).
        assert [linger for kind, linger in seen if kind in (zmq.PUB, zmq.XPUB)] == [at_creation] * 2
        if when is LingerWhen.CREATION:
            assert [linger for _, linger in seen] == [LINGER] * 4
        assert [s.data_pub.getsockopt(zmq.LINGER), s.proxy_pub.getsockopt(zmq.LINGER)] == [before_close] * 2
    finally:
        s.close()


def test_a_running_default_peer_has_linger_zero_everywhere(proxy: Proxy, peers: list[Peer]) -> None:
    p = Peer(proxy.endpoint).start()
    peers.append(p)
    assert p.wait_ready(2.0)
    assert p._sockets is not None
    assert [getattr(p._sockets, n).getsockopt(zmq.LINGER) for n in NAMES] == [0] * 4


# --- the data PUB's command queue is processed every loop turn -----------------------------


class Turns:
    """Counts the peer loop's polls, and kicks per socket."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.polls = 0
        self.kicks: Counter[int] = Counter()  # id(socket) -> kicks
        self.lock = threading.Lock()
        turns = self
        real_kick = transport.kick

        class CountingPoller(zmq.Poller):
            def poll(self, timeout: int | None = None) -> Any:
                if threading.current_thread().name.startswith("zeromesh-peer"):
                    with turns.lock:
                        turns.polls += 1
                return super().poll(timeout)

        def counting_kick(sock: zmq.Socket[Any]) -> None:
            with turns.lock:
                turns.kicks[id(sock)] += 1
            real_kick(sock)

        monkeypatch.setattr(zmq, "Poller", CountingPoller)
        monkeypatch.setattr(transport, "kick", counting_kick)

    def snapshot(self, sock: zmq.Socket[Any] | None = None) -> tuple[int, int]:
        """(polls, kicks of *sock*, or of all sockets)"""
        with self.lock:
            return self.polls, self.kicks[id(sock)] if sock is not None else sum(self.kicks.values())


def test_the_data_pub_is_kicked_on_every_loop_turn(
    monkeypatch: pytest.MonkeyPatch, proxy: Proxy, peers: list[Peer]
) -> None:
    turns = Turns(monkeypatch)
    p = Peer(proxy.endpoint).start()
    peers.append(p)
    assert p.wait_ready(2.0)
    assert p._sockets is not None
    pub = p._sockets.data_pub
    # Idle, the loop still turns (at least every KICK_INTERVAL) and kicks each time.
    assert wait_for(lambda: turns.snapshot(pub)[1] >= 5, 0.5 + 10 * timing.KICK_INTERVAL)
    polls, kicks = turns.snapshot(pub)
    assert polls - 1 <= kicks <= polls  # the data PUB's kick follows each poll


def test_no_kick_never_touches_the_data_pub(monkeypatch: pytest.MonkeyPatch, proxy: Proxy) -> None:
    turns = Turns(monkeypatch)
    p = Peer(proxy.endpoint, layers=(Behaviour(), SocketPolicy(kick=False))).start()
    assert p.wait_ready(2.0)
    assert p.stop(3.0)  # joining and leaving take several loop turns
    polls, kicks = turns.snapshot()
    assert polls >= 3 and kicks == 0


# --- a scripted proxy: the test decides what the peer hears -------------------------------


class ScriptedProxy:
    """XPUB with a welcome naming the test's own SUB (the "XSUB"): the test sees
    every frame the peer sends and echoes only what it chooses."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.ctx.linger = 0
        self.inbox = self.ctx.socket(zmq.SUB)
        self.inbox.setsockopt(zmq.SUBSCRIBE, b"")
        self.inbox.bind("tcp://127.0.0.1:0")
        self.xsub = self.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
        self.xpub = self.ctx.socket(zmq.XPUB)
        self.uuid = str(uuidlib.uuid4())
        self.xpub.setsockopt(zmq.XPUB_WELCOME_MSG, encode(Message(Command.WELCOME, self.uuid, self.xsub)))
        self.xpub.bind("tcp://127.0.0.1:0")
        self.endpoint = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)

    def recv(self, timeout: float) -> tuple[float, Message] | None:
        """The next frame a peer sent, with its arrival time. Polls the XPUB
        too: it attaches newcomers (and sends them the welcome) only when it
        processes its commands, as the real proxy's loop makes it do."""
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(max(1, int(left * 1000))))
            if self.xpub in ready:
                self.xpub.recv_multipart()  # a subscription: nothing to forward
            if self.inbox in ready:
                return time.monotonic(), decode(self.inbox.recv())
        return None

    def send(self, msg: Message) -> None:
        self.xpub.send(encode(msg))

    def close(self) -> None:
        self.ctx.destroy(linger=0)


@pytest.fixture
def scripted() -> Iterator[ScriptedProxy]:
    s = ScriptedProxy()
    yield s
    s.close()


def frames_until(s: ScriptedProxy, t_end: float) -> list[tuple[float, Message]]:
    out = []
    while (left := t_end - time.monotonic()) > 0:
        got = s.recv(left)
        if got is not None:
            out.append(got)
    return out


@pytest.mark.parametrize("reannounce_while_leaving", [False, True], ids=["default", "seed"])
def test_a_leaving_peer_does_not_reannounce(
    scripted: ScriptedProxy, peers: list[Peer], reannounce_while_leaving: bool
) -> None:
    p = Peer(
        scripted.endpoint,
        layers=(Behaviour(reannounce_while_leaving=reannounce_while_leaving, leave_timeout=3.0), SocketPolicy()),
    )
    peers.append(p.start())
    first = scripted.recv(3.0)
    assert first is not None and first[1].command is Command.CONNECT
    scripted.send(first[1])  # echo our C: the peer is ready
    assert p.wait_ready(2.0)
    p.leave()
    assert wait_for(lambda: (got := scripted.recv(0.05)) is not None and got[1].command is Command.DISCONNECT, 2.0)
    newcomer = Message(Command.CONNECT, str(uuidlib.uuid4()), "tcp://127.0.0.1:9")
    scripted.send(newcomer)  # a newcomer announces itself while we wait for our own D
    # D is retried every ANNOUNCE_RETRY_SUBSCRIBED once the proxy's subscription is seen.
    heard = frames_until(scripted, time.monotonic() + timing.ANNOUNCE_RETRY_SUBSCRIBED + 0.5)
    commands = Counter(m.command for _, m in heard if m.uuid == p.uuid)
    assert commands[Command.DISCONNECT] >= 1  # still retrying D
    assert (commands[Command.CONNECT] > 0) is reannounce_while_leaving
    scripted.send(Message(Command.DISCONNECT, p.uuid, p.endpoint or ""))
    assert p.wait_done(3.0) and p.exit_reason == "left"


# --- C retried with a short backoff: ready in milliseconds ------------------------------------


def test_c_retries_start_within_milliseconds_and_back_off_to_the_cap(
    scripted: ScriptedProxy, peers: list[Peer]
) -> None:
    # A plain PUB proxy socket (no subscription to watch): the fast backoff.
    p = Peer(scripted.endpoint, layers=(Behaviour(leave_timeout=0.2), SocketPolicy(watch_subscription=False))).start()
    peers.append(p)
    window = 1.5
    heard = frames_until(scripted, time.monotonic() + window)  # never echoed: keeps retrying
    times = [t for t, m in heard if m.command is Command.CONNECT and m.uuid == p.uuid]
    assert len(times) >= 6
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps[0] < 0.05  # the seed's loop: 1 s
    assert max(gaps) < timing.ANNOUNCE_RETRY_MAX + 0.15  # capped (plus scheduling slack)
    assert len(times) < window / timing.ANNOUNCE_RETRY_MAX + 12  # and not a flood


def test_c_goes_out_when_the_proxy_subscribes_then_is_retried_slowly(
    scripted: ScriptedProxy, peers: list[Peer]
) -> None:
    # Default: the proxy PUB is an XPUB, so the C is sent once the proxy's
    # subscription is in (it cannot be dropped then), and a retry is only a
    # safety net: no retry storm when a loaded proxy is slow to echo.
    p = Peer(scripted.endpoint, tuning=Tuning(leave_timeout=0.2)).start()
    peers.append(p)
    window = timing.ANNOUNCE_RETRY_SUBSCRIBED * 2.5
    t0 = time.monotonic()
    heard = frames_until(scripted, t0 + window)  # never echoed: keeps retrying
    times = [t for t, m in heard if m.command is Command.CONNECT and m.uuid == p.uuid]
    assert times and times[0] - t0 < 1.0  # the first C is not lost to the subscription race
    # (the C sent on the welcome itself may get through too: at most one twin)
    retries = [times[0]] + [t for t in times if t - times[0] > 0.1]
    assert len(times) - len(retries) <= 1
    assert 2 <= len(retries) <= 3  # then one per ANNOUNCE_RETRY_SUBSCRIBED
    assert min(b - a for a, b in pairwise(retries)) > timing.ANNOUNCE_RETRY_SUBSCRIBED * 0.8


def test_join_latency_is_milliseconds(proxy: Proxy) -> None:
    latencies = []
    for _ in range(5):
        t0 = time.monotonic()
        p = Peer(proxy.endpoint).start()
        try:
            assert p.wait_ready(2.0)
            latencies.append(time.monotonic() - t0)
        finally:
            assert p.stop(3.0)
    # The seed's peer hears itself on its second 1 s poll turn.
    assert statistics.median(latencies) < 0.25, latencies


def test_c_goes_out_on_the_welcome_and_again_when_the_proxy_subscribes() -> None:
    """The default peer watches the proxy's subscription (its proxy PUB is an
    XPUB): the first C races that subscription and may be dropped, so the
    subscription itself triggers the C that counts; the timer is only a 1 s
    safety net, never a fast retry (no retry storm under load). The seed
    sends one C per 1 s turn."""
    proto = PeerProtocol(str(uuidlib.uuid4()), "tcp://127.0.0.1:1", Behaviour())
    proto.watch_subscription = True
    out = proto.on_frame(Message(Command.WELCOME, str(uuidlib.uuid4()), "tcp://127.0.0.1:2"), 0.0)
    assert [a.msg.command for a in out if isinstance(a, Send)] == [Command.CONNECT]
    assert proto.next_deadline() == pytest.approx(timing.ANNOUNCE_RETRY_SUBSCRIBED)
    again = proto.on_proxy_subscription(True, 0.003)
    assert [a.msg.command for a in again if isinstance(a, Send)] == [Command.CONNECT]
    seed = PeerProtocol(str(uuidlib.uuid4()), "tcp://127.0.0.1:1", Behaviour.classic())
    seed.start(0.0)
    assert seed.on_proxy_subscription(True, 0.003) == []  # the seed has no subscription to watch


# --- bounded shutdown ---------------------------------------------------------------------------


def test_shutdown_is_bounded_when_our_d_never_comes_back(scripted: ScriptedProxy) -> None:
    p = Peer(scripted.endpoint, tuning=Tuning(leave_timeout=0.5)).start()
    first = scripted.recv(3.0)
    assert first is not None
    scripted.send(first[1])
    assert p.wait_ready(2.0)
    t0 = time.monotonic()
    assert p.stop(3.0)  # D is never echoed
    assert p.exit_reason == "timeout"
    assert 0.5 <= time.monotonic() - t0 < 2.0


def test_shutdown_is_bounded_without_any_proxy() -> None:
    p = Peer("tcp://127.0.0.1:9", tuning=Tuning(leave_timeout=0.3)).start()
    t0 = time.monotonic()
    assert p.stop(3.0)
    assert p.exit_reason == "timeout" and time.monotonic() - t0 < 1.5


def test_default_leave_timeout_bounds_an_exit(scripted: ScriptedProxy) -> None:
    p = Peer(scripted.endpoint).start()
    assert scripted.recv(3.0) is not None
    t0 = time.monotonic()
    assert p.stop(timing.LEAVE_TIMEOUT + 2.0)
    assert p.exit_reason == "timeout"
    assert time.monotonic() - t0 < timing.LEAVE_TIMEOUT + 1.0
