"""Verdicts of a sweep: is the pattern above chance, per hyperparameter value, and where not?

:func:`summarize` turns the results into one row per hyperparameter value (and site, layer,
metric): how many configurations are above chance, the mean excess over chance with a
confidence interval over configurations, a verdict, and the contiguous value range where the
pattern fails; :func:`failure_ranges` says the same in sentences.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nopelens.experiments.records import RESULTS_FILE, read_results
from nopelens.files import to_jsonable
from nopelens.validation import InvalidParameterError

_SUMMARY_COLUMNS = [
    "param",
    "value",
    "site",
    "layer",
    "metric",
    "n_configs",
    "chance",
    "mean",
    "mean_excess",
    "excess_ci_low",
    "excess_ci_high",
    "frac_above",
    "frac_below",
    "above_chance",
    "verdict",
    "failing_range",
]
#: The score columns a results frame must have.
_NEEDED = {"config_id", "site", "layer", "metric", "value", "chance", "ci_low", "ci_high"}
#: Columns never summarised as hyperparameters (seeds are replicates, pooled in every group).
_NOT_PARAMS = {"config_id", "device", "sites", "seed", "data_seed"}


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, str(value))


def _mean_ci(
    excess: np.ndarray, lows: np.ndarray, highs: np.ndarray, confidence: float
) -> tuple[float, float]:
    """CI of the mean excess over configurations (t-interval; one config: its own CI)."""
    if len(excess) == 1:
        return float(lows[0]), float(highs[0])
    from scipy import stats

    sem = float(np.std(excess, ddof=1)) / math.sqrt(len(excess))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(excess) - 1)) * sem
    mean = float(np.mean(excess))
    return mean - half, mean + half


def _display(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return "default" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _json_keys(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as JSON strings, so that lists, None and NaN group like any other value."""
    return frame[column].map(lambda v: json.dumps(to_jsonable(v)))


# summarize, step by step --------------------------------------------------------------------------


def _read_sweep(results: Any) -> pd.DataFrame:
    """The results of a sweep folder or results file; a missing one is an error, not empty."""
    if not isinstance(results, (str, os.PathLike)):
        raise InvalidParameterError(
            "The 'results' parameter of summarize must be a DataFrame of read_results, a sweep "
            f"folder or its results.jsonl. Got {type(results).__name__} instead."
        )
    path = Path(results)
    if not path.exists():
        raise FileNotFoundError(
            f"No sweep results at {str(path)!r}: no such file or folder (the 'results' "
            "parameter of summarize)."
        )
    if path.is_dir() and not (path / RESULTS_FILE).is_file():
        raise FileNotFoundError(
            f"{str(path)!r} has no {RESULTS_FILE}: not a sweep folder, or no configuration has "
            "finished there yet."
        )
    return read_results(path)


def _check_results(frame: pd.DataFrame, by: list[str]) -> None:
    missing = _NEEDED - set(frame.columns)
    if missing:
        raise InvalidParameterError(
            "The 'results' parameter of summarize must have the columns of read_results. "
            f"Missing: {sorted(missing)}."
        )
    unknown = [c for c in by if c not in frame.columns or c in _NEEDED]
    if unknown:
        raise InvalidParameterError(
            f"The 'by' parameter of summarize must name settings (columns) of the results. "
            f"Got {unknown!r} instead."
        )


def _label_layers(frame: pd.DataFrame, layers: str) -> pd.DataFrame:
    """Layer labels as strings; with ``layers="last"``, only each configuration's last block."""
    frame = frame.copy()
    frame["layer"] = frame["layer"].astype(str)
    if layers == "last":
        is_block = frame["layer"].str.fullmatch(r"\d+")
        blocks = frame[is_block]
        last = blocks["layer"].astype(int).groupby(blocks["config_id"]).max().astype(str)
        frame = frame[is_block & (frame["layer"] == frame["config_id"].map(last))]
        frame = frame.assign(layer="last")
    return frame


