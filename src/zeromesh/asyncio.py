"""zeromesh from an asyncio event loop: :class:`AsyncPeer` and :class:`AsyncProxy`.

An :class:`AsyncPeer` runs a :class:`~zeromesh.peer.Peer` (its sockets stay on
the peer's own loop thread) and hands its events and messages to the event
loop through a socketpair the loop watches (``loop.add_reader``): the peer's
thread appends to a queue and writes one byte when the queue goes from empty
to non-empty, the loop wakes the coroutines waiting. No thread per call, no
polling; ``publish()`` is non-blocking and needs no await.

::

    async with AsyncProxy() as proxy, AsyncPeer(proxy.endpoint, meta={"role": "api"}) as peer:
        await peer.wait_ready()
        peer.publish(b"topic", b"payload")
        async for ev in peer.events():       # ready, join, leave, proxy_down, proxy_up, exit
            print(ev.kind, ev.uuid, ev.endpoint, dict(ev.meta))
        msg = await peer.recv()               # DataMessage(topic, sender, payload)

Cancelling a coroutine waiting in :meth:`AsyncPeer.recv`, :meth:`AsyncPeer.events`
or :meth:`AsyncPeer.wait_ready` leaves nothing behind. :meth:`AsyncPeer.close`
is idempotent and bounded (the peer's leave is, see :data:`~zeromesh.timing.LEAVE_TIMEOUT`),
and finishes even when the coroutine awaiting it is cancelled.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Generic, TypeVar

from . import timing, transport
from .options import SeedBehaviour, Tuning
from .peer import DataMessage, Member, Peer, PeerStats
from .protocol import PeerEvent
from .proxy import Proxy, ProxyMode, ProxyStats
from .security import Security

_T = TypeVar("_T")

__all__ = ["AsyncPeer", "AsyncProxy", "ClosedError"]


class ClosedError(Exception):
    """The peer has ended: no more events or messages will come."""


class _Bridge(Generic[_T]):
    """Items pushed from another thread, awaited on one event loop.

    Thread use: :meth:`push` and :meth:`end` from any thread; everything else
    on the event loop.
    """

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[_T] = collections.deque()
        self._maxlen = maxlen
        self.dropped = 0
        #: No more items will be pushed (the peer has ended).
        self.ended = False
        #: A wake byte is in flight: later pushes need not write another.
        self._pending = False
        self._r, self._w = transport.wake_pair()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._woken = asyncio.Event()
        loop.add_reader(self._r.fileno(), self._on_readable)

    @property
    def closed(self) -> bool:
        return self._r.fileno() == -1

    def close(self) -> None:
        if self._loop is not None and not self.closed:
            self._loop.remove_reader(self._r.fileno())
        self._r.close()
        self._w.close()
        if self._woken is not None:
            self._woken.set()  # waiters see the end

    # --- any thread ----------------------------------------------------------

    def push(self, item: _T) -> None:
        if len(self._items) >= self._maxlen:
            self.dropped += 1
            return
        self._items.append(item)
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        if self._pending:
            return
        self._pending = True
        try:
            self._w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # full (a wake is pending anyway) or closed

    # --- the event loop ------------------------------------------------------

    def _on_readable(self) -> None:
        self._pending = False  # before draining: a push after this writes again
        try:
            while self._r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        assert self._woken is not None
        self._woken.set()

    async def wait_woken(self) -> None:
        """Until the next wake (or the bridge's end)."""
        assert self._woken is not None, "not attached to an event loop"
        self._woken.clear()
        await self._woken.wait()

    async def get(self) -> _T:
        while True:
            try:
                return self._items.popleft()
            except IndexError:
                pass
            if self.ended or self.closed:
                raise ClosedError("the peer has ended")
            assert self._woken is not None, "not attached to an event loop"
            self._woken.clear()
            if self._items or self.ended:  # pushed between the pop and the clear
                continue
            await self._woken.wait()


class AsyncPeer:
    """A :class:`~zeromesh.peer.Peer` for asyncio. Arguments are the peer's
    (checked at once, ``TypeError``/:class:`~zeromesh.errors.ConfigError`),
    without the callbacks: events and messages come by ``await``."""

    def __init__(
        self,
        proxy: str | Sequence[str],
        *,
        bind: str = "tcp://127.0.0.1:0",
        advertise: str | None = None,
        uuid: str | None = None,
        lifetime: float | None = None,
        max_queued: int = 10_000,
        security: Security | None = None,
        tuning: Tuning | None = None,
        seed: SeedBehaviour | None = None,
        meta: Mapping[str, str] | None = None,
        receive_own: bool = False,
        publishes: Sequence[bytes] | None = None,
        subscribes: Sequence[bytes] | None = None,
    ) -> None:
        self._events: _Bridge[PeerEvent] = _Bridge(max_queued)
        self._messages: _Bridge[DataMessage] = _Bridge(max_queued)
        self.peer = Peer(
            proxy,
            bind=bind,
            advertise=advertise,
            uuid=uuid,
            lifetime=lifetime,
            on_event=self._on_event,
            on_message=self._messages.push,
            max_queued=max_queued,
            security=security,
            tuning=tuning,
            seed=seed,
            meta=meta,
            receive_own=receive_own,
            publishes=publishes,
            subscribes=subscribes,
        )
        self._closing: asyncio.Task[bool] | None = None
        self._attached = False

    # --- the peer's thread ----------------------------------------------------

    def _on_event(self, ev: PeerEvent) -> None:
        self._events.push(ev)
        if ev.kind == "exit":
            self._events.end()
            self._messages.end()

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> AsyncPeer:
        """Bind and start the peer (binding takes milliseconds; errors such as
        a port in use are raised here)."""
        loop = asyncio.get_running_loop()
        self._events.attach(loop)
        self._messages.attach(loop)
        self._attached = True
        try:
            self.peer.start()
        except BaseException:
            self._detach()
            raise
        return self

    async def close(self) -> bool:
        """Leave, and wait until the peer has closed everything; idempotent.
        True if the peer ended in time. Cancelling the caller does not stop
        the closing (it runs as a task of its own)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._finish())
        return await asyncio.shield(self._closing)

    async def _finish(self) -> bool:
        ok = False
        try:
            if self.peer._thread is not None:  # started
                self.peer.leave()

                async def ended() -> None:
                    while not self._events.ended:
                        await self._events.wait_woken()

                try:
                    await asyncio.wait_for(ended(), self.peer.tuning.leave_timeout + 3.0)
                except asyncio.TimeoutError:
                    pass
            # The exit event is emitted just before the thread ends: this join is short.
            ok = self.peer.stop(2.0 if self._events.ended else self.peer.tuning.leave_timeout + 3.0)
        finally:
            self._detach()
        return ok

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            self._events.close()
            self._messages.close()

    async def __aenter__(self) -> AsyncPeer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- application API ----------------------------------------------------

    @property
    def uuid(self) -> str:
        return self.peer.uuid

    @property
    def endpoint(self) -> str | None:
        return self.peer.endpoint

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the peer has heard its own ``C``; False after *timeout*
        or if it ended first."""

        async def ready() -> bool:
            while not self.peer.wait_ready(0):
                if self._events.ended:
                    return False
                await self._events.wait_woken()
            return True

        try:
            return await asyncio.wait_for(ready(), timeout)
        except asyncio.TimeoutError:
            return False

    async def next_event(self) -> PeerEvent:
        """The next event; :class:`ClosedError` after the ``exit`` event."""
        return await self._events.get()

    async def events(self) -> AsyncIterator[PeerEvent]:
        """Every event until (and including) ``exit``."""
        while True:
            try:
                ev = await self._events.get()
            except ClosedError:
                return
            yield ev
            if ev.kind == "exit":
                return

    async def recv(self) -> DataMessage:
        """The next data message; :class:`ClosedError` once the peer has
        ended and nothing is left. Bound it with ``asyncio.wait_for``."""
        return await self._messages.get()

    def publish(self, topic: bytes, payload: bytes) -> None:
        """Send to every other peer; never blocks (see :meth:`Peer.publish`)."""
        self.peer.publish(topic, payload)

    def peers(self) -> dict[str, str]:
        return self.peer.peers()

    def members(self) -> dict[str, Member]:
        return self.peer.members()

    def stats(self) -> PeerStats:
        s = self.peer.stats()
        if self._events.dropped or self._messages.dropped:
            import dataclasses

            s = dataclasses.replace(
                s,
                dropped_events=s.dropped_events + self._events.dropped,
                dropped_messages=s.dropped_messages + self._messages.dropped,
            )
        return s


class AsyncProxy:
    """A :class:`~zeromesh.proxy.Proxy` for asyncio: its loop runs on a thread
    of its own; :meth:`close` asks it to stop and awaits the end without
    blocking the event loop."""

    def __init__(
        self,
        bind: str = "tcp://127.0.0.1:0",
        *,
        xsub_bind: str = "tcp://127.0.0.1:0",
        advertise: str | None = None,
        mode: ProxyMode = "directory",
        security: Security | None = None,
    ) -> None:
        self.proxy = Proxy(bind, xsub_bind=xsub_bind, advertise=advertise, mode=mode, security=security)
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self.proxy.endpoint

    @property
    def uuid(self) -> str:
        return self.proxy.uuid

    async def start(self) -> AsyncProxy:
        self.proxy.start()
        return self

    async def close(self, timeout: float = 2.0) -> bool:
        """Stop; idempotent and bounded. True if the loop ended in time."""
        if self._closed:
            return self.proxy.wait_done(0)
        self._closed = True
        if self.proxy._thread is None:
            return self.proxy.stop()
        self.proxy.request_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # The proxy's loop checks its stop flag every STOP_POLL; look a few times as often.
        while not self.proxy.wait_done(0) and loop.time() < deadline:
            await asyncio.sleep(timing.STOP_POLL / 4)  # sleep: bounded wait on the proxy thread's end
        return self.proxy.stop(0.5)

    def stats(self) -> ProxyStats:
        return self.proxy.stats()

    async def __aenter__(self) -> AsyncProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
