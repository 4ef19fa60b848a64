"""The soak's estimates: Wilson intervals against published values, and the
growth per departure (ratio estimator on increments) against its formula."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from zeromesh.harness.stats import growth_ci, wilson

pytestmark = pytest.mark.timeout(30)


# Newcombe (1998), "Two-sided confidence intervals for the single proportion",
# Statistics in Medicine 17:857, table I, method 3 (Wilson score, no correction).
@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k: int, n: int, lo: float, hi: float) -> None:
    p = wilson(k, n)
    assert p.rate == pytest.approx(k / n)
    assert p.lo == pytest.approx(lo, abs=6e-5)
    assert p.hi == pytest.approx(hi, abs=6e-5)


def test_wilson_edges_and_bad_input() -> None:
    assert (wilson(0, 0).lo, wilson(0, 0).hi) == (0.0, 1.0)
    full = wilson(10, 10)
    assert full.hi == 1.0 and 0.69 < full.lo < 0.73
    for k, n in ((3, 2), (-1, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson(k, n)


def test_growth_of_exact_line() -> None:
    s = growth_ci([0, 1, 2, 3, 4, 5], [2, 5, 8, 11, 14, 17])
    assert s is not None
    assert s.slope == pytest.approx(3.0)
    assert s.lo == pytest.approx(3.0) and s.hi == pytest.approx(3.0)
    assert s.intercept == pytest.approx(2.0)


def test_growth_is_total_growth_over_total_departures() -> None:
    """Uneven departures per sample, and a level that wanders: the estimate
    is what RSS grew over what departed, the interval the ratio estimator's."""
    x = np.array([0, 10, 25, 31, 50, 62, 80, 95, 101, 120], dtype=float)
    y = np.array([100, 110, 140, 150, 180, 185, 215, 240, 245, 270], dtype=float)
    s = growth_ci(x, y)
    assert s is not None
    assert s.slope == pytest.approx((270 - 100) / 120)
    dx, dy = np.diff(x), np.diff(y)
    e = dy - s.slope * dx
    n = len(dx)
    half = sps.t.ppf(0.975, n - 1) * np.sqrt(n / (n - 1) * np.sum(e * e)) / dx.sum()
    widen = np.sqrt((1 + s.r1) / (1 - s.r1))
    assert s.hi - s.slope == pytest.approx(half * widen)
    assert s.lo < s.slope < s.hi


def test_allocator_steps_do_not_make_a_leak() -> None:
    """A flat series with a few bounded allocator steps (what a healthy peer
    shows after its warm-up) against ~1000 departures: an interval far below
    1 KB; the same churn with a 12 KB leak per departure: far above it."""
    rng = np.random.default_rng(7)
    x = np.cumsum(rng.integers(10, 20, size=60)).astype(float)
    steps = np.zeros(60)
    steps[[9, 30, 47]] = [64.0, 128.0, 32.0]  # KB, the allocator taking more arena
    flat = 30_000 + np.cumsum(steps) + rng.normal(0, 4, 60)
    leak = flat + 12.0 * x
    f, g = growth_ci(x, flat), growth_ci(x, leak)
    assert f is not None and g is not None
    assert f.hi < 1.0 and f.lo > -1.0
    assert g.lo > 10.0 and g.hi < 14.0


def test_growth_undefined_cases() -> None:
    assert growth_ci([1, 2, 3, 4], [1, 2, 3, 4]) is None  # too few samples
    assert growth_ci([5, 5, 5, 5, 5], [1, 2, 3, 4, 5]) is None  # nobody departed
