"""What a soak leaves behind, and what it shows while it runs.

Per soak: ``samples.csv``, ``lifetimes.csv``, ``summary.json``, ``rss.png``
and ``report.md`` (plus ``hangs/`` and ``logs/``, written as it runs). Per
matrix: ``matrix.json``, ``matrix.png`` and ``matrix.md``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (CI, ssh)
import matplotlib.pyplot as plt
from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import stats, timing

if TYPE_CHECKING:
    from .harness import Soak

#: A slope whose 95% interval lies above this (KB per departure) is growth:
#: a quarter of what one never-released connection costs (~12 KB measured),
#: above the 1-2 KB a short run shows while its heap warms up.
GROWTH_KB = 3.0
#: A slope whose interval lies below this (or includes 0) is flat.
FLAT_KB = 0.1
#: A workaround "stops the growth" when its whole slope interval lies below
#: this fraction of the unfixed (baseline) slope.
FIX_FRACTION = 0.25
#: Fewer departures than this after the warm-up and no slope is claimed.
MIN_DEPARTURES = 20
#: Bound on memray's post-processing of its capture file.
MEMRAY_REPORT_TIMEOUT = 300.0

SUMMARY_KEYS = (
    "scenario", "libzmq_version", "pyzmq_version", "duration_s", "lifetimes", "departures",
    "hangs", "hang_rate", "hang_rate_ci95", "rss_kb_start", "rss_kb_end",
    "slope_kb_per_departure", "slope_kb_per_departure_ci95", "verdict",
)


def memray_available() -> bool:
    return importlib.util.find_spec("memray") is not None


# --- verdicts ------------------------------------------------------------------


def memory_verdict(sl: stats.Slope | None, departures_used: int) -> str:
    if sl is None or departures_used < MIN_DEPARTURES:
        return (f"INCONCLUSIVE: only {departures_used} departures after the warm-up "
                f"(need {MIN_DEPARTURES}); run longer or churn faster")
    figure = f"{sl.slope:.2f} KB per departure (95% CI {sl.lo:.2f} to {sl.hi:.2f})"
    if sl.lo > GROWTH_KB:
        return f"GROWS: {figure}"
    if sl.hi < FLAT_KB or (sl.lo <= 0.0 and sl.hi < GROWTH_KB):
        return f"FLAT: {figure}"
    if sl.lo <= 0.0:
        return f"NO GROWTH DETECTED: {figure}; too uncertain to rule out {sl.hi:.1f} KB, run longer"
    return (f"SLIGHT: {figure}; well under the ~12 KB of a connection never released, as a short run "
            "shows while its heap warms up: run longer to tell")


def hang_verdict(hr: stats.Proportion) -> str:
    if hr.n == 0:
        return "INCONCLUSIVE: no lifetime ran to its end"
    if hr.k == 0:
        return f"NO HANG in {hr.n} lifetimes (95% upper bound {hr.hi:.2%})"
    return (f"HANGS: {hr.k} of {hr.n} lifetimes hung in ctx_term ({hr.rate:.2%}, "
            f"95% CI {hr.lo:.2%} to {hr.hi:.2%}); stacks in hangs/")


# --- live progress ---------------------------------------------------------------


class Progress:
    """rich live panel on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, soak: Soak, live: bool | None) -> None:
        self.soak = soak
        self.live_on = sys.stdout.isatty() if live is None else live
        self.console = Console()
        self._live: Live | None = None
        self._last_line = -float("inf")

    def __enter__(self) -> None:
        s = self.soak
        head = (f"zeromesh soak: scenario {s.cfg.scenario}, {s.cfg.churners} churners ({s.mode}), "
                f"lifetime {s.cfg.lifetime:g} s, pause {s.cfg.pause:g} s, out {s.out}")
        print(head, flush=True)
        if self.live_on:
            self._live = Live(self._table(), console=self.console, refresh_per_second=2)
            self._live.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    def _figures(self) -> dict[str, str]:
        st = self.soak.status()
        sl = self.soak.slope()
        c = self.soak.cfg
        if self.soak.stop_new.is_set():
            left = "finishing the running lifetimes"
        elif c.duration:
            left = f"{max(0.0, c.duration - st['elapsed']):.0f} s left"
        else:
            left = f"of {c.lifetimes} lifetimes"
        return {
            "elapsed": f"{st['elapsed']:.0f} s ({left})",
            "lifetimes": f"{st['lifetimes']} done, {st['running']} running",
            "departures": str(st["departures"]),
            "rss": f"{st['rss_kb'] / 1024:.1f} MB" if st["rss_kb"] is not None else "-",
            "slope": f"{sl.slope:.2f} KB/departure (95% CI {sl.lo:.2f}..{sl.hi:.2f})" if sl else "(warming up)",
            "hangs": str(st["hangs"]),
        }

    def _table(self) -> Table:
        t = Table(title=f"zeromesh soak: {self.soak.cfg.scenario}", show_header=False)
        for k, v in self._figures().items():
            t.add_row(k, v)
        return t

    def update(self) -> None:
        if self._live is not None:
            self._live.update(self._table())
            return
        now = time.monotonic()
        if now - self._last_line >= timing.SOAK_LOG_INTERVAL:
            self._last_line = now
            print("  " + ", ".join(f"{k} {v}" for k, v in self._figures().items()), flush=True)

    def final(self, summary: dict[str, Any]) -> None:
        v = summary["verdict"]
        print(f"memory: {v['memory']}\nhangs:  {v['hangs']}\nartefacts: {summary['out']}/report.md", flush=True)
        for e in summary["errors"]:
            print(f"error: {e}", file=sys.stderr)


