"""How well each prediction fits each layer, with bootstrap intervals over sequences.

Two kinds of numbers, each with its own estimand:

* **agreement** of the *batch-mean* matrices (the mean over sequences of the per-sequence cosine
  matrices), observed and predicted, as :func:`nopelens.first_layer_theory` reports it:
  ``pearson_r``, ``rmse`` and ``max_error`` over the off-diagonal pairs ``i < j``. The intervals
  are *basic* bootstraps over sequences: each resample draws the sequences with replacement and
  recomputes both batch means, and the interval is ``[2 t - q_high, 2 t - q_low]`` for the
  estimate ``t`` and the resamples' quantiles ``q``. Noise in a batch mean lowers ``r`` and raises
  the RMSE, and resampling adds that bias once more, so the percentile interval would sit beside
  the truth; the basic interval corrects the bias to first order. It targets the fit of the
  noise-free mean (infinitely many sequences): when it lies above ``r``, the number of sequences,
  not the theory, limits the fit. Coverage is checked by simulation in the tests.
* **neighborhood scores** ``ap_*`` and ``nc_*``: the mean over sequences of each sequence's
  adjacency probability and neighborhood concordance (:func:`nopelens.analyze`'s definition, so
  ``ap_observed`` is exactly its AP at that site and layer), for the observed matrices and for the
  per-sequence predicted ones (a prediction that does not depend on the sequence, a closed form,
  is one matrix and its interval collapses to the value). Percentile bootstrap of the mean.

Resamples are drawn from a private generator seeded with ``seed`` and shared by every row. To
keep memory bounded the per-sequence matrices are summed into at most ``GROUP_BUDGET / (matrices
x pos^2)`` groups (sequence ``s`` in group ``s mod G``) and the groups are resampled for the
agreement intervals; with fewer sequences than that (the usual case) every sequence is its own
group and this is the plain bootstrap over sequences.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch

from nopelens.measure import adjacency_chance, adjacency_probability, neighborhood_concordance

#: Columns of :attr:`nopelens.analyzer.LayerTheory.fit`.
FIT_COLUMNS: tuple[str, ...] = (
    "site",
    "layer",
    "prediction",
    "pearson_r",
    "pearson_r_ci_low",
    "pearson_r_ci_high",
    "rmse",
    "rmse_ci_low",
    "rmse_ci_high",
    "max_error",
    "ap_observed",
    "ap_observed_ci_low",
    "ap_observed_ci_high",
    "ap_predicted",
    "ap_predicted_ci_low",
    "ap_predicted_ci_high",
    "nc_observed",
    "nc_observed_ci_low",
    "nc_observed_ci_high",
    "nc_predicted",
    "nc_predicted_ci_low",
    "nc_predicted_ci_high",
    "ap_chance",
    "nc_chance",
    "n_seqs",
    "seq_len",
)
#: The range of each metric (bootstrap bounds are clipped to it).
_BOUNDS: dict[str, tuple[float, float]] = {
    "pearson_r": (-1.0, 1.0),
    "rmse": (0.0, float(np.inf)),
}
#: Largest number of floats the per-group sums may hold (then sequences are pooled in groups).
GROUP_BUDGET = 20_000_000


class GroupSums:
    """Running sums of per-sequence matrices, pooled into at most ``max_groups`` groups.

    Examples:
        >>> sums = GroupSums(n_seqs=4, n_matrices=1, n=2, max_groups=2)
        >>> sums.add(0, torch.ones(4, 1, 2, 2))
        >>> sums.sizes.tolist(), float(sums.mean()[0, 0, 0])
        ([2.0, 2.0], 1.0)
    """

    def __init__(self, n_seqs: int, n_matrices: int, n: int, max_groups: int | None = None):
        budget = max(1, GROUP_BUDGET // max(1, n_matrices * n * n))
        groups = min(n_seqs, budget if max_groups is None else max_groups)
        self.groups = max(1, groups)
        self.sums = torch.zeros(self.groups, n_matrices, n, n, dtype=torch.float64)
        self.sizes = torch.zeros(self.groups, dtype=torch.float64)

    def add(self, start: int, matrices: torch.Tensor) -> None:
        """Add sequences ``start, start + 1, ...`` (``matrices``: ``[batch, n_matrices, n, n]``)."""
        group = torch.arange(start, start + matrices.shape[0]) % self.groups
        self.sums.index_add_(0, group, matrices.double().cpu())
        self.sizes.index_add_(0, group, torch.ones(matrices.shape[0], dtype=torch.float64))

    def mean(self, counts: torch.Tensor | None = None) -> torch.Tensor:
        """Batch means ``[n_matrices, n, n]``; with ``counts`` ``[B, groups]``, one per resample."""
        if counts is None:
            return self.sums.sum(0) / self.sizes.sum()
        total = counts @ self.sizes
        return torch.einsum("bg,gmij->bmij", counts, self.sums) / total[:, None, None, None]


@dataclasses.dataclass(frozen=True)
class FitRow:
    """One row of the fit table: which observed matrix is compared with which prediction.

    Attributes:
        site: Site name.
        layer: Block index.
        prediction: Prediction name.
        observed: Index of the observed matrix in :class:`GroupSums`.
        predicted: Index of the per-sequence prediction, or ``None`` when ``fixed`` is given.
        fixed: A prediction that is the same for every sequence ``[pos, pos]``.
    """

    site: str
    layer: int
    prediction: str
    observed: int
    predicted: int | None = None
    fixed: torch.Tensor | None = None


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[-1]
    rows, cols = torch.triu_indices(n, n, offset=1)
    return m[..., rows, cols]


def _agreement(obs: torch.Tensor, pred: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pearson r, RMSE and max error over the off-diagonal entries (last two dims)."""
    x, y = _off_diagonal(obs), _off_diagonal(pred)
    xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    denom = (xc.pow(2).sum(-1) * yc.pow(2).sum(-1)).sqrt()
    scale = torch.maximum(x.abs().amax(-1), y.abs().amax(-1)).clamp_min(1e-30)
    ok = denom > 1e-12 * scale.pow(2) * x.shape[-1]
    r = torch.where(ok, (xc * yc).sum(-1) / denom.clamp_min(1e-300), torch.nan)
    diff = x - y
    return r, diff.pow(2).mean(-1).sqrt(), diff.abs().amax(-1)


