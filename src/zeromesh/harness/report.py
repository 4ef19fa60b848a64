"""What a soak leaves behind: ``samples.csv`` (the peer under test),
``reference-samples.csv``, ``lifetimes.csv``, ``summary.json``, ``rss.png`` and
``report.md`` (plus ``hangs/`` and ``logs/``, written as it runs)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import plots, stats, verdict
from .model import Lifetime, LongLivedRecord, SoakResult, versions
from .slots import LATE_EXIT

#: Bound on memray's post-processing of its capture file.
MEMRAY_REPORT_TIMEOUT = 300.0

#: summary.json keys that are guaranteed (tested); ``reference`` holds the
#: memory and hang keys again for the reference peer.
SUMMARY_KEYS = (
    "scenario",
    "libzmq_version",
    "pyzmq_version",
    "duration_s",
    "lifetimes",
    "departures",
    "hangs",
    "hang_rate",
    "hang_rate_ci95",
    "rss_kb_start",
    "rss_kb_end",
    "slope_kb_per_departure",
    "slope_kb_per_departure_ci95",
    "verdict",
    "memory_verdict",
    "hang_verdict",
    "reference",
    "exit_code",
)
#: The keys of each peer's memory figures (top level for the peer under test,
#: again in ``reference``).
PEER_KEYS = (
    "memory_verdict",
    "hang_verdict",
    "slope_kb_per_departure",
    "slope_kb_per_departure_ci95",
    "rss_kb_start",
    "rss_kb_end",
    "verdict",
)


def _csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def write_soak(r: SoakResult) -> dict[str, Any]:
    """Every artefact of one soak; returns the summary (as in summary.json)."""
    _write_lifetimes(r)
    summary = build_summary(r)
    if r.cfg.memray:
        summary["memray"] = _memray_report(r.out)
    (r.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots.soak(r, r.cfg.warmup, r.out / "rss.png")
    (r.out / "report.md").write_text(soak_markdown(summary, r.lifetimes, r.out))
    return summary


def _write_lifetimes(r: SoakResult) -> None:
    """lifetimes.csv (samples.csv and reference-samples.csv are written as sampled)."""
    rows = [{**asdict(x), "duration_s": round(x.end - x.start, 3) if x.end else ""} for x in r.lifetimes]
    _csv(r.out / "lifetimes.csv", rows, [f.name for f in fields(Lifetime)] + ["duration_s"])


def peer_figures(rec: LongLivedRecord | None, warmup: float) -> dict[str, Any]:
    """One long-lived peer's memory figures and verdicts (the PEER_KEYS and more)."""
    samples = rec.samples if rec else []
    sl, used = verdict.growth(samples, warmup)
    mem = verdict.memory(sl, used)
    hang = verdict.long_lived_exit(rec.exit_hung if rec else False)
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    return {
        "memory_verdict": mem.token,
        "hang_verdict": hang.token,
        "slope_kb_per_departure": sl.slope if sl else None,
        "slope_kb_per_departure_ci95": [sl.lo, sl.hi] if sl else None,
        "slope_points": sl.n if sl else 0,
        "slope_residual_lag1_autocorrelation": sl.r1 if sl else None,
        "slope_departures_used": used,
        "rss_kb_start": first.rss_kb if first else None,
        "rss_kb_end": last.rss_kb if last else None,
        "rss_kb_max": max((x.rss_kb for x in samples), default=None),
        "fds_start": first.fds if first else None,
        "fds_end": last.fds if last else None,
        "samples": len(samples),
        "verdict": {"memory": mem.text, "hangs": hang.text},
        "pid": rec.pid if rec else None,
        "uuid": rec.uuid if rec else "",
        "command": rec.command if rec else [],
        "exit_code": rec.exit_code if rec else None,
        "exit_hung": rec.exit_hung if rec else False,
        "leave_events": rec.leave_events if rec else 0,
        "joins": rec.joins if rec else 0,
        "leave_reasons": dict(rec.leave_reasons) if rec else {},
    }


def reference_label(reference: str) -> str:
    if reference == "seed":
        return "seed (zeromesh peer --no-kick: its data PUB never kicked)"
    return reference


#: Per-peer keys that the top level names differently (or merges into its own).
_NOT_TOP_LEVEL = ("verdict", "hang_verdict", "pid", "uuid", "command", "exit_code", "exit_hung")


def shown(cmd: list[str]) -> str:
    """A command as a person would type it (``python -m zeromesh x`` -> ``zeromesh x``)."""
    return " ".join(cmd[2:] if cmd[1:2] == ["-m"] else cmd)


