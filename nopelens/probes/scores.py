"""Fit every probe kind on one feature family of one split, and score it against its chance.

:func:`family_rows` standardises the features with the training statistics, builds the full and
the capacity-matched variants (:mod:`nopelens.probes.features`), fits each probe kind for all
targets at once (:mod:`nopelens.probes.fitting`, :mod:`nopelens.probes.mlp`) and scores its test
predictions (:mod:`nopelens.probes.metrics`), each score beside its chance level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from nopelens.probes.config import ProbeConfig
from nopelens.probes.features import pca_projection, polynomial_features, standardize
from nopelens.probes.fitting import isotonic_predict, logistic_predict, ridge_predict
from nopelens.probes.metrics import (
    CLASSIFIERS,
    SELECTIVITY_METRIC,
    classification_chance,
    classification_metrics,
    regression_metrics,
)
from nopelens.probes.mlp import mlp_predict
from nopelens.probes.targets import TARGETS, Part, part_rows

#: Probe kinds that regress the position (the only ones the length split can use).
REGRESSIONS: tuple[str, ...] = ("ridge", "isotonic")


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """The labels of one split: per part and target, and each target's regression chance."""

    train: dict[str, torch.Tensor]
    """Target -> fit-row classes."""
    val: dict[str, torch.Tensor]
    """Target -> validation-row classes."""
    test: dict[str, np.ndarray]
    """Target -> test-row *positions* (class plus ``offset``)."""
    regression_chance: dict[str, dict[str, float]]
    """Target -> :func:`~nopelens.probes.metrics.regression_chance` of its labels."""
    offset: int
    """Position of class 0."""


@dataclasses.dataclass(frozen=True)
class Fit:
    """One probe fit: the columns of its rows, its standardised inputs and the targets it fits.

    The logistic probe fits each target on its own (so one ``Fit`` per target); ridge, isotonic
    and the MLP fit all targets at once (one ``Fit``). Fits share nothing, so they may run in
    any order, or at the same time, with the same results.
    """

    common: dict[str, Any]
    """Columns of the rows (model, layer, split, seed, feature, capacity, dim, probe, ...)."""
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    """Standardised fit, validation and test features."""
    targets: tuple[str, ...]
    """The targets fitted."""
    fit_t: torch.Tensor | None = None
    """The fit features transposed and contiguous, shared by a logistic probe's target fits
    (one copy per (family, capacity) instead of one per target; same results)."""
    fit_gram: torch.Tensor | None = None
    """``(fit.T @ fit).double()`` of the fit features when the principal components of the
    matched capacity needed it too (for the ridge probe; same results)."""

    @property
    def cost(self) -> float:
        """A rough cost (rows x features, times the classes of a classifier), for scheduling."""
        xf = self.inputs[0]
        width = float(xf.shape[1]) * (64.0 if self.common["probe"] in CLASSIFIERS else 1.0)
        return float(xf.shape[0]) * width


def family_fits(
    base: dict[str, Any],
    family: str,
    feat: torch.Tensor,
    parts: dict[str, Part],
    labels: LabelSet,
    probes: Sequence[str],
    equal_dim: int | None,
) -> Iterator[list[Fit]]:
    """The fits of one feature family: one list per (capacity, probe), in report order.

    Every capacity and probe kind (isotonic: variance, full capacity only); see
    :func:`family_rows`. The features are standardised (and projected, for the matched
    capacity) as the lists are drawn, so only the capacities in use are held in memory.
    """
    fit, val, test = (part_rows(feat, parts[p]) for p in ("train", "val", "test"))
    targets = tuple(labels.train)
    for capacity, (xf, xv, xt), gram in _variants(family, fit, val, test, equal_dim):
        for probe in probes:
            if probe == "isotonic" and (family != "variance" or capacity != "full"):
                continue
            common = {
                **base,
                "feature": family,
                "capacity": capacity,
                "dim": int(xf.shape[1]),
                "probe": probe,
                "n_train": int(xf.shape[0] + xv.shape[0]),
                "n_test": int(xt.shape[0]),
            }
            split = probe == "logistic"  # one target at a time anyway: independent fits
            groups = [(t,) for t in targets] if split else [targets]
            fit_t = xf.T.contiguous() if split and len(groups) > 1 else None
            fit_gram = gram if probe == "ridge" else None
            yield [Fit(common, (xf, xv, xt), group, fit_t, fit_gram) for group in groups]


