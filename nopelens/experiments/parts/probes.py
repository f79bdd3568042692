"""The probes part: can position be read from hidden, cosine or variance features?

Probes the base random-init NoPE model and, when the ``trained`` part ran, its first-seed NoPE
model of one task, with :func:`nopelens.probes.probe_positions`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from nopelens.experiments.parts.common import base_model, profile_tokens, section, train_dir
from nopelens.experiments.pipeline import Context, PartResult
from nopelens.models import HookedModel


def _trained_subject(ctx: Context, name: str) -> tuple[str, HookedModel, Any]:
    """The first-seed NoPE model of task ``name`` from the ``trained`` part, with task tokens."""
    from nopelens.models import load_model
    from nopelens.training import get_task

    settings = ctx.config["settings"]
    trained_settings = ctx.config["inputs"]["trained"]
    task = get_task(name, **trained_settings["tasks"][name])
    folder = train_dir(ctx.part_dir.parent / "trained", name, "none", trained_settings["seeds"][0])
    trained = load_model(folder / "final.pt", device=ctx.device)
    tokens = task.sample(settings["n_seqs"], split="test", generator=ctx.profile.data_seed).tokens
    return f"trained NoPE ({name})", trained, tokens


def probe_numbers(report: Any) -> dict[str, Any]:
    """Spearman rho of each family's best probe per layer (full and equal dimension), winners."""
    out: dict[str, Any] = {}
    results = report.results
    for model, group in results.groupby("model", sort=False):
        rows = group[(group["target"] == "position") & (group["metric"] == "spearman")]
        entry: dict[str, Any] = {}
        for capacity, by_capacity in rows.groupby("capacity", sort=False):
            best = by_capacity.groupby(["layer_index", "layer", "feature"])["value"].max()
            for (_, layer, feature), value in best.items():
                entry.setdefault(f"spearman {capacity} layer {layer}", {})[feature] = float(value)
        compare = report.compare("spearman", model=model)
        entry["winner_by_layer"] = dict(
            zip(compare["layer"].astype(str), compare["winner"], strict=True)
        )
        out[model] = entry
    return out


def part_probes(ctx: Context) -> PartResult:
    """Position probes on hidden, cosine and variance features (random-init and trained).

    Settings: ``n_seqs``, ``seeds`` (probe seeds), ``features``, ``probes``, ``sites``,
    ``equal_dim``, ``drop_first`` (passed to :func:`nopelens.probes.probe_positions`) and
    ``trained``: the task whose first-seed NoPE model from the ``trained`` part is also probed.
    """
    from nopelens.probes import probe_positions

    settings = ctx.config["settings"]
    options = {
        "sites": tuple(settings["sites"]),
        "features": tuple(settings["features"]),
        "probes": tuple(settings["probes"]),
        "seeds": tuple(settings["seeds"]),
        "equal_dim": settings["equal_dim"],
        "drop_first": settings["drop_first"],
    }
    model = base_model(ctx, ctx.profile.seeds[0])
    tokens = profile_tokens(ctx, settings["n_seqs"])
    subjects = [("random-init NoPE", model, tokens)]
    if settings.get("trained"):
        subjects.append(_trained_subject(ctx, settings["trained"]))
    frames, numbers, objects = [], {}, {}
    for label, m, toks in subjects:
        report = probe_positions(m, toks, **options)
        frames.append(report.results.assign(subject=label))
        objects[label] = report
        numbers[label] = probe_numbers(report)
    return PartResult(
        numbers=numbers, tables={"results": pd.concat(frames, ignore_index=True)}, objects=objects
    )


def figures_probes(result: PartResult) -> list[Any]:
    """Probe scores by layer and feature family, at full and at equal dimension."""
    from nopelens.viz import probe_figure

    out: list[Any] = []
    for label, report in result.objects.items():
        out.append(
            probe_figure(report.results, metric="spearman", title=f"Position probes — {label}")
        )
        if (report.results["capacity"] == "matched").any():
            out.append(
                probe_figure(
                    report.results,
                    metric="spearman",
                    capacity="matched",
                    title=f"Position probes, equal dimension — {label}",
                )
            )
    return [
        (
            "Position probes: cosine vs variance",
            section(
                "Spearman correlation between the probed and the true position, per layer and "
                "feature "
                "family (hidden state, cosine-similarity rows, variance across hidden "
                "dimensions), on "
                "held-out sequences, with the control task, the random-init twin of a trained "
                "model, "
                "and chance. The equal-dimension figures give every family the same number of "
                "features (a capacity-fair comparison).",
                *out,
            ),
        )
    ]
