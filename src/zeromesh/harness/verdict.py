"""From estimates to verdicts, and from verdicts to an exit code.

Memory: the 95% interval of KB of RSS per departure against one threshold,
:data:`GROWTH_KB`. Entirely above it: ``GROWS``; entirely below: ``FLAT``;
straddling it, or too few departures: ``INCONCLUSIVE`` (exit 3, never a
guess). Hangs: ``HANGS`` from the first hung lifetime (or a long-lived peer
that did not exit), ``NO_HANG`` with the rate's upper bound, ``INCONCLUSIVE``
when no lifetime ran to its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import Exit, Sample

if TYPE_CHECKING:  # scipy takes seconds to import: only once a slope is computed
    from . import stats

#: The memory threshold, KB of long-lived RSS per departure. It sits between
#: the two things a soak tells apart: a connection never released (~12 KB,
#: the seed's growth, which the reference measures in every default run) and
#: a healthy peer's heap still settling in its first minute (0.4-0.7 KB per
#: departure measured, more on a loaded machine: allocator and queue high-water
#: marks). A sixth of the one, three times the other: each side has room at
#: the default run's interval widths, and a slower real leak (the soak once
#: found 2.5 KB per departure in zeromesh itself) still reads GROWS.
GROWTH_KB = 2.0
#: Fewer departures than this after the warm-up and no verdict is claimed.
MIN_DEPARTURES = 20

FLAT, GROWS, INCONCLUSIVE = "FLAT", "GROWS", "INCONCLUSIVE"
NO_HANG, HANGS = "NO_HANG", "HANGS"


@dataclass(frozen=True)
class Verdict:
    """A verdict token (for machines) and its sentence (for people)."""

    token: str
    text: str


def growth(samples: list[Sample], warmup: float) -> tuple[stats.Slope | None, int]:
    """KB of RSS per departure over the samples after *warmup* seconds of
    churn, and the number of departures that covers."""
    from . import stats

    used = [s for s in samples if s.elapsed >= warmup]
    if not used:
        return None, 0
    sl = stats.growth_ci([s.departures for s in used], [s.rss_kb for s in used])
    return sl, used[-1].departures - used[0].departures


def memory(sl: stats.Slope | None, departures_used: int) -> Verdict:
    if sl is None or departures_used < MIN_DEPARTURES:
        return Verdict(
            INCONCLUSIVE,
            f"INCONCLUSIVE: only {departures_used} departures after the warm-up (need {MIN_DEPARTURES}); "
            "run longer or churn faster",
        )
    figure = f"{sl.slope:.2f} KB per departure (95% CI {sl.lo:.2f} to {sl.hi:.2f})"
    if sl.lo > GROWTH_KB:
        return Verdict(GROWS, f"GROWS: {figure}, entirely above {GROWTH_KB:g} KB")
    if sl.hi < GROWTH_KB:
        return Verdict(FLAT, f"FLAT: {figure}, entirely below {GROWTH_KB:g} KB")
    return Verdict(
        INCONCLUSIVE,
        f"INCONCLUSIVE: {figure} straddles {GROWTH_KB:g} KB; run longer or churn faster",
    )


def hangs(hr: stats.Proportion, exit_hung: bool = False, in_ctx_term: int | None = None) -> Verdict:
    """Hangs of the churners' lifetimes (*hr*; *in_ctx_term* of them with
    ``zmq_ctx_term`` in their stacks), and whether the long-lived peer itself did
    not exit when asked (*exit_hung*)."""
    exit_note = "; the long-lived peer did not exit when asked (stacks in hangs/)" if exit_hung else ""
    if hr.k:
        where = "" if in_ctx_term is None else f", {in_ctx_term} of them in zmq_ctx_term"
        return Verdict(
            HANGS,
            f"HANGS: {hr.k} of {hr.n} lifetimes did not end ({hr.rate:.2%}, "
            f"95% CI {hr.lo:.2%} to {hr.hi:.2%}{where}); stacks in hangs/{exit_note}",
        )
    if exit_hung:
        return Verdict(HANGS, f"HANGS{exit_note}")
    if hr.n == 0:
        return Verdict(INCONCLUSIVE, "INCONCLUSIVE: no lifetime ran to its end")
    return Verdict(NO_HANG, f"NO HANG in {hr.n} lifetimes (95% upper bound {hr.hi:.2%})")


def long_lived_exit(hung: bool) -> Verdict:
    """A long-lived peer's own hang verdict: did it exit when asked?"""
    if hung:
        return Verdict(HANGS, "HANGS: did not exit when asked (stacks in hangs/)")
    return Verdict(NO_HANG, "NO HANG: exited when asked")


def exit_code(memory_token: str, hang_token: str, *, errors: bool, interrupted: bool) -> Exit:
    """The soak's exit code: interrupted first, then failures, then doubt."""
    if interrupted:
        return Exit.INTERRUPTED
    if errors or memory_token == GROWS or hang_token == HANGS:
        return Exit.FAIL
    if INCONCLUSIVE in (memory_token, hang_token):
        return Exit.INCONCLUSIVE
    return Exit.OK


def worst(codes: list[Exit]) -> Exit:
    """A matrix's exit code over its scenarios' codes."""
    for c in (Exit.INTERRUPTED, Exit.FAIL, Exit.INCONCLUSIVE):
        if c in codes:
            return c
    return Exit.OK