def _swept_params(frame: pd.DataFrame, by: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The settings that take more than one value (or a constant ``(all)`` column if none)."""
    # Per-row results, not settings: accuracy of trained sweeps, and whether a row's block is NoPE
    # (it follows from positional and nope_layers, which are the settings).
    score_columns = _NEEDED | {"n_seqs", "elapsed_s", "test_accuracy", "chance_accuracy", "nope"}
    candidates = [
        c for c in frame.columns if c not in score_columns and c not in _NOT_PARAMS and c not in by
    ]
    per_config = frame.drop_duplicates("config_id")
    params = [c for c in candidates if _json_keys(per_config, c).nunique() > 1]
    if not params:
        return frame.assign(**{"(all)": "(all)"}), ["(all)"]
    return frame, params


def _group_row(
    group: pd.DataFrame, labels: dict[str, Any], margin: float, confidence: float
) -> dict[str, Any]:
    """The summary row of one group of configurations (one value of one setting)."""
    excess = (group["value"] - group["chance"]).to_numpy(dtype=float)
    lows = (group["ci_low"] - group["chance"]).to_numpy(dtype=float)
    highs = (group["ci_high"] - group["chance"]).to_numpy(dtype=float)
    ci_low, ci_high = _mean_ci(excess, lows, highs, confidence)
    frac_above = float(np.mean(lows > margin))
    verdict = "holds" if frac_above == 1.0 else "mixed" if frac_above >= 0.5 else "fails"
    return {
        **labels,
        "n_configs": len(group),
        "chance": float(group["chance"].mean()),
        "mean": float(group["value"].mean()),
        "mean_excess": float(np.mean(excess)),
        "excess_ci_low": ci_low,
        "excess_ci_high": ci_high,
        "frac_above": frac_above,
        "frac_below": float(np.mean(highs < 0)),
        "above_chance": bool(ci_low > margin),
        "verdict": verdict,
        "failing_range": "",
    }


def _group_rows(
    frame: pd.DataFrame, params: list[str], by: list[str], margin: float, confidence: float
) -> list[dict[str, Any]]:
    """One row per setting, value, stratum of ``by`` and (site, layer, metric)."""
    rows = []
    strata = [_json_keys(frame, c) for c in by]
    for param in params:
        groups = frame.groupby(
            [_json_keys(frame, param), *strata, "site", "layer", "metric"], sort=False
        )
        for (key, *rest), group in groups:
            *by_keys, site, layer, metric = rest
            labels = {
                "param": param,
                "value": json.loads(key),
                **{c: json.loads(k) for c, k in zip(by, by_keys, strict=True)},
                "site": site,
                "layer": layer,
                "metric": metric,
            }
            rows.append(_group_row(group, labels, margin, confidence))
    return rows


def summarize(
    results: pd.DataFrame | str | os.PathLike[str],
    *,
    by: Sequence[str] = (),
    margin: float = 0.0,
    confidence: float = 0.95,
    layers: str = "each",
) -> pd.DataFrame:
    """Per hyperparameter value: is the pattern above chance, with confidence intervals?

    For every setting that takes more than one value in ``results`` (seeds excepted: they are
    replicates, pooled in every group) and every value of it, and for every
    ``(site, layer, metric)`` (and every combination of the ``by`` settings), over the
    configurations with that value:

    * ``frac_above`` / ``frac_below``: share of configurations whose own CI (the bootstrap over
      sequences of :func:`nopelens.analyze`) lies entirely above / below chance
      (``ci_low > chance + margin`` / ``ci_high < chance``);
    * ``mean_excess`` with ``excess_ci_low``, ``excess_ci_high``: mean of ``value - chance`` with
      a t-interval over configurations (a single configuration keeps its own CI), so settings
      that change the chance level (``seq_len`` for the adjacency probability) are comparable,
      and ``above_chance = excess_ci_low > margin``. Each configuration draws its own token
      batch unless the grid sets ``data_seed`` (then they share it, and this interval reflects
      weight variability only: a tiny, consistent excess can be "above chance" here while no
      single configuration is);
    * ``verdict``: ``"holds"`` (every configuration above chance), ``"mixed"`` (at least half)
      or ``"fails"`` (fewer than half);
    * ``failing_range``: for failing values, the contiguous run of failing values (in sorted
      order) they belong to, e.g. ``"seq_len >= 512"`` or ``"normalization_type = 'none'"``.

    A marginal over a setting that interacts with another (positional encoding x causal vs
    bidirectional) pools both; pass the other one in ``by`` to split it.

    Args:
        results: A :func:`~nopelens.experiments.sweep` / :func:`read_results` frame, or a sweep
            folder.
        by: Settings to stratify by: each of their value combinations is summarised separately
            (they become columns of the summary and are not summarised as parameters).
        margin: How far above chance a configuration's ``ci_low`` must be to count (e.g.
            ``0.1``: NC above 0.6); 0 tests "above chance" only.
        confidence: Level of the interval over configurations.
        layers: ``"each"`` keeps layer labels (``embed``, ``0``, ...); ``"last"`` relabels each
            configuration's last block as ``"last"`` and drops the other blocks.

    Returns:
        A DataFrame with columns ``param, value, *by, site, layer, metric, n_configs, chance,
        mean, mean_excess, excess_ci_low, excess_ci_high, frac_above, frac_below, above_chance,
        verdict, failing_range``.

    Raises:
        ValueError: For a frame without the score columns, or an unknown ``by`` column.
        FileNotFoundError: If ``results`` is a path that does not exist, or a folder without
            ``results.jsonl``.

    Examples:
        >>> frame = pd.DataFrame({
        ...     "config_id": ["a", "b"], "seq_len": [16, 1024], "site": "resid_post",
        ...     "layer": "0", "metric": "neighborhood_concordance", "value": [0.9, 0.5],
        ...     "chance": 0.5, "ci_low": [0.85, 0.45], "ci_high": [0.95, 0.55]})
        >>> summarize(frame)[["value", "verdict", "failing_range"]].values.tolist()
        [[16, 'holds', ''], [1024, 'fails', 'seq_len >= 1024']]
    """
    from nopelens.validation import check_choice, check_float

    check_float(confidence, "confidence", "summarize", min=0.0, max=1.0, min_inclusive=False)
    check_choice(layers, "layers", ("each", "last"), "summarize")
    margin = check_float(margin, "margin", "summarize", min=0.0)
    by = [by] if isinstance(by, str) else list(by)
    frame = results if isinstance(results, pd.DataFrame) else _read_sweep(results)
    _check_results(frame, by)
    columns = [*_SUMMARY_COLUMNS[:2], *by, *_SUMMARY_COLUMNS[2:]]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame, params = _swept_params(_label_layers(frame, layers), by)
    summary = pd.DataFrame(_group_rows(frame, params, by, margin, confidence), columns=columns)
    _fill_ranges(summary, by)
    summary["value"] = summary["value"].map(_display)
    summary.attrs["margin"] = margin
    return summary


# failing ranges -----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _run_text(
    param: str, low: Any, high: Any, *, at_bottom: bool, at_top: bool, single: bool
) -> str:
    """Name one contiguous run of failing numeric values (``single``: a run of one value)."""
    if at_bottom and at_top:
        return f"{param}: every value ({low!r}..{high!r})"
    if at_top:
        return f"{param} >= {low!r}"
    if at_bottom:
        return f"{param} <= {high!r}"
    if single:
        return f"{param} = {low!r}"
    return f"{param} in {low!r}..{high!r}"


def _numeric_ranges(
    param: str, numbers: list[tuple[Any, int]], fails: dict[int, bool]
) -> dict[int, str]:
    """Row index -> the contiguous run of failing values (in sorted order) it belongs to."""
    out: dict[int, str] = {}
    start = 0
    while start < len(numbers):
        if not fails[numbers[start][1]]:
            start += 1
            continue
        end = start
        while end + 1 < len(numbers) and fails[numbers[end + 1][1]]:
            end += 1
        low, high = numbers[start][0], numbers[end][0]
        text = _run_text(
            param,
            low,
            high,
            at_bottom=start == 0,
            at_top=end == len(numbers) - 1,
            single=start == end,
        )
        for _, i in numbers[start : end + 1]:
            out[i] = text
        start = end + 1
    return out


def _fill_ranges(summary: pd.DataFrame, by: Sequence[str] = ()) -> None:
    """Name where each setting fails, in place.

    Numeric values: the contiguous runs of failing values in sorted order (``seq_len >= 512``,
    ``initializer_range in 0.2..1.0``). Other values (strings, booleans, ``default``): the set of
    failing values (``normalization_type in {'LNPre', 'none'}``).
    """
    if summary.empty:
        return
    for _, group in summary.groupby(
        ["param", *by, "site", "layer", "metric"], sort=False, dropna=False
    ):
        param = group["param"].iloc[0]
        items = sorted(
            ((_display(summary.at[i, "value"]), i) for i in group.index),
            key=lambda item: _sort_key(item[0]),
        )
        fails = {i: summary.at[i, "verdict"] == "fails" for _, i in items}
        numbers = [(v, i) for v, i in items if _is_number(v)]
        for i, text in _numeric_ranges(param, numbers, fails).items():
            summary.at[i, "failing_range"] = text
        others = [(v, i) for v, i in items if not _is_number(v) and fails[i]]
        if others:
            text = (
                f"{param} = {others[0][0]!r}"
                if len(others) == 1
                else f"{param} in {{{', '.join(repr(v) for v, _ in others)}}}"
            )
            for _, i in others:
                summary.at[i, "failing_range"] = text


def failure_ranges(summary: pd.DataFrame) -> list[str]:
    """Sentences naming where the pattern is not above chance, from a :func:`summarize` frame.

    A ``(site, layer, metric)`` that fails for every value of every setting is reported once
    (e.g. the input embedding of a NoPE model); otherwise each failing range is listed, then
    the "mixed" values with their share of configurations above chance.

    Examples:
        >>> frame = pd.DataFrame({
        ...     "config_id": ["a", "b"], "seq_len": [16, 1024], "site": "resid_post",
        ...     "layer": "0", "metric": "NC", "value": [0.9, 0.5],
        ...     "chance": 0.5, "ci_low": [0.85, 0.45], "ci_high": [0.95, 0.55]})
        >>> failure_ranges(summarize(frame))
        ['NC at resid_post layer 0 is not above chance for seq_len >= 1024']
    """
    columns = list(summary.columns)
    by = columns[2 : columns.index("site")] if "site" in columns else []
    margin = summary.attrs.get("margin", 0.0)
    above = f"{margin:g} above chance" if margin else "above chance"
    out = []
    for keys, group in summary.groupby([*by, "site", "layer", "metric"], sort=False):
        *strata, site, layer, metric = keys
        where = f"{metric} at {site} layer {layer}"
        if by:
            where += " with " + ", ".join(f"{c}={v!r}" for c, v in zip(by, strata, strict=True))
        if (group["verdict"] == "fails").all():
            out.append(f"{where} is not {above} in any configuration group")
            continue
        ranges = list(dict.fromkeys(r for r in group["failing_range"] if r))
        mixed = group[group["verdict"] == "mixed"]
        parts = []
        if ranges:
            parts.append(f"not {above} for " + "; ".join(ranges))
        if len(mixed):
            parts.append(
                f"{above} in only some configurations for "
                + ", ".join(
                    f"{p} = {v!r} ({f:.0%})"
                    for p, v, f in zip(
                        mixed["param"], mixed["value"], mixed["frac_above"], strict=True
                    )
                )
            )
        if parts:
            out.append(f"{where} is " + "; ".join(parts))
    return out


# headline verdicts --------------------------------------------------------------------------------

#: Columns of :func:`headline_verdicts`.
HEADLINE_COLUMNS = [
    "claim",
    "source",
    "part",
    "measure",
    "value",
    "ci_low",
    "ci_high",
    "reference",
    "reference_kind",
    "expect",
    "verdict",
    "rule",
]
#: What a claim expects of its interval: above the reference (an effect), or at it (none).
EXPECTATIONS = ("above", "at")
_SHORT = {"adjacency_probability": "AP", "neighborhood_concordance": "NC"}


def verdict_rule(reference_kind: str, reference: float, expect: str = "above") -> str:
    """The verdict rule of :func:`claim_verdict`, in words.

    Examples:
        >>> verdict_rule("chance", 0.5)
        'CI above chance 0.5: supported; below: not supported; straddling: inconclusive'
        >>> verdict_rule("chance", 0.5, "at")
        'CI contains chance 0.5: supported; excludes it: not supported'
    """
    where = f"{reference_kind} {reference:.3g}" if reference_kind else f"{reference:.3g}"
    if expect == "at":
        return f"CI contains {where}: supported; excludes it: not supported"
    return f"CI above {where}: supported; below: not supported; straddling: inconclusive"


def claim_verdict(ci_low: float, ci_high: float, reference: float, expect: str = "above") -> str:
    """The verdict on a claim from a confidence interval and the reference it is held against.

    ``expect="above"`` (the claim is an effect: a pattern above chance, a fit above a bar):
    ``supported`` when the whole interval lies above ``reference``, ``not supported`` when it lies
    below, ``inconclusive`` when it contains it. ``expect="at"`` (the claim is the absence of an
    effect, e.g. no pattern without the causal mask): ``supported`` when the interval contains
    ``reference``, ``not supported`` when it excludes it. A missing (NaN) bound is
    ``inconclusive``: no interval, no verdict.

    Args:
        ci_low: Lower end of the interval.
        ci_high: Upper end of the interval.
        reference: The chance level or bar.
        expect: ``"above"`` or ``"at"``.

    Returns:
        ``"supported"``, ``"not supported"`` or ``"inconclusive"``.

    Raises:
        ValueError: If ``expect`` is not one of ``"above"``, ``"at"``.

    Examples:
        >>> [claim_verdict(lo, hi, 0.5) for lo, hi in ((0.6, 0.7), (0.45, 0.55), (0.3, 0.4))]
        ['supported', 'inconclusive', 'not supported']
        >>> claim_verdict(0.45, 0.55, 0.5, "at"), claim_verdict(0.6, 0.7, 0.5, "at")
        ('supported', 'not supported')
    """
    if expect not in EXPECTATIONS:
        raise InvalidParameterError(
            f"The 'expect' parameter of claim_verdict must be one of {EXPECTATIONS!r}. "
            f"Got {expect!r} instead."
        )
    low, high, ref = float(ci_low), float(ci_high), float(reference)
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(ref)):
        return "inconclusive"
    if expect == "at":
        return "supported" if low <= ref <= high else "not supported"
    if low > ref:
        return "supported"
    if high < ref:
        return "not supported"
    return "inconclusive"


def _table(summary: Any, part: str, table: str) -> pd.DataFrame | None:
    """One table of one part of a reproduce summary, or None when the part did not run."""
    entry = (summary.get("parts") or {}).get(part) or {}
    rows = (entry.get("tables") or {}).get(table)
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    if "layer" in frame.columns:
        frame["layer"] = frame["layer"].astype(str)
    return frame


def _where(frame: pd.DataFrame, **filters: Any) -> pd.DataFrame:
    for column, value in filters.items():
        if column not in frame.columns:
            return frame.iloc[0:0]
        frame = frame[frame[column].astype(str) == str(value)]
    return frame


def _last_blocks(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of each configuration's (or the model's) last block."""
    blocks = frame[frame["layer"].str.fullmatch(r"\d+")]
    if blocks.empty:
        return blocks
    rank = blocks["layer"].astype(int)
    if "config_id" in blocks.columns:
        return blocks[rank == rank.groupby(blocks["config_id"]).transform("max")]
    return blocks[rank == rank.max()]


