"""The soak's estimates: Wilson intervals against published values, and the
least-squares slope interval against its textbook form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from zeromesh.stats import slope_ci, wilson

pytestmark = pytest.mark.timeout(30)


# Newcombe (1998), "Two-sided confidence intervals for the single proportion",
# Statistics in Medicine 17:857, table I, method 3 (Wilson score, no correction).
@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
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


def test_slope_of_exact_line() -> None:
    s = slope_ci([0, 1, 2, 3, 4], [2, 5, 8, 11, 14])
    assert s is not None
    assert s.slope == pytest.approx(3.0)
    assert s.lo == pytest.approx(3.0) and s.hi == pytest.approx(3.0)


def test_slope_interval_is_textbook_when_residuals_independent() -> None:
    x = np.arange(30, dtype=float)
    noise = np.where(x % 2 == 0, 1.0, -1.0) * (1 + (x % 5) / 10)  # alternating: r1 < 0, no widening
    y = 0.5 * x + 7 + noise
    s = slope_ci(x, y)
    assert s is not None and s.r1 == 0.0
    fit = sps.linregress(x, y)
    half = sps.t.ppf(0.975, len(x) - 2) * fit.stderr
    assert s.slope == pytest.approx(fit.slope)
    assert s.lo == pytest.approx(fit.slope - half) and s.hi == pytest.approx(fit.slope + half)


def test_autocorrelated_residuals_widen_the_interval() -> None:
    rng = np.random.default_rng(1)
    x = np.arange(200, dtype=float)
    e = np.zeros(200)
    for i in range(1, 200):  # AR(1), phi 0.8: what allocator steps look like
        e[i] = 0.8 * e[i - 1] + rng.normal()
    s = slope_ci(x, 2.0 * x + e)
    fit = sps.linregress(x, 2.0 * x + e)
    assert s is not None and s.r1 > 0.5
    assert (s.hi - s.lo) > 1.8 * (2 * 1.97 * fit.stderr)  # sqrt((1+r)/(1-r)) ~ 2
    assert s.lo < 2.0 < s.hi


def test_slope_undefined_cases() -> None:
    assert slope_ci([1, 2], [1, 2]) is None
    assert slope_ci([5, 5, 5, 5], [1, 2, 3, 4]) is None
