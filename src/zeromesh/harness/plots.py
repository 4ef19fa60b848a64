"""The figures: RSS relative to its start against departures, for both
long-lived peers, with the fitted growth and the warm-up shaded (``rss.png``);
the same for every scenario of a matrix (``matrix.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (CI, ssh)
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from . import verdict
from .model import LongLivedRecord, SoakResult

PEER_COLOUR, REFERENCE_COLOUR = "tab:blue", "tab:orange"


def _warmup_departures(rec: LongLivedRecord | None, warmup: float) -> int | None:
    """Departures when measuring started (None: it never did)."""
    if rec is None:
        return None
    return next((s.departures for s in rec.samples if s.elapsed >= warmup), None)


def _curve(ax: Axes, rec: LongLivedRecord, warmup: float, colour: Any, label: str, *, faint: bool = False) -> None:
    """*rec*'s RSS minus its first sample against departures, and its fit."""
    if not rec.samples:
        return
    base = rec.samples[0].rss_kb
    xs = [s.departures for s in rec.samples]
    ax.plot(
        xs,
        [(s.rss_kb - base) / 1024 for s in rec.samples],
        ".",
        ms=2 if faint else 3,
        color=colour,
        alpha=0.35 if faint else 1.0,
    )
    sl, used = verdict.growth(rec.samples, warmup)
    if sl is None:
        ax.plot([], [], ".", color=colour, label=f"{label}: no fit")
        return
    mem = verdict.memory(sl, used)
    x0 = next(s.departures for s in rec.samples if s.elapsed >= warmup)
    x1 = xs[-1]
    ax.plot(
        [x0, x1],
        [(sl.intercept + sl.slope * x - base) / 1024 for x in (x0, x1)],
        "--",
        color=colour,
        lw=1.5,
        label=f"{label}: {mem.token}, {sl.slope:.2f} KB/departure [{sl.lo:.2f}, {sl.hi:.2f}]",
    )


def soak(r: SoakResult, warmup: float, path: Path) -> None:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    wd = _warmup_departures(r.peer, warmup)
    if wd is not None:
        a1.axvspan(0, wd, color="0.9", label="warm-up (not measured)")
    a2.axvspan(0, warmup, color="0.9")
    for rec, colour, label in (
        (r.peer, PEER_COLOUR, "peer under test"),
        (r.reference, REFERENCE_COLOUR, "reference"),
    ):
        if rec is None or not rec.samples:
            continue
        _curve(a1, rec, warmup, colour, label)
        base = rec.samples[0].rss_kb
        a2.plot(
            [s.elapsed for s in rec.samples],
            [(s.rss_kb - base) / 1024 for s in rec.samples],
            color=colour,
            lw=1,
        )
    hung = [x for x in r.lifetimes if x.hung]
    for i, x in enumerate(hung):
        a2.axvline((x.end or x.start) - r.started, color="red", ls=":", lw=0.8, label="hang" if i == 0 else None)
    a1.set(
        xlabel="departures (churner lifetimes ended)",
        ylabel="RSS - RSS at start (MB)",
        title="RSS against departures, fitted after the warm-up",
    )
    a1.legend(loc="upper left", fontsize=8)
    a2.set(xlabel="seconds of churn", ylabel="RSS - RSS at start (MB)", title="RSS against time")
    if hung:
        a2.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"zeromesh soak: {r.cfg.scenario} (threshold {verdict.GROWTH_KB:g} KB per departure)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _bars(
    ax: Axes,
    names: list[str],
    values: list[tuple[float, float, float]],
    colour: str,
    offset: float,
    label: str,
) -> None:
    ys = [i + offset for i in range(len(names))]
    ax.barh(
        ys,
        [v[0] for v in values],
        height=0.38,
        xerr=[[v[1] for v in values], [v[2] for v in values]],
        color=colour,
        capsize=3,
        label=label,
    )


def _err(v: float | None, ci: list[float] | None) -> tuple[float, float, float]:
    if v is None or ci is None:
        return 0.0, 0.0, 0.0
    return v, max(0.0, v - ci[0]), max(0.0, ci[1] - v)


def matrix(runs: list[tuple[dict[str, Any], SoakResult]], path: Path) -> None:
    """Left: each scenario's peer under test (and, faint, its reference), RSS
    relative to start against departures with its fit, warm-up shaded; middle:
    KB per departure with intervals and the threshold; right: hang rates."""
    fig, (a1, a2, a3) = plt.subplots(
        1, 3, figsize=(18, 0.45 * len(runs) + 4.5), gridspec_kw={"width_ratios": [3, 2, 2]}
    )
    cmap = plt.get_cmap("tab10")
    warm = [_warmup_departures(r.peer, r.cfg.warmup) for _, r in runs]
    known = [w for w in warm if w is not None]
    if known:
        a1.axvspan(0, max(known), color="0.9", label="warm-up (not measured)")
    for i, (sm, r) in enumerate(runs):
        if r.peer is not None:
            _curve(a1, r.peer, r.cfg.warmup, cmap(i % 10), sm["scenario"])
        if r.reference is not None:
            _curve(a1, r.reference, r.cfg.warmup, "0.6", "reference" if i == 0 else "_", faint=True)
    a1.set(xlabel="departures", ylabel="RSS - RSS at start (MB)", title="RSS against departures")
    a1.legend(loc="upper left", fontsize=7)
    names = [sm["scenario"] for sm, _ in runs]
    _bars(
        a2,
        names,
        [_err(sm["slope_kb_per_departure"], sm["slope_kb_per_departure_ci95"]) for sm, _ in runs],
        PEER_COLOUR,
        -0.2,
        "peer under test",
    )
    refs = [sm["reference"] or {} for sm, _ in runs]
    _bars(
        a2,
        names,
        [_err(x.get("slope_kb_per_departure"), x.get("slope_kb_per_departure_ci95")) for x in refs],
        REFERENCE_COLOUR,
        0.2,
        "reference",
    )
    a2.axvline(verdict.GROWTH_KB, color="red", ls="--", lw=1, label=f"threshold {verdict.GROWTH_KB:g} KB")
    a2.set(xlabel="KB of RSS per departure (95% CI)", title="memory growth")
    a2.legend(loc="lower right", fontsize=7)
    hr = [_err(100 * sm["hang_rate"], [100 * c for c in sm["hang_rate_ci95"]]) for sm, _ in runs]
    _bars(a3, names, hr, "tab:red", 0.0, "hung lifetimes")
    a3.set(xlabel="% of lifetimes that did not end (95% Wilson CI)", title="hangs")
    for a in (a2, a3):
        a.set(yticks=list(range(len(names))), yticklabels=names)
        a.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
