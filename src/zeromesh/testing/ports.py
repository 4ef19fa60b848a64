"""Ports for tests that need an address before anything listens on it.

"Bind :0, read the port, close, let someone bind it later" races with every
other process that binds an ephemeral port meanwhile. A :class:`PortTrap`
holds the port instead, with a TCP listener that never speaks ZMTP: to
ZeroMQ the endpoint is dead (no handshake ever completes), the port stays
reserved for as long as the test needs it, and the trap counts who dials it.
"""

from __future__ import annotations

import select
import socket
import time
from types import TracebackType


class PortTrap:
    """A listening TCP socket on *host*:*port* (0: an ephemeral port) that
    accepts connections, counts them and closes them at once."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket()
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(128)
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.dials = 0

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def _accept_waiting(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                self.dials += n
                return n
            conn.close()
            n += 1

    def dialled_within(self, seconds: float) -> int:
        """Connections that arrive in the next *seconds* (those already
        waiting are counted in :attr:`dials`, not here)."""
        self._accept_waiting()
        deadline = time.monotonic() + seconds
        n = 0
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self._sock], [], [], left)
            if ready:
                n += self._accept_waiting()
        return n

    def release(self) -> str:
        """Close the trap and return its endpoint, for a server to bind at
        once (the caller's next step, not a pause later)."""
        self.close()
        return self.endpoint

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> PortTrap:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
