"""Verdicts of a sweep: is the pattern above chance, per hyperparameter value, and where not?

:func:`summarize` turns the results into one row per hyperparameter value (and site, layer,
metric): how many configurations are above chance, the mean excess over chance with a
confidence interval over configurations, a verdict, and the contiguous value range where the
pattern fails; :func:`failure_ranges` says the same in sentences. A sweep of saved models and
texts (the ``model`` and ``text`` settings) is summarised per model and per text like any other
setting: their architecture columns are empty, so only ``model`` and ``text`` are swept.
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
