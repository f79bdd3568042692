"""Dashboard sections for one analysed model: which figures, tables and numbers it leads with.

:func:`report_summary` and :func:`report_sections` turn an
:class:`~nopelens.analyzer.analysis.AnalysisReport` (and optionally a
:class:`~nopelens.FirstLayerTheory`) into the headline numbers and the ``(heading, content)``
sections of :func:`~nopelens.viz.dashboard.write_dashboard`; the ``nopelens dashboard`` command is
built from them. Both read the result objects by attribute (``scores``, ``profiles``,
``metrics``, ...), so any object with those attributes will do.

The page's opening tables are rendered here too: :func:`headline_html` (claim, measured value
with its interval, chance, verdict and its rule) and :func:`summary_html` (the summary numbers,
one collapsible group per experiment, each a few small tables instead of dotted keys).
"""

from __future__ import annotations

import html as _html
import json
import math
from collections.abc import Mapping
from typing import Any, Literal

import pandas as pd

from nopelens.viz.inputs import layer_order
from nopelens.viz.scores import score_by_layer_figure
from nopelens.viz.similarity import distance_profile_figure, similarity_heatmap_figure
from nopelens.viz.theory import theory_figure
from nopelens.viz.variance import variance_figure

__all__ = ["report_summary", "report_sections"]

#: How the similarity heatmaps of :func:`report_sections` start: fixed ``[-1, 1]`` or auto.
SimilarityRange = Literal["fixed", "auto"]


def report_summary(report: Any, theory: Any = None) -> dict[str, Any]:
    """Headline numbers of an analysis (and first-layer theory): what the dashboard leads with.

    Kept short on purpose (the full score table is a section of its own): the data sizes, the
    chance levels, and per site the adjacency probability (AP) and neighborhood concordance (NC)
    of the last layer and of the best layer; from ``theory.metrics`` the fit of the pattern-based
    prediction at each layer-0 site.

    Args:
        report: An :class:`~nopelens.analyzer.analysis.AnalysisReport`.
        theory: Optionally a :class:`~nopelens.FirstLayerTheory`.

    Returns:
        A nested JSON-able dict, e.g. ``{"model": ..., "chance": {...}, "resid_post": {"AP last
        layer (1)": 0.91, ...}, "layer-0 theory": {...}}``.

    Examples:
        >>> import pandas as pd
        >>> from types import SimpleNamespace
        >>> scores = pd.DataFrame({"site": "resid_post", "layer": ["embed", "0", "1"],
        ...                        "metric": "adjacency_probability", "value": [0.1, 0.9, 0.8],
        ...                        "chance": 0.125, "n_seqs": 8, "seq_len": 16})
        >>> summary = report_summary(SimpleNamespace(scores=scores, model_label="NoPE"))
        >>> summary["resid_post"]
        {'AP last layer (1)': 0.8, 'AP best layer (0)': 0.9}
        >>> summary["chance"]
        {'AP': 0.125}
    """
    short = {"adjacency_probability": "AP", "neighborhood_concordance": "NC"}
    out: dict[str, Any] = {}
    label = getattr(report, "model_label", None)
    if label:
        out["model"] = label
    scores = getattr(report, "scores", None)
    if isinstance(scores, pd.DataFrame) and not scores.empty:
        for column in ("n_seqs", "seq_len"):
            if column in scores.columns:
                out[column] = int(scores[column].iloc[0])
        if "chance" in scores.columns:
            chance = scores.groupby("metric", sort=False)["chance"].mean()
            out["chance"] = {short.get(m, m): round(float(v), 4) for m, v in chance.items()}
        for site, rows in scores.groupby("site", sort=False):
            entry: dict[str, Any] = {}
            for metric, group in rows.groupby("metric", sort=False):
                name = short.get(str(metric), str(metric))
                blocks = group[group["layer"].astype(str) != "embed"]
                if blocks.empty:
                    blocks = group
                order = layer_order(blocks["layer"])
                last = blocks[blocks["layer"].astype(str) == order[-1]]
                best = blocks.loc[blocks["value"].idxmax()]
                entry[f"{name} last layer ({order[-1]})"] = round(float(last["value"].iloc[0]), 4)
                entry[f"{name} best layer ({best['layer']})"] = round(float(best["value"]), 4)
            out[str(site)] = entry
    metrics = getattr(theory, "metrics", None) if theory is not None else None
    if isinstance(metrics, pd.DataFrame) and not metrics.empty and "site" in metrics.columns:
        rows = metrics
        if "prediction" in rows.columns and (rows["prediction"] == "pattern").any():
            rows = rows[rows["prediction"] == "pattern"]
        fit: dict[str, Any] = {}
        for row in rows.itertuples(index=False):
            fit[str(row.site)] = {
                key: round(float(getattr(row, key)), 4)
                for key in ("pearson_r", "rmse", "ap_observed", "ap_predicted")
                if hasattr(row, key) and pd.notna(getattr(row, key))
            }
        out["layer-0 theory (pattern prediction)"] = fit
    return json.loads(json.dumps(out, default=str))


