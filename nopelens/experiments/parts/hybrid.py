"""The hybrid part: the NoPE layers of a RoPE/NoPE stack beside its RoPE layers.

Production models mix the two: SmolLM3 drops RoPE in every fourth block, Llama 4 interleaves
NoPE blocks. Where do their NoPE layers keep position? ``hybrid`` answers on two kinds of model:

* **random init**: a rotary model whose ``nope_layers`` skip the rotation (``hybrid``), beside
  the same weights with every block rotary (``all-RoPE``) and with no block rotary (``all-NoPE``:
  the rotary model with every rotation removed, so all three variants share every weight and
  differ only in where queries and keys are rotated), scored on the same random tokens;
* **trained**: the hybrid and the all-RoPE model trained on the ``previous_token`` task (which
  needs position), scored on held-out task inputs before and after training.

Each variant's neighborhood scores (adjacency probability and neighborhood concordance, with
confidence intervals, :func:`nopelens.analyzer.analyze`) go into one tidy table per experiment,
one row per (variant, seed, site, layer, metric), with ``is_nope_layer`` telling which blocks
have no positional encoding (the embedding row: only in the all-NoPE variant, as in the
analyzer's ``nope`` column). The headline numbers are each variant's mean score over the hybrid's
NoPE blocks and over its RoPE blocks (the embedding excluded): the hybrid's NoPE-layer mean
against its RoPE-layer mean, with the all-NoPE and all-RoPE models at the same blocks as
references.

Settings (``ctx.config["settings"]``, over :data:`HYBRID_DEFAULTS` of the profile's name):
``model`` (``build_model`` overrides of the profile's base model; ``positional`` is always
``"rotary"``), ``nope_layers``, ``sites``, and ``trained`` (``None`` skips it) with ``task``
(``previous_token`` parameters), ``model``, ``nope_layers``, ``train``
(:class:`~nopelens.training.TrainConfig` overrides), ``seeds`` and ``n_seqs``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from nopelens.experiments.parts.common import (
    analyze_profile,
    job_context,
    map_jobs,
    profile_tokens,
    section,
    start_ahead,
    train_dir,
)
from nopelens.experiments.pipeline import Context, PartResult
from nopelens.experiments.profiles import HYBRID_DEFAULTS
from nopelens.models import HookedModel
from nopelens.validation import InvalidParameterError

#: The variants, in legend order: the hybrid stack and its two references.
VARIANTS: tuple[str, ...] = ("hybrid", "all-RoPE", "all-NoPE")
#: The task the trained models learn (it needs position: output the previous token).
TASK = "previous_token"
#: Columns of the per-layer tables, in order (the trained table adds ``state``).
TABLE_COLUMNS: tuple[str, ...] = (
    "variant",
    "seed",
    "site",
    "layer",
    "is_nope_layer",
    "metric",
    "value",
    "chance",
    "ci_low",
    "ci_high",
    "n_seqs",
    "seq_len",
)
_METRICS = {"adjacency_probability": "AP", "neighborhood_concordance": "NC"}


def hybrid_settings(profile: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The part's settings: the profile's defaults with its own ``hybrid`` settings on top.

    The defaults are :data:`HYBRID_DEFAULTS` of the profile called ``profile`` (``quick`` for a
    custom one); ``settings`` replace them key by key (``trained`` too, where ``None`` skips the
    trained models).

    Examples:
        >>> settings = hybrid_settings("test", {"nope_layers": [0]})
        >>> settings["nope_layers"], settings["model"], settings["trained"]["nope_layers"]
        ([0], {'n_layers': 4}, [1])
        >>> hybrid_settings("test", {"trained": None})["trained"] is None
        True
    """
    defaults = copy.deepcopy(HYBRID_DEFAULTS.get(profile, HYBRID_DEFAULTS["quick"]))
    own = dict(settings or {})
    trained = own.pop("trained", defaults["trained"])
    merged = {**defaults, **own}
    if trained is not None:
        trained = {**(defaults["trained"] or {}), **trained}
    merged["trained"] = trained
    return merged


