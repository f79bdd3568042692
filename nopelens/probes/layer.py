"""Probe one layer: features, splits per seed, targets, every probe kind, one tidy row per score.

:func:`probe_layer` is the inner loop of :func:`~nopelens.probes.probe_positions`. For each seed
the sequences are split (:mod:`nopelens.probes.splits`), the labels built
(:mod:`nopelens.probes.targets`), and for every feature family and capacity the features are
standardised with the training statistics, every probe kind is fitted for all targets at once
(:mod:`nopelens.probes.fitting`) and its test predictions scored (:mod:`nopelens.probes.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from nopelens.probes.config import ProbeConfig
from nopelens.probes.features import (
    family_features,
    pca_projection,
    polynomial_features,
    standardize,
)
from nopelens.probes.fitting import isotonic_predict, logistic_predict, ridge_predict
from nopelens.probes.inputs import ProbedLayer
from nopelens.probes.metrics import (
    SELECTIVITY_METRIC,
    chance_levels,
    classification_metrics,
    regression_metrics,
)
from nopelens.probes.splits import split_sequences
from nopelens.probes.targets import make_targets


def probe_layer(
    model_label: str, layer: ProbedLayer, tokens: torch.Tensor | None, config: ProbeConfig
) -> list[dict[str, Any]]:
    """Per-seed report rows of one layer (see :class:`~nopelens.probes.ProbeReport`).

    Args:
        model_label: ``"given"`` or ``"random_init"``.
        layer: The hidden states to probe.
        tokens: Token ids ``[batch, pos]`` (for the control task) or None.
        config: The run's settings.

    Returns:
        One dict per (seed, feature, capacity, probe, target, metric).
    """
    hidden = layer.hidden
    n_seq, pos = hidden.shape[:2]
    offset = int(config.drop_first)
    positions = np.arange(offset, pos)
    n_classes = len(positions)
    chance = chance_levels(positions)
    feats = {
        family: family_features(hidden, family, centered=config.centered)[:, offset:]
        for family in config.features
    }
    position_labels = torch.arange(n_classes, device=hidden.device).expand(n_seq, n_classes)
    rows: list[dict[str, Any]] = []
    for index, seed in enumerate(config.seed_list):
        parts = _split_parts(config, index, seed, n_seq, hidden.device)
        labels = make_targets(position_labels, tokens, parts, seed, n_classes, config)
        base = {
            "model": model_label,
            "site": layer.site,
            "layer": layer.layer,
            "layer_index": layer.layer_index,
            "seed": seed,
        }
        for family, feat in feats.items():
            rows.extend(_family_rows(base, family, feat, parts, labels, n_classes, chance, config))
    return rows


def _split_parts(
    config: ProbeConfig, index: int, seed: int, n_seq: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The sequence indices of each part for run ``index`` (explicit split or drawn from seed)."""
    split = (
        config.split_list[index]
        if config.split_list is not None
        else split_sequences(
            n_seq, test_fraction=config.test_fraction, val_fraction=config.val_fraction, seed=seed
        )
    )
    return {
        name: torch.as_tensor(getattr(split, name), device=device)
        for name in ("train", "val", "test")
    }


def _family_rows(
    base: dict[str, Any],
    family: str,
    feat: torch.Tensor,
    parts: dict[str, torch.Tensor],
    labels: dict[str, dict[str, Any]],
    n_classes: int,
    chance: dict[str, float],
    config: ProbeConfig,
) -> list[dict[str, Any]]:
    """Rows of one feature family: every capacity and probe kind (isotonic: variance, full)."""
    fit, val, test = (feat[parts[p]].reshape(-1, feat.shape[-1]) for p in ("train", "val", "test"))
    rows: list[dict[str, Any]] = []
    for capacity, (xf, xv, xt) in _variants(family, fit, val, test, config.equal_dim):
        for probe in config.probes:
            if probe == "isotonic" and (family != "variance" or capacity != "full"):
                continue
            preds, regs = _fit_probe(probe, xf, xv, xt, labels, n_classes, config)
            common = {
                **base,
                "feature": family,
                "capacity": capacity,
                "dim": int(xf.shape[1]),
                "probe": probe,
                "n_train": int(xf.shape[0] + xv.shape[0]),
                "n_test": int(xt.shape[0]),
            }
            rows.extend(_score_rows(common, probe, preds, regs, labels["test"], chance))
    return rows


def _variants(
    family: str, fit: torch.Tensor, val: torch.Tensor, test: torch.Tensor, k: int | None
) -> Iterator[tuple[str, tuple[torch.Tensor, ...]]]:
    """(capacity, standardised fit/val/test features) for the full and matched capacities.

    The matched capacity has ``k`` dimensions: k powers of the standardised log-variance, or the
    top-k principal components of the standardised hidden / cosine features.
    """
    fit, val, test = standardize(fit.float(), val.float(), test.float())
    yield "full", (fit, val, test)
    if k is None:
        return
    if family == "variance":
        fit, val, test = (polynomial_features(x, k) for x in (fit, val, test))
    else:
        basis = pca_projection(fit, min(k, fit.shape[1]))
        fit, val, test = (x @ basis for x in (fit, val, test))
    yield "matched", standardize(fit, val, test)


def _fit_probe(
    probe: str,
    xf: torch.Tensor,
    xv: torch.Tensor,
    xt: torch.Tensor,
    labels: dict[str, dict[str, Any]],
    n_classes: int,
    config: ProbeConfig,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fit one probe kind for every target; return test predictions (positions) and penalties."""
    offset = int(config.drop_first)
    targets = list(labels["train"])
    y_fit = torch.stack([labels["train"][t] for t in targets], dim=1)
    y_val = torch.stack([labels["val"][t] for t in targets], dim=1)
    pred: np.ndarray
    regs: Sequence[float]
    if probe == "ridge":
        fitted, regs = ridge_predict(xf, y_fit.float(), xv, y_val.float(), xt, alphas=config.alphas)
        pred = fitted.cpu().numpy() + offset
    elif probe == "logistic":
        fitted, regs = logistic_predict(
            xf, y_fit, xv, y_val, xt, n_classes, lambdas=config.lambdas, max_iter=config.max_iter
        )
        pred = fitted.cpu().numpy() + offset
    else:
        x_train = torch.cat([xf, xv])[:, 0].cpu().double().numpy()
        x_test = xt[:, 0].cpu().double().numpy()
        y_train = torch.cat([y_fit, y_val]).cpu().double().numpy()
        pred = (
            np.stack(
                [isotonic_predict(x_train, y_train[:, i], x_test) for i in range(len(targets))],
                axis=1,
            )
            + offset
        )
        regs = [float("nan")] * len(targets)
    return ({t: pred[:, i] for i, t in enumerate(targets)}, dict(zip(targets, regs, strict=True)))


def _score_rows(
    common: dict[str, Any],
    probe: str,
    preds: dict[str, np.ndarray],
    regs: dict[str, float],
    truths: dict[str, np.ndarray],
    chance: dict[str, float],
) -> list[dict[str, Any]]:
    """One row per (target, metric), then the selectivity row when the control task ran."""
    rows: list[dict[str, Any]] = []
    scores = {}
    for target, pred in preds.items():
        truth = truths[target]
        metrics = classification_metrics if probe == "logistic" else regression_metrics
        scores[target] = metrics(pred, truth)
        rows.extend(
            {
                **common,
                "target": target,
                "metric": metric,
                "value": value,
                "chance": chance[metric],
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
                "chance": 0.0,
                "reg": float("nan"),
            }
        )
    return rows