def report_sections(
    report: Any, theory: Any = None, *, similarity_range: SimilarityRange = "fixed"
) -> list[tuple[str, Any]]:
    """Dashboard sections for one model: heatmaps, scores, distance profiles, theory, variance.

    Args:
        report: An :class:`~nopelens.analyzer.analysis.AnalysisReport`.
        theory: Optionally a :class:`~nopelens.FirstLayerTheory` for layer 0.
        similarity_range: ``"fixed"`` starts the similarity heatmaps on ``[-1, 1]`` (comparable
            across layers and models), ``"auto"`` on the data's range (more contrast); buttons in
            each figure switch between the two.

    Returns:
        ``(heading, content)`` pairs for :func:`write_dashboard`.

    Raises:
        ValueError: If ``similarity_range`` is not ``"fixed"`` or ``"auto"``.
    """
    if similarity_range not in ("fixed", "auto"):
        raise ValueError(
            "The 'similarity_range' parameter of report_sections must be one of 'fixed', "
            f"'auto'. Got {similarity_range!r} instead."
        )
    zrange: dict[str, Any] = (
        {"zmin": None, "zmax": None} if similarity_range == "auto" else {"zmin": -1.0, "zmax": 1.0}
    )
    label = getattr(report, "model_label", None) or "model"
    sections: list[tuple[str, Any]] = [
        (
            "Self-similarity by layer",
            [
                "Mean cosine similarity between the hidden states at positions i and j, one layer "
                "at a time (slider) and one hook site at a time (menu). The neighborhood pattern "
                "is a bright band along the diagonal.",
                similarity_heatmap_figure(report, **zrange),
            ],
        )
    ]
    scores = getattr(report, "scores", None)
    if isinstance(scores, pd.DataFrame) and not scores.empty:
        frame = scores.assign(model=label)
        sections.append(
            (
                "Scores by layer",
                [
                    "Adjacency probability (is the most similar other position a neighbour?) and "
                    "neighborhood concordance (are nearer positions more similar?), with chance "
                    "levels and confidence intervals.",
                    score_by_layer_figure(frame),
                ],
            )
        )
    profiles = getattr(report, "profiles", None)
    if isinstance(profiles, pd.DataFrame) and not profiles.empty:
        sections.append(("Distance profiles", distance_profile_figure(profiles, model_label=label)))
    if theory is not None:
        sections.append(("Layer-0 theory vs observation", theory_figure(theory, **zrange)))
        variance = getattr(theory, "variance", None)
        if isinstance(variance, pd.DataFrame) and not variance.empty:
            sections.append(("Variance by position", variance_figure(variance, model_label=label)))
        metrics = getattr(theory, "metrics", None)
        if isinstance(metrics, pd.DataFrame) and not metrics.empty:
            sections.append(("Layer-0 fit metrics", metrics))
    if isinstance(scores, pd.DataFrame) and not scores.empty:
        sections.append(("Score table", scores))
    return sections