# --- per soak -------------------------------------------------------------------------


def _csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def write_soak(s: Soak) -> dict[str, Any]:
    from .harness import Lifetime, Sample, versions

    out = s.out
    samples = list(s.samples)
    lifetimes = sorted(s.lifetimes, key=lambda r: r.n)
    _csv(out / "samples.csv", [asdict(x) for x in samples], [f.name for f in fields(Sample)])
    rows = [{**asdict(r), "duration_s": round(r.end - r.start, 3) if r.end else ""} for r in lifetimes]
    _csv(out / "lifetimes.csv", rows, [f.name for f in fields(Lifetime)] + ["duration_s"])

    hr = s.hang_rate()
    sl = s.slope()
    w = s.warmup_s()
    after = [x for x in samples if x.elapsed >= w]
    used = (after[-1].departures - after[0].departures) if after else 0
    summary: dict[str, Any] = {
        "scenario": s.cfg.scenario,
        "scenario_about": s.scenario.about,
        "long_lived_args": list(s.scenario.long_lived) + s.cfg.long_lived_args,
        "churner_args": list(s.scenario.churner) + s.cfg.peer_args,
        "mode": s.mode,
        "churners": s.cfg.churners,
        "lifetime_s": s.cfg.lifetime,
        "pause_s": s.cfg.pause,
        "hang_grace_s": s.cfg.hang_grace,
        **versions(),
        "started_utc": _iso(s._wall0 or time.time()),
        "duration_s": round(samples[-1].elapsed, 1) if samples else 0.0,
        "lifetimes": hr.n,
        "lifetimes_interrupted": sum(1 for r in lifetimes if not r.counted),
        "lifetimes_failed": sum(1 for r in lifetimes if r.counted and not r.hung and r.exit_code not in (0, None)),
        "departures": samples[-1].departures if samples else 0,
        "departures_source": "churner exits" if s.cfg.long_lived_cmd else "leave events of the long-lived peer",
        "joins": s.joins,
        "leave_reasons": dict(s.leave_reasons),
        "hangs": hr.k,
        "hang_rate": hr.rate,
        "hang_rate_ci95": [hr.lo, hr.hi],
        "rss_kb_start": samples[0].rss_kb if samples else None,
        "rss_kb_end": samples[-1].rss_kb if samples else None,
        "rss_kb_max": max((x.rss_kb for x in samples), default=None),
        "fds_start": samples[0].fds if samples else None,
        "fds_end": samples[-1].fds if samples else None,
        "slope_kb_per_departure": sl.slope if sl else None,
        "slope_kb_per_departure_ci95": [sl.lo, sl.hi] if sl else None,
        "slope_points": sl.n if sl else 0,
        "slope_residual_lag1_autocorrelation": sl.r1 if sl else None,
        "slope_departures_used": used,
        "warmup_s": round(w, 1),
        "samples": len(samples),
        "verdict": {"memory": memory_verdict(sl, used), "hangs": hang_verdict(hr)},
        "stack_tools": dict(s.stack_tools),
        "long_lived_pid": s.long_lived.pid if s.long_lived else None,
        "long_lived_uuid": s.long_lived_uuid,
        "worker_pids": list(s.worker_pids),
        "pids": list(s.all_pids),
        "proxy_endpoint": s.proxy.endpoint if s.proxy else None,
        "command": s.cfg.command,
        "out": str(out),
        "notes": list(s.notes),
        "errors": list(s.errors),
        "memray": None,
    }
    if s.cfg.memray:
        summary["memray"] = _memray_report(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_soak(samples, lifetimes, sl, w, out / "rss.png", s.cfg.scenario)
    (out / "report.md").write_text(soak_markdown(summary, lifetimes, out))
    return summary


def _memray_report(out: Path) -> dict[str, Any]:
    capture = out / "memray.bin"
    if not capture.exists():
        return {"error": "memray wrote no capture (did the long-lived peer exit cleanly?)"}
    res: dict[str, Any] = {"capture": capture.name}
    py = [sys.executable, "-m", "memray"]
    jobs = {"stats": py + ["stats", "-n", "10", str(capture)],
            "flamegraph": py + ["flamegraph", "-f", "-o", str(out / "memray-flamegraph.html"), str(capture)]}
    for name, cmd in jobs.items():
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=MEMRAY_REPORT_TIMEOUT, check=False)
            text = r.stdout + r.stderr
        except subprocess.TimeoutExpired:
            text = f"memray {name} took more than {MEMRAY_REPORT_TIMEOUT:.0f} s"
        if name == "stats":
            (out / "memray-stats.txt").write_text(text)
            res["stats"] = "memray-stats.txt"
        elif (out / "memray-flamegraph.html").exists():
            res["flamegraph"] = "memray-flamegraph.html"
    return res