def variant_layers(variant: str, nope_layers: Sequence[int], n_layers: int) -> list[int]:
    """The blocks without rotation in one variant of a hybrid with ``nope_layers``.

    Examples:
        >>> [variant_layers(v, [1, 3], 4) for v in VARIANTS]
        [[1, 3], [], [0, 1, 2, 3]]
    """
    if variant not in VARIANTS:
        raise InvalidParameterError(
            f"The 'variant' parameter of variant_layers must be one of "
            f"{', '.join(repr(v) for v in VARIANTS)}. Got {variant!r} instead."
        )
    return {
        "hybrid": sorted(nope_layers),
        "all-RoPE": [],
        "all-NoPE": list(range(n_layers)),
    }[variant]


def build_variants(
    model_kwargs: Mapping[str, Any],
    nope_layers: Sequence[int],
    *,
    seed: int,
    device: str = "cpu",
    variants: Sequence[str] = VARIANTS,
) -> dict[str, HookedModel]:
    """The variants of one rotary model: same weights (``seed``), different NoPE blocks.

    Args:
        model_kwargs: ``build_model`` arguments (``n_layers``, ``d_model``, ...; ``positional``
            is set to ``"rotary"``).
        nope_layers: The hybrid's blocks without rotation.
        seed: Weight seed, shared by every variant.
        device: Torch device.
        variants: Which of :data:`VARIANTS` to build.

    Returns:
        Variant name -> model. Their ``state_dict`` s are equal: only the rotation differs.

    Examples:
        >>> models = build_variants({"n_layers": 2, "d_model": 16, "n_heads": 2, "d_vocab": 10,
        ...                          "n_ctx": 8}, [1], seed=0)
        >>> from nopelens.models import nope_layers
        >>> {name: nope_layers(m) for name, m in models.items()}
        {'hybrid': (1,), 'all-RoPE': (), 'all-NoPE': (0, 1)}
    """
    from nopelens.models import build_model

    kwargs = {**model_kwargs, "positional": "rotary", "seed": seed, "device": device}
    return {
        name: build_model(
            **kwargs, nope_layers=variant_layers(name, nope_layers, kwargs["n_layers"])
        )
        for name in variants
    }


def layer_table(scores: pd.DataFrame, model: HookedModel, **labels: Any) -> pd.DataFrame:
    """An analyzer scores frame as rows of the part's tables: labels, ``is_nope_layer`` first.

    ``is_nope_layer`` is read from the model (:func:`nopelens.models.nope_layers`): True for its
    NoPE blocks, and for the ``"embed"`` row only when every block is NoPE.
    """
    from nopelens.models import nope_layers

    nope = {str(layer) for layer in nope_layers(model)}
    if len(nope) == model.cfg.n_layers:
        nope.add("embed")
    frame = scores.drop(columns=[c for c in ("nope",) if c in scores.columns]).copy()
    frame["layer"] = frame["layer"].astype(str)
    frame["is_nope_layer"] = frame["layer"].isin(nope)
    for key, value in labels.items():
        frame[key] = value
    first = [c for c in (*labels, *TABLE_COLUMNS) if c in frame.columns]
    return frame[list(dict.fromkeys(first)) + [c for c in frame.columns if c not in first]]


def layer_group_means(
    table: pd.DataFrame, nope_layers: Sequence[int], by: Sequence[str] = ()
) -> pd.DataFrame:
    """Each variant's mean score over the hybrid's NoPE blocks and over its RoPE blocks.

    The embedding row is left out; the mean is over blocks (and seeds). One row per
    (``by``..., variant, site, metric, layer group), with the mean ``value``, ``chance``,
    ``ci_low``, ``ci_high`` and the number of blocks averaged.

    Examples:
        >>> table = pd.DataFrame({"variant": "hybrid", "seed": 0, "site": "resid_post",
        ...     "layer": ["embed", "0", "1", "2"], "metric": "adjacency_probability",
        ...     "value": [0.1, 0.8, 0.4, 0.6], "chance": 0.2, "ci_low": 0.0, "ci_high": 1.0})
        >>> layer_group_means(table, [1])[["layer_group", "value", "n_blocks"]].values.tolist()
        [['NoPE layers', 0.4, 1], ['RoPE layers', 0.7, 2]]
    """
    blocks = table[table["layer"].astype(str) != "embed"]
    hybrid_nope = {str(layer) for layer in nope_layers}
    group = (
        blocks["layer"]
        .astype(str)
        .isin(hybrid_nope)
        .map({True: "NoPE layers", False: "RoPE layers"})
    )
    keys = [*by, "variant", "site", "metric", "layer_group"]
    out = (
        blocks.assign(layer_group=group)
        .groupby(keys, sort=False)
        .agg(
            value=("value", "mean"),
            chance=("chance", "mean"),
            ci_low=("ci_low", "mean"),
            ci_high=("ci_high", "mean"),
            n_blocks=("layer", "nunique"),
        )
        .reset_index()
    )
    order = out.assign(
        _key=out.groupby(keys[:-1], sort=False).ngroup(),
        _rope=out["layer_group"] != "NoPE layers",
    ).sort_values(["_key", "_rope"], kind="stable")
    return order.drop(columns=["_key", "_rope"]).reset_index(drop=True)