# ---------------------------------------------------------------------------------------------
# the page's opening tables: headline verdicts and the summary numbers
# ---------------------------------------------------------------------------------------------


def format_number(value: Any) -> str:
    """A number as the dashboard shows it: 4 significant digits, thousands separators.

    Examples:
        >>> [format_number(v) for v in (0.912345, 12345, 1e-6, float("nan"), [0.5, 1.0], True)]
        ['0.9123', '12,345', '1.000e-06', 'nan', '[0.5, 1]', 'True']
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_number(v) for v in value) + "]"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


_VERDICT_CLASS = {"supported": "yes", "not supported": "no", "inconclusive": "maybe"}


def _cell(text: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{_html.escape(str(text))}</td>"


def _interval(value: Any, low: Any, high: Any) -> str:
    def num(v: Any) -> str:
        try:
            v = float(v)
        except (TypeError, ValueError):
            return "–"
        return f"{v:.3f}" if math.isfinite(v) else "–"

    bounds = f" [{num(low)}, {num(high)}]" if num(low) != "–" or num(high) != "–" else ""
    return num(value) + bounds


def headline_html(headline: Any) -> str:
    """The headline verdict table: claim | measured (95% CI) | chance | verdict.

    ``headline`` is a DataFrame with the columns ``claim, value, ci_low, ci_high, reference,
    verdict`` and optionally ``source, measure, reference_kind, rule`` (as made by
    :func:`nopelens.experiments.headline_verdicts`). Everything is escaped.

    Raises:
        ValueError: If ``headline`` is not such a DataFrame.

    Examples:
        >>> import pandas as pd
        >>> row = {"claim": "NoPE shows it", "value": 0.75, "ci_low": 0.7, "ci_high": 0.8,
        ...        "reference": 0.5, "verdict": "supported"}
        >>> html = headline_html(pd.DataFrame([row]))
        >>> "0.750 [0.700, 0.800]" in html, 'class="verdict yes"' in html
        (True, True)
    """
    needed = ["claim", "value", "ci_low", "ci_high", "reference", "verdict"]
    if not isinstance(headline, pd.DataFrame) or any(c not in headline.columns for c in needed):
        raise ValueError(
            f"The 'headline' parameter of write_dashboard must be a DataFrame with the columns "
            f"{needed} (see nopelens.experiments.headline_verdicts). Got "
            f"{type(headline).__name__} instead."
        )
    rows = []
    for row in headline.to_dict(orient="records"):
        claim = _html.escape(str(row["claim"]))
        if row.get("source"):
            claim += f'<div class="sub">{_html.escape(str(row["source"]))}</div>'
        interval = _html.escape(_interval(row["value"], row["ci_low"], row["ci_high"]))
        measured = f'<span class="num">{interval}</span>'
        if row.get("measure"):
            measured += f'<div class="sub">{_html.escape(str(row["measure"]))}</div>'
        kind = str(row.get("reference_kind") or "chance")
        reference = f'<span class="num">{_html.escape(format_number(row["reference"]))}</span>'
        if kind != "chance":
            reference += f'<div class="sub">{_html.escape(kind)}</div>'
        verdict = str(row["verdict"])
        badge = (
            f'<span class="verdict {_VERDICT_CLASS.get(verdict, "maybe")}">'
            f"{_html.escape(verdict)}</span>"
        )
        if row.get("rule"):
            badge += f'<div class="sub">{_html.escape(str(row["rule"]))}</div>'
        rows.append(
            f'<tr><td class="key">{claim}</td><td>{measured}</td><td>{reference}</td>'
            f'<td class="key">{badge}</td></tr>'
        )
    return (
        '<table class="headline"><thead><tr><th class="key">claim (paper)</th>'
        "<th>measured (95% CI)</th><th>chance / reference</th>"
        f'<th class="key">verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _is_leaf(value: Any) -> bool:
    return not isinstance(value, Mapping)


def _is_record(value: Any) -> bool:
    """A mapping of leaves (numbers, strings, short lists): one row of a table."""
    return isinstance(value, Mapping) and bool(value) and all(_is_leaf(v) for v in value.values())


def _key_value_table(items: list[tuple[str, Any]]) -> str:
    rows = "".join(
        f'<tr><td class="key">{_html.escape(str(k))}</td>{_cell(format_number(v))}</tr>'
        for k, v in items
    )
    return (
        '<div class="table-wrap"><table class="summary"><thead><tr><th class="key">quantity'
        f"</th><th>value</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _records_table(records: list[tuple[str, Mapping[str, Any]]]) -> str:
    columns = list(dict.fromkeys(k for _, record in records for k in record))
    head = "".join(f"<th>{_html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        f'<tr><td class="key">{_html.escape(str(name))}</td>'
        + "".join(_cell(format_number(record[c]) if c in record else "") for c in columns)
        + "</tr>"
        for name, record in records
    )
    return (
        f'<div class="table-wrap"><table class="summary"><thead><tr><th class="key"></th>{head}'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _mapping_html(mapping: Mapping[str, Any], depth: int) -> str:
    """Leaves as one table, records with the same keys as one table each, the rest nested."""
    parts = []
    leaves = [(str(k), v) for k, v in mapping.items() if _is_leaf(v)]
    if leaves:
        parts.append(_key_value_table(leaves))
    tables: dict[tuple[str, ...], list[tuple[str, Mapping[str, Any]]]] = {}
    for key, value in mapping.items():
        if _is_record(value):
            tables.setdefault(tuple(str(k) for k in value), []).append((str(key), value))
    parts += [_records_table(records) for records in tables.values()]
    level = min(depth + 4, 6)
    for key, value in mapping.items():
        if isinstance(value, Mapping) and not _is_record(value):
            inner = _mapping_html(value, depth + 1) if value else "<p class='note'>(empty)</p>"
            parts.append(f"<h{level}>{_html.escape(str(key))}</h{level}>{inner}")
    return "\n".join(parts)


def _count_numbers(value: Any) -> int:
    if isinstance(value, Mapping):
        return sum(_count_numbers(v) for v in value.values())
    return 1


#: Summaries with at most this many numbers show their groups open.
_OPEN_UP_TO = 40


def summary_html(summary: Mapping[str, Any], titles: Mapping[str, str] | None = None) -> str:
    """The summary numbers grouped by experiment: one collapsible group per top-level key.

    Top-level numbers (not grouped) come first in one table. Each group (a nested mapping, e.g.
    one reproduce part) is a ``<details>`` element (open when the whole summary has at most 40
    numbers) titled ``titles[key]`` (default: the key in
    words) holding its numbers as small tables: plain values as a key/value table, and
    mappings of values with the same keys (``{"layer 0": {"AP": ..., "NC": ...}, ...}``) as one
    table with a row each; deeper levels get sub-headings.

    Examples:
        >>> html = summary_html({"n": 3, "random_init": {"layer 0": {"AP": 0.5, "NC": 0.7},
        ...                                              "layer 1": {"AP": 0.6, "NC": 0.8}}},
        ...                     titles={"random_init": "Random-init NoPE models"})
        >>> html.count("<table"), "Random-init NoPE models" in html, "<th>NC</th>" in html
        (2, True, True)
    """
    titles = titles or {}
    parts = []
    # a short summary (one model) is shown open; a long one (every experiment) collapsed
    state = " open" if _count_numbers(summary) <= _OPEN_UP_TO else ""
    top = {k: v for k, v in summary.items() if _is_leaf(v)}
    if top:
        parts.append(_mapping_html(top, 0))
    groups = []
    for key, value in summary.items():
        if _is_leaf(value):
            continue
        title = titles.get(str(key)) or str(key)
        inner = _mapping_html(value, 0) if value else "<p class='note'>(no numbers)</p>"
        count = _count_numbers(value)
        groups.append(
            f'<details class="group"{state}><summary>{_html.escape(title)} '
            f'<span class="count">({count} numbers)</span></summary>{inner}</details>'
        )
    if groups:
        parts.append(f'<div class="groups{state}">' + "\n".join(groups) + "</div>")
    return "\n".join(parts)
