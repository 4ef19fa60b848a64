"""``zeromesh matrix``: a soak per scenario with the same budget, then one
report (``matrix.md``, ``matrix.png``, ``matrix.json``) with each scenario's
verdicts and exit code, the conclusions in words, and the overall exit code
(the worst scenario's)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import timing
from . import plots, report, verdict
from .model import SCENARIOS, Exit, SoakConfig, SoakResult
from .progress import Progress
from .soak import Soak

#: A workaround "stops the growth" when its whole interval lies below this
#: fraction of the unfixed (baseline) growth.
FIX_FRACTION = 0.25


def run_matrix(scenarios: list[str], base: SoakConfig, out: Path) -> tuple[dict[str, Any], Exit]:
    """Each scenario as one soak into *out*/<scenario>/, then the report;
    returns matrix.json's content and the overall exit code."""
    for name in scenarios:
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if not scenarios:
        raise ValueError("--scenarios is empty")
    out.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[dict[str, Any], SoakResult]] = []
    for i, name in enumerate(scenarios, 1):
        print(f"zeromesh matrix: [{i}/{len(scenarios)}] {name}", flush=True)
        soak = Soak(replace(base, scenario=name, out=out / name))
        progress = Progress(soak.status, soak.cfg, soak.mode, soak.out)
        result = soak.run(progress)
        summary = report.write_soak(result)
        progress.final(summary)
        runs.append((summary, result))
        if result.interrupted:
            print("zeromesh matrix: interrupted; reporting what ran", file=sys.stderr)
            break
    doc = write_matrix(runs, out, base.command)
    code = verdict.worst([Exit(sm["exit_code"]) for sm, _ in runs])
    return doc, code


def fmt_hangs(r: dict[str, Any]) -> str:
    lo, hi = r["hang_rate_ci95"]
    return f"{r['hangs']}/{r['lifetimes']} = {r['hang_rate']:.2%} [{lo:.2%}, {hi:.2%}]"


def _slope(r: dict[str, Any]) -> str:
    return report.fmt_slope(r) + " KB"


def conclusions(results: list[dict[str, Any]]) -> list[str]:
    """The matrix's findings in words, from its own numbers only."""
    by = {r["scenario"]: r for r in results}
    out = _memory_conclusions(by)
    hang_names = [
        n
        for n in ("send-late-linger", "send-linger-after-bind", "send-early-linger", "late-linger", "default")
        if n in by
    ]
    if hang_names:
        out.append("**Hangs.** " + "; ".join(f"`{n}` {fmt_hangs(by[n])}" for n in hang_names) + ".")
        out += _hang_condition(by)
    return out


def _memory_conclusions(by: dict[str, dict[str, Any]]) -> list[str]:
    base = by.get("baseline")
    if not base or base["slope_kb_per_departure"] is None:
        return []
    out = [
        (
            f"**Memory.** Without any kick of its data PUB (`baseline`), the long-lived peer grows "
            f"{_slope(base)} per departure ({base['memory_verdict']})."
        )
    ]
    # "Stops it": the whole interval below a quarter of the unfixed growth.
    bar = FIX_FRACTION * base["slope_kb_per_departure"]
    cands = [n for n in ("poll-after-disconnect", "events-after-disconnect", "default") if n in by]
    fixed = [
        n
        for n in cands
        if by[n]["slope_kb_per_departure_ci95"] is not None and by[n]["slope_kb_per_departure_ci95"][1] < bar
    ]
    if fixed:
        out.append(
            f"Stop the growth on libzmq {base['libzmq_version']} (95% interval entirely below {bar:.1f} KB, a "
            "quarter of `baseline`): "
            + "; ".join(f"`{n}` {_slope(by[n])} ({by[n]['memory_verdict']})" for n in fixed)
            + "."
        )
    rest = [n for n in cands if n not in fixed]
    if rest:
        out.append("Do not clearly stop it: " + "; ".join(f"`{n}` {_slope(by[n])}" for n in rest) + ".")
    out.append(
        "A socket frees a departed connection's pipe and buffers only when it processes its command queue "
        "(send, recv, poll, getsockopt(EVENTS)); a bound PUB that never sends never does. zeromesh's default "
        f"does getsockopt(EVENTS) every loop turn and every {timing.KICK_INTERVAL:g} s."
    )
    return out


def _count(r: dict[str, Any]) -> str:
    return f"{r['hangs']} of {r['lifetimes']}"


