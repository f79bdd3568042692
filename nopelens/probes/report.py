"""The result of :func:`~nopelens.probes.probe_positions`: tidy frames, aggregated over seeds.

:class:`ProbeReport` holds one row per (model, site, layer, feature, capacity, probe, target,
metric), averaged over seeds with a t confidence interval (:func:`aggregate_seeds`), the per-seed
rows it came from, and :meth:`ProbeReport.compare`, which ranks the feature families per layer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from nopelens.probes.metrics import LOWER_IS_BETTER

#: The columns that identify one aggregated row (everything but the seed and the numbers).
ROW_KEYS: list[str] = [
    "model",
    "site",
    "layer",
    "layer_index",
    "feature",
    "capacity",
    "dim",
    "probe",
    "target",
    "metric",
]


@dataclasses.dataclass(frozen=True)
class ProbeReport:
    """Position-probe results: one tidy row per (model, site, layer, feature, probe, metric).

    Attributes:
        results: Aggregated over seeds. Columns: ``model`` (``"given"``, or ``"random_init"`` for
            the random-init baseline of a trained model), ``site`` (hook site; ``"embed"`` for the
            input embedding), ``layer`` (``"embed"``, ``"0"``, ... or the key of a precomputed
            mapping), ``layer_index`` (-1 for the embedding, the block index otherwise; the
            x-axis order), ``feature`` (``hidden`` / ``cosine`` / ``variance``), ``capacity``
            (``"full"``: the family's own dimension; ``"matched"``: ``equal_dim`` dimensions),
            ``dim`` (features the probe saw), ``probe`` (``ridge`` / ``logistic`` /
            ``isotonic``), ``target`` (``"position"``; ``"control"``: the Hewitt & Liang control
            task; ``"shuffled"``: position labels permuted across the tokens of the training
            sequences and, independently, of the test sequences, so labels carry no information:
            the noise floor of each metric at these sample sizes),
            ``metric`` (``r2``, ``mae``, ``spearman``, ``accuracy``, ``mad``, and
            ``selectivity`` on ``target == "position"`` rows: position score minus control score,
            R^2 for regressions and accuracy for the logistic probe), ``value`` (mean over seeds),
            ``ci_low``/``ci_high`` (t interval over seeds; NaN with one seed), ``std``,
            ``n_seeds``, ``chance`` (the metric's chance level for uniform positions).
        per_seed: The same rows before aggregation, with ``seed``, the chosen penalty ``reg``
            (ridge: relative alpha; logistic: lambda) and ``n_train``/``n_test`` token counts.
        config: The settings and sizes of the run (JSON-able).
    """

    results: pd.DataFrame
    per_seed: pd.DataFrame
    config: dict[str, Any]

    def __repr__(self) -> str:
        """Row counts, what was probed, and the best position score per family at the last layer.

        The headline metric is Spearman rho when a regression probe ran, accuracy otherwise;
        its best value over probes is shown per feature family, for the first model, at full
        capacity, at the deepest layer probed.
        """
        config = self.config
        empty = pd.Series(dtype=object)
        layers = list(dict.fromkeys(self.results.get("layer", empty)))
        sites = list(dict.fromkeys(self.results.get("site", empty)))
        span = f"{layers[0]}..{layers[-1]}" if len(layers) > 2 else ", ".join(map(str, layers))
        parts = [
            f"results={len(self.results)} rows",
            f"per_seed={len(self.per_seed)} rows",
            f"models={list(config.get('models', []))}",
            f"sites={sites}",
            f"layers={len(layers)} ({span})",
            f"seeds={tuple(config.get('seeds', ()))}",
        ]
        headline = self._headline()
        if headline:
            parts.append(headline)
        return "ProbeReport(" + ",\n            ".join(parts) + ")"

    def _headline(self) -> str:
        """``best <metric> at layer <L> (<model>): family value, ...`` or '' when not computable."""
        frame = self.results
        needed = {"metric", "target", "capacity", "model", "layer_index", "feature", "value"}
        if frame.empty or not needed <= set(frame.columns):
            return ""
        frame = frame[(frame["target"] == "position") & (frame["capacity"] == "full")]
        metric = next((m for m in ("spearman", "accuracy") if (frame["metric"] == m).any()), None)
        if metric is None:
            return ""
        frame = frame[frame["metric"] == metric]
        frame = frame[frame["model"] == frame["model"].iloc[0]]
        last = frame[frame["layer_index"] == frame["layer_index"].max()]
        best = last.groupby("feature", sort=False)["value"].max()
        values = ", ".join(f"{feature} {value:.3f}" for feature, value in best.items())
        return (
            f"best {metric} at layer {last['layer'].iloc[0]!r} ({last['model'].iloc[0]}): {values}"
        )

    def to_frame(self) -> pd.DataFrame:
        """A copy of :attr:`results`."""
        return self.results.copy()

    def compare(
        self,
        metric: str = "spearman",
        *,
        probe: str | None = None,
        capacity: str = "full",
        model: str = "given",
    ) -> pd.DataFrame:
        """Which feature family decodes position best at each site and layer, and by how much.

        For every (site, layer), the families are ranked by their mean ``metric`` on the
        position target (lower is better for ``mae``/``mad``). ``margin`` is the winner's
        advantage over the runner-up (positive), with a paired t interval over seeds (both
        families are scored on the same splits).

        Args:
            metric: Metric to rank by.
            probe: Probe kind; ``None`` takes each family's best probe reporting ``metric``
                (e.g. isotonic for variance).
            capacity: ``"full"`` or ``"matched"``.
            model: ``"given"`` or ``"random_init"``.

        Returns:
            One row per (site, layer): ``winner``, ``winner_probe``, ``value``, ``runner_up``,
            ``runner_up_value``, ``margin``, ``margin_ci_low``, ``margin_ci_high``, ``chance``.
        """
        frame = self.per_seed
        frame = frame[
            (frame["metric"] == metric)
            & (frame["target"] == "position")
            & (frame["capacity"] == capacity)
            & (frame["model"] == model)
        ]
        if probe is not None:
            frame = frame[frame["probe"] == probe]
        if frame.empty:
            raise ValueError(
                f"The report has no rows for metric={metric!r}, probe={probe!r}, "
                f"capacity={capacity!r}, model={model!r}."
            )
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        confidence = float(self.config.get("confidence", 0.95))
        rows = []
        for (site, layer), group in frame.groupby(["site", "layer"], sort=False):
            means = group.groupby(["feature", "probe"])["value"].mean() * sign
            best = means.groupby(level="feature").idxmax().map(lambda key: key[1])
            ranked = sorted(best.index, key=lambda f: -means[(f, best[f])])
            winner = ranked[0]
            row = {
                "site": site,
                "layer": layer,
                "layer_index": int(group["layer_index"].iloc[0]),
                "metric": metric,
                "winner": winner,
                "winner_probe": best[winner],
                "value": sign * means[(winner, best[winner])],
                "chance": float(group["chance"].iloc[0]),
            }
            if len(ranked) > 1:
                other = ranked[1]
                a = group[(group["feature"] == winner) & (group["probe"] == best[winner])]
                b = group[(group["feature"] == other) & (group["probe"] == best[other])]
                diff = sign * (a.set_index("seed")["value"] - b.set_index("seed")["value"])
                low, high = _t_interval(diff.dropna().to_numpy(), confidence)
                row.update(
                    runner_up=other,
                    runner_up_value=sign * means[(other, best[other])],
                    margin=float(diff.mean()),
                    margin_ci_low=low,
                    margin_ci_high=high,
                )
            rows.append(row)
        return pd.DataFrame(rows).sort_values("layer_index", kind="stable").reset_index(drop=True)


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean of the finite ``values``; NaNs with fewer than 2 values."""
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    from scipy.stats import t

    half = (
        t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    )
    mean = float(values.mean())
    return mean - float(half), mean + float(half)


def aggregate_seeds(per_seed: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Average the per-seed rows of each (model, ..., metric) key, with a t interval over seeds.

    Non-finite values (e.g. an undefined R^2) are left out; ``n_seeds`` counts the values kept.

    Args:
        per_seed: Rows with the :data:`ROW_KEYS` columns, ``value`` and ``chance``.
        confidence: Confidence level of the interval, in (0, 1).

    Returns:
        One row per key, in first-seen order: the keys, ``value`` (mean), ``ci_low``,
        ``ci_high``, ``std``, ``n_seeds`` and ``chance``.
    """
    rows = []
    for key, group in per_seed.groupby(ROW_KEYS, sort=False, dropna=False):
        values = group["value"].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        low, high = _t_interval(finite, confidence)
        rows.append(
            {
                **dict(zip(ROW_KEYS, key, strict=True)),
                "value": float(finite.mean()) if len(finite) else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "std": float(finite.std(ddof=1)) if len(finite) > 1 else float("nan"),
                "n_seeds": int(len(finite)),
                "chance": float(group["chance"].iloc[0]),
            }
        )
    return pd.DataFrame(
        rows, columns=[*ROW_KEYS, "value", "ci_low", "ci_high", "std", "n_seeds", "chance"]
    )
