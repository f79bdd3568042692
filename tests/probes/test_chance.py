"""Chance levels hold under the null: probes of pure-noise features score their stated chance.

Every reported chance level claims to be the expected score when the features carry no
information about the labels. Here the features are i.i.d. Gaussian noise, independent of the
tokens and positions, so every row of the report is under that null: averaged over datasets and
seeds, each score must sit at its chance within the band stated below, and selectivity (position
score minus control score) must be at its chance (about 0) with intervals that cover 0.

Bands (mean of value - chance over 12 datasets x 3 seeds; 4-5 standard errors of that mean, as
measured over 30 datasets): classifiers are exact in expectation (|gap| <= 0.012 accuracy,
<= 0.2 MAD at chance ~5.2); the regression chance (the training-mean predictor's score) is what a
probe without information tends to, minus its own estimation noise, so R^2 may sit below it by
at most 0.01 (ridge) or 0.035 (isotonic, which has no penalty), and MAE above it by at most 0.06
(chance 4); Spearman rho |gap| <= 0.05; selectivity |gap| <= 0.015.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

#: (low, high) bands of mean(value - chance) per (probe, metric); see the module docstring.
BANDS: dict[tuple[str, str], tuple[float, float]] = {
    ("logistic", "accuracy"): (-0.012, 0.012),
    ("logistic", "mad"): (-0.2, 0.2),
    ("ridge", "r2"): (-0.01, 0.005),
    ("isotonic", "r2"): (-0.035, 0.005),
    ("ridge", "mae"): (-0.01, 0.03),
    ("isotonic", "mae"): (-0.01, 0.06),
    ("ridge", "spearman"): (-0.05, 0.05),
    ("isotonic", "spearman"): (-0.05, 0.05),
    ("ridge", "selectivity"): (-0.015, 0.015),
    ("logistic", "selectivity"): (-0.015, 0.015),
    ("isotonic", "selectivity"): (-0.015, 0.015),
}


def _noise_reports(n_data: int, probes: tuple[str, ...], **kwargs):
    """Reports on ``n_data`` pure-noise datasets (48 sequences x 16 positions x 8 dims)."""
    from nopelens.probes import probe_positions

    reports = []
    for data in range(n_data):
        g = torch.Generator().manual_seed(1000 + data)
        hidden = torch.randn(48, 16, 8, generator=g)
        tokens = torch.randint(0, 64, (48, 16), generator=g)
        reports.append(
            probe_positions(
                {"0": hidden},
                tokens,
                features=("hidden", "variance"),
                probes=probes,
                equal_dim=None,
                seeds=(0, 1, 2),
                **kwargs,
            )
        )
    return reports


@pytest.mark.slow
def test_every_score_sits_at_its_chance_on_noise_features():
    reports = _noise_reports(12, ("ridge", "logistic", "isotonic"))
    per_seed = pd.concat([r.per_seed for r in reports], ignore_index=True)
    gaps = (
        per_seed.assign(gap=per_seed["value"] - per_seed["chance"])
        .groupby(["probe", "feature", "target", "metric"])["gap"]
        .mean()
    )
    # ridge: 2 families x (3 targets x 3 metrics + selectivity); logistic: 2 x (3 x 2 + 1);
    # isotonic: the variance family only
    assert len(gaps) == 2 * 10 + 2 * 7 + 10
    for (probe, feature, target, metric), gap in gaps.items():
        low, high = BANDS[(probe, metric)]
        assert low <= gap <= high, (probe, feature, target, metric, gap)

    # the control task's labels are balanced: its accuracy chance is 1/n, not the largest
    # class of independent per-type draws (0.13 on this null with randint labels)
    control = per_seed[(per_seed["target"] == "control") & (per_seed["metric"] == "accuracy")]
    assert abs(control["chance"].mean() - 1 / 16) < 0.005
    assert abs(control["value"].mean() - 1 / 16) < 0.01

    # selectivity: near 0, and its t interval over seeds covers 0 for most datasets
    results = pd.concat([r.results for r in reports], ignore_index=True)
    selectivity = results[results["metric"] == "selectivity"]
    covers = (selectivity["ci_low"] <= 0) & (selectivity["ci_high"] >= 0)
    assert covers.mean() >= 0.8, covers.groupby(selectivity["probe"]).mean()
    assert (selectivity["chance"].abs() < 0.02).all()


def test_length_split_chance_is_the_short_positions_mean():
    """Under the null the length split scores the training-mean (short positions) predictor."""
    reports = _noise_reports(4, ("ridge",), extrapolate_from=8, control_task=False)
    per_seed = pd.concat([r.per_seed for r in reports], ignore_index=True)
    length = per_seed[(per_seed["split"] == "length") & (per_seed["target"] == "position")]
    r2 = length[length["metric"] == "r2"]
    # fitted on positions 0..7 (mean 3.5), tested on 8..15 (mean 11.5, variance 63/12)
    np.testing.assert_allclose(r2["chance"], -(8.0**2) / (63 / 12))
    mae = length[length["metric"] == "mae"]
    np.testing.assert_allclose(mae["chance"], 8.0)
    assert abs((r2["value"] - r2["chance"]).mean()) < 0.15
    assert abs((mae["value"] - mae["chance"]).mean()) < 0.05


@pytest.mark.parametrize("seed", range(3))
def test_control_labels_deal_types_evenly(seed):
    from nopelens.probes.targets import control_labels

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 200, (30, 12), generator=g)
    labels = control_labels(tokens, 1, seed, n_classes=11)
    assert labels.shape == (30, 11)
    used = tokens[:, 1:]
    types = torch.unique(used)
    # one class per type, and every class holds floor or ceil of n_types / n_classes types
    classes = {int(t): set(labels[used == t].tolist()) for t in types}
    assert all(len(c) == 1 for c in classes.values())
    per_class = np.bincount([c.pop() for c in classes.values()], minlength=11)
    assert per_class.max() - per_class.min() <= 1
    assert per_class.sum() == len(types)
    assert torch.equal(labels, control_labels(tokens, 1, seed, n_classes=11))
    assert not torch.equal(labels, control_labels(tokens, 1, seed + 10, n_classes=11))