def _seed_mean(frame: pd.DataFrame) -> tuple[float, float, float, float]:
    """Mean value, mean CI bounds and mean chance over the rows (e.g. over weight seeds)."""

    def mean(column: str) -> float:
        if column not in frame.columns or frame.empty:
            return math.nan
        return float(pd.to_numeric(frame[column], errors="coerce").mean())

    return mean("value"), mean("ci_low"), mean("ci_high"), mean("chance")


def _seeds_note(frame: pd.DataFrame) -> str:
    n = frame["seed"].nunique() if "seed" in frame.columns else 1
    return f"mean of {n} seeds" if n > 1 else "one seed"


def _row(claim: str, source: str, part: str, measure: str, **numbers: Any) -> dict[str, Any]:
    expect = numbers.pop("expect", "above")
    kind = numbers.pop("reference_kind", "chance")
    value, low, high, ref = (numbers[k] for k in ("value", "ci_low", "ci_high", "reference"))
    return {
        "claim": claim,
        "source": source,
        "part": part,
        "measure": measure,
        "value": value,
        "ci_low": low,
        "ci_high": high,
        "reference": ref,
        "reference_kind": kind,
        "expect": expect,
        "verdict": claim_verdict(low, high, ref, expect),
        "rule": verdict_rule(kind, ref, expect),
    }


