"""Probe metrics and their chance levels.

:func:`regression_metrics` (R^2, MAE, Spearman rho) scores ridge and isotonic predictions,
:func:`classification_metrics` (accuracy, mean absolute distance) scores logistic and MLP ones.

**Chance.** Every reported chance level is the expected score under the null that the features
carry no information about the labels, computed from the labels actually used (position labels
are uniform; the control task's and the length split's are not):

- regression probes (:func:`regression_chance`): a least-squares probe of uninformative features
  predicts the mean of its training labels, so chance is the score of that constant on the test
  labels: ``R^2 = -(mean_train - mean_test)^2 / var_test`` (0 when both means agree), MAE
  ``mean |mean_train - y|``, Spearman rho 0;
- classifiers (:func:`classification_chance`): predictions independent of the labels score, in
  expectation, ``sum_c p_c q_c`` accuracy and ``mean_{i,j} |pred_i - y_j|`` MAD, where ``p`` and
  ``q`` are the frequencies of the predicted and the true test classes (the exact mean of the
  score over all re-pairings of predictions and labels). For uniform positions this is ``1/n``
  whatever the predictions, and the MAD is ``(n^2 - 1) / (3n)`` (Haviv et al.'s "Random" row)
  when the predictions are spread uniformly too;
- selectivity: the position chance minus the control chance of the same score.

:func:`chance_levels` gives the closed forms for uniform positions, the reference these reduce to.
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
    "mlp": ("accuracy", "mad"),
}
#: Probe kinds that predict classes (scored by :func:`classification_metrics`).
CLASSIFIERS: frozenset[str] = frozenset({"logistic", "mlp"})
#: The score whose task-minus-control difference is the selectivity of each probe kind.
SELECTIVITY_METRIC: dict[str, str] = {
    "ridge": "r2",
    "logistic": "accuracy",
    "isotonic": "r2",
    "mlp": "accuracy",
}
#: Metrics where lower is better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "mad"})


def chance_levels(positions: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Closed-form chance levels when the test labels are uniform over ``positions``.

    The reference that :func:`regression_chance` and :func:`classification_chance` reduce to
    for position labels (every sequence holds every position once):

    - ``r2``, ``spearman``, ``selectivity``: 0;
    - ``mae``: the training-mean predictor's MAE, ``mean_p |p - mean(P)|`` (``n/4`` for
      ``P = 0..n-1``, n even);
    - ``accuracy``: ``1 / |P|`` (any predictions independent of the labels);
    - ``mad``: predictions independent of the labels and spread uniformly too,
      ``mean_{p,q} |p - q| = (n^2 - 1) / (3n)`` (Haviv et al.'s "Random" row, 341.33 at
      n = 1024).

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
    return {
        "r2": 0.0,
        "mae": float(np.abs(p - p.mean()).mean()),
        "spearman": 0.0,
        "accuracy": 1.0 / len(p),
        "mad": _mean_abs_difference(p, p),
        "selectivity": 0.0,
    }


def _mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """``mean_{i,j} |a_i - b_j|`` in O((m + n) log n), from the sorted ``b`` and its prefix sums."""
    a = np.asarray(a, dtype=np.float64)
    b = np.sort(np.asarray(b, dtype=np.float64))
    prefix = np.concatenate([[0.0], np.cumsum(b)])
    below = np.searchsorted(b, a, side="right")
    total = a * below - prefix[below] + (prefix[-1] - prefix[below]) - a * (len(b) - below)
    return float(total.sum() / (len(a) * len(b)))


def regression_chance(train: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Scores of the constant ``mean(train)`` on the ``test`` labels: the regression chance.

    A least-squares probe (ridge, isotonic) of features that carry no information about the
    labels predicts the mean of the labels it was fitted on; this is that prediction's R^2, MAE
    and Spearman rho (0: a constant carries no rank information).

    Args:
        train: The labels the probe was fitted on (fit and validation rows).
        test: The test labels.

    Examples:
        >>> c = regression_chance(np.arange(4.0), np.array([0.0, 1.0, 2.0, 3.0]))
        >>> c["r2"], c["mae"], c["spearman"]
        (0.0, 1.0, 0.0)
        >>> round(regression_chance(np.zeros(3), np.array([1.0, 3.0]))["r2"], 6)  # 1 - 10 / 2
        -4.0
    """
    constant = float(np.mean(train))
    test = np.asarray(test, dtype=np.float64)
    variance = float(test.var())
    gap = constant - float(test.mean())
    return {
        "r2": 0.0 - gap * gap / variance if variance > 0 else float("nan"),
        "mae": float(np.abs(test - constant).mean()),
        "spearman": 0.0,
    }


def classification_chance(pred: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Expected accuracy and MAD of ``pred`` if it were independent of the ``test`` labels.

    The mean of each score over all re-pairings of the predictions with the labels:
    accuracy ``sum_c p_c q_c`` and MAD ``mean_{i,j} |pred_i - test_j|``, with ``p`` and ``q`` the
    frequencies of the predicted and true classes. It is the score's expectation under the null
    for any classifier (the probe's own prediction frequencies are used, so a probe that always
    predicts the majority class gets the majority-class accuracy as its chance).

    Examples:
        >>> classification_chance(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
        {'accuracy': 0.5, 'mad': 0.5}
    """
    pred = np.asarray(pred)
    test = np.asarray(test)
    classes, counts = np.unique(test, return_counts=True)
    found = np.searchsorted(classes, pred).clip(max=len(classes) - 1)
    hits = np.where(classes[found] == pred, counts[found], 0)
    return {
        "accuracy": float(hits.sum() / (len(pred) * len(test))),
        "mad": _mean_abs_difference(pred, test),
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