def plot_soak(samples: list[Any], lifetimes: list[Any], sl: stats.Slope | None, warmup: float,
              path: Path, title: str) -> None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    t = [x.elapsed for x in samples]
    mb = [x.rss_kb / 1024 for x in samples]
    a1.plot(t, mb, lw=1)
    a1.axvspan(0, warmup, color="0.9", label="warm-up")
    t0 = samples[0].t - samples[0].elapsed if samples else 0.0
    hung = [r for r in lifetimes if r.hung]
    for i, r in enumerate(hung):
        a1.axvline((r.end or r.start) - t0, color="red", ls="--", lw=0.8, label="hang" if i == 0 else None)
    a1.set(xlabel="elapsed (s)", ylabel="RSS of the long-lived peer (MB)", title="RSS against time")
    a1.legend(loc="upper left")
    warm = [x for x in samples if x.elapsed < warmup]
    used = [x for x in samples if x.elapsed >= warmup]
    a2.plot([x.departures for x in warm], [x.rss_kb / 1024 for x in warm], ".", ms=3, color="0.6", label="warm-up")
    a2.plot([x.departures for x in used], [x.rss_kb / 1024 for x in used], ".", ms=3, color="tab:blue")
    if sl is not None and used:
        xs = [used[0].departures, used[-1].departures]
        a2.plot(xs, [(sl.intercept + sl.slope * x) / 1024 for x in xs], "r-",
                label=f"{sl.slope:.2f} KB/departure [{sl.lo:.2f}, {sl.hi:.2f}]")
    a2.legend(loc="lower right")
    a2.set(xlabel="departures seen by the long-lived peer", ylabel="RSS (MB)", title="RSS against departures")
    fig.suptitle(f"zeromesh soak: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def soak_markdown(sm: dict[str, Any], lifetimes: list[Any], out: Path) -> str:
    ci = sm["slope_kb_per_departure_ci95"]
    slope = f"{sm['slope_kb_per_departure']:.2f} KB (95% CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else "n/a"
    lo, hi = sm["hang_rate_ci95"]
    lines = [
        f"# zeromesh soak: `{sm['scenario']}`", "",
        f"{sm['scenario_about']}.", "",
        f"Command: `{sm['command']}`  ",
        (f"Started {sm['started_utc']}, libzmq {sm['libzmq_version']}, pyzmq {sm['pyzmq_version']}, "
         f"zeromesh {sm['zeromesh_version']}, Python {sm['python_version']}."), "",
        "## Verdict", "",
        f"- **Memory**: {sm['verdict']['memory']}",
        f"- **Hangs**: {sm['verdict']['hangs']}", "",
        "## Figures", "",
        "| | |", "|---|---|",
        f"| churners | {sm['churners']} ({sm['mode']} mode), lifetime {sm['lifetime_s']:g} s, pause {sm['pause_s']:g} s |",
        f"| long-lived peer switches | `{' '.join(sm['long_lived_args']) or '(none)'}` |",
        f"| churner switches | `{' '.join(sm['churner_args']) or '(none)'}` |",
        f"| duration | {sm['duration_s']} s |",
        f"| lifetimes | {sm['lifetimes']} (+{sm['lifetimes_interrupted']} interrupted, {sm['lifetimes_failed']} failed) |",
        f"| departures | {sm['departures']} ({sm['departures_source']}) |",
        f"| hangs | {sm['hangs']} ({sm['hang_rate']:.2%}, 95% CI {lo:.2%} to {hi:.2%}) |",
        f"| RSS | {sm['rss_kb_start']} KB -> {sm['rss_kb_end']} KB (max {sm['rss_kb_max']}) |",
        f"| slope per departure | {slope}, over {sm['slope_departures_used']} departures after a {sm['warmup_s']} s warm-up |",
        f"| fds | {sm['fds_start']} -> {sm['fds_end']} |", "",
        "![RSS](rss.png)", "",
        ("The slope is least squares of RSS (KB) against departures after the warm-up; its interval is "
         "widened for the lag-1 autocorrelation of the residuals (see `zeromesh.stats`)."), "",
    ]
    hung = [r for r in lifetimes if r.hung]
    if hung:
        lines += ["## Hangs", "", "| lifetime | slot | pid | peer | stacks |", "|---|---|---|---|---|"]
        lines += [f"| {r.n} | {r.slot} | {r.pid} | {r.peer_id or '?'} | [{r.stacks}]({r.stacks}) |" for r in hung[:50]]
        lines.append("")
    if sm["memray"]:
        lines += ["## Native allocations (memray)", ""]
        m = sm["memray"]
        if "stats" in m:
            lines += ["```", (out / m["stats"]).read_text().strip(), "```", ""]
        if "flamegraph" in m:
            lines += [f"Flame graph: [{m['flamegraph']}]({m['flamegraph']})", ""]
        if "error" in m:
            lines += [m["error"], ""]
    for title, items in (("Notes", sm["notes"]), ("Errors", sm["errors"])):
        if items:
            lines += [f"## {title}", ""] + [f"- {x}" for x in items] + [""]
    return "\n".join(lines)


# --- the matrix ------------------------------------------------------------------------


def _ci_err(v: float | None, ci: list[float] | None) -> tuple[float, float, float]:
    if v is None or ci is None:
        return 0.0, 0.0, 0.0
    return v, max(0.0, v - ci[0]), max(0.0, ci[1] - v)


def plot_matrix(results: list[dict[str, Any]], path: Path) -> None:
    names = [r["scenario"] for r in results]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 0.5 * len(names) + 2.5))
    ys = range(len(names))
    sl = [_ci_err(r["slope_kb_per_departure"], r["slope_kb_per_departure_ci95"]) for r in results]
    a1.barh(ys, [x[0] for x in sl], xerr=[[x[1] for x in sl], [x[2] for x in sl]], color="tab:blue", capsize=3)
    a1.set(yticks=list(ys), yticklabels=names, xlabel="KB of long-lived RSS per departure (95% CI)",
           title="memory growth")
    a1.axvline(0, color="k", lw=0.5)
    hr = [_ci_err(100 * r["hang_rate"], [100 * c for c in r["hang_rate_ci95"]]) for r in results]
    a2.barh(ys, [x[0] for x in hr], xerr=[[x[1] for x in hr], [x[2] for x in hr]], color="tab:red", capsize=3)
    a2.set(yticks=list(ys), yticklabels=names, xlabel="% of lifetimes hung in ctx_term (95% Wilson CI)",
           title="hangs")
    for a in (a1, a2):
        a.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt_slope(r: dict[str, Any]) -> str:
    ci = r["slope_kb_per_departure_ci95"]
    return f"{r['slope_kb_per_departure']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "n/a"


