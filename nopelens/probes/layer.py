"""Probe one layer: features, splits per seed, targets, and one tidy row per score.

:func:`probe_layer` is the inner loop of :func:`~nopelens.probes.probe_positions`. For each seed
the sequences are split (:mod:`nopelens.probes.splits`) and the labels built
(:mod:`nopelens.probes.targets`); then, for the split by sequence and (with
``extrapolate_from``) the length split, every feature family is scored by
:func:`~nopelens.probes.scores.family_rows`.
"""

from __future__ import annotations

from typing import Any

import torch

from nopelens.probes.config import ProbeConfig
from nopelens.probes.features import family_features
from nopelens.probes.inputs import ProbedLayer
from nopelens.probes.metrics import regression_chance
from nopelens.probes.scores import REGRESSIONS, LabelSet, family_rows
from nopelens.probes.splits import split_sequences
from nopelens.probes.targets import Part, control_labels, make_targets


def probe_layer(
    model_label: str,
    init_seed: int | None,
    layer: ProbedLayer,
    tokens: torch.Tensor | None,
    config: ProbeConfig,
) -> list[dict[str, Any]]:
    """Per-seed report rows of one layer (see :class:`~nopelens.probes.ProbeReport`).

    Args:
        model_label: ``"given"`` or ``"random_init"``.
        init_seed: The model's initialisation seed (None when unknown).
        layer: The hidden states to probe.
        tokens: Token ids ``[batch, pos]`` (for the control task) or None.
        config: The run's settings.

    Returns:
        One dict per (seed, split, feature, capacity, probe, target, metric).
    """
    hidden = layer.hidden
    n_seq, pos = hidden.shape[:2]
    offset = int(config.drop_first)
    n_classes = pos - offset
    feats = {
        family: family_features(hidden, family, centered=config.centered)[:, offset:]
        for family in config.features
    }
    classes = torch.arange(n_classes, device=hidden.device).expand(n_seq, n_classes)
    rows: list[dict[str, Any]] = []
    for index, seed in enumerate(config.seed_list):
        sequences = _split_sequences(config, index, seed, n_seq, hidden.device)
        base = {
            "model": model_label,
            "init_seed": init_seed,
            "site": layer.site,
            "layer": layer.layer,
            "layer_index": layer.layer_index,
        }
        labels = {"position": classes}
        if config.control_task:
            assert tokens is not None, "gather_subjects refuses control_task without tokens"
            labels["control"] = control_labels(tokens, offset, seed, n_classes).to(hidden.device)
        for split, parts, split_labels, probes in _splits(config, sequences, labels, offset):
            label_set = _label_set(split_labels, parts, seed, offset, config.shuffled_control)
            for family, feat in feats.items():
                rows.extend(
                    family_rows(
                        {**base, "split": split, "seed": seed},
                        family,
                        feat,
                        parts,
                        label_set,
                        probes,
                        n_classes,
                        config,
                    )
                )
    return rows


def _split_sequences(
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


def _splits(
    config: ProbeConfig,
    sequences: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    offset: int,
) -> list[tuple[str, dict[str, Part], dict[str, torch.Tensor], tuple[str, ...]]]:
    """(split name, parts, labels, probe kinds) of the split by sequence and the length split.

    The length split keeps the sequences of the split by sequence and cuts the positions at
    ``extrapolate_from``: fit and validation rows below, test rows at or above it. Only the
    regression probes and the position labels (and their shuffle) apply to it.
    """
    whole = slice(None)
    out = [
        (
            "sequence",
            {name: (index, whole) for name, index in sequences.items()},
            labels,
            tuple(config.probes),
        )
    ]
    if config.extrapolate_from is not None:
        cut = config.extrapolate_from - offset
        below, above = slice(0, cut), slice(cut, None)
        parts = {
            "train": (sequences["train"], below),
            "val": (sequences["val"], below),
            "test": (sequences["test"], above),
        }
        probes = tuple(p for p in config.probes if p in REGRESSIONS)
        out.append(("length", parts, {"position": labels["position"]}, probes))
    return out


def _label_set(
    labels: dict[str, torch.Tensor],
    parts: dict[str, Part],
    seed: int,
    offset: int,
    shuffled: bool,
) -> LabelSet:
    """The labels of every part and target, and the regression chance of every target."""
    per_part = make_targets(labels, parts, seed, offset, shuffled)
    regression = {}
    for target, test in per_part["test"].items():
        train = torch.cat([per_part["train"][target], per_part["val"][target]])
        regression[target] = regression_chance(train.cpu().numpy() + offset, test)
    return LabelSet(
        train=per_part["train"],
        val=per_part["val"],
        test=per_part["test"],
        regression_chance=regression,
        offset=offset,
    )
