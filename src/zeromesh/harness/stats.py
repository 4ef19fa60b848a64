"""The two estimates a soak reports, with their 95% intervals.

* hang rate: a binomial proportion, Wilson score interval (sound at 0 hangs,
  where the normal approximation gives an empty interval);
* memory growth per departure: RSS grown over departures after the warm-up,
  with an interval built on the per-sample increments (:func:`growth_ci`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

Z95 = 1.959963984540054  # two-sided 95% normal quantile
#: Cap on the lag-1 autocorrelation used to widen an interval (at most
#: sqrt(19), about 4.4 times): beyond it the series says little either way.
R1_CAP = 0.9


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
    """Growth of *y* per unit of *x* with its interval (KB of RSS per departure)."""

    slope: float
    lo: float
    hi: float
    #: Of the line through the window's mean point with this slope (for plots).
    intercept: float
    #: Samples used (increments: n - 1).
    n: int
    #: Lag-1 autocorrelation of the increments' residuals used to widen the interval.
    r1: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def growth_ci(x: ArrayLike, y: ArrayLike, level: float = 0.95) -> Slope | None:
    """Growth of *y* per unit of *x* over a series, with its *level* interval.

    The estimate is the total growth over the total increase of *x*,
    ``(y[-1] - y[0]) / (x[-1] - x[0])``: RSS grown per departure. Its interval
    models RSS as a random walk with a drift proportional to departures: each
    sampling interval's growth ``dy_i`` is ``b dx_i`` plus an independent
    step ``e_i``. That is what allocator growth looks like (a step stays; RSS
    does not return to a line), so the interval is built on the increments,
    not on residuals around a line (which are then strongly autocorrelated
    and give an interval either far too narrow or, once corrected, far too
    wide). Ratio-estimator standard error ``sqrt(n/(n-1) sum e_i^2) / sum dx_i``,
    Student t with n - 1 degrees of freedom, widened by ``sqrt((1+r)/(1-r))``
    for a positive lag-1 autocorrelation ``r`` of the ``e_i`` (a step spread
    over two samples). None when it cannot be estimated (fewer than 5
    samples, or *x* did not move).
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xa) < 5 or len(ya) != len(xa):
        return None
    dx, dy = np.diff(xa), np.diff(ya)
    total = float(dx.sum())
    if total <= 0:
        return None
    n = len(dx)
    b = float(dy.sum()) / total
    e = dy - b * dx
    r1 = 0.0
    if n > 3 and np.ptp(e[:-1]) > 0 and np.ptp(e[1:]) > 0:
        r1 = float(np.corrcoef(e[:-1], e[1:])[0, 1])
        r1 = 0.0 if math.isnan(r1) else min(max(r1, 0.0), R1_CAP)
    se = math.sqrt(n / (n - 1) * float(np.sum(e * e))) / total * math.sqrt((1 + r1) / (1 - r1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * se
    intercept = float(ya.mean()) - b * float(xa.mean())
    return Slope(b, b - half, b + half, intercept, len(xa), r1)
