"""Short soaks: the memory growth shows (and its fix), the watchdog catches a
hang and saves its stacks, the artefacts are complete, Ctrl+C leaves nothing."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import wait_for

from zeromesh import Peer, PeerEvent, Proxy, harness_cli
from zeromesh.cli import build_parser
from zeromesh.harness import SoakConfig, run_soak
from zeromesh.report import SUMMARY_KEYS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def matplotlib_fonts_loaded() -> None:
    """matplotlib keeps the font files it has drawn with open for the life of
    the process (a cache, not a leak): draw once before the leak check's first
    snapshot (module fixtures are set up before function ones)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title("warm-up")
    fig.canvas.draw()
    plt.close(fig)


def quick(tmp_path: Path, scenario: str, **kw: Any) -> dict[str, Any]:
    """A fast in-process churn: 4 slots of 0.3 s lifetimes, no pause."""
    cfg = SoakConfig(**{"duration": 10.0, "churners": 4, "lifetime": 0.3, "pause": 0.0, "mode": "inproc",
                        "scenario": scenario, "out": tmp_path / scenario, "live": False, **kw})
    return run_soak(cfg)


def check_artefacts(s: dict[str, Any]) -> None:
    out = Path(s["out"])
    for key in SUMMARY_KEYS:
        assert key in s, key
    assert json.loads((out / "summary.json").read_text()) == s
    assert isinstance(s["lifetimes"], int) and isinstance(s["hangs"], int) and isinstance(s["departures"], int)
    lo, hi = s["hang_rate_ci95"]
    assert 0.0 <= lo <= s["hang_rate"] <= hi <= 1.0
    assert s["libzmq_version"].count(".") == 2 and s["pyzmq_version"]
    assert set(s["verdict"]) == {"memory", "hangs"} and all(isinstance(v, str) for v in s["verdict"].values())
    with (out / "samples.csv").open() as f:
        samples = list(csv.DictReader(f))
    assert len(samples) >= s["duration_s"] - 2 and int(samples[-1]["rss_kb"]) == s["rss_kb_end"]
    with (out / "lifetimes.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {"start", "end", "exit_code", "hung", "peer_id", "pid"} <= set(rows[0])
    assert sum(r["hung"] == "True" for r in rows) == s["hangs"]
    assert (out / "rss.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Verdict" in (out / "report.md").read_text()
    assert (out / "hangs").is_dir() and s["errors"] == []


def test_baseline_grows_and_default_does_not(tmp_path: Path) -> None:
    base = quick(tmp_path, "baseline")
    dflt = quick(tmp_path, "default")
    for s in (base, dflt):
        check_artefacts(s)
        assert s["departures"] >= 30 and s["hangs"] == 0
    # ~12 KB per departure without a kick, about 0 with one (plus warm-up noise).
    assert base["slope_kb_per_departure"] > 5.0
    assert base["slope_kb_per_departure_ci95"][0] > dflt["slope_kb_per_departure_ci95"][1]
    assert base["verdict"]["memory"].startswith("GROWS")


@pytest.mark.parametrize("mode", ["process", "inproc"])
def test_watchdog_catches_the_hang_and_saves_stacks(tmp_path: Path, mode: str) -> None:
    demo: dict[str, Any] = (
        {"peer_cmd": "{python} -m zeromesh hang-demo"} if mode == "process" else {"peer_args": ["--demo-hang"]}
    )
    s = run_soak(SoakConfig(duration=None, lifetimes=1, churners=1, lifetime=0.2, pause=0.0, mode=mode,  # type: ignore[arg-type]
                            hang_grace=0.5, out=tmp_path / mode, live=False, **demo))
    assert s["lifetimes"] == 1 and s["hangs"] == 1
    assert s["verdict"]["hangs"].startswith("HANGS")
    stack_files = list((tmp_path / mode / "hangs").glob("*.txt"))
    assert len(stack_files) == 1
    text = stack_files[0].read_text()
    if "captured with none" not in text:
        assert "zmq_ctx_term" in text
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in s["pids"])


def test_sigint_leaves_no_process_behind(tmp_path: Path, zeromesh_exe: list[str]) -> None:
    out = tmp_path / "sigint"
    soak = subprocess.Popen([*zeromesh_exe, "soak", "--duration", "60", "--churners", "3", "--lifetime", "1",
                             "--pause", "0", "--mode", "process", "--out", str(out), "--no-live"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, psutil.Process] = {}
    try:
        me = psutil.Process(soak.pid)

        def running() -> bool:  # long-lived peer + 3 churners, all at once
            kids = me.children(recursive=True)
            seen.update({k.pid: k for k in kids})
            return len(kids) >= 4

        assert wait_for(running, 20.0, 0.05)
        soak.send_signal(signal.SIGINT)
        assert soak.wait(30) == 0
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.wait(10)
    assert not [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    s = json.loads((out / "summary.json").read_text())
    assert "stopped early by SIGINT" in s["notes"]
    assert set(seen) <= set(s["pids"])
    for pid in s["pids"]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_defaults_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    a = build_parser().parse_args(["soak"])
    assert harness_cli._config(a, None, "default").duration == 60.0
    assert harness_cli._config(build_parser().parse_args(["soak", "--lifetimes", "9"]), None, "x").duration is None
    assert (a.default_duration, a.churners, a.lifetime, a.pause, a.scenario, a.mode) == (60.0, 5, 2.0, 1.0, "default", "auto")
    assert SoakConfig(churners=50).resolved_mode() == "inproc"
    assert SoakConfig().resolved_mode() == "process"
    for bad in (["--churners", "0"], ["--peer-cmd", "peer", "--mode", "inproc"], ["--lifetime", "-1"]):
        assert harness_cli.cmd_soak(build_parser().parse_args(["soak", *bad])) == 2
    assert "zeromesh soak:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["soak", "--scenario", "nope"])


def test_events_taken_by_callback_are_not_also_queued(proxy: Proxy) -> None:
    """Found by the soak: the CLI's long-lived peer takes its events by callback,
    and each was also queued for next_event(), never read: ~1 KB per departure."""
    seen: list[PeerEvent] = []
    with Peer(proxy.endpoint, on_event=seen.append) as p, Peer(proxy.endpoint, lifetime=0.1) as q:
        assert wait_for(lambda: any(e.kind == "leave" and e.uuid == q.uuid for e in seen), 5.0)
        assert p.next_event(0) is None
