"""How well a predicted similarity matrix fits the observed one.

Agreement is measured over the off-diagonal pairs ``i < j`` only (the diagonal is 1 by
definition): Pearson r, RMSE and the largest absolute error (:func:`fit_metrics`). Each
(site, prediction) row of :attr:`nopelens.theory.FirstLayerTheory.metrics` adds the adjacency
probability (AP) and neighborhood concordance (NC) of both matrices
(:func:`nopelens.measure.adjacency_probability`, :func:`nopelens.measure.neighborhood_concordance`),
so a prediction can also be judged by whether it reproduces the neighborhood structure.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from nopelens.measure import adjacency_probability, neighborhood_concordance
from nopelens.validation import InvalidParameterError

#: Columns of :attr:`nopelens.theory.FirstLayerTheory.metrics`.
METRIC_COLUMNS: tuple[str, ...] = (
    "site",
    "prediction",
    "pearson_r",
    "rmse",
    "max_error",
    "ap_observed",
    "ap_predicted",
    "nc_observed",
    "nc_predicted",
)


def fit_metrics(
    observed: Float[torch.Tensor, "pos pos"], predicted: Float[torch.Tensor, "pos pos"]
) -> dict[str, float]:
    """Pearson r, RMSE and max absolute error over the off-diagonal entries ``i < j``.

    ``pearson_r`` is NaN when either matrix is constant off the diagonal (e.g. the bidirectional
    closed form) or there are fewer than two off-diagonal pairs.

    Examples:
        >>> from nopelens.theory import uniform_attention_similarity
        >>> s = uniform_attention_similarity(5)
        >>> fit_metrics(s, s)
        {'pearson_r': 1.0, 'rmse': 0.0, 'max_error': 0.0}
    """
    if observed.shape != predicted.shape:
        raise InvalidParameterError(
            f"fit_metrics: observed has shape {tuple(observed.shape)} [pos pos] but predicted has "
            f"shape {tuple(predicted.shape)}."
        )
    n = observed.shape[-1]
    rows, cols = torch.triu_indices(n, n, offset=1)
    x = observed[rows, cols].double().cpu().numpy()
    y = predicted[rows, cols].double().cpu().numpy()
    if x.size == 0:
        return {"pearson_r": math.nan, "rmse": math.nan, "max_error": math.nan}
    diff = x - y
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    scale = max(float(np.abs(x).max()), float(np.abs(y).max()), 1e-30)
    pearson = (
        float(xc @ yc) / denom if x.size >= 2 and denom > 1e-12 * scale**2 * x.size else (math.nan)
    )
    return {
        "pearson_r": pearson,
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "max_error": float(np.abs(diff).max()),
    }


def site_metric_rows(
    site: str,
    observed: Float[torch.Tensor, "pos pos"],
    predictions: dict[str, Float[torch.Tensor, "pos pos"]],
) -> list[dict[str, Any]]:
    """One metrics row per prediction of one site, with the columns :data:`METRIC_COLUMNS`.

    Args:
        site: The site name (``"attn_out"``, ...), copied into the ``site`` column.
        observed: The observed batch-mean similarity matrix.
        predictions: Prediction name (``"pattern"``, ``"closed_form"``) -> predicted matrix.

    Returns:
        Rows of fit metrics (:func:`fit_metrics`) plus AP and NC of both matrices.

    Examples:
        >>> from nopelens.theory import uniform_attention_similarity
        >>> s = uniform_attention_similarity(5)
        >>> row = site_metric_rows("attn_out", s, {"closed_form": s})[0]
        >>> row["rmse"], row["ap_observed"] == row["ap_predicted"]
        (0.0, True)
    """
    ap_observed = float(adjacency_probability(observed))
    nc_observed = float(neighborhood_concordance(observed))
    return [
        {
            "site": site,
            "prediction": kind,
            **fit_metrics(observed, matrix),
            "ap_observed": ap_observed,
            "ap_predicted": float(adjacency_probability(matrix)),
            "nc_observed": nc_observed,
            "nc_predicted": float(neighborhood_concordance(matrix)),
        }
        for kind, matrix in predictions.items()
    ]