def build_summary(r: SoakResult) -> dict[str, Any]:
    c = r.cfg
    counted = [x for x in r.lifetimes if x.counted]
    hr = stats.wilson(sum(x.hung for x in counted), len(counted))
    mine = peer_figures(r.peer, c.warmup)
    in_term = sum(1 for x in counted if x.hung and x.in_ctx_term)
    hangs = verdict.hangs(hr, mine["exit_hung"], in_term)
    samples = r.peer.samples if r.peer else []
    reference: dict[str, Any] | None = None
    if r.reference is not None:
        reference = {"label": reference_label(c.reference), **peer_figures(r.reference, c.warmup)}
    code = verdict.exit_code(mine["memory_verdict"], hangs.token, errors=bool(r.errors), interrupted=r.interrupted)
    return {
        "scenario": c.scenario,
        "scenario_about": r.scenario.about,
        "long_lived_args": list(r.scenario.long_lived) + c.long_lived_args,
        "churner_args": list(r.scenario.churner) + c.peer_args,
        "mode": r.mode,
        "churners": c.churners,
        "lifetime_s": c.lifetime,
        "pause_s": c.pause,
        "hang_grace_s": c.hang_grace,
        **versions(),
        "started_utc": _iso(r.started),
        "duration_s": round(samples[-1].elapsed, 1) if samples else 0.0,
        "lifetimes": hr.n,
        "lifetimes_interrupted": sum(1 for x in r.lifetimes if not x.counted),
        "lifetimes_failed": sum(1 for x in counted if not x.hung and x.exit_code not in (0, None)),
        "lifetimes_late": sum(1 for x in counted if x.reason == LATE_EXIT),
        "departures": sum(x.departed for x in r.lifetimes),
        "departures_source": "churner lifetimes that ended (counted by the harness, whatever the program)",
        "hangs": hr.k,
        "hangs_in_ctx_term": in_term,
        "hang_rate": hr.rate,
        "hang_rate_ci95": [hr.lo, hr.hi],
        **{k: v for k, v in mine.items() if k not in _NOT_TOP_LEVEL},
        "warmup_s": c.warmup,
        "growth_threshold_kb": verdict.GROWTH_KB,
        "memory_verdict": mine["memory_verdict"],
        "hang_verdict": hangs.token,
        "verdict": {"memory": mine["verdict"]["memory"], "hangs": hangs.text},
        "exit_code": int(code),
        "reference": reference,
        "stack_tools": r.stack_tools,
        "long_lived_pid": mine["pid"],
        "long_lived_uuid": mine["uuid"],
        "long_lived_command": mine["command"],
        "long_lived_exit_code": mine["exit_code"],
        "long_lived_exit_hung": mine["exit_hung"],
        "worker_pids": r.worker_pids,
        "pids": r.pids,
        "proxy_endpoint": r.proxy_endpoint,
        "command": c.command,
        "out": str(r.out),
        "interrupted": r.interrupted,
        "notes": r.notes,
        "errors": r.errors,
        "memray": None,
    }


def _memray_report(out: Path) -> dict[str, Any]:
    capture = out / "memray.bin"
    if not capture.exists():
        return {"error": "memray wrote no capture (did the long-lived peer exit cleanly?)"}
    res: dict[str, Any] = {"capture": capture.name}
    py = [sys.executable, "-m", "memray"]
    jobs = {
        "stats": [*py, "stats", "-n", "10", str(capture)],
        "flamegraph": [*py, "flamegraph", "-f", "-o", str(out / "memray-flamegraph.html"), str(capture)],
    }
    for name, cmd in jobs.items():
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=MEMRAY_REPORT_TIMEOUT, check=False)
            text = p.stdout + p.stderr
        except subprocess.TimeoutExpired:
            text = f"memray {name} took more than {MEMRAY_REPORT_TIMEOUT:.0f} s"
        if name == "stats":
            (out / "memray-stats.txt").write_text(text)
            res["stats"] = "memray-stats.txt"
        elif (out / "memray-flamegraph.html").exists():
            res["flamegraph"] = "memray-flamegraph.html"
    return res


# --- report.md ------------------------------------------------------------------


def fmt_slope(fig: dict[str, Any]) -> str:
    ci = fig["slope_kb_per_departure_ci95"]
    return f"{fig['slope_kb_per_departure']:.2f} ({ci[0]:.2f} to {ci[1]:.2f})" if ci else "n/a"


