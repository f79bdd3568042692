"""Chance levels of the probe metrics against their closed forms and brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest


def test_chance_levels_closed_forms():
    from nopelens.probes import chance_levels

    for n in (2, 7, 16, 1024):
        chance = chance_levels(range(n))
        p = np.arange(n)
        assert chance["mae"] == pytest.approx(np.abs(p - p.mean()).mean())
        assert chance["mad"] == pytest.approx((n * n - 1) / (3 * n))
        assert chance["accuracy"] == pytest.approx(1 / n)
    assert chance_levels(range(16))["mae"] == 4.0


@pytest.mark.parametrize("seed", range(4))
def test_classification_chance_is_the_mean_over_all_pairings(seed):
    """sum_c p_c q_c and mean |pred_i - y_j| equal the score averaged over every re-pairing."""
    from nopelens.probes import classification_chance, classification_metrics

    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 4, size=6)
    test = rng.integers(0, 5, size=6) + rng.integers(0, 2)
    chance = classification_chance(pred, test)
    pairings = [
        classification_metrics(pred, test[list(p)]) for p in itertools.permutations(range(6))
    ]
    for metric in ("accuracy", "mad"):
        brute = np.mean([score[metric] for score in pairings])
        assert chance[metric] == pytest.approx(brute, abs=1e-12), (metric, "formula vs pairings")
    # unequal lengths: the double sum over every (prediction, label) pair
    longer = rng.integers(0, 5, size=9)
    pairs = np.abs(pred[:, None] - longer[None, :])
    assert classification_chance(pred, longer)["mad"] == pytest.approx(pairs.mean(), abs=1e-12)
    hits = (pred[:, None] == longer[None, :]).mean()
    assert classification_chance(pred, longer)["accuracy"] == pytest.approx(hits, abs=1e-12)


def test_classification_chance_of_uniform_positions_and_of_a_majority_predictor():
    from nopelens.probes import chance_levels, classification_chance

    n = 16
    positions = np.tile(np.arange(n), 5)
    uniform = classification_chance(np.arange(n), positions)
    assert uniform["accuracy"] == pytest.approx(1 / n)
    assert uniform["mad"] == pytest.approx(chance_levels(range(n))["mad"])
    # any predictions: accuracy chance is 1/n for uniform labels
    skewed = classification_chance(np.zeros(7, dtype=int), positions)
    assert skewed["accuracy"] == pytest.approx(1 / n)
    assert skewed["mad"] == pytest.approx(np.arange(n).mean())
    # unbalanced labels: always predicting the majority class scores its frequency
    labels = np.array([3, 3, 3, 1])
    assert classification_chance(np.full(5, 3), labels)["accuracy"] == pytest.approx(0.75)


def test_regression_chance_is_the_training_mean_predictor():
    from nopelens.probes import regression_chance, regression_metrics

    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 9, size=40).astype(float), rng.integers(3, 12, size=30) * 1.0
    chance = regression_chance(train, test)
    constant = regression_metrics(np.full(len(test), train.mean()), test)
    assert chance["r2"] == pytest.approx(constant["r2"], abs=1e-12)
    assert chance["mae"] == pytest.approx(constant["mae"], abs=1e-12)
    assert chance["spearman"] == 0.0 and chance["r2"] < 0
    same = regression_chance(np.arange(8.0), np.tile(np.arange(8.0), 3))
    assert same["r2"] == 0.0 and same["mae"] == 2.0
