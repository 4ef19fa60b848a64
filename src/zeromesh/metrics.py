"""Prometheus metrics for a peer or a proxy (the ``metrics`` extra).

``serve(peer_or_proxy, host, port)`` serves ``/metrics`` in the Prometheus
text format. Nothing is counted for it: a custom collector reads the
target's ``stats()`` snapshot when (and only when) it is scraped, so the data
path costs nothing more with metrics on. prometheus-client is imported here,
lazily: the core needs pyzmq only. The metric list is in
``docs/observability.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .peer import Peer
from .proxy import Proxy

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

#: The extra that brings prometheus-client.
INSTALL_HINT = "pip install 'zeromesh[metrics]'"


class MissingExtra(ImportError):
    """prometheus-client is not installed."""


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError:
        raise MissingExtra(f"metrics need prometheus-client: install it with: {INSTALL_HINT}") from None
    return prometheus_client


class _Collector:
    """Turns a ``stats()`` snapshot into metric families on each scrape."""

    def __init__(self, target: Peer | Proxy) -> None:
        self.target = target
        self._core = _prometheus().core

    def describe(self) -> list[Any]:
        return []  # unchecked registration: the families depend on the target

    def collect(self) -> Iterator[Any]:
        core = self._core

        def gauge(name: str, doc: str, value: float) -> Any:
            return core.GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> Any:
            return core.CounterMetricFamily(name, doc, value=value)

        def by(name: str, doc: str, label: str, values: dict[str, int]) -> Any:
            fam = core.CounterMetricFamily(name, doc, labels=[label])
            for key, v in sorted(values.items()):
                fam.add_metric([key], v)
            return fam

        t = self.target
        if isinstance(t, Peer):
            s = t.stats()
            yield gauge("zeromesh_members", "peers this peer knows, itself not counted", s.peers)
            yield counter("zeromesh_joins", "peers that joined this peer's view", s.joins)
            left = max(0, s.leaves - s.expired - s.replaced)
            yield by(
                "zeromesh_leaves",
                "peers that left this peer's view, by reason (left: said D; expired: unreachable; "
                "replaced: a new peer on its endpoint, or it moved)",
                "reason",
                {"left": left, "expired": s.expired, "replaced": s.replaced},
            )
            yield by("zeromesh_frames_rejected", "input dropped before the protocol, by reason", "reason", s.rejected)
            yield by("zeromesh_frames_ignored", "valid frames the protocol ignored, by reason", "reason", s.ignored)
            yield counter("zeromesh_discovery_frames_received", "discovery frames handled", s.frames)
            yield counter("zeromesh_discovery_frames_sent", "discovery frames sent", s.frames_sent)
            yield counter("zeromesh_messages_published", "data messages published", s.published)
            yield counter("zeromesh_messages_received", "data messages received", s.received)
            yield counter(
                "zeromesh_messages_dropped", "data messages dropped: the receive queue was full", s.dropped_messages
            )
            yield counter("zeromesh_events_dropped", "events dropped: the event queue was full", s.dropped_events)
            yield counter(
                "zeromesh_proxy_reconnects", "times the connection to the proxy came back", s.proxy_reconnects
            )
            yield gauge("zeromesh_proxy_up", "1 while connected to the proxy", 1 if s.proxy_up else 0)
        else:
            p = t.stats()
            yield gauge("zeromesh_members", "entries in the proxy's directory", p.members)
            yield counter("zeromesh_joins", "entries added to the directory", p.joins)
            yield by(
                "zeromesh_leaves",
                "entries dropped from the directory, by reason (left: said D; expired: unreachable; "
                "replaced: a new peer on its endpoint; evicted: over the size bound)",
                "reason",
                {"left": 0, "expired": 0, "replaced": 0, **p.leaves},
            )
            yield by("zeromesh_frames_rejected", "frames dropped before forwarding, by reason", "reason", p.rejected)
            yield counter("zeromesh_meta_dropped", "metadata pairs dropped from announcements", p.bad_meta)
            yield counter("zeromesh_frames_forwarded", "discovery frames forwarded", p.forwarded)
            yield counter("zeromesh_obituaries", "D frames published for members found dead", p.obituaries)
            yield counter("zeromesh_subscriptions", "subscription messages forwarded to the peers", p.subscriptions)


class MetricsServer:
    """``/metrics`` over HTTP on a thread of its own; :meth:`close` is
    idempotent and bounded."""

    def __init__(self, target: Peer | Proxy, host: str = "127.0.0.1", port: int = 0) -> None:
        prom = _prometheus()
        self.registry = prom.CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(target))
        started = prom.start_http_server(port, addr=host, registry=self.registry)
        self._httpd: WSGIServer = started[0]
        self._thread: threading.Thread = started[1]
        self._thread.name = "zeromesh-metrics"
        self.host = host
        #: The bound port (the one chosen, when asked for port 0).
        self.port: int = self._httpd.server_address[1]
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout: float = 2.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(target: Peer | Proxy, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Serve *target*'s metrics at ``http://host:port/metrics`` (port 0: an
    ephemeral one, see :attr:`MetricsServer.port`). :class:`MissingExtra`
    (an ``ImportError``) without prometheus-client."""
    return MetricsServer(target, host, port)
