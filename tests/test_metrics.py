"""Prometheus metrics: scraped over loopback from a peer and a proxy, in
process and from the command line; without the extra, one line and exit 2."""

from __future__ import annotations

import json
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import data_flows, full_mesh, wait_for
from test_cli import Children, children, read_line, run  # noqa: F401 (children: fixture)
from zeromesh import Peer, Proxy
from zeromesh.cli import common, main
from zeromesh.metrics import MissingExtra, serve

pytestmark = pytest.mark.timeout(60)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_peer_and_proxy_metrics(proxy: Proxy, peers: list[Peer]) -> None:
    a, b = Peer(proxy.endpoint).start(), Peer(proxy.endpoint).start()
    peers.extend([a, b])
    assert wait_for(lambda: full_mesh(peers))
    with serve(a) as ma, serve(proxy) as mp:
        assert ma.port > 0 and ma.port != mp.port
        assert data_flows(a, [b])
        m = scrape(ma.url)
        assert m[("zeromesh_members", ())] == 1
        assert m[("zeromesh_joins_total", ())] == 1
        assert m[("zeromesh_messages_published_total", ())] >= 1
        assert m[("zeromesh_proxy_up", ())] == 1
        for name in ("messages_received", "messages_dropped", "proxy_reconnects", "events_dropped"):
            assert m[(f"zeromesh_{name}_total", ())] == 0, name
        assert m[("zeromesh_discovery_frames_received_total", ())] >= 1
        p = scrape(mp.url)
        assert p[("zeromesh_members", ())] == 2 and p[("zeromesh_joins_total", ())] == 2
        assert b.stop()
        assert wait_for(lambda: scrape(ma.url)[("zeromesh_leaves_total", (("reason", "left"),))] == 1)
        assert scrape(ma.url)[("zeromesh_members", ())] == 0
        assert wait_for(lambda: scrape(mp.url)[("zeromesh_leaves_total", (("reason", "left"),))] == 1)
        assert scrape(mp.url)[("zeromesh_members", ())] == 1


def test_frames_rejected_by_reason(proxy: Proxy, peers: list[Peer]) -> None:
    import zmq

    a = Peer(proxy.endpoint).start()
    peers.append(a)
    assert a.wait_ready(5)
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(proxy.xsub_endpoint)
        with serve(proxy) as mp:
            key = ("zeromesh_frames_rejected_total", (("reason", "short-frame"),))

            def rejected() -> bool:
                pub.send(b"C" + b"\0" * 10)  # shorter than 295 bytes
                return scrape(mp.url).get(key, 0) >= 1

            assert wait_for(rejected)
    finally:
        ctx.destroy(linger=0)


def test_metrics_from_the_command_line(children: Children, zeromesh_exe: list[str]) -> None:  # noqa: F811
    px = children.start("proxy", "--bind", "tcp://127.0.0.1:0", "--events", "jsonl", "--metrics", "127.0.0.1:0")
    ready = json.loads(read_line(px, 10))
    assert scrape(ready["metrics"])[("zeromesh_members", ())] == 0
    pe = children.start("peer", "--proxy", ready["endpoint"], "--events", "jsonl", "--metrics", "127.0.0.1:0")
    assert json.loads(read_line(pe, 10))["event"] == "ready"
    assert wait_for(lambda: scrape(ready["metrics"])[("zeromesh_members", ())] == 1)
    assert pe.stderr is not None
    url = next(line for line in iter(pe.stderr.readline, "") if "metrics at" in line).split("metrics at ")[1].strip()
    assert scrape(url)[("zeromesh_proxy_up", ())] == 1
    r = run(zeromesh_exe, "proxy", "--metrics", "nohostport")
    assert r.returncode == 2 and "--metrics" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", ["peer", "proxy"])
def test_without_the_extra_one_line_and_exit_2(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(common, "missing_modules", list)  # every module is missing
    args = ["--proxy", "tcp://127.0.0.1:1"] if command == "peer" else ["--bind", "tcp://127.0.0.1:0"]
    assert main([command, *args, "--metrics", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'zeromesh[metrics]'" in err[0]


def test_serve_without_prometheus_client_says_how_to_install(proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("prometheus_client")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now fails
    with pytest.raises(MissingExtra, match=r"zeromesh\[metrics\]"):
        serve(proxy)
