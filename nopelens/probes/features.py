"""The pure parts of the position probes: feature families, probe estimators, metrics, chance.

Everything here maps tensors (or arrays) to tensors (or numbers): no model, no I/O, no global
random state. :mod:`nopelens.probes.probe` assembles these pieces into
:func:`~nopelens.probes.probe.probe_positions`.

**Feature families.**
Three families describe each token's hidden state ``h_i`` (``i`` = position, 0-indexed, within a
sequence of ``n`` tokens); each is a pure function of a ``[batch, pos, d_model]`` tensor:

- **hidden** (:func:`hidden_features`): ``h_i`` itself, ``d_model`` numbers.
- **cosine** (:func:`cosine_features`, the neighborhood hypothesis of Zuo et al. 2025): the
  token's cosine similarities to the other tokens of its own sequence, summarised so that the
  position index cannot leak: the *sorted* off-diagonal row of the full (symmetric) similarity
  matrix, the similarity to the first other token, and the row's mean and standard deviation,
  ``n + 2`` numbers.
- **variance** (:func:`variance_features`, the variance hypothesis of Chi et al. 2023): the log of
  the variance of ``h_i`` across hidden dimensions, one number.

Why the cosine summaries do not leak the index. A raw similarity row ``S_i = (S_i0, ...,
S_i,n-1)`` does: its diagonal entry ``S_ii = 1`` sits at column ``i``. Sorting the row after
removing the diagonal keeps the multiset of similarities to the *other* tokens and forgets which
column each came from; the row always has ``n - 1`` entries because the matrix is the full
symmetric one (not a causal, lower-triangular row whose length would be ``i``). The similarity to
the first token uses column 0 for every row except row 0, where column 0 is the diagonal (a
constant 1 that would give position 0 away); row 0 uses column 1 instead. Under the null where the
hidden states of a sequence are exchangeable (e.g. the token embeddings of random tokens), every
feature has the same distribution at every position, so a probe is at chance, which the tests
check. What remains is information carried by the hidden states themselves.

Capacity-fair comparisons use :func:`pca_projection` (top-k principal components of the training
features) and :func:`polynomial_features` (k powers of the standardised log-variance), so that
every family can be compared at the same dimension ``k``.

**Probes.** :func:`ridge_predict` (closed-form ridge, penalty chosen on validation rows, whole
path from one eigendecomposition), :func:`logistic_predict` (multinomial logistic regression by
full-batch L-BFGS) and :func:`isotonic_predict` (monotone 1-D regression). The torch probes run
on the device of their inputs.

**Metrics.** :func:`regression_metrics` (R^2, MAE, Spearman rho) and
:func:`classification_metrics` (accuracy, mean absolute distance). The chance levels
(:func:`chance_levels`) are computed for uniformly distributed positions: the
predict-the-mean MAE (``~ n/4``) and the uniform-guess mean absolute distance (``~ n/3``, the
"Random" row of Haviv et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from nopelens.measure import position_variance, self_similarity

#: Feature families, in report order.
FEATURE_FAMILIES: tuple[str, ...] = ("hidden", "cosine", "variance")
#: Default ridge penalties, relative to the mean eigenvalue of the training Gram matrix.
RELATIVE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-5, 3, 17))
#: Default logistic L2 penalties (per-token loss scale), strongest first.
LAMBDAS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def hidden_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
) -> Float[torch.Tensor, "batch pos d_model"]:
    """The raw hidden state of each token (the identity feature map).

    Args:
        hidden: Hidden states ``[batch, pos, d_model]``.

    Returns:
        ``hidden`` as float (same shape).

    Examples:
        >>> hidden_features(torch.ones(2, 3, 4)).shape
        torch.Size([2, 3, 4])
    """
    return hidden if hidden.is_floating_point() else hidden.float()


def cosine_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
    *,
    centered: bool = False,
) -> Float[torch.Tensor, "batch pos n_cos"]:
    """Position-index-free summaries of each token's similarity row (``n + 2`` features).

    With ``S = self_similarity(hidden)`` (full, symmetric, ``[batch, pos, pos]``), the features of
    token ``i`` are, in order:

    1. the ``n - 1`` off-diagonal entries of row ``S_i``, sorted in decreasing order;
    2. the similarity to the first other token: ``S_i0`` for ``i > 0`` and ``S_01`` for ``i = 0``;
    3. the mean and 4. the standard deviation of the ``n - 1`` off-diagonal entries.

    No feature depends on where in the row a value sits, so the position index does not leak
    (see the module docstring).

    Args:
        hidden: Hidden states ``[batch, pos, d_model]``, ``pos >= 2``.
        centered: Passed to :func:`~nopelens.self_similarity` (subtract each sequence's
            mean hidden state first).

    Returns:
        ``[batch, pos, pos + 2]`` features.

    Raises:
        ValueError: If ``pos < 2`` (a token needs another token to be similar to).

    Examples:
        >>> h = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
        >>> f = cosine_features(h)
        >>> f.shape
        torch.Size([2, 5, 7])
        >>> bool((f[..., :4].diff(dim=-1) <= 0).all())  # sorted rows
        True
    """
    batch, pos, _ = hidden.shape
    if pos < 2:
        raise ValueError(
            f"The 'hidden' parameter of cosine_features must have pos >= 2 [batch pos d_model]. "
            f"Got shape {tuple(hidden.shape)} instead."
        )
    sim = self_similarity(hidden_features(hidden), centered=centered)
    off_diagonal = ~torch.eye(pos, dtype=torch.bool, device=sim.device)
    rows = sim[:, off_diagonal].view(batch, pos, pos - 1)
    sorted_rows = rows.sort(dim=-1, descending=True).values
    first = sim[:, :, 0].clone()
    first[:, 0] = sim[:, 0, 1]
    mean = rows.mean(dim=-1)
    std = rows.std(dim=-1, correction=0)
    return torch.cat([sorted_rows, first[..., None], mean[..., None], std[..., None]], dim=-1)


def variance_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
) -> Float[torch.Tensor, "batch pos 1"]:
    """The log of each token's variance across hidden dimensions (Chi et al. 2023), one feature.

    The variance comes from :func:`nopelens.measure.variance.position_variance`. The log makes the
    ``1/i`` decay of the variance hypothesis linear in ``log i`` and tames its range; it is
    monotone, so the nonparametric (isotonic) readout is unaffected by it. Zero variances are
    clamped to the smallest positive float before the log.

    Args:
        hidden: Hidden states ``[batch, pos, d_model]``.

    Returns:
        ``[batch, pos, 1]`` log-variances.

    Examples:
        >>> h = torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(0))
        >>> h = h / torch.arange(1, 5).sqrt()[:, None]   # std 1/sqrt(i): variance 1/i
        >>> v = variance_features(h)[0, :, 0]
        >>> bool((v.diff() < 0).all())
        True
    """
    hidden = hidden_features(hidden)
    variance = position_variance(hidden)
    tiny = torch.finfo(variance.dtype).tiny
    return variance.clamp_min(tiny).log()[..., None]


def family_features(
    hidden: Float[torch.Tensor, "batch pos d_model"],
    family: str,
    *,
    centered: bool = False,
) -> Float[torch.Tensor, "batch pos n_features"]:
    """The features of one family (``"hidden"``, ``"cosine"`` or ``"variance"``).

    Examples:
        >>> family_features(torch.randn(1, 3, 4), "variance").shape
        torch.Size([1, 3, 1])
    """
    if family == "hidden":
        return hidden_features(hidden)
    if family == "cosine":
        return cosine_features(hidden, centered=centered)
    if family == "variance":
        return variance_features(hidden)
    raise ValueError(
        f"The 'family' parameter of family_features must be one of "
        f"{', '.join(map(repr, FEATURE_FAMILIES))}. Got {family!r} instead."
    )


def standardize(
    fit: Float[torch.Tensor, "n_fit n_features"],
    *others: Float[torch.Tensor, "_ n_features"],
) -> tuple[torch.Tensor, ...]:
    """Z-score ``fit`` and ``others`` with the mean and standard deviation of ``fit``.

    Constant columns (standard deviation 0 on ``fit``) are centred and left unscaled, so they stay
    zero and carry no signal.

    Returns:
        The standardised ``fit`` followed by the standardised ``others``.

    Examples:
        >>> a, b = standardize(torch.tensor([[0.0], [2.0]]), torch.tensor([[4.0]]))
        >>> a.flatten().tolist(), b.flatten().tolist()
        ([-1.0, 1.0], [3.0])
    """
    mean = fit.mean(dim=0)
    std = fit.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (fit, *others))


def pca_projection(
    fit: Float[torch.Tensor, "n_fit n_features"],
    k: int,
) -> Float[torch.Tensor, "n_features k"]:
    """The top-``k`` principal directions of the (already centred) training features ``fit``.

    Args:
        fit: Training features, centred (e.g. by :func:`standardize`).
        k: Number of directions, ``1 <= k <= n_features``.

    Returns:
        Orthonormal columns ``[n_features, k]``, by decreasing explained variance.

    Examples:
        >>> x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1], [0.0, -0.1]])
        >>> pca_projection(x, 1).abs().flatten().tolist()
        [1.0, 0.0]
    """
    gram = (fit.T @ fit).double()
    _, vectors = torch.linalg.eigh(gram)
    return vectors[:, -k:].flip(-1).to(fit.dtype)


def polynomial_features(
    x: Float[torch.Tensor, "n 1"],
    k: int,
) -> Float[torch.Tensor, "n k"]:
    """Powers ``x, x^2, ..., x^k`` of a standardised scalar feature.

    Examples:
        >>> polynomial_features(torch.tensor([[2.0]]), 3).tolist()
        [[2.0, 4.0, 8.0]]
    """
    powers = torch.arange(1, k + 1, device=x.device, dtype=x.dtype)
    return x**powers


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


# --------------------------------------------------------------------------------------------
# Probe estimators (torch ones run on the device of their inputs)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


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