def _group_numbers(summary: pd.DataFrame) -> dict[str, Any]:
    """``{site: {variant: {layer group: {AP, NC}}, "chance": {AP, NC}}}`` from a summary frame."""
    numbers: dict[str, Any] = {}
    for site, rows in summary.groupby("site", sort=False):
        entry: dict[str, Any] = {}
        for row in rows.itertuples(index=False):
            short = _METRICS.get(str(row.metric), str(row.metric))
            entry.setdefault(row.variant, {}).setdefault(row.layer_group, {})[short] = float(
                row.value
            )
            entry.setdefault("chance", {})[short] = float(row.chance)
        numbers[str(site)] = entry
    return numbers


def _headline(table: pd.DataFrame, nope_layers: Sequence[int], site: str) -> dict[str, float]:
    """The headline numbers at ``site``: hybrid NoPE vs RoPE blocks, references and chance.

    The hybrid's mean AP/NC over its NoPE blocks and over its RoPE blocks, the all-NoPE and
    all-RoPE means over every block, and the chance levels.

    Examples:
        >>> table = pd.DataFrame({"variant": ["hybrid"] * 3 + ["all-RoPE"] * 3,
        ...     "site": "resid_post", "layer": ["embed", "0", "1"] * 2,
        ...     "metric": "adjacency_probability", "value": [0.1, 0.8, 0.4, 0.1, 0.6, 0.5],
        ...     "chance": 0.2})
        >>> _headline(table, [1], "resid_post")  # doctest: +NORMALIZE_WHITESPACE
        {'AP hybrid NoPE layers': 0.4, 'AP hybrid RoPE layers': 0.8, 'AP all-RoPE': 0.55,
         'AP chance': 0.2}
    """
    rows = table[(table["site"] == site) & (table["layer"].astype(str) != "embed")]
    nope = rows["layer"].astype(str).isin({str(layer) for layer in nope_layers})
    out: dict[str, float] = {}
    for metric, short in _METRICS.items():
        of_metric = rows["metric"] == metric
        if not of_metric.any():
            continue
        hybrid = of_metric & (rows["variant"] == "hybrid")
        out[f"{short} hybrid NoPE layers"] = float(rows[hybrid & nope]["value"].mean())
        out[f"{short} hybrid RoPE layers"] = float(rows[hybrid & ~nope]["value"].mean())
        for variant in ("all-NoPE", "all-RoPE"):
            chosen = of_metric & (rows["variant"] == variant)
            if chosen.any():
                out[f"{short} {variant}"] = float(rows[chosen]["value"].mean())
        out[f"{short} chance"] = float(rows[of_metric]["chance"].mean())
    return out


