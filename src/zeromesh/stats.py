"""The two estimates a soak reports, with their 95% intervals.

* hang rate: a binomial proportion, Wilson score interval (sound at 0 hangs,
  where the normal approximation gives an empty interval);
* memory slope: least squares of RSS against departures (scipy's
  ``linregress``), with a Student-t interval whose standard error is widened
  for lag-1 autocorrelation of the residuals: RSS is sampled every second and
  allocator steps make neighbouring residuals alike, so the textbook interval
  would be too narrow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class Proportion:
    k: int
    n: int
    rate: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(k: int, n: int, z: float = Z95) -> Proportion:
    """*k* successes in *n* trials: the rate and its Wilson score interval.
    With no trials nothing is known: rate 0, interval [0, 1]."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Proportion(0, 0, 0.0, 0.0, 1.0)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # The exact interval touches 0 at k=0 and 1 at k=n; say so without rounding noise.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(k, n, p, lo, hi)


@dataclass(frozen=True)
class Slope:
    slope: float
    lo: float
    hi: float
    intercept: float
    n: int
    #: lag-1 autocorrelation of the residuals used to widen the interval
    r1: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slope_ci(x: ArrayLike, y: ArrayLike, level: float = 0.95) -> Slope | None:
    """Least-squares slope of *y* against *x* with its *level* interval.
    None when it cannot be estimated (fewer than 3 points, or *x* constant)."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xa)
    if n < 3 or len(ya) != n or np.ptp(xa) == 0:
        return None
    fit = sps.linregress(xa, ya)
    if not math.isfinite(float(fit.stderr)):
        return None
    resid = ya - (fit.intercept + fit.slope * xa)
    r1 = 0.0
    if n > 3 and np.any(resid != 0):
        r1 = float(np.corrcoef(resid[:-1], resid[1:])[0, 1])
        r1 = 0.0 if math.isnan(r1) else min(max(r1, 0.0), 0.99)
    # Effective sample size of AR(1) residuals: n (1 - r) / (1 + r).
    widen = math.sqrt((1 + r1) / (1 - r1))
    n_eff = max(3.0, n * (1 - r1) / (1 + r1))
    t = float(sps.t.ppf(0.5 + level / 2, n_eff - 2))
    half = t * float(fit.stderr) * widen
    s = float(fit.slope)
    return Slope(s, s - half, s + half, float(fit.intercept), n, r1)
