"""Chance levels of the probe metrics against their closed forms."""

from __future__ import annotations

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
