"""The result of :func:`~nopelens.probes.probe_positions`: tidy frames, aggregated over seeds.

:class:`ProbeReport` holds one row per (model, site, layer, split, feature, capacity, probe,
target, metric), averaged over seeds with a t confidence interval (:func:`aggregate_seeds`), the
per-seed rows it came from, and :meth:`ProbeReport.compare`, which ranks the feature families per
layer.

**Which seeds an interval spans.** With one model the interval is a t interval over the *split
seeds* (the sequence split, control labels, shuffle and MLP init of each run): it says how much the
score moves from one split of these sequences to another, for this one model. With several models
(a list of models, or ``init_seeds``) the values of each model are first averaged over the split
seeds and the t interval is taken over the *init seeds*: it says how much the score moves from one
initialisation to another, the variation a claim about an architecture must survive. The columns
``interval`` (``"t over split seeds"`` / ``"t over init seeds"``), ``init_seeds`` and
``split_seeds`` (comma-separated) name them on every row.
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
    "split",
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
            x-axis order), ``split`` (``"sequence"``: held-out sequences; ``"length"``: trained
            on positions ``< extrapolate_from``, tested on the positions from it on),
            ``feature`` (``hidden`` / ``cosine`` / ``variance``), ``capacity``
            (``"full"``: the family's own dimension; ``"matched"``: ``equal_dim`` dimensions),
            ``dim`` (features the probe saw), ``probe`` (``ridge`` / ``logistic`` /
            ``isotonic`` / ``mlp``), ``target`` (``"position"``; ``"control"``: the Hewitt &
            Liang control task; ``"shuffled"``: position labels permuted across the tokens of
            the training sequences and, independently, of the test sequences, so labels carry no
            information: the noise floor of each metric at these sample sizes),
            ``metric`` (``r2``, ``mae``, ``spearman``, ``accuracy``, ``mad``, and
            ``selectivity`` on ``target == "position"`` rows: position score minus control score,
            R^2 for regressions and accuracy for the classifiers), ``value`` (mean over seeds),
            ``ci_low``/``ci_high`` (t interval; NaN with one value), ``std`` and ``n_seeds`` (of
            the values the interval is over), ``chance`` (the score's expectation when the
            features carry no information about the labels, from the labels used; see
            :mod:`nopelens.probes.metrics`; averaged like ``value``), ``interval`` (``"t over
            split seeds"`` or ``"t over init seeds"``), ``init_seeds`` and ``split_seeds`` (the
            seeds the row spans, comma-separated; ``init_seeds`` is empty when unknown).
        per_seed: The same rows before aggregation, with ``init_seed`` (the model's), ``seed``
            (the split seed), the chosen penalty ``reg`` (ridge: relative alpha; logistic:
            lambda; MLP: best epoch) and ``n_train``/``n_test`` token counts.
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
        if "split" in frame.columns:
            frame = frame[frame["split"] == "sequence"]
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
        split: str = "sequence",
    ) -> pd.DataFrame:
        """Which feature family decodes position best at each site and layer, and by how much.

        For every (site, layer), the families are ranked by their mean ``metric`` on the
        position target (lower is better for ``mae``/``mad``). ``margin`` is the winner's
        advantage over the runner-up (positive), with a paired t interval (both families are
        scored on the same splits of the same models): over split seeds for one model, over
        init seeds (per-model mean differences) for several.

        Args:
            metric: Metric to rank by.
            probe: Probe kind; ``None`` takes each family's best probe reporting ``metric``
                (e.g. isotonic for variance).
            capacity: ``"full"`` or ``"matched"``.
            model: ``"given"`` or ``"random_init"``.
            split: ``"sequence"`` or ``"length"``.

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
            & (frame["split"] == split)
        ]
        if probe is not None:
            frame = frame[frame["probe"] == probe]
        if frame.empty:
            raise ValueError(
                f"The report has no rows for metric={metric!r}, probe={probe!r}, "
                f"capacity={capacity!r}, model={model!r}, split={split!r}."
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
                diff = sign * (_by_run(a) - _by_run(b))
                low, high = _t_interval(_interval_values(diff.dropna()), confidence)
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


def _by_run(rows: pd.DataFrame) -> pd.Series:
    """``value`` indexed by (init seed, split seed); an unknown init seed reads -1."""
    init = rows["init_seed"].astype("Int64").fillna(-1).astype(int)
    return pd.Series(
        rows["value"].to_numpy(), index=pd.MultiIndex.from_arrays([init, rows["seed"]])
    )


def _interval_values(values: pd.Series) -> np.ndarray:
    """The values a t interval is taken over: per-init means for several inits, else the values.

    ``values`` is indexed by (init seed, split seed) and holds finite numbers.
    """
    inits = values.index.get_level_values(0)
    if inits.nunique() > 1:
        return values.groupby(level=0).mean().to_numpy(dtype=np.float64)
    return values.to_numpy(dtype=np.float64)


def _seed_text(seeds: pd.Series) -> str:
    """The distinct known seeds, sorted and comma-separated ('' when none is known)."""
    known = sorted({int(s) for s in seeds.dropna()})
    return ",".join(map(str, known))


def aggregate_seeds(per_seed: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Average the per-seed rows of each (model, ..., metric) key, with a t interval.

    Non-finite values (e.g. an undefined R^2) are left out. With one init seed the interval is
    over the split seeds; with several, over the init seeds, each the mean of its split seeds
    (the module docstring says why). ``n_seeds`` and ``std`` are of the values the interval is
    over; ``chance`` is averaged like ``value``.

    Args:
        per_seed: Rows with the :data:`ROW_KEYS` columns, ``init_seed``, ``seed``, ``value`` and
            ``chance``.
        confidence: Confidence level of the interval, in (0, 1).

    Returns:
        One row per key, in first-seen order: the keys, ``value`` (mean), ``ci_low``,
        ``ci_high``, ``std``, ``n_seeds``, ``chance``, ``interval``, ``init_seeds`` and
        ``split_seeds``.
    """
    rows = []
    for key, group in per_seed.groupby(ROW_KEYS, sort=False, dropna=False):
        by_run = _by_run(group)
        chance = pd.Series(group["chance"].to_numpy(dtype=np.float64), index=by_run.index)
        finite = np.isfinite(by_run.to_numpy(dtype=np.float64))
        values = _interval_values(by_run[finite])
        several = by_run.index.get_level_values(0).nunique() > 1
        low, high = _t_interval(values, confidence)
        chances = chance[np.isfinite(chance.to_numpy())]
        rows.append(
            {
                **dict(zip(ROW_KEYS, key, strict=True)),
                "value": float(values.mean()) if len(values) else float("nan"),
                "ci_low": low,
                "ci_high": high,
                "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "n_seeds": int(len(values)),
                "chance": float(_interval_values(chances).mean()) if len(chances) else float("nan"),
                "interval": "t over init seeds" if several else "t over split seeds",
                "init_seeds": _seed_text(group["init_seed"].astype("Int64")),
                "split_seeds": _seed_text(group["seed"]),
            }
        )
    return pd.DataFrame(rows, columns=[*ROW_KEYS, *_STAT_COLUMNS])


#: The columns :func:`aggregate_seeds` adds to the keys, in order.
_STAT_COLUMNS: list[str] = [
    "value",
    "ci_low",
    "ci_high",
    "std",
    "n_seeds",
    "chance",
    "interval",
    "init_seeds",
    "split_seeds",
]