def _random_init(ctx: Context, settings: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every variant of the random-init hybrid, one model per profile seed."""
    prof = ctx.profile
    model_kwargs = {**prof.model, **settings["model"], "n_ctx": prof.seq_len}
    tokens = profile_tokens(ctx)
    frames: list[pd.DataFrame] = []
    labels: dict[str, str] = {}
    for seed in prof.seeds:
        models = build_variants(model_kwargs, settings["nope_layers"], seed=seed, device=ctx.device)
        for name, model in models.items():
            report = analyze_profile(ctx, model, tokens, settings["sites"])
            frames.append(layer_table(report.scores, model, variant=name, seed=seed))
            labels.setdefault(name, report.model_label)
    return pd.concat(frames, ignore_index=True), labels


def _trained(
    ctx: Context, trained: dict[str, Any], sites: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the hybrid and the all-RoPE model on the task; score both before and after."""
    from nopelens.training import (
        build_task_model,
        default_config,
        get_task,
        load_initial_and_final,
        train,
    )

    task = get_task(TASK, **trained["task"])
    tokens = task.sample(trained["n_seqs"], split="test", generator=ctx.profile.data_seed).tokens
    frames, finals = [], []
    for seed in trained["seeds"]:
        for name in ("hybrid", "all-RoPE"):
            kwargs = {**trained["model"], "positional": "rotary"}
            model = build_task_model(
                task,
                seed=seed,
                device=ctx.device,
                **kwargs,
                nope_layers=variant_layers(
                    name, trained["nope_layers"], task_model_layers(task, kwargs)
                ),
            )
            folder = train_dir(ctx.part_dir, TASK, name, seed)
            config = default_config(task, seed=ctx.profile.data_seed, **trained["train"])
            result = train(model, task, config, checkpoint_dir=folder, progress=ctx.progress)
            finals.append(
                {
                    "variant": name,
                    "seed": seed,
                    "steps": config.steps,
                    **result.final,
                    "chance_accuracy": task.chance,
                }
            )
            initial, final = load_initial_and_final(folder, device=ctx.device)
            for state, scored in (("untrained", initial), ("trained", final)):
                report = analyze_profile(ctx, scored, tokens, sites)
                frames.append(
                    layer_table(report.scores, scored, variant=name, state=state, seed=seed)
                )
    return pd.concat(frames, ignore_index=True), pd.DataFrame(finals)


def task_model_layers(task: Any, model_kwargs: Mapping[str, Any]) -> int:
    """The number of blocks of the task's recommended model with ``model_kwargs`` applied."""
    from nopelens.training import default_model_kwargs

    return int(default_model_kwargs(task, **model_kwargs)["n_layers"])


def _job(ctx: Context, experiment: str) -> Any:
    """One experiment of the part (a :func:`map_jobs` job): ``random_init`` or ``trained``."""
    settings = hybrid_settings(ctx.profile.name, ctx.config.get("settings"))
    if experiment == "random_init":
        return _random_init(ctx, settings)
    return _trained(ctx, settings["trained"], list(settings["sites"]))


def _jobs(ctx: Context) -> tuple[list[tuple[Context, str]], list[str]]:
    """The part's experiments as jobs (the trained one only if configured), and their keys."""
    settings = hybrid_settings(ctx.profile.name, ctx.config.get("settings"))
    keys = ["random_init"] + (["trained"] if settings["trained"] is not None else [])
    job_ctx = job_context(ctx, len(keys))
    return [(job_ctx, key) for key in keys], keys


def prefetch_hybrid(ctx: Context) -> bool:
    """Start the part's experiments ahead of time (:func:`start_ahead`), the trained one first."""
    jobs, keys = _jobs(ctx)
    return start_ahead(ctx, _job, jobs[::-1], keys[::-1])


def part_hybrid(ctx: Context) -> PartResult:
    """NoPE layers vs RoPE layers of a hybrid stack, random-init and trained (module docstring).

    Returns:
        Numbers: ``random_init`` (and ``trained``) with, per site, each variant's mean AP/NC over
        the hybrid's NoPE blocks and over its RoPE blocks and the chance levels, ``nope_layers``
        and ``headline`` (the last site's hybrid-vs-reference means); ``accuracy`` of the trained
        models. Tables: ``random_init`` and ``trained`` (per layer, :data:`TABLE_COLUMNS`),
        ``summary`` (the layer-group means) and ``accuracy``.
    """
    settings = hybrid_settings(ctx.profile.name, ctx.config.get("settings"))
    sites = list(settings["sites"])
    jobs, keys = _jobs(ctx)
    (scores, labels), *trained_out = map_jobs(ctx, _job, jobs, desc="hybrid", keys=keys)
    summary = layer_group_means(scores, settings["nope_layers"]).assign(
        experiment="random_init", state="untrained"
    )
    site = "resid_post" if "resid_post" in sites else sites[-1]
    numbers: dict[str, Any] = {
        "random_init": {
            "model": labels["hybrid"],
            "nope_layers": list(settings["nope_layers"]),
            "headline": _headline(scores, settings["nope_layers"], site),
            **_group_numbers(summary),
        }
    }
    tables = {"random_init": scores}
    summaries = [summary]
    trained = settings["trained"]
    if trained is not None:
        ((frame, accuracy),) = trained_out
        trained_summary = layer_group_means(frame, trained["nope_layers"], by=["state"]).assign(
            experiment="trained"
        )
        numbers["trained"] = {
            "task": TASK,
            "nope_layers": list(trained["nope_layers"]),
            "accuracy": {
                name: float(rows["test_accuracy"].mean())
                for name, rows in accuracy.groupby("variant", sort=False)
            },
            "chance_accuracy": float(accuracy["chance_accuracy"].iloc[0]),
            "headline": _headline(frame[frame["state"] == "trained"], trained["nope_layers"], site),
            **{
                state: _group_numbers(trained_summary[trained_summary["state"] == state])
                for state in ("untrained", "trained")
            },
        }
        tables.update(trained=frame, accuracy=accuracy)
        summaries.append(trained_summary)
    order = ["experiment", "state", "variant", "site", "metric", "layer_group"]
    merged = pd.concat(summaries, ignore_index=True)
    tables["summary"] = merged[order + [c for c in merged.columns if c not in order]]
    return PartResult(numbers=numbers, tables=tables)


def _seed_mean(table: pd.DataFrame) -> pd.DataFrame:
    """Scores averaged over seeds, per (variant, site, layer, metric), as a figure frame."""
    keys = ["variant", "site", "layer", "metric"]
    agg = (
        table.groupby(keys, sort=False)
        .agg(
            value=("value", "mean"),
            chance=("chance", "mean"),
            ci_low=("ci_low", "mean"),
            ci_high=("ci_high", "mean"),
            nope=("is_nope_layer", "all"),
        )
        .reset_index()
    )
    return agg.rename(columns={"variant": "model"})


def _variant_figure(table: pd.DataFrame, nope_layers: Sequence[int], title: str) -> Any:
    """Scores by layer of every variant, the hybrid's NoPE blocks shaded."""
    from nopelens.viz import score_by_layer_figure
    from nopelens.viz.inputs import layer_order
    from nopelens.viz.scores import mark_nope_layers

    frame = _seed_mean(table)
    models = [v for v in VARIANTS if v in set(frame["model"])]
    fig = score_by_layer_figure(frame, models=models, title=title)
    marked = [str(layer) for layer in nope_layers]
    return mark_nope_layers(fig, layer_order(frame["layer"]), marked, label="NoPE in hybrid")


def figures_hybrid(result: PartResult) -> list[Any]:
    """Scores by layer of the hybrid and its references (random init, then trained)."""
    numbers = result.numbers
    intro = (
        "Scores by layer of a rotary model whose shaded blocks have no positional encoding "
        "(the hybrid, drawn with diamonds at its NoPE blocks), beside the same weights with "
        "every block rotary (all-RoPE) and with none (all-NoPE); mean over weight seeds, bands: "
        "confidence intervals over sequences."
    )
    out: list[Any] = [
        (
            "Hybrid RoPE/NoPE stacks at initialisation",
            section(
                intro,
                _variant_figure(
                    result.tables["random_init"],
                    numbers["random_init"]["nope_layers"],
                    "Random init: hybrid vs all-RoPE vs all-NoPE",
                ),
            ),
        )
    ]
    if "trained" in result.tables:
        frame = result.tables["trained"]
        figures = [
            _variant_figure(
                frame[frame["state"] == state],
                numbers["trained"]["nope_layers"],
                f"{TASK}, {state}: hybrid vs all-RoPE",
            )
            for state in ("untrained", "trained")
        ]
        out.append(
            (
                "Hybrid RoPE/NoPE stacks trained on a position task",
                section(
                    f"The hybrid and the all-RoPE model trained on {TASK}, scored on held-out "
                    "task inputs before and after training; then each run's test accuracy.",
                    *figures,
                    result.tables["accuracy"],
                ),
            )
        )
    out.append(
        (
            "Hybrid stacks: NoPE layers vs RoPE layers",
            section(
                "Each variant's mean score over the hybrid's NoPE blocks and over its RoPE "
                "blocks (the embedding left out).",
                result.tables["summary"],
            ),
        )
    )
    return out