def _fmt_hangs(r: dict[str, Any]) -> str:
    lo, hi = r["hang_rate_ci95"]
    return f"{r['hangs']}/{r['lifetimes']} = {r['hang_rate']:.2%} [{lo:.2%}, {hi:.2%}]"


def conclusions(results: list[dict[str, Any]]) -> list[str]:
    """The matrix's findings in words, from its own numbers only."""
    by = {r["scenario"]: r for r in results}
    out: list[str] = []
    base = by.get("baseline")
    if base and base["slope_kb_per_departure"] is not None:
        out.append(f"**Memory.** Without any kick of its data PUB (`baseline`), the long-lived peer grows "
                   f"{_fmt_slope(base)} KB per departure ({base['verdict']['memory'].split(':')[0]}).")
        # "Stops it": the whole interval below a quarter of the unfixed growth.
        bar = FIX_FRACTION * base["slope_kb_per_departure"]
        cands = [n for n in ("poll-after-disconnect", "events-after-disconnect", "default") if n in by]
        fixed = [n for n in cands if by[n]["slope_kb_per_departure_ci95"] is not None
                 and by[n]["slope_kb_per_departure_ci95"][1] < bar]
        if fixed:
            out.append(f"Stop the growth on libzmq {base['libzmq_version']} (95% interval entirely below "
                       f"{bar:.1f} KB, a quarter of `baseline`): " + "; ".join(
                           f"`{n}` {_fmt_slope(by[n])} KB" + (", interval includes 0" if by[n]["slope_kb_per_departure_ci95"][0] <= 0 else "")
                           for n in fixed) + ".")
        rest = [n for n in cands if n not in fixed]
        if rest:
            out.append("Do not clearly stop it: " + "; ".join(f"`{n}` {_fmt_slope(by[n])} KB" for n in rest) + ".")
        out.append("A socket frees a departed connection's pipe and buffers only when it processes its command "
                   "queue (send, recv, poll, getsockopt(EVENTS)); a bound PUB that never sends never does. "
                   "zeromesh's default does getsockopt(EVENTS) every loop turn and every "
                   f"{timing.KICK_INTERVAL:g} s.")
    hang_names = [n for n in ("send-late-linger", "send-linger-after-bind", "send-early-linger", "late-linger", "default")
                  if n in by]
    if hang_names:
        out.append("**Hangs.** " + "; ".join(f"`{n}` {_fmt_hangs(by[n])}" for n in hang_names) + ".")
        out += _hang_condition(by)
    return out


