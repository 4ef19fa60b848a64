"""zeromesh.asyncio: events and messages awaited on the event loop through a
watched descriptor, no thread per call; cancellation and close() bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from zeromesh import Tuning
from zeromesh.asyncio import AsyncPeer, AsyncProxy, ClosedError
from zeromesh.peer import DataMessage
from zeromesh.protocol import PeerEvent

pytestmark = pytest.mark.timeout(60)


async def next_kind(peer: AsyncPeer, kind: str, timeout: float = 5.0) -> PeerEvent:
    async def find() -> PeerEvent:
        async for ev in peer.events():
            if ev.kind == kind:
                return ev
        raise AssertionError(f"no {kind} event before exit")

    return await asyncio.wait_for(find(), timeout)


async def recv_published(sender: AsyncPeer, receiver: AsyncPeer, payload: bytes) -> DataMessage:
    """Publish until the receiver gets one (its data SUB connects after the
    join, asynchronously); each wait is bounded."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        sender.publish(b"news", payload)
        try:
            return await asyncio.wait_for(receiver.recv(), 0.05)
        except asyncio.TimeoutError:
            continue
    raise AssertionError("no message within 5 s")


def test_events_messages_and_close() -> None:
    async def main() -> None:
        async with AsyncProxy() as proxy:
            async with AsyncPeer(proxy.endpoint, meta={"role": "a"}) as a:
                assert await a.wait_ready(5)
                ready = await next_kind(a, "ready")
                assert (ready.uuid, ready.endpoint, dict(ready.meta)) == (a.uuid, a.endpoint, {"role": "a"})
                async with AsyncPeer(proxy.endpoint, meta={"role": "b"}) as b:
                    assert await b.wait_ready(5)
                    join = await next_kind(a, "join")
                    assert (join.kind, join.uuid, join.endpoint, dict(join.meta)) == (
                        "join",
                        b.uuid,
                        b.endpoint,
                        {"role": "b"},
                    )
                    msg = await recv_published(a, b, b"hello")
                    assert (msg.topic, msg.sender, msg.payload) == (b"news", a.uuid, b"hello")
                    # The event comes before the table's snapshot is published: wait for it.
                    while b.uuid not in a.members():
                        await asyncio.sleep(0.005)  # sleep: polling interval (bounded by the test timeout)
                    assert dict(a.members()[b.uuid].meta) == {"role": "b"}
                leave = await next_kind(a, "leave")
                assert (leave.uuid, leave.reason) == (b.uuid, "left")
                assert await b.close()  # idempotent
            kinds = [ev.kind async for ev in a.events()]
            assert kinds[-1:] == ["exit"]
            with pytest.raises(ClosedError):
                await a.recv()
            assert proxy.proxy.wait_done(0) is False

    asyncio.run(main())


def test_waiting_uses_no_thread_and_cancellation_is_clean() -> None:
    async def main() -> None:
        async with AsyncProxy() as proxy, AsyncPeer(proxy.endpoint) as a:
            assert await a.wait_ready(5)
            threads = threading.active_count()
            waiters: list[asyncio.Task[object]] = [asyncio.create_task(a.recv()) for _ in range(100)]
            waiters += [asyncio.create_task(a.next_event()) for _ in range(100)]
            await asyncio.sleep(0.05)  # sleep: let every waiter block in its await
            assert threading.active_count() == threads  # no thread per call
            for w in waiters:
                w.cancel()
            results = await asyncio.gather(*waiters, return_exceptions=True)
            # Every recv waiter was cancelled; event waiters too, or got an already queued event.
            assert all(isinstance(r, (asyncio.CancelledError, PeerEvent)) for r in results)
            assert all(isinstance(r, asyncio.CancelledError) for r in results[:100])
            # The peer still works after the cancellations.
            async with AsyncPeer(proxy.endpoint) as b:
                assert await b.wait_ready(5)
                msg = await recv_published(b, a, b"after")
                assert msg.payload == b"after"

    asyncio.run(main())


def test_close_is_bounded_without_a_proxy_and_survives_its_caller_being_cancelled() -> None:
    async def main() -> None:
        proxy = await AsyncProxy().start()
        peer = await AsyncPeer(proxy.endpoint, tuning=Tuning(leave_timeout=0.5)).start()
        assert await peer.wait_ready(5)
        assert await proxy.close()
        t0 = time.monotonic()
        closing = asyncio.create_task(peer.close())
        await asyncio.sleep(0.01)  # sleep: let close() start
        closing.cancel()  # the caller gives up; the closing goes on
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert await asyncio.wait_for(peer.close(), 5.0)  # the same closing, awaited again
        assert time.monotonic() - t0 < 0.5 + 3.0
        assert peer.peer.done

    asyncio.run(main())


def test_event_loop_stays_responsive_while_closing() -> None:
    async def main() -> None:
        proxy = await AsyncProxy().start()
        # Without a proxy the leave waits its whole timeout for its own D:
        # a close that blocked the loop would show one gap that long.
        peer = await AsyncPeer(proxy.endpoint, tuning=Tuning(leave_timeout=1.0)).start()
        assert await peer.wait_ready(5)
        assert await proxy.close()
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.005)  # sleep: measuring the loop's latency
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        t0 = time.monotonic()
        assert await peer.close()
        took = time.monotonic() - t0
        tick.cancel()
        assert took >= 0.9, took  # it did wait for the leave
        # A close that blocked the loop would leave the ticker no turn until it
        # returned (~0 ticks); a loaded box stalls now and then, so count turns.
        assert len(gaps) >= 10, gaps

    asyncio.run(main())
