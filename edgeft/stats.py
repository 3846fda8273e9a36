"""Exact statistics without scipy (the device side has numpy only).

- nearest-rank percentiles (value at index ceil(p*n) - 1 of the sorted samples, trtexec-compatible);
- MLPerf LoadGen early-stopping upper bounds for a latency percentile (confidence 0.99, tolerance 0);
- Wilson and Clopper-Pearson binomial intervals, exact Poisson upper bound.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def nearest_rank(sorted_vals, p: float) -> float:
    n = len(sorted_vals)
    if n == 0:
        return float("nan")
    k = max(int(math.ceil(p * n)) - 1, 0)
    return float(sorted_vals[min(k, n - 1)])


# -------------------------------------------------------------------------------- binomial helpers
def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P[X <= k], X ~ Binomial(n, p), summed in log space (exact to double precision)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [_log_binom_pmf(i, n, p) for i in range(0, k + 1)]
    m = max(logs)
    if m == -math.inf:
        return 0.0
    return min(1.0, math.exp(m) * sum(math.exp(v - m) for v in logs))


def binom_sf(k: int, n: int, p: float) -> float:
    """P[X > k]."""
    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    logs = [_log_binom_pmf(i, n, p) for i in range(k + 1, n + 1)]
    m = max(logs)
    if m == -math.inf:
        return 0.0
    return min(1.0, math.exp(m) * sum(math.exp(v - m) for v in logs))


# ------------------------------------------------------------------------------ MLPerf early stopping
@lru_cache(maxsize=4096)
def early_stopping_overlatency(n: int, percentile: float, confidence: float = 0.99) -> int | None:
    """LoadGen early stopping (tolerance 0): the largest t with P[X <= t] <= 1 - confidence for
    X ~ Binomial(n, 1 - percentile). The estimate is the t-th largest sample (t = 1 is the maximum).

    Returns None when t < 1, i.e. n is too small to claim the percentile (p90 needs n >= 64, p99 n >= 662)."""
    q = 1.0 - percentile
    alpha = 1.0 - confidence
    if binom_cdf(1, n, q) > alpha:
        return None
    lo, hi = 1, n
    while lo < hi:  # cdf is increasing in t: binary search the last t with cdf(t) <= alpha
        mid = (lo + hi + 1) // 2
        if binom_cdf(mid, n, q) <= alpha:
            lo = mid
        else:
            hi = mid - 1
    return lo


def early_stopping_bound(sorted_vals, percentile: float, confidence: float = 0.99) -> float | None:
    """MLPerf early-stopping latency estimate: the t-th largest sample (see
    :func:`early_stopping_overlatency`); None when there are too few samples."""
    n = len(sorted_vals)
    if n == 0:
        return None
    t = early_stopping_overlatency(n, percentile, confidence)
    if t is None:
        return None
    return float(sorted_vals[n - t])


def min_queries_for(percentile: float, confidence: float = 0.99) -> int:
    n = 1
    while early_stopping_overlatency(n, percentile, confidence) is None:
        n += 1
    return n


# ---------------------------------------------------------------------------------------- intervals
def wilson_ci(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    ph = k / n
    den = 1 + z * z / n
    c = (ph + z * z / (2 * n)) / den
    h = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def _bisect(f, lo: float, hi: float, iters: int = 200) -> float:
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid):
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval."""
    if n == 0:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else _bisect(lambda p: binom_sf(k - 1, n, p) >= a, 0.0, 1.0)
    hi = 1.0 if k == n else _bisect(lambda p: binom_cdf(k, n, p) <= a, 0.0, 1.0)
    return (lo, hi)


def poisson_cdf(k: int, mu: float) -> float:
    if mu <= 0:
        return 1.0
    logs = [i * math.log(mu) - mu - math.lgamma(i + 1) for i in range(k + 1)]
    m = max(logs)
    return min(1.0, math.exp(m) * sum(math.exp(v - m) for v in logs))


def poisson_upper(k: int, confidence: float = 0.95) -> float:
    """One-sided exact upper bound on the Poisson mean after observing k events (0 -> 3.0 at 95%)."""
    a = 1 - confidence
    hi = max(10.0, 4.0 * (k + 10))
    return _bisect(lambda mu: poisson_cdf(k, mu) <= a, 0.0, hi)


def summarize(vals_ms, percentile_method: str = "nearest_rank") -> dict:
    """LatencyStats: count, min, mean, std, cov, p50/p90/p95/p99/p999, max, p90_ub99, p99_ub99."""
    a = np.sort(np.asarray(vals_ms, dtype=np.float64))
    n = int(a.size)
    if n == 0:
        return {"count": 0}
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if n > 1 else 0.0
    return {
        "count": n, "min": float(a[0]), "mean": mean, "std": std, "cov": std / mean if mean else None,
        "p50": nearest_rank(a, 0.50), "p90": nearest_rank(a, 0.90), "p95": nearest_rank(a, 0.95),
        "p99": nearest_rank(a, 0.99), "p999": nearest_rank(a, 0.999), "max": float(a[-1]),
        "p90_ub99": early_stopping_bound(a, 0.90), "p99_ub99": early_stopping_bound(a, 0.99),
    }