def _verdict_lines(sm: dict[str, Any]) -> list[str]:
    lines = [
        "## Verdict",
        "",
        f"Exit code **{sm['exit_code']}**.",
        "",
        "| | peer under test | reference |",
        "|---|---|---|",
    ]
    ref = sm["reference"] or {}
    cells = (
        (
            "program",
            f"`{shown(sm['long_lived_command'])}`",
            f"{ref['label']}: `{shown(ref['command'])}`" if ref else "(none)",
        ),
        ("memory", sm["verdict"]["memory"], ref.get("verdict", {}).get("memory", "-")),
        ("hangs", sm["verdict"]["hangs"], ref.get("verdict", {}).get("hangs", "-")),
        (
            "RSS start -> end (KB)",
            f"{sm['rss_kb_start']} -> {sm['rss_kb_end']}",
            f"{ref.get('rss_kb_start')} -> {ref.get('rss_kb_end')}" if ref else "-",
        ),
    )
    lines += [f"| {a} | {b} | {c} |" for a, b, c in cells]
    return [*lines, ""]


def _figure_lines(sm: dict[str, Any]) -> list[str]:
    lo, hi = sm["hang_rate_ci95"]
    return [
        "## Figures",
        "",
        "| | |",
        "|---|---|",
        (
            f"| churners | {sm['churners']} ({sm['mode']} mode), lifetime {sm['lifetime_s']:g} s, "
            f"pause {sm['pause_s']:g} s |"
        ),
        f"| long-lived peer switches | `{' '.join(sm['long_lived_args']) or '(none)'}` |",
        f"| churner switches | `{' '.join(sm['churner_args']) or '(none)'}` |",
        f"| duration | {sm['duration_s']} s, the first {sm['warmup_s']:g} s warm-up |",
        (
            f"| lifetimes | {sm['lifetimes']} (+{sm['lifetimes_interrupted']} interrupted, "
            f"{sm['lifetimes_failed']} failed, {sm['lifetimes_late']} ended late but by themselves) |"
        ),
        (
            f"| departures | {sm['departures']} ({sm['departures_source']}); the peer under test saw "
            f"{sm['leave_events']} leave events |"
        ),
        f"| hangs | {sm['hangs']} ({sm['hang_rate']:.2%}, 95% CI {lo:.2%} to {hi:.2%}) |",
        (
            f"| KB per departure (95% CI) | {fmt_slope(sm)} over {sm['slope_departures_used']} departures; "
            f"threshold {sm['growth_threshold_kb']:g} KB |"
        ),
        f"| fds | {sm['fds_start']} -> {sm['fds_end']} |",
        "",
        "![RSS](rss.png)",
        "",
        (
            "KB per departure is the RSS grown after the warm-up over the departures in that time; its "
            "interval is built on the per-second increments (RSS as a random walk whose drift is the "
            "leak), see docs/soak.md. FLAT and GROWS need the whole interval on one side of the threshold."
        ),
        "",
    ]


def _hang_lines(lifetimes: list[Lifetime]) -> list[str]:
    hung = [x for x in lifetimes if x.hung]
    if not hung:
        return []
    lines = ["## Hangs", "", "| lifetime | slot | pid | peer | stacks |", "|---|---|---|---|---|"]
    lines += [f"| {x.n} | {x.slot} | {x.pid} | {x.peer_id or '?'} | [{x.stacks}]({x.stacks}) |" for x in hung[:50]]
    return [*lines, ""]


def _memray_lines(m: dict[str, Any] | None, out: Path) -> list[str]:
    if not m:
        return []
    lines = ["## Native allocations (memray)", ""]
    if "stats" in m:
        lines += ["```", (out / m["stats"]).read_text().strip(), "```", ""]
    if "flamegraph" in m:
        lines += [f"Flame graph: [{m['flamegraph']}]({m['flamegraph']})", ""]
    if "error" in m:
        lines += [m["error"], ""]
    return lines


def soak_markdown(sm: dict[str, Any], lifetimes: list[Lifetime], out: Path) -> str:
    lines = [
        f"# zeromesh soak: `{sm['scenario']}`",
        "",
        f"{sm['scenario_about']}.",
        "",
        f"Command: `{sm['command']}`  ",
        (
            f"Started {sm['started_utc']}, libzmq {sm['libzmq_version']}, pyzmq {sm['pyzmq_version']}, "
            f"zeromesh {sm['zeromesh_version']}, Python {sm['python_version']}."
        ),
        "",
    ]
    lines += _verdict_lines(sm) + _figure_lines(sm) + _hang_lines(lifetimes) + _memray_lines(sm["memray"], out)
    for title, items in (("Notes", sm["notes"]), ("Errors", sm["errors"])):
        if items:
            lines += [f"## {title}", ""] + [f"- {x}" for x in items] + [""]
    return "\n".join(lines)