def _claims_random_init(summary: Any) -> list[dict[str, Any]]:
    frame = _table(summary, "random_init", "scores")
    if frame is None:
        return []
    rows = []
    texts = {
        "neighborhood_concordance": "Random-init causal NoPE models show the neighborhood "
        "pattern: nearer positions are more cosine-similar",
        "adjacency_probability": "In random-init causal NoPE models, a position's most similar "
        "other position is its neighbour more often than chance",
    }
    for metric, text in texts.items():
        last = _last_blocks(_where(frame, metric=metric, site="resid_post"))
        if last.empty:
            continue
        value, low, high, chance = _seed_mean(last)
        measure = f"{_SHORT[metric]} at the last block, resid_post ({_seeds_note(last)})"
        rows.append(
            _row(text, "Zuo et al. 2025", "random_init", measure, value=value, ci_low=low,
                 ci_high=high, reference=chance)
        )  # fmt: skip
    return rows


def _claims_controls(summary: Any) -> list[dict[str, Any]]:
    frame = _table(summary, "controls", "results")
    if frame is None or "positional" not in frame.columns or "attention" not in frame.columns:
        return []
    frame = _where(frame, metric="neighborhood_concordance", site="resid_post")
    rows = []
    bidir = _last_blocks(_where(frame, positional="none", attention="bidirectional"))
    if not bidir.empty:
        value, low, high, chance = _seed_mean(bidir)
        rows.append(
            _row("Without the causal mask (bidirectional NoPE) the pattern vanishes",
                 "Zuo et al. 2025", "controls",
                 f"NC at the last block, bidirectional NoPE ({_seeds_note(bidir)})",
                 value=value, ci_low=low, ci_high=high, reference=chance, expect="at")
        )  # fmt: skip
    learned = _last_blocks(_where(frame, positional="learned", attention="causal"))
    if not learned.empty:
        value, low, high, chance = _seed_mean(learned)
        rows.append(
            _row("The causal mask alone produces the pattern: a causal model with learned "
                 "positions shows it too at init", "this toolkit", "controls",
                 f"NC at the last block, learned PE causal ({_seeds_note(learned)})",
                 value=value, ci_low=low, ci_high=high, reference=chance)
        )  # fmt: skip
    return rows


