"""The seed's C ``peer`` and C ``proxy``, emulated byte for byte with raw pyzmq.

Deliberately independent of zeromesh's codec: frames are the C struct
``{char command; char uuid[37]; char endpoint[257];}`` filled as ``strcpy``
fills a stack buffer (random garbage after each NUL), and read as
``zmq_recv(sock, &msg, 295, 0)`` reads them (longer frames truncated, a shorter
frame leaves the previous contents of the buffer in place). The peer's loop is
the seed's, turn for turn (see ``seed-system.md``):

1. after its lifetime, send ``D`` at the top of every turn;
2. poll proxy SUB and data SUB, 1000 ms;
3. while its own uuid is not in its table, send ``C``;
4. handle ONE proxy message: ``W`` connects the proxy PUB; ``C`` from an
   unknown uuid is recorded, the data SUB connects, and unless it is our own
   we send our ``C`` again (while leaving too); ``D`` from a known uuid is
   erased and disconnected, and ends the loop if it is our own;
5. read (and drop) ONE data message.

Each emulation runs on a thread with its own context; ``stop`` is bounded.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

import zmq

if TYPE_CHECKING:
    from typing_extensions import Self

#: The seed's struct, 295 bytes.
C_STRUCT = struct.Struct("=c37s257s")
SIZE = C_STRUCT.size


def c_message(command: bytes, uuid: str, endpoint: str) -> bytes:
    """A stack struct filled with ``strcpy``: garbage after every NUL."""
    buf = bytearray(os.urandom(SIZE))
    buf[0:1] = command
    u = uuid.encode("ascii")
    buf[1 : 1 + len(u) + 1] = u + b"\0"
    e = endpoint.encode("ascii")
    buf[38 : 38 + len(e) + 1] = e + b"\0"
    return bytes(buf)


def c_string(buf: bytearray, offset: int) -> str:
    """``std::string(msg.uuid)``: up to the first NUL (running past the field if there is none)."""
    end = buf.find(b"\0", offset)
    return bytes(buf[offset : end if end >= 0 else len(buf)]).decode("latin-1")


class CProxy:
    """``proxy.c``: XSUB on an ephemeral port, XPUB on the well-known address
    with a ``W`` welcome naming the XSUB, and ``zmq_proxy`` between them (the
    steerable variant, so a test can stop it)."""

    def __init__(self, bind: str = "tcp://127.0.0.1:0") -> None:
        self.uuid = str(uuidlib.uuid4())
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.ctx.linger = 0  # test hygiene only; the proxy's forwarding is unaffected
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xsub.bind("tcp://127.0.0.1:0")
        self.xsub_endpoint = self.xsub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.xpub = self.ctx.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.XPUB_WELCOME_MSG, c_message(b"W", self.uuid, self.xsub_endpoint))
        self.xpub.bind(bind)
        self.endpoint = self.xpub.getsockopt_string(zmq.LAST_ENDPOINT)
        control = f"inproc://cproxy-{self.uuid}"
        self._control = self.ctx.socket(zmq.PAIR)
        self._control.bind(control)
        self._control_peer = self.ctx.socket(zmq.PAIR)
        self._control_peer.connect(control)
        self._thread = threading.Thread(target=self._run, name="cproxy", daemon=True)

    def _run(self) -> None:
        zmq.proxy_steerable(self.xsub, self.xpub, None, self._control)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._control_peer.send(b"TERMINATE")
        self._thread.join(5.0)
        assert not self._thread.is_alive(), "C proxy emulation did not stop"
        self.ctx.destroy(linger=0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CPeer:
    """``peer.cpp`` with its default flags (linger 0, set just before close)."""

    def __init__(
        self,
        proxy: str,
        seconds: float | None = None,
        *,
        poll_ms: int = 1000,
        uuid: str | None = None,
    ) -> None:
        self.proxy = proxy
        self.uuid = uuid or str(uuidlib.uuid4())
        self.poll_ms = poll_ms
        self._lifetime = seconds
        self._end: float | None = None
        self._abort = False
        self._lock = threading.Lock()
        self._table: dict[str, str] = {}
        self.endpoint: str | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self._bound = threading.Event()
        self.exit_reason: str | None = None
        #: Frames seen on the discovery channel, by length class.
        self.long_frames = 0
        self.short_frames = 0
        self.frames = 0
        self.sent_c = 0
        self.sent_d = 0
        self._thread = threading.Thread(target=self._run, name=f"cpeer-{self.uuid[:8]}", daemon=True)

    # --- control from the test thread ----------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        assert self._bound.wait(5.0), "C peer emulation did not bind"
        return self

    def table(self) -> dict[str, str]:
        with self._lock:
            return dict(self._table)

    def leave(self) -> None:
        """End the lifetime now (the seed's ``-seconds`` running out)."""
        self._end = time.monotonic()

    def stop(self, timeout: float = 5.0) -> bool:
        """Leave as the seed does; True if it heard its own ``D`` in time. Bounded:
        after *timeout* the loop is aborted and the sockets closed anyway."""
        if not self._thread.is_alive() and self.done.is_set():
            return self.exit_reason == "left"
        self.leave()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort = True
            self._thread.join(self.poll_ms / 1000 + 2.0)
        assert not self._thread.is_alive(), "C peer emulation did not stop"
        return self.exit_reason == "left"

    # --- the seed's program ------------------------------------------------------------

    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        data_pub = ctx.socket(zmq.PUB)
        data_pub.bind("tcp://127.0.0.1:0")
        self.endpoint = data_pub.getsockopt_string(zmq.LAST_ENDPOINT)
        proxy_pub = ctx.socket(zmq.PUB)
        proxy_sub = ctx.socket(zmq.SUB)
        proxy_sub.setsockopt(zmq.SUBSCRIBE, b"")  # before connect, or the welcome is lost
        proxy_sub.connect(self.proxy)
        data_sub = ctx.socket(zmq.SUB)
        data_sub.setsockopt(zmq.SUBSCRIBE, b"")
        if self._lifetime is not None:
            self._end = time.monotonic() + self._lifetime
        self._bound.set()
        buf = bytearray(os.urandom(SIZE))  # ``peerMsg msg;`` on the stack, never cleared
        poller = zmq.Poller()
        poller.register(proxy_sub, zmq.POLLIN)
        poller.register(data_sub, zmq.POLLIN)
        try:
            while not self._abort:
                if self._end is not None and time.monotonic() >= self._end:
                    proxy_pub.send(c_message(b"D", self.uuid, self.endpoint))
                    self.sent_d += 1
                ready = dict(poller.poll(self.poll_ms))
                with self._lock:
                    heard_self = self.uuid in self._table
                if not heard_self:
                    proxy_pub.send(c_message(b"C", self.uuid, self.endpoint))
                    self.sent_c += 1
                if proxy_sub in ready and self._handle(proxy_sub.recv(), buf, proxy_pub, data_sub):
                    self.exit_reason = "left"
                    break
                if data_sub in ready:
                    data_sub.recv()  # read and dropped
            else:
                self.exit_reason = "aborted"
        finally:
            for s in (data_sub, proxy_sub, data_pub, proxy_pub):
                s.setsockopt(zmq.LINGER, 0)  # the seed's default: just before close
                s.close()
            ctx.term()
            self.done.set()

    def _handle(self, raw: bytes, buf: bytearray, proxy_pub: zmq.Socket[Any], data_sub: zmq.Socket[Any]) -> bool:
        """One proxy message; True when it is our own ``D``."""
        self.frames += 1
        if len(raw) > SIZE:
            self.long_frames += 1
        elif len(raw) < SIZE:
            self.short_frames += 1
        n = min(len(raw), SIZE)
        buf[:n] = raw[:n]  # zmq_recv(proxySub, &msg, sizeof msg, 0)
        command, uuid, endpoint = buf[0:1], c_string(buf, 1), c_string(buf, 38)
        if command == b"W":
            try:
                proxy_pub.connect(endpoint)
            except zmq.ZMQError:
                pass  # the seed ignores the return code
        elif command == b"C":
            with self._lock:
                known = uuid in self._table
                if not known:
                    self._table[uuid] = endpoint
            if not known:
                try:
                    data_sub.connect(endpoint)
                except zmq.ZMQError:
                    pass
                if uuid == self.uuid:
                    self.ready.set()
                else:
                    proxy_pub.send(c_message(b"C", self.uuid, self.endpoint or ""))
                    self.sent_c += 1
        elif command == b"D":
            with self._lock:
                known = self._table.pop(uuid, None) is not None
            if known:
                try:
                    data_sub.disconnect(endpoint)
                except zmq.ZMQError:
                    pass
                if uuid == self.uuid:
                    return True
        return False