def sequence_scores(matrices: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence AP and NC of ``[batch, n_matrices, pos, pos]`` -> two ``[batch, n_matrices]``.

    Examples:
        >>> from nopelens.theory import uniform_attention_similarity
        >>> ap, nc = sequence_scores(uniform_attention_similarity(5).expand(2, 1, 5, 5))
        >>> ap.tolist(), nc.round(3).tolist()  # NC < 1: sqrt(j/i) vs sqrt(i/k) across i
        ([[1.0], [1.0]], [[0.981], [0.981]])
    """
    m = matrices.float()
    ap = adjacency_probability(m).double().cpu().numpy()
    nc = neighborhood_concordance(m).double().cpu().numpy()
    return ap, nc


def _stack(rows: list[FitRow], means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Observed and predicted matrices of every row ``[..., rows, pos, pos]`` from ``means``."""
    obs = means[..., [r.observed for r in rows], :, :]
    preds = []
    for r in rows:
        if r.fixed is not None:
            preds.append(r.fixed.double().expand_as(means[..., 0, :, :]))
        else:
            preds.append(means[..., r.predicted, :, :])
    return obs, torch.stack(preds, -3)


def _score_columns(rows: list[FitRow], ap: np.ndarray, nc: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sequence scores of every row's observed and predicted matrices, ``[n_seqs, rows]``."""
    n_seqs = ap.shape[0]
    out: dict[str, list[np.ndarray]] = {
        "ap_observed": [],
        "ap_predicted": [],
        "nc_observed": [],
        "nc_predicted": [],
    }
    for r in rows:
        out["ap_observed"].append(ap[:, r.observed])
        out["nc_observed"].append(nc[:, r.observed])
        if r.fixed is not None:
            fixed_ap, fixed_nc = sequence_scores(r.fixed[None, None])
            out["ap_predicted"].append(np.full(n_seqs, fixed_ap[0, 0]))
            out["nc_predicted"].append(np.full(n_seqs, fixed_nc[0, 0]))
        else:
            assert r.predicted is not None  # a FitRow has a per-sequence index or a fixed matrix
            out["ap_predicted"].append(ap[:, r.predicted])
            out["nc_predicted"].append(nc[:, r.predicted])
    return {k: np.stack(v, axis=1) for k, v in out.items()}


def _score_intervals(
    columns: dict[str, np.ndarray], n_bootstrap: int, confidence: float, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Percentile-bootstrap intervals of the mean over sequences of every score column."""
    n_rows = next(iter(columns.values())).shape[1]
    if n_bootstrap == 0:
        nan = np.full(n_rows, np.nan)
        return {k: (nan, nan) for k in columns}
    rng = np.random.default_rng([seed, 1])
    n = next(iter(columns.values())).shape[0]
    idx = rng.integers(0, n, size=(n_bootstrap, n))
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for name, values in columns.items():
        means = values[idx].mean(axis=1)  # [B, rows]
        low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
        out[name] = (low, high)
    return out


def _agreement_intervals(
    sums: GroupSums,
    rows: list[FitRow],
    point: dict[str, np.ndarray],
    settings: tuple[int, float, int],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Basic-bootstrap intervals of ``pearson_r`` and ``rmse`` (NaN when ``n_bootstrap`` is 0)."""
    n_bootstrap, confidence, seed = settings
    names = ("pearson_r", "rmse")
    if n_bootstrap == 0:
        nan = np.full(len(rows), np.nan)
        return {name: (nan, nan) for name in names}
    rng = np.random.default_rng([seed, 0])
    n_mat, n = sums.sums.shape[1], sums.sums.shape[-1]
    step = max(1, 4_000_000 // max(1, (n_mat + 2 * len(rows)) * n * n))
    draws: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for lo in range(0, n_bootstrap, step):
        size = min(step, n_bootstrap - lo)
        idx = torch.as_tensor(rng.integers(0, sums.groups, size=(size, sums.groups)))
        counts = torch.zeros(size, sums.groups, dtype=torch.float64)
        counts.scatter_add_(1, idx, torch.ones(size, sums.groups, dtype=torch.float64))
        r, rmse, _ = _agreement(*_stack(rows, sums.mean(counts)))
        draws["pearson_r"].append(r.numpy())
        draws["rmse"].append(rmse.numpy())
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for name in names:
        stacked = np.concatenate(draws[name], axis=0)  # [B, rows]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (constant matrices)
            q_low, q_high = np.nanquantile(stacked, [alpha, 1.0 - alpha], axis=0)
        low, high = 2 * point[name] - q_high, 2 * point[name] - q_low  # basic bootstrap
        floor, ceiling = _BOUNDS[name]
        out[name] = (np.clip(low, floor, ceiling), np.clip(high, floor, ceiling))
    return out


def fit_frame(
    sums: GroupSums,
    scores: tuple[np.ndarray, np.ndarray],
    rows: list[FitRow],
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """The fit table (:data:`FIT_COLUMNS`), one row per :class:`FitRow`.

    Args:
        sums: Per-sequence matrices, summed (:class:`GroupSums`).
        scores: Per-sequence AP and NC of the same matrices, ``[n_seqs, n_matrices]`` each
            (:func:`sequence_scores`).
        rows: Which observed matrix is compared with which prediction.
        n_bootstrap: Resamples (0: no intervals).
        confidence: Confidence level.
        seed: Seed of the private generator.

    Examples:
        >>> sums = GroupSums(n_seqs=3, n_matrices=1, n=4)
        >>> s = torch.tensor([[1.0, 0.8, 0.5, 0.2], [0.8, 1.0, 0.8, 0.5],
        ...                   [0.5, 0.8, 1.0, 0.8], [0.2, 0.5, 0.8, 1.0]])
        >>> sums.add(0, s.expand(3, 1, 4, 4))
        >>> frame = fit_frame(sums, sequence_scores(s.expand(3, 1, 4, 4)),
        ...                   [FitRow("attn_out", 0, "exact", 0, fixed=s)], n_bootstrap=10,
        ...                   confidence=0.95, seed=0)
        >>> frame[["pearson_r", "rmse", "ap_observed", "ap_predicted"]].round(3).values.tolist()
        [[1.0, 0.0, 1.0, 1.0]]
    """
    r, rmse, max_error = _agreement(*_stack(rows, sums.mean()))
    point = {"pearson_r": r.numpy(), "rmse": rmse.numpy(), "max_error": max_error.numpy()}
    settings = (n_bootstrap, confidence, seed)
    cis = _agreement_intervals(sums, rows, point, settings)
    columns = _score_columns(rows, *scores)
    cis.update(_score_intervals(columns, *settings))
    for name, values in columns.items():
        point[name] = values.mean(axis=0)
    n = sums.sums.shape[-1]
    records: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        record: dict[str, Any] = {
            "site": row.site,
            "layer": row.layer,
            "prediction": row.prediction,
        }
        for name in ("pearson_r", "rmse", "max_error", *columns):
            record[name] = float(point[name][index])
            if name in cis:
                record[f"{name}_ci_low"] = float(cis[name][0][index])
                record[f"{name}_ci_high"] = float(cis[name][1][index])
        record["ap_chance"] = adjacency_chance(n)
        record["nc_chance"] = 0.5
        record["n_seqs"] = int(columns["ap_observed"].shape[0])
        record["seq_len"] = n
        records.append(record)
    return pd.DataFrame(records, columns=list(FIT_COLUMNS))