def _fit_row(fit: pd.DataFrame) -> pd.Series:
    """The row of lowest ``pearson_r_ci_low`` (else lowest ``pearson_r``)."""
    key = "pearson_r_ci_low" if "pearson_r_ci_low" in fit.columns else "pearson_r"
    return fit.loc[pd.to_numeric(fit[key], errors="coerce").idxmin()]


#: Said of the fit intervals: basic bootstraps that target the fit of the noise-free mean matrix
#: (:mod:`nopelens.analyzer.theory_fit`), so they can lie above the measured r.
_NOISE_FREE = (
    "; the interval is for the fit with infinitely many sequences and can lie above r, "
    "since sampling noise in the mean matrices lowers r"
)


def _claims_theory(summary: Any, bar: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fit = _table(summary, "layer_theory", "fit")
    first = None if fit is None else _where(fit, prediction="first_layer", layer="0")
    if first is not None and not _where(first, site="attn_out").empty:
        first = _where(first, site="attn_out")
    if first is not None and not first.empty:
        row = first.iloc[0]
        low, high = row.get("pearson_r_ci_low", math.nan), row.get("pearson_r_ci_high", math.nan)
        site = row["site"]
    else:  # the block-0 theory part alone has no interval
        metrics = _table(summary, "theory", "metrics")
        if metrics is None:
            metrics = pd.DataFrame()
        hits = _where(_where(metrics, prediction="pattern"), site="attn_out")
        if hits.empty:
            hits = _where(metrics, prediction="pattern")
        if hits.empty:
            return rows
        row, low, high = hits.iloc[0], math.nan, math.nan
        site = row["site"]
    rows.append(
        _row("The first layer's attention patterns explain its pattern (theory: A G Aᵀ with "
             "isotropic values)", "Zuo et al. 2025", "layer_theory" if fit is not None else
             "theory", f"Pearson r, predicted vs observed similarity, block 0 {site}{_NOISE_FREE}",
             value=float(row["pearson_r"]), ci_low=float(low), ci_high=float(high),
             reference=bar, reference_kind="bar")
    )  # fmt: skip
    if fit is not None:
        one_step = _where(fit, prediction="one_step")
        if not one_step.empty:
            worst = _fit_row(one_step)
            rows.append(
                _row("The attention-pattern theory explains every layer, not only the first",
                     "this toolkit", "layer_theory",
                     f"Pearson r of the one-step prediction at its worst layer (block "
                     f"{worst['layer']} {worst['site']}){_NOISE_FREE}",
                     value=float(worst["pearson_r"]),
                     ci_low=float(worst.get("pearson_r_ci_low", math.nan)),
                     ci_high=float(worst.get("pearson_r_ci_high", math.nan)),
                     reference=bar, reference_kind="bar")
            )  # fmt: skip
    return rows


def _claims_length(summary: Any) -> list[dict[str, Any]]:
    frame = _table(summary, "length", "results")
    if frame is None or "seq_len" not in frame.columns:
        return []
    last = _last_blocks(_where(frame, metric="neighborhood_concordance", site="resid_post"))
    if last["seq_len"].nunique() < 2:
        return []
    short, long = last["seq_len"].min(), last["seq_len"].max()
    s_value, s_low, s_high, _ = _seed_mean(last[last["seq_len"] == short])
    l_value, l_low, l_high, _ = _seed_mean(last[last["seq_len"] == long])
    # conservative interval of the difference: from the ends of the two intervals
    return [
        _row("The pattern dilutes as sequences grow", "Dawes et al. 2026", "length",
             f"NC at {short} tokens minus NC at {long} tokens, last block ({s_value:.3f} vs "
             f"{l_value:.3f}; interval from the two CIs' ends)",
             value=s_value - l_value, ci_low=s_low - l_high, ci_high=s_high - l_low,
             reference=0.0, reference_kind="no change")
    ]  # fmt: skip


def _claims_probes(summary: Any) -> list[dict[str, Any]]:
    frame = _table(summary, "probes", "results")
    if frame is None or "feature" not in frame.columns:
        return []
    frame = _where(frame, metric="spearman", target="position", layer="0")
    if "model" in frame.columns and (frame["model"] == "given").any():
        frame = frame[frame["model"] == "given"]
    if "subject" in frame.columns and frame["subject"].nunique() > 1:
        frame = frame[frame["subject"] == frame["subject"].iloc[0]]
    if "capacity" in frame.columns and (frame["capacity"] == "matched").any():
        frame = frame[frame["capacity"] == "matched"]
    if "probe" in frame.columns and (frame["probe"] == "ridge").any():
        frame = frame[frame["probe"] == "ridge"]
    cosine, variance = _where(frame, feature="cosine"), _where(frame, feature="variance")
    if cosine.empty or variance.empty:
        return []
    c_value, c_low, c_high, _ = _seed_mean(cosine)
    v_value, v_low, v_high, _ = _seed_mean(variance)
    subject = f", {frame['subject'].iloc[0]}" if "subject" in frame.columns else ""
    return [
        _row("Cosine similarity carries position better than variance", "Zuo et al. 2025",
             "probes", f"Spearman ρ of a position probe on cosine features minus on variance, "
             f"block 0{subject} ({c_value:.3f} vs {v_value:.3f}; interval from the two CIs' "
             "ends)", value=c_value - v_value, ci_low=c_low - v_high, ci_high=c_high - v_low,
             reference=0.0, reference_kind="no difference")
    ]  # fmt: skip


def _claims_hybrid(summary: Any) -> list[dict[str, Any]]:
    """The NoPE blocks of a hybrid RoPE/NoPE stack keep the pattern (random init and trained)."""
    frame = _table(summary, "hybrid", "summary")
    if frame is None:
        return []
    frame = _where(frame, variant="hybrid", site="resid_post", metric="neighborhood_concordance",
                   layer_group="NoPE layers")  # fmt: skip
    rows = []
    for (experiment, state), label in (
        (("random_init", "untrained"), "at random init"),
        (("trained", "trained"), "after training on previous_token"),
    ):
        hit = _where(frame, experiment=experiment, state=state)
        if hit.empty:
            continue
        row = hit.iloc[0]
        rows.append(
            _row(f"The NoPE blocks of a hybrid RoPE/NoPE stack (SmolLM3, Llama 4) keep the "
                 f"pattern {label}", "this toolkit", "hybrid",
                 "NC at the hybrid's NoPE blocks, resid_post, mean over blocks and seeds",
                 value=float(row["value"]), ci_low=float(row["ci_low"]),
                 ci_high=float(row["ci_high"]), reference=float(row["chance"]))
        )  # fmt: skip
    return rows


def _claims_trained(summary: Any) -> list[dict[str, Any]]:
    frame = _table(summary, "trained", "scores")
    if frame is None or "state" not in frame.columns:
        return []
    frame = _where(frame, metric="neighborhood_concordance", positional="none", state="trained")
    rows: list[dict[str, Any]] = []
    for task, group in frame.groupby("task", sort=False) if "task" in frame.columns else []:
        last = _last_blocks(_where(group, site="resid_post"))
        if last.empty:
            continue
        value, low, high, chance = _seed_mean(last)
        rows.append(
            _row(f"Trained NoPE models keep the pattern ({task})", "Zuo et al. 2025", "trained",
                 f"NC at the last block after training on {task} ({_seeds_note(last)})",
                 value=value, ci_low=low, ci_high=high, reference=chance)
        )  # fmt: skip
    return rows


def _wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _claims_sweep(summary: Any) -> list[dict[str, Any]]:
    frame = _table(summary, "sweep", "results")
    if frame is None:
        return []
    last = _last_blocks(_where(frame, metric="neighborhood_concordance", site="resid_post"))
    if last.empty or not {"ci_low", "chance"} <= set(last.columns):
        return []
    above = pd.to_numeric(last["ci_low"]) > pd.to_numeric(last["chance"])
    low, high = _wilson(int(above.sum()), len(above))
    return [
        _row("The pattern appears over a common range of hyperparameters", "Zuo et al. 2025",
             "sweep", f"share of the {len(above)} swept configurations whose NC at the last "
             "block is above chance (own CI; Wilson interval)", value=float(above.mean()),
             ci_low=low, ci_high=high, reference=0.5, reference_kind="half of them")
    ]  # fmt: skip


def headline_verdicts(summary: Any, *, bar: float = 0.9) -> pd.DataFrame:
    """The paper's claims, what a :func:`~nopelens.experiments.reproduce` run measured, verdicts.

    One row per claim whose experiment is in ``summary`` (the ``summary.json`` of a reproduce
    run: ``summary["parts"][part]["tables"]``): the measured value with its 95% interval, the
    reference it is held against (chance level, a bar, or no difference) and the verdict of
    :func:`claim_verdict`, whose rule is spelled out in the ``rule`` column. Scores are the mean
    over weight seeds of each seed's value and bootstrap interval (over sequences); differences
    between two conditions take the conservative interval from the ends of the two intervals.

    Claims (those whose part did not run are left out): the neighborhood pattern in random-init
    causal NoPE models (NC and AP above chance); none without the causal mask (bidirectional NoPE
    at chance); the causal mask alone suffices (learned positions, causal); the block-0 theory
    explains block 0, and the one-step theory every layer (Pearson r above ``bar``); dilution
    with length (NC falls from the shortest to the longest length); cosine beats variance as a
    position feature (probe Spearman ρ); trained NoPE models keep the pattern (per task); and
    over the hyperparameter sweep, most configurations show it (share above one half).

    Args:
        summary: The reproduce summary (a dict as read from ``summary.json``).
        bar: The Pearson r a theory must exceed to count as explaining the pattern.

    Returns:
        A DataFrame with the columns of :data:`HEADLINE_COLUMNS` (``claim, source, part,
        measure, value, ci_low, ci_high, reference, reference_kind, expect, verdict, rule``).

    Raises:
        ValueError: If ``summary`` is not a mapping.

    Examples:
        >>> scores = [{"site": "resid_post", "layer": layer, "metric": "neighborhood_concordance",
        ...            "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05, "chance": 0.5,
        ...            "seed": 0} for layer, v in (("embed", 0.5), ("0", 0.7), ("1", 0.75))]
        >>> table = headline_verdicts({"parts": {"random_init": {"tables": {"scores": scores}}}})
        >>> table[["value", "ci_low", "reference", "verdict"]].values.tolist()
        [[0.75, 0.7, 0.5, 'supported']]
    """
    if not isinstance(summary, dict):
        raise InvalidParameterError(
            "The 'summary' parameter of headline_verdicts must be a reproduce summary (the dict "
            f"of summary.json). Got {type(summary).__name__} instead."
        )
    rows = [
        *_claims_random_init(summary),
        *_claims_controls(summary),
        *_claims_sweep(summary),
        *_claims_theory(summary, bar),
        *_claims_length(summary),
        *_claims_probes(summary),
        *_claims_trained(summary),
        *_claims_hybrid(summary),
    ]
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)