def _hang_condition(by: dict[str, dict[str, Any]]) -> list[str]:
    """The hang condition in words, each clause backed by a scenario of this run."""
    late, after = by.get("send-late-linger"), by.get("send-linger-after-bind")
    early, nosend = by.get("send-early-linger"), by.get("late-linger")
    if not (late and late["hangs"]) and not (after and after["hangs"]):
        return [
            (
                "No hang was caught in this budget; at a rate under about 1% the intervals above bound the rate "
                "rather than measure it: run longer (`--duration`) or churn faster."
            )
        ]
    words = ["`zmq_ctx_term` hung in churners that had sent on their data PUB after other peers' disconnects"]
    if late and late["hangs"]:
        words.append(f" with linger set just before close ({_count(late)})")
    if after:
        also = "and as well" if after["hangs"] else "but not"
        words.append(f", {also} with linger set right after bind/connect ({_count(after)})")
    words.append(".")
    if early:
        never = "never hung" if early["hangs"] == 0 else "still hung"
        words.append(f" With linger set at socket creation it {never} ({_count(early)}).")
    if nosend:
        never = "never hung" if nosend["hangs"] == 0 else "hung too"
        words.append(f" With a late linger but without those sends it {never} ({_count(nosend)}).")
    condition = "".join(words)
    if early and early["hangs"] == 0 and nosend and nosend["hangs"] == 0:
        condition += (
            " So the hang needs both: a message queued for a peer that is leaving (the send), and a linger that "
            "was not in force when the connection's session was made. A socket that tears a connection down "
            "hands its session the linger in force at that moment, and a bound socket's sessions take their "
            "options from its listener, copied at bind time: a linger set later does not reach them, the "
            "session keeps the default infinite linger, and its queued message waits forever for a peer that is "
            "gone. It is a linger race, not a send/close race: setting linger before bind/connect removes it. "
            "`zeromesh hang-demo` forces the same mechanism (a queued message in a session torn down under the "
            "default linger) every time, with a connecting PUB."
        )
    return [condition]


ROW_KEYS = (
    *report.SUMMARY_KEYS,
    "lifetimes_interrupted",
    "mode",
    "churners",
    "lifetime_s",
    "pause_s",
    "warmup_s",
    "long_lived_args",
    "churner_args",
    "out",
)


def _row(r: dict[str, Any]) -> str:
    ref = r["reference"] or {}
    ref_cell = f"{report.fmt_slope(ref)} {ref['memory_verdict']}" if ref else "-"
    return (
        f"| [{r['scenario']}]({Path(r['out']).name}/report.md) | `{' '.join(r['long_lived_args']) or '-'}` | "
        f"`{' '.join(r['churner_args']) or '-'}` | {r['lifetimes']} | {r['departures']} | {fmt_hangs(r)} | "
        f"{report.fmt_slope(r)} | **{r['memory_verdict']}** | **{r['hang_verdict']}** | {ref_cell} | "
        f"{r['exit_code']} |"
    )


def write_matrix(runs: list[tuple[dict[str, Any], SoakResult]], out: Path, command: str) -> dict[str, Any]:
    results = [sm for sm, _ in runs]
    words = conclusions(results)
    overall = int(verdict.worst([Exit(sm["exit_code"]) for sm in results]))
    doc = {
        "command": command,
        "exit_code": overall,
        "scenarios": [{k: r.get(k) for k in ROW_KEYS} for r in results],
        "conclusions": words,
    }
    (out / "matrix.json").write_text(json.dumps(doc, indent=2) + "\n")
    if runs:
        plots.matrix(runs, out / "matrix.png")
    r0 = results[0] if results else {}
    lines = [
        "# zeromesh matrix",
        "",
        f"Command: `{command}`  ",
        (
            f"libzmq {r0.get('libzmq_version')}, pyzmq {r0.get('pyzmq_version')}; per scenario: "
            f"{r0.get('churners')} churners ({r0.get('mode')} mode), lifetime {r0.get('lifetime_s')} s, "
            f"pause {r0.get('pause_s')} s, about {r0.get('duration_s')} s each, the first {r0.get('warmup_s')} s "
            f"warm-up; memory threshold {verdict.GROWTH_KB:g} KB per departure."
        ),
        "",
        (
            f"Overall exit code **{overall}** (the worst scenario's: 1 GROWS or HANGS, 3 INCONCLUSIVE, 0 FLAT "
            "and no hang; the seed's scenarios are expected to give 1)."
        ),
        "",
        (
            "| scenario | long-lived switches | churner switches | lifetimes | departures | hangs (rate, 95% CI) | "
            "KB per departure (95% CI) | memory | hangs | reference KB per departure | exit |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r) for r in results]
    lines += ["", "![matrix](matrix.png)", "", "## Conclusions", ""] + [f"{w}\n" for w in words]
    (out / "matrix.md").write_text("\n".join(lines))
    return doc
