"""Confidence intervals and significance tests for experiment results.

Commerce does not depend on scipy, so everything uses the normal distribution from the
standard library. That is exact enough here: the guard acts only once each arm has hundreds of
exposures, where Welch's t and the normal distribution agree to the third decimal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_N = NormalDist()
Z95 = _N.inv_cdf(0.975)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval; ``None`` when undefined."""

    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Comparison:
    """Treatment against control: absolute and relative lift with CIs, two-sided p-value."""

    absolute: Interval
    relative: Interval
    p_value: float | None


NONE = Interval(None, None, None)


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """The rate successes/n with its Wilson score interval (good near 0 and for small n)."""
    if n <= 0:
        return NONE
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exact at the edges, where rounding would otherwise leave a hair above 0 or below 1.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return Interval(p, low, high)


def mean_interval(total: float, total_sq: float, n: int, z: float = Z95) -> Interval:
    """A mean from its sum and sum of squares, with a normal-approximation interval."""
    if n <= 0:
        return NONE
    mean = total / n
    se = math.sqrt(sample_variance(total, total_sq, n) / n)
    return Interval(mean, mean - z * se, mean + z * se)


def sample_variance(total: float, total_sq: float, n: int) -> float:
    """The unbiased sample variance from a sum and a sum of squares (0 for n < 2)."""
    if n < 2:
        return 0.0
    # Rounding can make this a hair negative when every value is equal.
    return max(0.0, (total_sq - total * total / n) / (n - 1))


def two_sided_p(z: float) -> float:
    """The two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2))


def _relative(p_c: float, p_t: float, var_log: float, z: float) -> Interval:
    # Delta method on log(p_t / p_c): a ratio's interval is asymmetric, the log's is not.
    rel = p_t / p_c - 1
    if p_t <= 0 or var_log <= 0:
        return Interval(rel, None, None)
    half = z * math.sqrt(var_log)
    ratio = math.log(p_t / p_c)
    return Interval(rel, math.exp(ratio - half) - 1, math.exp(ratio + half) - 1)


def compare_proportions(x_c: int, n_c: int, x_t: int, n_t: int, z: float = Z95) -> Comparison:
    """Two-proportion comparison: unpooled CI for the difference, pooled z-test for p."""
    if n_c <= 0 or n_t <= 0:
        return Comparison(NONE, NONE, None)
    p_c, p_t = x_c / n_c, x_t / n_t
    diff = p_t - p_c
    se = math.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    absolute = Interval(diff, diff - z * se, diff + z * se)
    pooled = (x_c + x_t) / (n_c + n_t)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    p_value = two_sided_p(diff / se0) if se0 > 0 else None
    if p_c <= 0:
        relative = NONE
    else:
        var_log = (1 - p_c) / (n_c * p_c) + ((1 - p_t) / (n_t * p_t) if p_t > 0 else 0.0)
        relative = _relative(p_c, p_t, var_log, z)
    return Comparison(absolute, relative, p_value)


def one_sided_worse(x_c: int, n_c: int, x_t: int, n_t: int) -> float | None:
    """P-value of "treatment converts worse than control" (pooled z-test, lower tail)."""
    if n_c <= 0 or n_t <= 0:
        return None
    pooled = (x_c + x_t) / (n_c + n_t)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    if se0 <= 0:
        return None
    return _N.cdf((x_t / n_t - x_c / n_c) / se0)


def compare_means(
    sum_c: float,
    sq_c: float,
    n_c: int,
    sum_t: float,
    sq_t: float,
    n_t: int,
    z: float = Z95,
) -> Comparison:
    """Welch comparison of two means (large-sample normal reference) from sums and squares."""
    if n_c < 2 or n_t < 2:
        return Comparison(NONE, NONE, None)
    m_c, m_t = sum_c / n_c, sum_t / n_t
    v_c, v_t = sample_variance(sum_c, sq_c, n_c) / n_c, sample_variance(sum_t, sq_t, n_t) / n_t
    se = math.sqrt(v_c + v_t)
    diff = m_t - m_c
    absolute = Interval(diff, diff - z * se, diff + z * se)
    p_value = two_sided_p(diff / se) if se > 0 else None
    if m_c <= 0:
        relative = NONE
    elif m_t <= 0:
        relative = Interval(-1.0, None, None)
    else:
        relative = _relative(m_c, m_t, v_c / (m_c * m_c) + v_t / (m_t * m_t), z)
    return Comparison(absolute, relative, p_value)