def run_fit(
    fit: Fit, labels: LabelSet, n_classes: int, config: ProbeConfig
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fit one :class:`Fit`; return its test predictions (positions) and penalties per target."""
    xf, xv, xt = fit.inputs
    return _fit_probe(
        fit.common["probe"], xf, xv, xt, labels, n_classes, config, fit.common["seed"],
        fit.targets, fit.fit_t, fit.fit_gram,
    )  # fmt: skip


def fits_rows(
    fits: Sequence[Fit],
    results: Sequence[tuple[dict[str, np.ndarray], dict[str, float]]],
    labels: LabelSet,
) -> list[dict[str, Any]]:
    """The rows of one (capacity, probe): its fits' results merged in target order, scored."""
    preds: dict[str, np.ndarray] = {}
    regs: dict[str, float] = {}
    for pred, reg in results:
        preds.update(pred)
        regs.update(reg)
    return _score_rows(fits[0].common, fits[0].common["probe"], preds, regs, labels)


def family_rows(
    base: dict[str, Any],
    family: str,
    feat: torch.Tensor,
    parts: dict[str, Part],
    labels: LabelSet,
    probes: Sequence[str],
    n_classes: int,
    config: ProbeConfig,
) -> list[dict[str, Any]]:
    """Rows of one feature family: every capacity and probe kind (isotonic: variance, full).

    Runs the :func:`family_fits` one after the other (:func:`~nopelens.probes.layer.probe_layer`
    runs the fits of a whole layer on several threads, with the same results).

    Args:
        base: The columns shared by the rows (model, layer, split, seed, ...).
        family: Feature family name.
        feat: ``[batch, n_classes, n_features]`` features.
        parts: The rows of each part.
        labels: The labels of the split.
        probes: Probe kinds to fit.
        n_classes: Number of position classes.
        config: The run's settings.
    """
    rows: list[dict[str, Any]] = []
    for fits in family_fits(base, family, feat, parts, labels, probes, config.equal_dim):
        results = [run_fit(fit, labels, n_classes, config) for fit in fits]
        rows.extend(fits_rows(fits, results, labels))
    return rows


def _variants(
    family: str, fit: torch.Tensor, val: torch.Tensor, test: torch.Tensor, k: int | None
) -> Iterator[tuple[str, tuple[torch.Tensor, ...], torch.Tensor | None]]:
    """(capacity, standardised fit/val/test features, fit Gram) of the full and matched capacities.

    The matched capacity has ``k`` dimensions: k powers of the standardised log-variance, or the
    top-k principal components of the standardised hidden / cosine features. Their Gram matrix
    ``(fit.T @ fit).double()`` is computed once, before the full capacity, for both the principal
    components and the full capacity's ridge probe (None when no principal component is taken).
    """
    fit, val, test = standardize(fit.float(), val.float(), test.float())
    pca = k is not None and family != "variance"
    gram = (fit.T @ fit).double() if pca else None
    yield "full", (fit, val, test), gram
    if k is None:
        return
    if family == "variance":
        fit, val, test = (polynomial_features(x, k) for x in (fit, val, test))
    else:
        basis = pca_projection(fit, min(k, fit.shape[1]), gram=gram)
        fit, val, test = (x @ basis for x in (fit, val, test))
    yield "matched", standardize(fit, val, test), None


def _fit_probe(
    probe: str,
    xf: torch.Tensor,
    xv: torch.Tensor,
    xt: torch.Tensor,
    labels: LabelSet,
    n_classes: int,
    config: ProbeConfig,
    seed: int,
    targets: Sequence[str] | None = None,
    fit_t: torch.Tensor | None = None,
    fit_gram: torch.Tensor | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fit one probe kind for ``targets`` (default: all); return test predictions and penalties.

    ``fit_t`` is ``xf.T`` stored contiguously (logistic probe only) and ``fit_gram``
    ``(xf.T @ xf).double()`` (ridge only), when the caller has them.

    The penalty (``reg``) is the relative ridge alpha, the logistic lambda, or the MLP's best
    epoch; NaN for isotonic regression.
    """
    targets = list(labels.train if targets is None else targets)
    y_fit = torch.stack([labels.train[t] for t in targets], dim=1)
    y_val = torch.stack([labels.val[t] for t in targets], dim=1)
    regs: Sequence[float]
    if probe == "ridge":
        fitted, regs = ridge_predict(
            xf, y_fit.float(), xv, y_val.float(), xt, alphas=config.alphas, fit_gram=fit_gram
        )
    elif probe == "logistic":
        fitted, regs = logistic_predict(
            xf, y_fit, xv, y_val, xt, n_classes, lambdas=config.lambdas, max_iter=config.max_iter,
            x_fit_t=fit_t,
        )  # fmt: skip
    elif probe == "mlp":
        fitted, regs = mlp_predict(
            xf,
            y_fit,
            xv,
            y_val,
            xt,
            n_classes,
            hidden=config.mlp_hidden,
            lr=config.mlp_lr,
            weight_decay=config.mlp_weight_decay,
            max_epochs=config.mlp_max_epochs,
            patience=config.mlp_patience,
            seed=seed,
            target_ids=[TARGETS.index(t) for t in targets],
        )
    else:
        x_train = torch.cat([xf, xv])[:, 0].cpu().double().numpy()
        x_test = xt[:, 0].cpu().double().numpy()
        y_train = torch.cat([y_fit, y_val]).cpu().double().numpy()
        fitted = torch.as_tensor(
            np.stack(
                [isotonic_predict(x_train, y_train[:, i], x_test) for i in range(len(targets))],
                axis=1,
            )
        )
        regs = [float("nan")] * len(targets)
    pred = fitted.cpu().numpy() + labels.offset
    return ({t: pred[:, i] for i, t in enumerate(targets)}, dict(zip(targets, regs, strict=True)))


def _score_rows(
    common: dict[str, Any],
    probe: str,
    preds: dict[str, np.ndarray],
    regs: dict[str, float],
    labels: LabelSet,
) -> list[dict[str, Any]]:
    """One row per (target, metric), then the selectivity row when the control task ran.

    Each score comes with its chance (:mod:`nopelens.probes.metrics`): the training-mean
    predictor's score for regressions, the independence expectation for classifiers; the
    selectivity's chance is the position chance minus the control chance.
    """
    rows: list[dict[str, Any]] = []
    scores, chances = {}, {}
    for target, pred in preds.items():
        truth = labels.test[target]
        if probe in CLASSIFIERS:
            scores[target] = classification_metrics(pred, truth)
            chances[target] = classification_chance(pred, truth)
        else:
            scores[target] = regression_metrics(pred, truth)
            chances[target] = labels.regression_chance[target]
        rows.extend(
            {
                **common,
                "target": target,
                "metric": metric,
                "value": value,
                "chance": chances[target][metric],
                "reg": regs[target],
            }
            for metric, value in scores[target].items()
        )
    if "control" in scores:
        score = SELECTIVITY_METRIC[probe]
        rows.append(
            {
                **common,
                "target": "position",
                "metric": "selectivity",
                "value": scores["position"][score] - scores["control"][score],
                "chance": chances["position"][score] - chances["control"][score],
                "reg": float("nan"),
            }
        )
    return rows
