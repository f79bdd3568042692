"""The probe estimators: closed-form ridge, multinomial logistic regression, isotonic regression.

Each estimator takes the fit, validation and test rows of one split and returns test predictions,
choosing its regularisation on the validation rows; none touches global random state.

- :func:`ridge_predict`: closed-form ridge, the penalty chosen per target on validation rows,
  the whole path from one eigendecomposition of the training Gram matrix, then a refit on the
  fit and validation rows together.
- :func:`logistic_predict`: multinomial logistic regression by full-batch L-BFGS, along a path
  of L2 penalties from strongest to weakest, warm-started.
- :func:`isotonic_predict`: monotone 1-D regression (scikit-learn), for the scalar variance
  feature; no parameter to tune.

The torch estimators run on the device of their inputs (CPU or GPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from nopelens.probes.metrics import _spearman

#: Probe kinds: ridge regression, multinomial logistic regression, isotonic regression (1-D).
PROBES: tuple[str, ...] = ("ridge", "logistic", "isotonic")
#: Default ridge penalties, relative to the mean eigenvalue of the training Gram matrix.
RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-5, 3, 17))
#: Default logistic L2 penalties (per-token loss scale), strongest first.
LAMBDAS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _moments(x: torch.Tensor, y: torch.Tensor) -> tuple[Any, ...]:
    """Row count, sums and raw cross products in float64 (products accumulate in x's dtype)."""
    return (
        x.shape[0],
        x.sum(dim=0).double(),
        y.sum(dim=0).double(),
        (x.T @ x).double(),
        (x.T @ y).double(),
    )


def _ridge_path(moments: tuple[Any, ...]) -> tuple[Any, ...]:
    """The eigenbasis of the centred Gram matrix: everything every penalty of the path needs.

    Returns the means of ``x`` and ``y``, the eigenvalues ``lam`` and eigenvectors ``V`` of the
    centred ``X^T X``, the projected cross products ``V^T X^T y`` and the mean eigenvalue (the
    scale that relative penalties multiply).
    """
    n, sum_x, sum_y, xx, xy = moments
    mean_x, mean_y = sum_x / n, sum_y / n
    gram = xx - n * torch.outer(mean_x, mean_x)  # centred: an unpenalised intercept
    cross = xy - n * torch.outer(mean_x, mean_y)
    lam, vectors = torch.linalg.eigh(gram)
    lam = lam.clamp_min(0.0)
    scale = float(lam.sum()) / lam.shape[0] or 1.0
    return mean_x, mean_y, lam, vectors, vectors.T @ cross, scale


def ridge_predict(
    x_fit: Float[torch.Tensor, "n_fit n_features"],
    y_fit: Float[torch.Tensor, "n_fit n_targets"],
    x_val: Float[torch.Tensor, "n_val n_features"],
    y_val: Float[torch.Tensor, "n_val n_targets"],
    x_test: Float[torch.Tensor, "n_test n_features"],
    *,
    alphas: Sequence[float] = RELATIVE_ALPHAS,
) -> tuple[Float[torch.Tensor, "n_test n_targets"], list[float]]:
    """Closed-form ridge regression with the penalty chosen per target on validation data.

    With centred features ``X`` (an unpenalised intercept), the eigendecomposition
    ``X^T X = V diag(lam) V^T`` gives every solution of the path at once:
    ``w(alpha) = V diag(1 / (lam + alpha)) V^T X^T y``. For each target column the penalty with the
    lowest validation mean squared error is kept, and the probe is refitted on the fit and
    validation rows together. Penalties are relative to the mean eigenvalue of ``X^T X``. The data
    are read twice (one ``X^T X`` product per part); the rest works on
    ``n_features x n_features`` matrices in float64.

    Args:
        x_fit: Training features (ideally standardised).
        y_fit: Training targets, one column per target.
        x_val: Validation features.
        y_val: Validation targets.
        x_test: Test features.
        alphas: Relative penalties to try.

    Returns:
        Test predictions ``[n_test, n_targets]`` and the chosen relative penalty of each target.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(300, 3, generator=g)
        >>> y = (x @ torch.tensor([1.0, -2.0, 0.5]) + 3.0)[:, None]
        >>> pred, chosen = ridge_predict(x[:200], y[:200], x[200:250], y[200:250], x[250:])
        >>> bool(torch.allclose(pred, y[250:], atol=1e-2))
        True
    """
    fit, val = _moments(x_fit, y_fit), _moments(x_val, y_val)
    mean_x, mean_y, lam, vectors, proj, scale = _ridge_path(fit)
    val_basis = (x_val.double() - mean_x) @ vectors
    errors = []
    for alpha in alphas:
        pred = val_basis @ (proj / (lam + alpha * scale)[:, None]) + mean_y
        errors.append(((pred - y_val.double()) ** 2).mean(dim=0))
    best = torch.stack(errors).argmin(dim=0).tolist()
    chosen = [float(alphas[i]) for i in best]

    both = tuple(a + b for a, b in zip(fit, val, strict=True))
    mean_x, mean_y, lam, vectors, proj, scale = _ridge_path(both)
    alpha = torch.tensor(chosen, dtype=lam.dtype, device=lam.device) * scale
    weights = vectors @ (proj / (lam[:, None] + alpha[None, :]))
    pred = (x_test.double() - mean_x) @ weights + mean_y
    return pred.float(), chosen


def _lbfgs(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    max_iter: int,
) -> None:
    """Minimise ``sum_t mean CE_t + lam / 2 * ||W||^2`` in place, by full-batch L-BFGS.

    ``weight`` is ``[d, T, C]``, ``bias`` ``[T, C]`` and ``y`` ``[n, T]``.
    """
    n_targets, n_classes = bias.shape
    flat = y.reshape(-1)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=10,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (x @ weight.flatten(1) + bias.flatten()).view(-1, n_classes)
        loss = torch.nn.functional.cross_entropy(logits, flat) * n_targets
        loss = loss + 0.5 * lam * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        weight.requires_grad_(True)
        bias.requires_grad_(True)
        optimizer.step(closure)
        weight.requires_grad_(False)
        bias.requires_grad_(False)


def logistic_predict(
    x_fit: Float[torch.Tensor, "n_fit n_features"],
    y_fit: Int[torch.Tensor, "n_fit n_targets"],
    x_val: Float[torch.Tensor, "n_val n_features"],
    y_val: Int[torch.Tensor, "n_val n_targets"],
    x_test: Float[torch.Tensor, "n_test n_features"],
    n_classes: int,
    *,
    lambdas: Sequence[float] = LAMBDAS,
    max_iter: int = 20,
) -> tuple[Int[torch.Tensor, "n_test n_targets"], list[float]]:
    """Multinomial logistic regression with an L2 penalty chosen per target on validation data.

    One linear softmax classifier per target column, fitted jointly (the objective is a sum of
    independent per-target terms, so the joint optimum is each target's optimum) by full-batch
    L-BFGS on ``mean cross-entropy + lambda/2 * ||W||^2`` over the fit rows. The penalties are
    visited from strongest to weakest, each fit warm-started from the previous one. A target
    keeps the classifier with the lowest validation cross-entropy; once its validation loss
    rises it is final and leaves the joint problem (validation loss is, in practice, unimodal in
    the penalty), so the path stops as soon as every target has passed its best penalty. There is
    no refit on the validation rows (unlike :func:`ridge_predict`, where it is free).

    Args:
        x_fit: Training features (ideally standardised).
        y_fit: Training class labels in ``[0, n_classes)``, one column per target.
        x_val: Validation features.
        y_val: Validation labels.
        x_test: Test features.
        n_classes: Number of classes.
        lambdas: L2 penalties to try (per-token loss scale), strongest first.
        max_iter: L-BFGS iterations per penalty.

    Returns:
        Predicted test classes ``[n_test, n_targets]`` and the chosen penalty of each target.

    Examples:
        >>> x = torch.arange(40.0)[:, None] / 40
        >>> y = (x[:, 0] > 0.5).long()[:, None]
        >>> pred, _ = logistic_predict(x, y, x, y, torch.tensor([[0.1], [0.9]]), 2)
        >>> pred.flatten().tolist()
        [0, 1]
    """
    n_targets = y_fit.shape[1]
    x_fit, x_val, x_test = x_fit.float(), x_val.float(), x_test.float()
    device = x_fit.device
    weight = torch.zeros(x_fit.shape[1], n_targets, n_classes, device=device)
    bias = torch.zeros(n_targets, n_classes, device=device)
    best_loss = [math.inf] * n_targets
    chosen = [float(lambdas[0])] * n_targets
    pred = torch.zeros(x_test.shape[0], n_targets, dtype=torch.long, device=device)
    active = list(range(n_targets))
    for lam in lambdas:
        w, b = weight[:, active].clone(), bias[active].clone()
        _lbfgs(w, b, x_fit, y_fit[:, active], float(lam), max_iter)
        weight[:, active], bias[active] = w, b
        val_logits = (x_val @ w.flatten(1) + b.flatten()).view(-1, n_classes)
        val_loss = (
            torch.nn.functional.cross_entropy(
                val_logits, y_val[:, active].reshape(-1), reduction="none"
            )
            .view(-1, len(active))
            .mean(dim=0)
            .tolist()
        )
        test_pred = (x_test @ w.flatten(1) + b.flatten()).view(-1, len(active), n_classes)
        still = []
        for j, t in enumerate(active):
            if val_loss[j] < best_loss[t]:
                best_loss[t], chosen[t] = val_loss[j], float(lam)
                pred[:, t] = test_pred[:, j].argmax(dim=-1)
                still.append(t)
        active = still
        if not active:
            break
    return pred, chosen


def isotonic_predict(
    x_train: Float[np.ndarray, " n_train"],
    y_train: Float[np.ndarray, " n_train"],
    x_test: Float[np.ndarray, " n_test"],
) -> Float[np.ndarray, " n_test"]:
    """Monotone (isotonic) regression of ``y`` on a scalar ``x``.

    The best order-preserving 1-D readout, with no parameter to tune.
    The direction (increasing or decreasing) is the sign of the training Spearman correlation.
    Test values outside the training range are clipped.

    Examples:
        >>> x = np.array([3.0, 2.0, 1.0, 0.5])
        >>> isotonic_predict(x, np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.5, 0.1]))
        array([0.5, 3. ])
    """
    from sklearn.isotonic import IsotonicRegression

    increasing = _spearman(x_train, y_train) >= 0
    model = IsotonicRegression(increasing=increasing, out_of_bounds="clip")
    return model.fit(x_train, y_train).predict(x_test)
