"""Dashboard sections for one analysed model: which figures, tables and numbers it leads with.

:func:`report_summary` and :func:`report_sections` turn an
:class:`~nopelens.analyzer.analysis.AnalysisReport` (and optionally a
:class:`~nopelens.FirstLayerTheory`) into the headline numbers and the ``(heading, content)``
sections of :func:`~nopelens.viz.dashboard.write_dashboard`; the ``nopelens dashboard`` command is
built from them. Both read the result objects by attribute (``scores``, ``profiles``,
``metrics``, ...), so any object with those attributes will do.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from nopelens.viz.inputs import layer_order
from nopelens.viz.scores import score_by_layer_figure
from nopelens.viz.similarity import distance_profile_figure, similarity_heatmap_figure
from nopelens.viz.theory import theory_figure
from nopelens.viz.variance import variance_figure

__all__ = ["report_summary", "report_sections"]


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


def report_sections(report: Any, theory: Any = None) -> list[tuple[str, Any]]:
    """Dashboard sections for one model: heatmaps, scores, distance profiles, theory, variance.

    Args:
        report: An :class:`~nopelens.analyzer.analysis.AnalysisReport`.
        theory: Optionally a :class:`~nopelens.FirstLayerTheory` for layer 0.

    Returns:
        ``(heading, content)`` pairs for :func:`write_dashboard`.
    """
    label = getattr(report, "model_label", None) or "model"
    sections: list[tuple[str, Any]] = [
        (
            "Self-similarity by layer",
            [
                "Mean cosine similarity between the hidden states at positions i and j, one layer "
                "at a time (slider) and one hook site at a time (menu). The neighborhood pattern "
                "is a bright band along the diagonal.",
                similarity_heatmap_figure(report),
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
        sections.append(("Layer-0 theory vs observation", theory_figure(theory)))
        variance = getattr(theory, "variance", None)
        if isinstance(variance, pd.DataFrame) and not variance.empty:
            sections.append(("Variance by position", variance_figure(variance, model_label=label)))
        metrics = getattr(theory, "metrics", None)
        if isinstance(metrics, pd.DataFrame) and not metrics.empty:
            sections.append(("Layer-0 fit metrics", metrics))
    if isinstance(scores, pd.DataFrame) and not scores.empty:
        sections.append(("Score table", scores))
    return sections
