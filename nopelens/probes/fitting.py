"""The probe estimators: closed-form ridge, multinomial logistic regression, isotonic regression.

Each estimator takes the fit, validation and test rows of one split and returns test predictions,
choosing its regularisation on the validation rows; none touches global random state.

- :func:`ridge_predict`: closed-form ridge, the penalty chosen per target on validation rows,
  the whole path from one eigendecomposition of the training Gram matrix, then a refit on the
  fit and validation rows together.
- :func:`logistic_predict`: multinomial logistic regression by full-batch L-BFGS, one target at
  a time, along a path of L2 penalties from strongest to weakest, warm-started.
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

#: Probe kinds: ridge regression, multinomial logistic regression, isotonic regression (1-D),
#: a one-hidden-layer MLP classifier (:func:`~nopelens.probes.mlp_predict`).
PROBES: tuple[str, ...] = ("ridge", "logistic", "isotonic", "mlp")
#: The probe kinds fitted unless others are named (the linear ones and the 1-D isotonic).
DEFAULT_PROBES: tuple[str, ...] = ("ridge", "logistic", "isotonic")
#: Default ridge penalties, relative to the mean eigenvalue of the training Gram matrix.
RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-5, 3, 17))
#: Default logistic L2 penalties (per-token loss scale), strongest first.
LAMBDAS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _moments(x: torch.Tensor, y: torch.Tensor, gram: torch.Tensor | None = None) -> tuple[Any, ...]:
    """Row count, sums and raw cross products in float64 (products accumulate in x's dtype).

    ``gram`` is ``(x.T @ x).double()`` when the caller has it.
    """
    return (
        x.shape[0],
        x.sum(dim=0).double(),
        y.sum(dim=0).double(),
        (x.T @ x).double() if gram is None else gram,
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
    fit_gram: Float[torch.Tensor, "n_features n_features"] | None = None,
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
        fit_gram: ``(x_fit.T @ x_fit).double()`` when the caller has it (e.g. from the
            principal components of the same features); computed here otherwise. Same results.

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
    fit, val = _moments(x_fit, y_fit, fit_gram), _moments(x_val, y_val)
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


def _cross_entropy_grad(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean CE(x W + b, y)`` and its gradient with respect to the logits, in closed form.

    The gradient is ``(softmax - onehot) / n``; the softmax is computed once, in place, from the
    max-shifted logits, in ``out`` (``[n, C]``) when given. ``y`` is ``[n, 1]``.
    """
    n = x.shape[0]
    logits = torch.addmm(bias, x, weight, out=out)
    logits -= logits.amax(dim=1, keepdim=True)
    picked = logits.gather(1, y)
    logits.exp_()
    total = logits.sum(dim=1, keepdim=True)
    cross_entropy = (total.log() - picked).mean()
    logits /= total * n
    logits.scatter_add_(1, y, torch.full_like(picked, -1.0 / n))
    return cross_entropy, logits


def _loss_and_grad(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lam: float,
    x_t: torch.Tensor | None = None,
    *,
    cached: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mean CE(x W + b, y) + lam / 2 * ||W||^2`` and its gradients, in closed form.

    The cross-entropy and its logit gradient come from :func:`_cross_entropy_grad`, or from
    ``cached``, the ``(cross-entropy, logit gradient)`` of an earlier evaluation at the same ``W``
    and ``b`` (they do not depend on ``lam``). ``x_t``, when given, is ``x.T`` stored
    contiguously: the gradient's product reads it a third faster than the transposed view, with
    the same result bit for bit (the matrix library packs both into the same blocks).
    """
    cross_entropy, dlogits = _cross_entropy_grad(x, y, weight, bias) if cached is None else cached
    loss = cross_entropy + 0.5 * lam * weight.pow(2).sum()
    grad_weight = torch.addmm(weight, x.T if x_t is None else x_t, dlogits, beta=lam)
    return loss, grad_weight, dlogits.sum(dim=0)


class _Objective:
    """The penalised cross-entropy of one target along the penalty path, evaluations reused.

    Each evaluation writes its logit gradient into a ``[n, C]`` buffer (:func:`logistic_predict`
    passes one, allocated once per call and reused, so it stays in cache: a second buffer
    alternating with it, or a fresh tensor per evaluation while an earlier one is kept, cost
    30-40 % more CPU time at ``60,000 x 64``) and remembers the parameters and cross-entropy it
    was made with. An evaluation at the parameters of a remembered one (the first of most
    penalties after the first: the warm start is where the previous penalty stopped, usually the
    last point evaluated) reuses its cross-entropy and logit gradient, which do not depend on the
    penalty, instead of the forward product and the softmax: the same numbers, bit for bit, as
    evaluating again.
    """

    def __init__(
        self, x: torch.Tensor, x_t: torch.Tensor, y: torch.Tensor, buffers: list[torch.Tensor]
    ) -> None:
        self.x, self.x_t, self.y, self.buffers = x, x_t, y, buffers
        self.kept: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(buffers)
        self.next = 0
        self.reused = 0

    def __call__(
        self, theta: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lam: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, weight gradient and bias gradient at ``theta`` (viewed as ``weight``, ``bias``)."""
        for index, kept in enumerate(self.kept):
            if kept is not None and torch.equal(kept[0], theta):
                self.reused += 1
                self.next = (index + 1) % len(self.buffers)  # keep this one (of several)
                cached = (kept[1], self.buffers[index])
                return _loss_and_grad(self.x, self.y, weight, bias, lam, self.x_t, cached=cached)
        index = self.next
        self.next = (index + 1) % len(self.buffers)
        self.kept[index] = None  # its buffer is overwritten now
        cached = _cross_entropy_grad(self.x, self.y, weight, bias, self.buffers[index])
        self.kept[index] = (theta.clone(), cached[0])
        return _loss_and_grad(self.x, self.y, weight, bias, lam, self.x_t, cached=cached)


def _lbfgs(
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float,
    max_iter: int,
    x_t: torch.Tensor | None = None,
    objective: _Objective | None = None,
) -> None:
    """Minimise ``mean CE + lam / 2 * ||W||^2`` in place, by full-batch L-BFGS.

    ``theta`` holds ``W`` (``[d, C]``, row-major) then ``b`` (``[C]``), one flat tensor so that
    L-BFGS updates a single parameter; ``y`` is ``[n]``. The loss and its gradient come from
    ``objective`` (:class:`_Objective`, which reuses evaluations along a path) or, without one,
    from :func:`_loss_and_grad` (no autograd graph either way).
    """
    dim = x.shape[1]
    x_t = x.T.contiguous() if x_t is None else x_t  # read by every gradient evaluation
    n_weights = theta.numel() * dim // (dim + 1)
    weight, bias = theta[:n_weights].view(dim, -1), theta[n_weights:]
    labels = y[:, None]
    optimizer = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iter,
        history_size=10,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        if objective is None:
            loss, grad_weight, grad_bias = _loss_and_grad(x, labels, weight, bias, lam, x_t)
        else:
            loss, grad_weight, grad_bias = objective(theta, weight, bias, lam)
        theta.grad = torch.cat([grad_weight.view(-1), grad_bias])
        return loss

    with torch.no_grad():
        optimizer.step(closure)
    theta.grad = None


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
    x_fit_t: Float[torch.Tensor, "n_features n_fit"] | None = None,
) -> tuple[Int[torch.Tensor, "n_test n_targets"], list[float]]:
    """Multinomial logistic regression with an L2 penalty chosen per target on validation data.

    One linear softmax classifier per target column, each fitted on its own (a target's probe
    does not depend on which other targets are fitted beside it) by full-batch L-BFGS on
    ``mean cross-entropy + lambda/2 * ||W||^2`` over the fit rows, ``max_iter`` iterations per
    penalty (strong-Wolfe line search, history 10). The penalties are visited from strongest to
    weakest, each fit warm-started from the previous one; the classifier with the lowest
    validation cross-entropy is kept, and the path stops as soon as the validation loss stops
    falling (validation loss is, in practice, unimodal in the penalty). There is no refit on the
    validation rows (unlike :func:`ridge_predict`, where it is free).

    Args:
        x_fit: Training features (ideally standardised).
        y_fit: Training class labels in ``[0, n_classes)``, one column per target.
        x_val: Validation features.
        y_val: Validation labels.
        x_test: Test features.
        n_classes: Number of classes.
        lambdas: L2 penalties to try (per-token loss scale), strongest first.
        max_iter: L-BFGS iterations per penalty.
        x_fit_t: ``x_fit.T`` stored contiguously (float32), when the caller has it (several
            calls on the same features can share one); computed here otherwise. Same results.

    Returns:
        Predicted test classes ``[n_test, n_targets]`` and the chosen penalty of each target.

    Examples:
        >>> x = torch.arange(40.0)[:, None] / 40
        >>> y = (x[:, 0] > 0.5).long()[:, None]
        >>> pred, _ = logistic_predict(x, y, x, y, torch.tensor([[0.1], [0.9]]), 2)
        >>> pred.flatten().tolist()
        [0, 1]
    """
    x_fit, x_val, x_test = x_fit.float(), x_val.float(), x_test.float()
    device = x_fit.device
    pred = torch.zeros(x_test.shape[0], y_fit.shape[1], dtype=torch.long, device=device)
    chosen = []
    dim = x_fit.shape[1]
    # shared by every fit of the path (see _loss_and_grad)
    x_t = x_fit.T.contiguous() if x_fit_t is None else x_fit_t.float().contiguous()
    buffers = [torch.empty(x_fit.shape[0], n_classes, device=device)]
    for target in range(y_fit.shape[1]):
        theta = torch.zeros((dim + 1) * n_classes, device=device)
        weight, bias = theta[: dim * n_classes].view(dim, n_classes), theta[dim * n_classes :]
        objective = _Objective(x_fit, x_t, y_fit[:, target, None], buffers)
        best_loss, choice, best = math.inf, float(lambdas[0]), theta.clone()
        for lam in lambdas:
            _lbfgs(theta, x_fit, y_fit[:, target], float(lam), max_iter, x_t, objective)
            val_logits = torch.addmm(bias, x_val, weight)
            val_loss = float(torch.nn.functional.cross_entropy(val_logits, y_val[:, target]))
            if not val_loss < best_loss:
                break
            best_loss, choice = val_loss, float(lam)
            best.copy_(theta)
        chosen.append(choice)
        best_weight = best[: dim * n_classes].view(dim, n_classes)
        pred[:, target] = torch.addmm(best[dim * n_classes :], x_test, best_weight).argmax(dim=-1)
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