def _count(r: dict[str, Any]) -> str:
    return f"{r['hangs']} of {r['lifetimes']}"


def _hang_condition(by: dict[str, dict[str, Any]]) -> list[str]:
    """The hang condition in words, each clause backed by a scenario of this run."""
    late, after = by.get("send-late-linger"), by.get("send-linger-after-bind")
    early, nosend = by.get("send-early-linger"), by.get("late-linger")
    if not (late and late["hangs"]) and not (after and after["hangs"]):
        return [("No hang was caught in this budget; at a rate under about 1% the intervals above bound "
                 "the rate rather than measure it: run longer (`--duration`) or churn faster.")]
    words = [("`zmq_ctx_term` hung in churners that had sent on their data PUB after other peers' "
              "disconnects")]
    if late and late["hangs"]:
        words.append(f" with linger set just before close ({_count(late)})")
    if after:
        words.append(f", {'and as well' if after['hangs'] else 'but not'} with linger set right after "
                     f"bind/connect ({_count(after)})")
    words.append(".")
    if early:
        words.append(f" With linger set at socket creation it {'never hung' if early['hangs'] == 0 else 'still hung'}"
                     f" ({_count(early)}).")
    if nosend:
        words.append(f" With a late linger but without those sends it {'never hung' if nosend['hangs'] == 0 else 'hung too'}"
                     f" ({_count(nosend)}).")
    condition = "".join(words)
    if early and early["hangs"] == 0 and nosend and nosend["hangs"] == 0:
        condition += (" So the hang needs both: a message queued for a peer that is leaving (the send), and a "
                      "linger that was not in force when the connection's session was made. A socket that tears "
                      "a connection down hands its session the linger in force at that moment, and a bound "
                      "socket's sessions take their options from its listener, copied at bind time: a linger set "
                      "later does not reach them, the session keeps the default infinite linger, and its queued "
                      "message waits forever for a peer that is gone. It is a linger race, not a send/close race: "
                      "setting linger before bind/connect removes it. `zeromesh hang-demo` forces the same "
                      "mechanism (a queued message in a session torn down under the default linger) every "
                      "time, with a connecting PUB.")
    return [condition]


