"""Probe metrics and their chance levels.

:func:`regression_metrics` (R^2, MAE, Spearman rho) scores ridge and isotonic predictions,
:func:`classification_metrics` (accuracy, mean absolute distance) scores logistic ones. The chance
levels (:func:`chance_levels`) are computed for uniformly distributed positions: the
predict-the-mean MAE (``~ n/4``) and the uniform-guess mean absolute distance (``~ n/3``, the
"Random" row of Haviv et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Metrics reported per probe kind.
PROBE_METRICS: dict[str, tuple[str, ...]] = {
    "ridge": ("r2", "mae", "spearman"),
    "logistic": ("accuracy", "mad"),
    "isotonic": ("r2", "mae", "spearman"),
}
#: The score whose task-minus-control difference is the selectivity of each probe kind.
SELECTIVITY_METRIC: dict[str, str] = {"ridge": "r2", "logistic": "accuracy", "isotonic": "r2"}
#: Metrics where lower is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "mad"})


def chance_levels(positions: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Chance level of every probe metric when the targets are uniform over ``positions``.

    - ``r2``, ``spearman``, ``selectivity``: 0 (predicting a constant; no rank information; a probe
      that does equally well on the control task).
    - ``mae``: predict-the-mean MAE, ``mean_p |p - mean(P)|`` (``n/4`` for ``P = 0..n-1``, n even).
    - ``accuracy``: ``1 / |P|``.
    - ``mad``: the mean absolute distance of a uniform random guess, ``mean_{p,q} |p - q|``
      ``= (n^2 - 1) / (3n)`` (Haviv et al.'s "Random" row, 341.33 at n = 1024).

    Args:
        positions: The distinct positions being predicted.

    Returns:
        Metric name -> chance value.

    Examples:
        >>> c = chance_levels(range(1024))
        >>> round(c["mad"], 2), c["mae"], round(c["accuracy"], 6)
        (341.33, 256.0, 0.000977)
    """
    p = np.sort(np.asarray(list(positions), dtype=np.float64))
    n = len(p)
    # mean_{p,q} |p - q| from the sorted values: sum_i (2i - n + 1) p_(i) * 2 / n^2, O(n log n)
    mad = float(2.0 * ((2.0 * np.arange(n) - n + 1.0) * p).sum() / n**2)
    return {
        "r2": 0.0,
        "mae": float(np.abs(p - p.mean()).mean()),
        "spearman": 0.0,
        "accuracy": 1.0 / len(p),
        "mad": mad,
        "selectivity": 0.0,
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho with average ranks; 0 when either side is constant (no rank information)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra**2).sum()) * float((rb**2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """R^2, mean absolute error and Spearman rho of predicted versus true positions.

    Examples:
        >>> m = regression_metrics(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 3.0]))
        >>> round(m["r2"], 3), round(m["mae"], 3), m["spearman"]
        (0.786, 0.333, 1.0)
    """
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    total = float(((target - target.mean()) ** 2).sum())
    residual = float(((target - pred) ** 2).sum())
    return {
        "r2": 1.0 - residual / total if total > 0 else float("nan"),
        "mae": float(np.abs(pred - target).mean()),
        "spearman": _spearman(pred, target),
    }


def classification_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Accuracy and mean absolute distance (MAD, in positions) of predicted classes.

    Examples:
        >>> classification_metrics(np.array([0, 1, 5]), np.array([0, 2, 2]))
        {'accuracy': 0.3333333333333333, 'mad': 1.3333333333333333}
    """
    pred, target = np.asarray(pred), np.asarray(target)
    return {
        "accuracy": float((pred == target).mean()),
        "mad": float(np.abs(pred.astype(np.float64) - target).mean()),
    }
