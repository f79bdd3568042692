# ruff: noqa: F722 (jaxtyping shape strings are not Python expressions)
"""Confidence intervals of a mean over sequences, with measured coverage (pure, no model).

:func:`mean_interval` gives, for every row of a ``[row, seq]`` array, an interval for the mean
over its ``seq`` axis, the population being "sequences like these": the per-sequence scores of
:func:`nopelens.analyze` are i.i.d. draws when the token sequences are. Methods
(:data:`CI_METHODS`):

* ``"studentized"`` (the default; bootstrap-t, Efron & Tibshirani 1993, ch. 12): with the sample
  mean ``m``, standard error ``se = sd / sqrt(n)`` (``ddof=1``) and, for each resample ``b``,
  ``t*_b = (m*_b - m) / se*_b``, the interval is ``[m - t*_(1-a/2) se, m - t*_(a/2) se]``,
  ``a = 1 - confidence``, the quantiles being order statistics of the ``t*_b`` (``inverted_cdf``).
  It corrects both the narrowness of the plain bootstrap at small ``n`` and skewness.
* ``"percentile"``: the ``a/2`` and ``1 - a/2`` quantiles (linear) of the resample means; what the
  analyzer printed before issue 14. Too narrow at small ``n`` (its spread is the ``ddof=0``
  standard error).
* ``"bca"``: bias-corrected and accelerated percentile (Efron 1987), with the jackknife
  acceleration of the mean ``sum d^3 / (6 (sum d^2)^1.5)``, ``d = x - m``.
* ``"t"``: Student's ``m ± t_{n-1, 1-a/2} se`` (no resampling; ``n_resamples`` and ``seed`` are
  unused).

**Measured coverage** (``python benchmarks/bench_coverage.py``; truth = the mean of a pool of 4096
per-sequence scores of 2-layer d_model-64 random-init NoPE models, ``pos = 32``; 2000
replications, 1000 resamples; binomial standard error of each figure ~0.005). Nominal 95%:

============================  ======  ==========  ======  =====  ===========
truth                         n_seqs  percentile  bca     t      studentized
============================  ======  ==========  ======  =====  ===========
AP, bidirectional block 0     8       0.881       0.887   0.943  0.953
(at chance, skew ~1)          16      0.915       0.919   0.946  0.955
                              32      0.935       0.937   0.952  0.950
                              64      0.938       0.942   0.948  0.949
NC, causal block 0            8       0.877       0.875   0.942  0.943
                              16      0.927       0.927   0.952  0.955
                              32      0.917       0.918   0.935  0.936
                              64      0.947       0.944   0.954  0.953
exponential (skew 2)          8       0.857       0.875   0.902  0.940
                              32      0.928       0.931   0.938  0.951
log-normal (skew 6)           8       0.798       0.809   0.841  0.902
                              32      0.880       0.894   0.886  0.934
============================  ======  ==========  ======  =====  ===========

The studentized interval covers 0.936-0.955 for every AP/NC truth measured (also AP of causal
block 0 and NC of bidirectional block 0) and for the exponential, from 8 to 64 sequences; the
percentile interval under-covers by 2-9 points below 32 sequences. Very heavy tails (log-normal)
still under-cover below 32 sequences. With 200 resamples the studentized coverage is within 0.01
of that with 1000; with 50 it drops to 0.91-0.93 (its 2.5% order statistic is the second
smallest). The benchmark prints the full table.

**Resamples.** Resample ``b`` uses the sequences ``idx[b]`` of
``np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))`` (drawn in chunks: the same
stream), shared by every row (a paired bootstrap: rows of one call can be compared).

**Degenerate cases.** ``n < 2``: NaN (no interval from one sequence). All values of a row equal:
the point ``[m, m]`` for every method. A resample whose values are all equal has ``se*_b = 0``
and ``t*_b = ±inf`` (or 0 if its mean is ``m``); an endpoint that is infinite, or beyond
``bounds``, is clipped to ``bounds`` (the analyzer's scores lie in ``[0, 1]``). Equality is up to
rounding: a resample mean within ``1e-9``, or a resample sd below ``1e-6``, of the row's largest
deviation from its mean counts as equal to the mean, or as 0.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Float

from nopelens.validation import InvalidParameterError, check_choice, check_float, check_int

#: The interval methods of :func:`mean_interval`; the first is the default.
CI_METHODS: tuple[str, ...] = ("studentized", "percentile", "bca", "t")
#: Resample indices are drawn in chunks of about this many entries (bounds temporary memory).
_CHUNK_ENTRIES = 1 << 21
#: A resample mean within this fraction of the row's largest deviation of the sample mean counts
#: as equal to it (rounding of the moment formula is ~1e-16).
_SHIFT_ZERO = 1e-9
#: A resample sd below this fraction of the row's largest deviation counts as 0 (a constant
#: resample; the moment formula leaves ~1e-8 of the scale).
_SD_ZERO = 1e-6


def mean_interval(
    values: Float[np.ndarray, "row seq"],
    *,
    method: str = "studentized",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
) -> tuple[Float[np.ndarray, " row"], Float[np.ndarray, " row"]]:
    """Confidence interval of the mean over ``seq`` for every row (see the module docstring).

    Args:
        values: ``[row, seq]`` finite values; each row is one statistic measured on ``seq``
            independent sequences.
        method: One of :data:`CI_METHODS`.
        n_resamples: Bootstrap resamples (``>= 1``; unused by ``"t"``).
        confidence: Nominal coverage, in ``(0, 1)``.
        seed: Seed of the private resampling generator (the global random state is untouched).
        bounds: ``(low, high)`` range the mean cannot leave; endpoints are clipped to it.

    Returns:
        ``(low, high)``, each ``[row]`` float64 (NaN where ``seq < 2``).

    Raises:
        ValueError: If ``values`` is not a finite 2-D float array, or an option is invalid.

    Examples:
        >>> x = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]])
        >>> low, high = mean_interval(x, method="t")
        >>> round(float(low[0]), 4), round(float(high[0]), 4)
        (0.2452, 0.6548)
        >>> low, high = mean_interval(x, n_resamples=2000, seed=1)
        >>> bool(low[0] < 0.45 < high[0])
        True
    """
    values = _check_values(values, method, n_resamples, confidence, seed, bounds)
    rows, n = values.shape
    if n < 2:
        nan = np.full(rows, np.nan)
        return nan, nan.copy()
    alpha = 1.0 - confidence
    if method == "t":
        low, high = _t_interval(values, alpha)
    else:
        mean = values.mean(axis=1)
        centred = values - mean[:, None]
        shifts, sds = _resample_moments(centred, n_resamples, seed, need_sd=method == "studentized")
        if method == "percentile":
            low, high = mean + np.quantile(shifts, [alpha / 2, 1 - alpha / 2], axis=1)
        elif method == "bca":
            low, high = _bca(centred, mean, shifts, alpha)
        else:
            low, high = _studentized(centred, mean, shifts, sds, alpha)
    constant = values.max(axis=1) == values.min(axis=1)
    low = np.where(constant, values[:, 0], low)
    high = np.where(constant, values[:, 0], high)
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low.astype(np.float64), high.astype(np.float64)


def _check_values(
    values: object,
    method: object,
    n_resamples: object,
    confidence: object,
    seed: object,
    bounds: object,
) -> np.ndarray:
    """Validate every argument of :func:`mean_interval`; return ``values`` as float64."""
    func = "mean_interval"
    if (
        not isinstance(values, np.ndarray)
        or values.ndim != 2
        or not np.issubdtype(values.dtype, np.floating)
    ):
        got = (
            f"shape {values.shape} dtype {values.dtype}"
            if isinstance(values, np.ndarray)
            else type(values).__name__
        )
        raise InvalidParameterError(
            f"The 'values' parameter of {func} must be a 2-D float numpy array [row seq]. "
            f"Got {got} instead."
        )
    if not np.isfinite(values).all():
        raise InvalidParameterError(f"The 'values' parameter of {func} contains NaN or infinity.")
    check_choice(method, "method", CI_METHODS, func)
    check_int(n_resamples, "n_resamples", func, min=1)
    check_float(confidence, "confidence", func, min=0.0, max=1.0, min_inclusive=False)
    if confidence == 1.0:
        raise InvalidParameterError(
            f"The 'confidence' parameter of {func} must be a finite float > 0.0 and < 1.0. "
            f"Got {confidence!r} instead."
        )
    check_int(seed, "seed", func, min=0)
    if bounds is not None and (
        not isinstance(bounds, tuple)
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) and not math.isnan(b) for b in bounds)
        or not bounds[0] <= bounds[1]
    ):
        raise InvalidParameterError(
            f"The 'bounds' parameter of {func} must be None or a (low, high) tuple of numbers "
            f"with low <= high. Got {bounds!r} instead."
        )
    return values.astype(np.float64, copy=False)


def _t_interval(values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import stdtrit  # Student t quantile (lighter than scipy.stats)

    n = values.shape[1]
    mean = values.mean(axis=1)
    half = float(stdtrit(n - 1, 1 - alpha / 2)) * values.std(axis=1, ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def _resample_moments(
    centred: np.ndarray, n_resamples: int, seed: int, *, need_sd: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each resample mean minus the sample mean, and the resample sd: ``[row, resample]`` each.

    The resample counts ``c[b, j]`` (how often sequence ``j`` is drawn) turn both into matrix
    products of the centred rows ``x``: ``m*_b - m = (x @ c[b]) / n`` and
    ``sd*_b^2 = ((x^2 @ c[b]) / n - (m*_b - m)^2) n/(n-1)`` (centring first keeps the
    subtraction from cancelling).
    """
    rows, n = centred.shape
    rng = np.random.default_rng(seed)
    means = np.empty((rows, n_resamples))
    sds = np.empty((rows, n_resamples)) if need_sd else np.empty((0, 0))
    squares = centred * centred if need_sd else centred
    step = max(1, _CHUNK_ENTRIES // n)
    for lo in range(0, n_resamples, step):
        hi = min(lo + step, n_resamples)
        idx = rng.integers(0, n, size=(hi - lo, n))
        flat = (idx + n * np.arange(hi - lo)[:, None]).ravel()
        counts = np.bincount(flat, minlength=(hi - lo) * n).reshape(hi - lo, n).astype(np.float64)
        means[:, lo:hi] = centred @ counts.T / n
        if need_sd:
            second = squares @ counts.T / n
            var = np.maximum(second - means[:, lo:hi] ** 2, 0.0) * (n / (n - 1))
            sds[:, lo:hi] = np.sqrt(var)
    return means, sds


def _studentized(
    centred: np.ndarray, mean: np.ndarray, shifts: np.ndarray, sds: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap-t: ``[m - t*_(1-a/2) se, m - t*_(a/2) se]`` with order-statistic quantiles."""
    n = centred.shape[1]
    se = centred.std(axis=1, ddof=1) / math.sqrt(n)
    scale = np.abs(centred).max(axis=1, keepdims=True)
    # A constant resample has sd* = 0, computed as ~1e-8 of the scale (the moment formula
    # cancels): below _SD_ZERO it is 0, and t* is +-inf, or 0 if the resample mean is the mean.
    constant = sds <= _SD_ZERO * scale
    level = np.abs(shifts) <= _SHIFT_ZERO * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(constant, np.sign(shifts) * np.inf, shifts / (sds / math.sqrt(n)))
    t = np.where(level & constant, 0.0, t)
    t_low, t_high = np.quantile(t, [alpha / 2, 1 - alpha / 2], axis=1, method="inverted_cdf")
    with np.errstate(invalid="ignore"):  # inf * 0 (a constant row): replaced by [m, m] later
        return mean - t_high * se, mean - t_low * se


def _bca(
    centred: np.ndarray, mean: np.ndarray, shifts: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """BCa: percentile levels shifted by the bias ``z0`` and the jackknife acceleration."""
    from scipy.special import ndtr, ndtri  # normal CDF and quantile

    n_resamples = shifts.shape[1]
    level = np.abs(shifts) <= _SHIFT_ZERO * np.abs(centred).max(axis=1, keepdims=True)
    below = ((shifts < 0) & ~level).sum(axis=1) + 0.5 * level.sum(axis=1)
    share = np.clip(below / n_resamples, 0.5 / n_resamples, 1 - 0.5 / n_resamples)
    z0 = ndtri(share)
    spread = (centred**2).sum(axis=1) ** 1.5
    with np.errstate(divide="ignore", invalid="ignore"):
        accel = np.where(spread > 0, (centred**3).sum(axis=1) / (6 * spread), 0.0)
    ends = []
    for z_alpha in ndtri(np.array([alpha / 2, 1 - alpha / 2])):
        shifted = z0 + z_alpha
        level = ndtr(z0 + shifted / (1 - accel * shifted))
        ends.append(np.array([np.quantile(row, q) for row, q in zip(shifts, level, strict=True)]))
    return mean + ends[0], mean + ends[1]