def write_matrix(results: list[dict[str, Any]], out: Path, command: str) -> dict[str, Any]:
    keys = SUMMARY_KEYS + ("lifetimes_interrupted", "mode", "churners", "lifetime_s", "pause_s",
                           "long_lived_args", "churner_args", "out")
    rows = [{k: r.get(k) for k in keys} for r in results]
    words = conclusions(results)
    doc = {"command": command, "scenarios": rows, "conclusions": words}
    (out / "matrix.json").write_text(json.dumps(doc, indent=2) + "\n")
    if results:
        plot_matrix(results, out / "matrix.png")
    r0 = results[0] if results else {}
    lines = [
        "# zeromesh matrix", "",
        f"Command: `{command}`  ",
        (f"libzmq {r0.get('libzmq_version')}, pyzmq {r0.get('pyzmq_version')}; per scenario: "
         f"{r0.get('churners')} churners ({r0.get('mode')} mode), lifetime {r0.get('lifetime_s')} s, "
         f"pause {r0.get('pause_s')} s, about {r0.get('duration_s')} s each."), "",
        ("| scenario | long-lived switches | churner switches | lifetimes | hangs (rate, 95% CI) | "
         "KB per departure (95% CI) | departures | memory | hangs |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| [{r['scenario']}]({Path(r['out']).name}/report.md) | `{' '.join(r['long_lived_args']) or '-'}` | "
            f"`{' '.join(r['churner_args']) or '-'}` | {r['lifetimes']} | {_fmt_hangs(r)} | {_fmt_slope(r)} | "
            f"{r['departures']} | {r['verdict']['memory'].split(':')[0]} | {r['verdict']['hangs'].split(' in ')[0].split(':')[0]} |"
        )
    lines += ["", "![matrix](matrix.png)", "", "## Conclusions", ""] + [f"{w}\n" for w in words]
    (out / "matrix.md").write_text("\n".join(lines))
    return doc
