"""Headline verdicts of a reproduce run: each paper claim, its measured value and CI, a verdict.

:func:`headline_verdicts` reads a reproduce ``summary.json`` and returns one row per claim
(claim, source, measure, value with its 95% interval, the chance level or reference, and the
verdict with its rule); :func:`claim_verdict` is the rule itself. The dashboard opens with this
table. Sweep-level verdicts per hyperparameter value are :mod:`nopelens.experiments.summary`.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from nopelens.validation import InvalidParameterError

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
