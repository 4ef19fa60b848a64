"""Smoke tests of the benchmark suite at tiny sizes: each benchmark runs, its
result has the documented shape, and one real property holds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zeromesh import Peer, timing
from zeromesh.bench import churn, converge, data, discovery, idle, interest, join, leave, proxy, pyre, scaling
from zeromesh.bench.common import write_result
from zeromesh.cli import build_parser, main
from zeromesh.errors import ConfigError
from zeromesh.harness import procs
from zeromesh.lines import read_json_line

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def fonts_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """matplotlib keeps the font files it has used open for the life of the
    process (its font cache): load them before the leak check takes stock."""
    rows = [
        {"N": n, "peer": peer, "sim deliveries": d, "received (peers)": d}
        for n, peer, d in (
            (10, "zeromesh", 11),
            (100, "zeromesh", 101),
            (10, "classic", 231),
            (100, "classic", 20301),
        )
    ]
    discovery.plot_discovery(rows, tmp_path_factory.mktemp("fonts") / "warm.png")


def check_shape(r: dict[str, Any], name: str) -> None:
    assert r["name"] == name
    assert isinstance(r["title"], str) and isinstance(r["params"], dict)
    assert isinstance(r["summary"], dict)
    assert isinstance(r["rows"], list)
    json.dumps(r, default=str)  # it must serialise


@pytest.mark.parametrize("n", [1, 7, 30])
def test_state_machine_join_costs_n_plus_one_vs_quadratic(n: int) -> None:
    # zeromesh: one C, delivered to the N+1 subscribers. Classic: the
    # newcomer's C plus N re-announcements and its own N replies, each to N+1.
    assert discovery.simulate_join(n, classic=False)["delivered"] == n + 1
    assert discovery.simulate_join(n, classic=True)["delivered"] == (2 * n + 1) * (n + 1)


def test_join_zeromesh_is_far_faster_than_classic() -> None:
    r = join.bench_join(joins=5, classic_joins=4, existing=1, lanes=4)
    check_shape(r, "join")
    zm, cl = r["rows"]
    assert zm["joins"] == 5 and cl["joins"] == 4
    # The seed's 1 s turn shows in (almost) every classic join; its rare
    # fast join is a first C that happened to beat the subscription.
    assert cl["max ms"] > 900
    assert zm["p50 ms"] < cl["max ms"]


def test_discovery_real_mesh_matches_the_state_machines(tmp_path: Path, fonts_loaded: None) -> None:
    png = tmp_path / "d.png"
    # In a fresh interpreter: after a few hundred other tests in this process,
    # the 20-peer mixed mesh sometimes did not converge (not yet understood;
    # never seen in a process of its own: the closing note of stop 7).
    code = (
        "import json, sys; from pathlib import Path; from zeromesh.bench import discovery; "
        "r = discovery.bench_discovery(real_sizes=(12,), sim_sizes=(12,), png=Path(sys.argv[1])); "
        "print(json.dumps(r, default=str))"
    )
    # The result line is all the test needs. The mixed mesh's classic peers
    # close with the seed's late linger, which may hang zmq_ctx_term by design
    # (problem 2), so the child is then stopped by PID, bounded, not awaited
    # (twice in this session's full runs the child outlived a 50 s timeout; a
    # hang at exit is the suspect, not proven: the line is now read first).
    child = subprocess.Popen([sys.executable, "-c", code, str(png)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        r = read_json_line(child, 50.0)
    finally:
        procs.stop(child, signal.SIGTERM, 5.0)
    check_shape(r, "discovery")
    by = {row["peer"]: row for row in r["rows"]}
    # O(N): one C to 13 subscribers (plus retries that beat their echo under load)
    assert by["zeromesh"]["sim deliveries"] == 13
    assert by["zeromesh"]["received (peers)"] * 4 <= by["classic"]["received (peers)"]
    assert by["classic"]["received (peers)"] == by["classic"]["sim deliveries"]
    assert r["mixed"]["converged"]
    assert png.stat().st_size > 1000


def test_converge_has_a_raw_row_and_a_ratio() -> None:
    r = converge.bench_converge(
        sizes=(3,), classic_sizes=(), per_host=2, processes=0, timeout=30.0, rounds=1, heartbeats=(True,)
    )
    check_shape(r, "converge")
    raw, zm = r["rows"]
    assert raw["peer"] == "raw pyzmq" and zm["peer"] == "zeromesh" and raw["processes"] == zm["processes"] == 2
    assert zm["known ms"] is not None and zm["connected ms"] >= zm["known ms"]
    assert raw["connected ms"] is not None and raw["discovery frames"] == 0
    assert zm["ratio vs raw"] == pytest.approx(zm["connected ms"] / raw["connected ms"], abs=0.01)
    assert zm["discovery frames"] >= 3 * 3  # every peer heard every C at least once


def test_idle_mesh_cpu_is_measured_for_every_lane() -> None:
    r = idle.bench_idle(sizes=(3,), per_host=2, seconds=0.3, rounds=1)
    check_shape(r, "idle")
    assert [row["impl"] for row in r["rows"]] == [
        "zeromesh",
        "raw pyzmq, heartbeats on 3 connections per peer",
        "zeromesh, heartbeats on every data connection (0.2.0)",
        "raw pyzmq, heartbeats on every connection",
        "zeromesh, no heartbeats",
        "raw pyzmq, no heartbeats",
    ]
    for row in r["rows"]:
        assert row["runs"] == 1 and row["CPU % per peer"] >= 0
    raw_rows = [row for row in r["rows"] if row["impl"].startswith("raw")]
    assert all(row["proxy CPU %"] == 0 for row in raw_rows)  # raw has no proxy


def test_proxy_forwarding_is_measured_against_libzmqs() -> None:
    r = proxy.bench_proxy(subscribers=(1,), seconds=0.3)
    check_shape(r, "proxy")
    c, zm = r["rows"]
    assert c["proxy"].startswith("libzmq") and zm["proxy"].startswith("zeromesh")
    assert c["forwarded /s (probe)"] > 0 and zm["forwarded /s (probe)"] > 0
    # The probe sees what the proxy counts (nothing dropped on one fast subscriber's way).
    assert zm["forwarded /s (proxy)"] >= zm["forwarded /s (probe)"]


@pytest.mark.parametrize("n", [10, 300])
def test_scaling_simulation_joins_cost_one_frame_to_n_plus_one(n: int) -> None:
    j = scaling.simulate_join(n, sample=5)
    assert j["ready"] and j["knows all"]
    assert j["sent"] == 1 and j["forwarded"] == 1 and j["deliveries"] == n + 1
    r = scaling.bench_scaling(sizes=(n,))
    check_shape(r, "scaling")
    (row,) = r["rows"]
    assert row["data connections full mesh"] == n * (n - 1)


def test_interest_scoped_mesh_makes_only_the_wanted_connections() -> None:
    r = interest.bench_interest(sizes=(10,), topics=5, per_host=5, timeout=30.0, heartbeats_up_to=0)
    check_shape(r, "interest")
    scoped, full = r["rows"]
    assert not scoped["heartbeats"] and not full["heartbeats"]
    assert scoped["mesh"] == "interest, 5 topics" and full["mesh"] == "full mesh" and scoped["processes"] == 2
    # Each of 10 peers wants the 2 publishers of the topic it subscribes to; the full mesh, 9 each.
    assert (scoped["data connections"], scoped["wanted"]) == (20, 20) and full["data connections"] == 90
    assert scoped["connected ms"] is not None and full["connected ms"] is not None
    assert scoped["RSS per peer MB"] > 0 and scoped["fds per peer"] < full["fds per peer"]
    # A size whose hosts cannot hold the full mesh is reported, not run.
    assert interest.largest_full_mesh(25, 20_000) == 389 and interest.full_mesh_fds(500, 25) > 20_000


def test_scaling_counts_interest_scoped_connections_on_the_state_machines() -> None:
    j = scaling.simulate_interest(100, 10)
    assert j["connections"] == 10 and j["listed"] == 100  # connected to one topic's publishers, lists all
    (row,) = scaling.bench_scaling(sizes=(100,))["rows"]
    assert row["data connections, 10 topics"] == 100 * 10


def test_leave_is_seen_by_everyone_and_processes_exit_cleanly() -> None:
    r = leave.bench_leave(leaves=2, existing=2, processes=1, lifetime=0.2, with_classic=False)
    check_shape(r, "leave")
    zm = r["rows"][0]
    assert zm["peer"] == "zeromesh" and zm["leaves"] == 2
    assert zm["leave() to all dropped p50 ms"] is not None
    assert zm["process runs"] == 1 and zm["nonzero rc"] == 0


def test_data_plane_with_a_large_hwm_loses_nothing_on_either_side() -> None:
    # Same socket options on both sides; with an HWM above the message count
    # neither PUB may drop. A long stall bound keeps a loaded machine's pauses
    # from counting as loss.
    r = data.bench_data(
        receivers=1, rounds=1, counts={64: 2000}, hwms=(data.LARGE_HWM,), stall=10.0, paced={64: 20_000}
    )
    check_shape(r, "data")
    raw, zm, raw_paced, zm_paced = r["rows"]
    assert raw["impl"] == "raw pyzmq" and zm["impl"] == "zeromesh"
    assert raw["offered"] == "max" and zm_paced["offered"] == 20_000
    for row in r["rows"]:
        assert row["loss %"] == 0
    assert zm["dropped by zeromesh (counted)"] == 0 and zm_paced["dropped by zeromesh (counted)"] == 0
    rate = "msgs/s (delivered, all receivers)"
    assert zm["ratio vs raw"] == pytest.approx(zm[rate] / raw[rate], abs=0.01)
    # Paced, both publishers offer the same load (a loaded machine may only fall short of it).
    assert raw_paced["publish msgs/s"] <= 20_000 * 1.1 and zm_paced["publish msgs/s"] <= 20_000 * 1.1


def test_raw_rows_copy_zeromeshs_data_socket_options() -> None:
    pub, sub = data.zeromesh_options(17)
    assert pub["SNDHWM"] == 17 and sub["RCVHWM"] == 17
    assert pub["HEARTBEAT_IVL"] == 1000 * timing.SLOW_HEARTBEAT_IVL
    assert sub["HEARTBEAT_IVL"] == 0  # data connections carry no heartbeats (the watchers' probes do)


@pytest.mark.parametrize("bad", [-1, 2**31, 1.5, True])
def test_data_hwm_is_checked(bad: object) -> None:
    with pytest.raises((TypeError, ConfigError)):
        Peer("tcp://127.0.0.1:1", data_hwm=bad)  # type: ignore[arg-type]


def test_churn_long_lived_peers_see_departures() -> None:
    r = churn.bench_churn(rates=(5,), seconds=1.0, drivers=1)
    check_shape(r, "churn")
    for row in r["rows"]:
        assert row["churned"] >= 3
        assert row["departures seen"] >= 1
        assert row["CPU % of a core"] >= 0


@pytest.mark.netns
def test_pyre_discovers_across_namespaces_or_the_result_says_why() -> None:
    r = pyre.bench_pyre(trials=1, timeout=15.0, kinds=("pyre",), converge_trials=0)
    check_shape(r, "pyre")
    if "not run" in r["summary"]:
        assert r["rows"] == []
        pytest.skip(r["summary"]["not run"])
    (row,) = r["rows"]
    assert row["join trials"] == 1 and row["join p50 ms"] < 1500


def test_results_are_written_as_json_and_markdown(tmp_path: Path) -> None:
    r = {
        "name": "x",
        "title": "T",
        "params": {},
        "rows": [{"a": 1, "b": None}, {"a": 2, "c": "z"}],
        "summary": {"k": 1},
        "command": "zeromesh bench x",
    }
    js, md = write_result(r, tmp_path)
    assert json.loads(js.read_text())["rows"][1]["c"] == "z"
    text = md.read_text()
    assert "| a | b | c |" in text and "| 2 |  | z |" in text and "`zeromesh bench x`" in text


def test_cli_has_a_bench_subcommand() -> None:
    a = build_parser("bench").parse_args(["bench", "discovery", "--quick", "--out", "/tmp/x"])
    assert a.command == "bench" and a.which == "discovery" and a.quick
    with pytest.raises(SystemExit):
        build_parser("bench").parse_args(["bench", "nonsense"])
    a = build_parser("bench").parse_args(["bench", "converge", "--sizes", "10,50,100", "--rounds", "2"])
    assert a.sizes == [10, 50, 100] and a.rounds == 2
    for bad in ("10,x", "1", ""):
        with pytest.raises(SystemExit):
            build_parser("bench").parse_args(["bench", "converge", "--sizes", bad])


def test_bench_without_its_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pyre", None)  # as if zeromq-pyre were not installed
    assert main(["bench", "join", "--quick", "--out", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and list(tmp_path.iterdir()) == []
    (line,) = err.splitlines()
    assert "pip install 'zeromesh[bench]'" in line


@pytest.mark.parametrize("module", ["converge", "churn", "pyre", "proxy"])
def test_child_entry_points_run_as_modules(module: str) -> None:
    # Each child entry point answers --help through ``python -m`` (no argv dispatch).
    r = subprocess.run(
        [sys.executable, "-m", f"zeromesh.bench.{module}", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and f"zeromesh.bench.{module}" in r.stdout
