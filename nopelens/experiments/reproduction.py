"""The main job: every experiment of the paper in one resumable command.

:func:`reproduce` runs the experiment set of the design notes (§4) as an ordered table of small
*parts*: random-init NoPE models, a random-init hyperparameter sweep, positional-encoding and
bidirectional controls, models trained on position tasks (NoPE vs learned positions, trained vs
untrained), the first-layer theory with the attention-sharpness study, position probes, a sequence
length sweep and hook ablations. Each part writes its tables under ``out_dir/parts/<part>/``
atomically and finishes with a ``done.json`` marker holding the exact configuration and seeds it
ran with. Running again into the same folder reuses every part whose marker matches (the sweep
itself is resumable cell by cell), so an interrupted run continues where it stopped.

At the end the run writes ``out_dir/summary.json`` (every number, with the configuration and seeds
that produced it) and ``out_dir/dashboard.html`` (one offline page with a table of contents, the
headline numbers and every figure).

Sizes live in named :class:`Profile` objects: ``test`` (a tiny run for the test suite), ``quick``
(the README's command, minutes on a laptop CPU) and ``full`` (paper-sized, meant for a GPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.files import atomic_torch_save, to_jsonable, write_json, write_table
from nopelens.validation import check_choice

logger = logging.getLogger(__name__)

#: Bumped whenever a part's output format changes, so that old ``done.json`` markers are ignored.
FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes, seeds and switches of one :func:`reproduce` run.

    Attributes:
        name: Profile name, as passed to ``--profile``.
        description: One line for the dashboard and ``--help``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        threads: torch CPU threads during the run (restored afterwards); ``None`` keeps the
            current setting. One thread is fastest for these small models on a busy machine.
        workers: Worker processes of the sweeps (1: run in this process).
        seeds: Weight seeds of the random-init models (one model per seed).
        data_seed: Seed of the random token batches.
        model: ``build_model`` keyword arguments of the base NoPE model (without ``seed``).
        n_seqs: Random sequences per analysis.
        seq_len: Sequence length of the analyses (the paper used about 30 tokens).
        n_bootstrap: Bootstrap resamples of the confidence intervals.
        parts: Part name -> that part's own settings (see each ``_part_*`` function).
    """

    name: str
    description: str
    device: str
    threads: int | None
    workers: int
    seeds: tuple[int, ...]
    data_seed: int
    model: Mapping[str, Any]
    n_seqs: int
    seq_len: int
    n_bootstrap: int
    parts: Mapping[str, Mapping[str, Any]]


@dataclasses.dataclass
class PartResult:
    """What a part hands back: headline numbers, tidy tables and objects for its figures.

    Attributes:
        numbers: Headline numbers (JSON-able), copied into ``summary.json``.
        tables: Tidy frames, written as CSV and copied into ``summary.json`` as records.
        objects: Picklable result objects (reports) that the part's figures are drawn from.
    """

    numbers: dict[str, Any]
    tables: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    objects: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a part function receives.

    Attributes:
        profile: The run's profile.
        config: This part's configuration (profile-wide settings merged with the part's own).
        part_dir: The folder of this part's files.
        device: The resolved torch device.
        progress: Whether to show progress bars.
        inputs: Results of the parts this one depends on.
    """

    profile: Profile
    config: dict[str, Any]
    part_dir: Path
    device: str
    progress: bool
    inputs: dict[str, PartResult]


@dataclasses.dataclass(frozen=True)
class Part:
    """One step of the pipeline.

    Attributes:
        name: Folder name under ``parts/`` and key in ``summary.json``.
        title: Section title in the dashboard.
        run: Computes the part from a :class:`Context`.
        figures: Draws the part's dashboard figures from its result.
        needs: Names of earlier parts whose results ``run`` reads.
    """

    name: str
    title: str
    run: Callable[[Context], PartResult]
    figures: Callable[[PartResult], list[Any]]
    needs: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------

_CONTROLS = {
    "positional": ["none", "learned", "rotary", "alibi"],
    "attention": ["causal", "bidirectional"],
}
_ABLATIONS = [
    "none",
    "remove_residual:0",
    "remove_residual:all",
    "remove_attn_residual:0",
    "remove_residual:0@8",
    "shuffle_prefix:8",
]

PROFILES: dict[str, Profile] = {
    "test": Profile(
        name="test",
        description="a tiny run of every part for the test suite (well under a minute)",
        device="cpu",
        threads=1,
        workers=1,
        seeds=(0,),
        data_seed=0,
        model={"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 64},
        n_seqs=8,
        seq_len=12,
        n_bootstrap=50,
        parts={
            "random_init": {"sites": ["attn_out", "resid_mid", "resid_post"]},
            "sweep": {
                "grid": [
                    {"d_model": [16, 32], "n_heads": [1, 4]},
                    {"normalization_type": ["LN", "none"]},
                ]
            },
            "controls": {
                "grid": [
                    {"positional": ["none", "learned"], "attention": ["causal", "bidirectional"]}
                ]
            },
            "length": {"grid": [{"seq_len": [8, 16]}]},
            "theory": {"scales": [0.0, 1.0, 8.0]},
            "ablation": {
                "conditions": ["none", "remove_residual:0", "shuffle_prefix:4"],
                "sites": ["resid_mid", "resid_post"],
            },
            "trained": {
                "tasks": {"previous_token": {"n_symbols": 8, "length": 8}},
                "positional": ["none", "learned"],
                "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
                "train": {
                    "steps": 20,
                    "batch_size": 16,
                    "warmup": 2,
                    "eval_every": 20,
                    "eval_batches": 1,
                    "checkpoint_every": 20,
                },
                "seeds": [0],
                "n_seqs": 8,
            },
            "probes": {
                "n_seqs": 12,
                "seeds": [0, 1],
                "features": ["hidden", "cosine", "variance"],
                "probes": ["ridge", "isotonic"],
                "sites": ["resid_post"],
                "equal_dim": 2,
                "drop_first": True,
                "trained": "previous_token",
            },
        },
    ),
    "quick": Profile(
        name="quick",
        description="the README's command: every experiment at small scale, minutes on 2 CPU cores",
        device="cpu",
        threads=1,
        workers=2,
        seeds=(0, 1, 2),
        data_seed=0,
        model={"n_layers": 4, "d_model": 128, "n_heads": 4, "d_vocab": 256},
        n_seqs=32,
        seq_len=32,
        n_bootstrap=200,
        parts={
            "random_init": {"sites": ["attn_out", "resid_mid", "resid_post"]},
            "sweep": {
                "grid": [
                    {"n_layers": [1, 2, 4], "d_model": [64, 128], "n_heads": [1, 4], "seed": [0]},
                    {"n_layers": [2], "normalization_type": ["LN", "LNPre", "RMS", "none"]},
                    {"n_layers": [2], "act_fn": ["gelu", "relu", "silu"]},
                    {"n_layers": [2], "init_mode": ["gpt2", "xavier_normal", "kaiming_normal"]},
                    {"n_layers": [2], "initializer_range": [0.02, 0.05, 0.2, 0.5, 1.0]},
                    {"n_layers": [2], "attn_only": [False, True]},
                ]
            },
            "controls": {"grid": [_CONTROLS]},
            "length": {
                "grid": [
                    {
                        "seq_len": [16, 32, 64, 128, 256, 512],
                        "n_layers": [2],
                        "d_vocab": [1024],
                        "n_seqs": [16],
                    }
                ]
            },
            "theory": {"scales": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]},
            "ablation": {"conditions": _ABLATIONS, "sites": ["resid_mid", "resid_post"]},
            "trained": {
                "tasks": {"previous_token": {}, "index_counting": {}},
                "positional": ["none", "learned"],
                "model": {},
                "train": {"steps": 300, "warmup": 30, "eval_every": 150},
                "seeds": [0, 1],
                "n_seqs": 32,
            },
            "probes": {
                "n_seqs": 64,
                "seeds": [0, 1, 2],
                "features": ["hidden", "cosine", "variance"],
                "probes": ["ridge", "isotonic"],
                "sites": ["resid_post"],
                "equal_dim": 4,
                "drop_first": True,
                "trained": "previous_token",
            },
        },
    ),
    "full": Profile(
        name="full",
        description="paper-sized: the full sweep presets, more seeds and sequences, longer "
        "training, every task (meant for a GPU)",
        device="auto",
        threads=None,
        workers=1,
        seeds=(0, 1, 2, 3, 4),
        data_seed=0,
        model={"n_layers": 4, "d_model": 256, "n_heads": 8, "d_vocab": 2048},
        n_seqs=128,
        seq_len=32,
        n_bootstrap=1000,
        parts={
            "random_init": {"sites": ["attn_out", "resid_mid", "resid_post"]},
            "sweep": {"preset": "paper"},
            "controls": {"preset": "controls"},
            "length": {"preset": "length"},
            "theory": {"scales": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]},
            "ablation": {"conditions": _ABLATIONS, "sites": ["resid_mid", "resid_post"]},
            "trained": {
                "tasks": {
                    "previous_token": {},
                    "reverse": {},
                    "addition": {},
                    "modular": {},
                    "parity": {},
                    "index_counting": {},
                    "stdlib_chars": {},
                },
                "positional": ["none", "learned"],
                "model": {},
                "train": {},
                "seeds": [0, 1, 2],
                "n_seqs": 128,
            },
            "probes": {
                "n_seqs": 256,
                "seeds": [0, 1, 2, 3, 4],
                "features": ["hidden", "cosine", "variance"],
                "probes": ["ridge", "logistic", "isotonic"],
                "sites": ["attn_out", "resid_post"],
                "equal_dim": 4,
                "drop_first": True,
                "trained": "previous_token",
            },
        },
    ),
}
"""The built-in profiles: ``test``, ``quick`` and ``full``."""


# --------------------------------------------------------------------------------------------
# Shared helpers of the parts
# --------------------------------------------------------------------------------------------


def _base_model(ctx: Context, seed: int) -> Any:
    from nopelens.models import build_model

    return build_model(**ctx.profile.model, n_ctx=ctx.profile.seq_len, seed=seed, device=ctx.device)


def _tokens(ctx: Context, n_seqs: int | None = None, *, distinct: bool = False) -> Any:
    """The profile's random token batch (``n_seqs`` sequences, default the profile's)."""
    from nopelens.measure import random_tokens

    prof = ctx.profile
    return random_tokens(
        n_seqs or prof.n_seqs,
        prof.seq_len,
        prof.model["d_vocab"],
        seed=prof.data_seed,
        distinct=distinct,
    )


def _analyze(ctx: Context, model: Any, tokens: Any, sites: Any, **kwargs: Any) -> Any:
    from nopelens.measure import analyze

    return analyze(
        model,
        tokens,
        sites=tuple(sites),
        n_bootstrap=ctx.profile.n_bootstrap,
        seed=ctx.profile.data_seed,
        **kwargs,
    )


def _last_block(scores: pd.DataFrame) -> str:
    blocks = [label for label in scores["layer"].astype(str).unique() if label != "embed"]
    return max(blocks, key=int)


def _score(
    scores: pd.DataFrame, metric: str, *, site: str = "resid_post", layer: str | None = None
) -> dict[str, float]:
    """Mean value, chance and mean CI of one (site, layer, metric) over the rows given."""
    layer = _last_block(scores) if layer is None else layer
    rows = scores[
        (scores["site"] == site)
        & (scores["layer"].astype(str) == layer)
        & (scores["metric"] == metric)
    ]
    return {
        "value": float(rows["value"].mean()),
        "chance": float(rows["chance"].mean()),
        "ci_low": float(rows["ci_low"].mean()),
        "ci_high": float(rows["ci_high"].mean()),
    }


def _ap_nc(scores: pd.DataFrame, **kwargs: Any) -> dict[str, float]:
    """Adjacency probability and neighborhood concordance (with chance) at one site and layer."""
    ap = _score(scores, "adjacency_probability", **kwargs)
    nc = _score(scores, "neighborhood_concordance", **kwargs)
    return {
        "AP": ap["value"],
        "AP_chance": ap["chance"],
        "NC": nc["value"],
        "NC_chance": nc["chance"],
    }


def _sweep_grid(ctx: Context) -> list[dict[str, list[Any]]]:
    """The part's sweep grid, on the profile's data sizes, seeds and device."""
    from nopelens.experiments.sweeps import override_grid, preset

    settings = ctx.config["settings"]
    grid = preset(settings["preset"]) if "preset" in settings else settings["grid"]
    prof = ctx.profile
    base = {
        "d_vocab": [prof.model["d_vocab"]],
        "seq_len": [prof.seq_len],
        "n_seqs": [prof.n_seqs],
        "n_bootstrap": [prof.n_bootstrap],
        "data_seed": [prof.data_seed],
        "seed": list(prof.seeds),
        "sites": [["resid_post"]],
    }
    if "preset" not in settings:
        base.update({k: [v] for k, v in prof.model.items() if k != "d_vocab"})
    out = []
    for sub in override_grid(grid, {}):
        out.append({**base, **sub, "device": [ctx.device]})
    return out


def _run_sweep(ctx: Context) -> pd.DataFrame:
    from nopelens.experiments.sweeps import sweep

    return sweep(
        _sweep_grid(ctx),
        out_dir=ctx.part_dir / "sweep",
        max_workers=ctx.profile.workers,
        progress=ctx.progress,
    )


def _section(text: str, *contents: Any) -> list[Any]:
    return [text, *contents]


# --------------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------------


def _part_random_init(ctx: Context) -> PartResult:
    """Random-init NoPE models (one per seed): scores at every layer and site, matrices, profiles.

    The paper's central observation: the self-similarity of hidden states at nearby positions is
    higher than at distant ones, in randomly initialised causal NoPE models. Settings: ``sites``.
    """
    sites = ctx.config["settings"]["sites"]
    tokens = _tokens(ctx)
    scores, profiles, reports = [], [], {}
    for seed in ctx.profile.seeds:
        report = _analyze(ctx, _base_model(ctx, seed), tokens, sites)
        scores.append(report.scores.assign(seed=seed))
        profiles.append(report.profiles.assign(seed=seed))
        reports[seed] = report
    scores_frame = pd.concat(scores, ignore_index=True)
    numbers: dict[str, Any] = {"model": reports[ctx.profile.seeds[0]].model_label}
    for label in reports[ctx.profile.seeds[0]].layer_labels:
        numbers[f"layer {label}"] = _ap_nc(scores_frame, layer=label)
    blocks = scores_frame[scores_frame["layer"] != "embed"]
    numbers["share_of_block_scores_above_chance"] = float(
        (blocks["ci_low"] > blocks["chance"]).mean()
    )
    return PartResult(
        numbers=numbers,
        tables={"scores": scores_frame, "profiles": pd.concat(profiles, ignore_index=True)},
        objects={"report": reports[ctx.profile.seeds[0]]},
    )


def _figures_random_init(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    report = result.objects["report"]
    scores = result.tables["scores"]
    scores = scores.assign(model=[f"{report.model_label} seed {s}" for s in scores["seed"]])
    return [
        (
            "Random-init NoPE: self-similarity by layer",
            _section(
                "Mean cosine similarity S_ij between the hidden states at positions i and j of a "
                "randomly initialised causal NoPE model (first seed); slider: layer, menu: site. "
                "The neighborhood pattern is the bright band along the diagonal.",
                viz.similarity_heatmap_figure(report),
            ),
        ),
        (
            "Random-init NoPE: scores by layer",
            _section(
                "Adjacency probability and neighborhood concordance per layer, one line per weight "
                "seed, with bootstrap intervals over sequences and chance levels.",
                viz.score_by_layer_figure(scores, sites="resid_post"),
            ),
        ),
        (
            "Random-init NoPE: distance profiles",
            viz.distance_profile_figure(report.profiles, model_label=report.model_label),
        ),
    ]


def _sweep_numbers(frame: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    from nopelens.experiments.sweeps import failure_ranges, summarize

    summary = summarize(frame, layers="last")
    last = frame[frame["layer"] != "embed"].copy()
    last["rank"] = last["layer"].astype(int)
    last = last[last["rank"] == last.groupby("config_id")["rank"].transform("max")]
    above = last.assign(above=last["ci_low"] > last["chance"])
    share = above.groupby("metric")["above"].mean()
    numbers = {
        "n_configs": int(frame["config_id"].nunique()),
        "share_above_chance_last_layer": {k: float(v) for k, v in share.items()},
        "failure_ranges": failure_ranges(summary),
    }
    return numbers, summary


def _part_sweep(ctx: Context) -> PartResult:
    """Random-init hyperparameter sweep: size, depth, normalisation, activation, initialisation.

    Settings: ``grid`` (sub-grids over the base model, data sizes and seeds of the profile) or
    ``preset`` (a :data:`nopelens.experiments.sweeps.PRESETS` name, run as is).

    Besides the results, the ``arms`` table says which sub-grid (a factorial core or a
    one-factor-at-a-time arm) each configuration belongs to, so that figures compare
    configurations of one arm only.
    """
    from nopelens.experiments.sweeps import config_id, expand_grid

    grid = _sweep_grid(ctx)
    frame = _run_sweep(ctx)
    numbers, summary = _sweep_numbers(frame)
    arms = []
    for index, sub in enumerate(grid):
        varied = [k for k, v in sub.items() if len(v) > 1 and k != "seed"]
        arms += [
            {"arm": index, "varied": " x ".join(varied), "config_id": config_id(c)}
            for c in expand_grid(sub)
        ]
    return PartResult(
        numbers=numbers, tables={"results": frame, "summary": summary, "arms": pd.DataFrame(arms)}
    )


def _figures_sweep(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    frame, arms = result.tables["results"], result.tables["arms"]
    figures: list[Any] = [
        "Each configuration is a random-init NoPE model scored on random tokens, at its last "
        "block (resid_post). The factorial core is drawn as heatmaps over two hyperparameters "
        "(mean over the others and the seeds); each one-factor arm as the score against the "
        "factor, every other setting at the base model.",
    ]
    for (_, varied), members in arms.groupby(["arm", "varied"], sort=True):
        rows = frame[frame["config_id"].isin(set(members["config_id"]))]
        params = [p for p in varied.split(" x ") if p]
        if len(params) >= 2:
            for x, y in itertools.combinations(params, 2):
                figures.append(
                    viz.sweep_heatmap_figure(rows, x=x, y=y, metric="neighborhood_concordance")
                )
        elif len(params) == 1:
            param = params[0]
            numeric = pd.api.types.is_numeric_dtype(rows[param]) and rows[param].nunique() > 2
            for metric in ("adjacency_probability", "neighborhood_concordance"):
                if numeric:
                    figures.append(
                        viz.sweep_line_figure(
                            rows, x=param, metric=metric, log_x=param == "initializer_range"
                        )
                    )
                else:
                    figures.append(
                        viz.sweep_heatmap_figure(
                            rows.assign(**{param: rows[param].astype(str)}),
                            x=param,
                            y="seed",
                            metric=metric,
                        )
                    )
    sentences = result.numbers["failure_ranges"]
    text = (
        "Where the pattern is *not* above chance:\n\n" + "\n".join(f"- {s}" for s in sentences)
        if sentences
        else "The pattern is above chance in every configuration group."
    )
    return [
        ("Random-init sweep", figures),
        ("Random-init sweep: verdicts", [text, result.tables["summary"]]),
    ]


def _part_controls(ctx: Context) -> PartResult:
    """NoPE vs learned / rotary / ALiBi positions, causal vs bidirectional (``grid``/``preset``)."""
    frame = _run_sweep(ctx)
    frame = frame.assign(model=frame["positional"] + " / " + frame["attention"])
    numbers = {model: _ap_nc(group) for model, group in frame.groupby("model", sort=False)}
    return PartResult(numbers=numbers, tables={"results": frame})


def _figures_controls(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    frame = result.tables["results"]
    return [
        (
            "Controls: positional encodings and bidirectional attention",
            _section(
                "Scores by layer for NoPE and its controls (mean over seeds per model). A "
                "bidirectional "
                "NoPE model is permutation-equivariant, so its pattern must vanish.",
                viz.score_by_layer_figure(_seed_mean(frame, "model")),
            ),
        )
    ]


def _seed_mean(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    keys = [by, "site", "layer", "metric"]
    return (
        frame.groupby(keys, sort=False)[["value", "chance", "ci_low", "ci_high"]]
        .mean()
        .reset_index()
        .rename(columns={by: "model"})
    )


def _part_length(ctx: Context) -> PartResult:
    """Does the pattern dilute as sequences grow? (``grid``/``preset``; the paper used ~30)."""
    frame = _run_sweep(ctx)
    numbers = {f"seq_len {n}": _ap_nc(group) for n, group in frame.groupby("seq_len")}
    return PartResult(numbers=numbers, tables={"results": frame})


def _figures_length(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    frame = result.tables["results"]
    color = "n_layers" if frame["n_layers"].nunique() > 1 else None
    return [
        (
            "Sequence length",
            _section(
                "Scores at the last block against the sequence length (mean and 95% interval over "
                "seeds); the adjacency-probability chance level 2/n falls with n.",
                *(
                    viz.sweep_line_figure(
                        frame, x="seq_len", color=color, metric=metric, layer="last", log_x=True
                    )
                    for metric in ("adjacency_probability", "neighborhood_concordance")
                ),
            ),
        )
    ]


def _part_theory(ctx: Context) -> PartResult:
    """First-layer theory vs observation, and how the fit degrades as attention sharpens.

    Runs on the base model (first seed) with tokens that do not repeat within a sequence (the
    theory's assumption) when the vocabulary allows. Settings: ``scales`` of the sharpness study.
    """
    from nopelens.theory import attention_sharpness_study, first_layer_theory

    model = _base_model(ctx, ctx.profile.seeds[0])
    distinct = ctx.profile.model["d_vocab"] >= ctx.profile.seq_len
    tokens = _tokens(ctx, distinct=distinct)
    theory = first_layer_theory(model, tokens)
    study = attention_sharpness_study(
        scales=ctx.config["settings"]["scales"], model=model, tokens=tokens
    )
    metrics = theory.metrics
    numbers: dict[str, Any] = {"model": theory.model_label, "sharpness": theory.sharpness}
    for row in metrics.itertuples(index=False):
        numbers[f"{row.site} {row.prediction}"] = {
            "pearson_r": row.pearson_r,
            "rmse": row.rmse,
            "AP_observed": row.ap_observed,
            "AP_predicted": row.ap_predicted,
            "NC_observed": row.nc_observed,
            "NC_predicted": row.nc_predicted,
        }
    attn = study[study["site"] == "attn_out"]
    numbers["sharpness_study_attn_out_pearson_r"] = {
        f"{pred} scale {scale:g}": float(v)
        for (pred, scale), v in attn.groupby(["prediction", "scale"])["pearson_r"].mean().items()
    }
    return PartResult(
        numbers=numbers,
        tables={"metrics": metrics, "variance": theory.variance, "sharpness": study},
        objects={"theory": theory},
    )


def _figures_theory(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    theory = result.objects["theory"]
    study = result.tables["sharpness"]
    return [
        (
            "Layer-0 theory vs observation",
            _section(
                "Observed block-0 self-similarity, the prediction from the model's own attention "
                "patterns with isotropic values (A G A^T, normalised), their difference, and the "
                "uniform-attention closed form sqrt(min(i,j)/max(i,j)).",
                viz.theory_figure(theory, include_closed_form=True),
            ),
        ),
        (
            "Variance by position (Chi et al.)",
            viz.variance_figure(theory.variance, model_label=theory.model_label),
        ),
        (
            "Attention sharpness",
            _section(
                "Pearson r between predicted and observed off-diagonal similarities as block-0 "
                "attention scores are multiplied by a growing factor (0 = exactly uniform).",
                viz.sweep_line_figure(
                    study, x="scale", color="prediction", value="pearson_r", site="attn_out"
                ),
            ),
        ),
        ("Layer-0 fit metrics", result.tables["metrics"]),
    ]


def _part_ablation(ctx: Context) -> PartResult:
    """Ablations through hooks: removing residual connections, shuffling a prefix.

    Settings: ``conditions`` (:func:`nopelens.measure.ablation.ablation_hooks` specs) and ``sites``.
    """
    from nopelens.measure import ablation_hooks

    settings = ctx.config["settings"]
    model = _base_model(ctx, ctx.profile.seeds[0])
    tokens = _tokens(ctx)
    frames = []
    for spec in settings["conditions"]:
        hooks = ablation_hooks(model, spec, seed=ctx.profile.data_seed)
        report = _analyze(ctx, model, tokens, settings["sites"], fwd_hooks=hooks)
        frames.append(report.scores.assign(ablation=spec))
    frame = pd.concat(frames, ignore_index=True)
    numbers = {spec: _ap_nc(group) for spec, group in frame.groupby("ablation", sort=False)}
    return PartResult(numbers=numbers, tables={"scores": frame})


def _figures_ablation(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    frame = result.tables["scores"].rename(columns={"ablation": "model"})
    return [
        (
            "Ablations",
            _section(
                "Scores by layer with residual connections removed (block 0, every block, the "
                "first "
                "8 positions only) or the first tokens shuffled (``remove_residual:0`` means "
                "block 0 "
                "computes resid_mid = attn_out).",
                viz.score_by_layer_figure(frame, sites="resid_post"),
            ),
        )
    ]


def _train_dir(part_dir: Path, task: str, positional: str, seed: int) -> Path:
    return part_dir / "runs" / f"{task}-{positional}-seed{seed}"


def _part_trained(ctx: Context) -> PartResult:
    """Models trained on position tasks: NoPE vs learned positions, trained vs untrained.

    Settings: ``tasks`` (name -> task parameters), ``positional`` types, ``seeds`` (weight seeds),
    ``model`` and ``train`` (overrides of the task's recommended model and
    :class:`~nopelens.training.TrainConfig`; the data seed is the profile's), ``n_seqs`` held-out
    sequences to score. Runs live in ``runs/<task>-<positional>-seed<seed>/`` and resume.
    """
    from nopelens.training import (
        build_task_model,
        default_config,
        get_task,
        load_initial_and_final,
        train,
    )

    settings = ctx.config["settings"]
    data_seed = ctx.profile.data_seed
    frames, histories, finals = [], [], []
    for name, task_kwargs in settings["tasks"].items():
        task = get_task(name, **task_kwargs)
        tokens = task.sample(settings["n_seqs"], split="test", generator=data_seed).tokens
        for positional in settings["positional"]:
            for seed in settings["seeds"]:
                folder = _train_dir(ctx.part_dir, name, positional, seed)
                model = build_task_model(
                    task, positional=positional, seed=seed, device=ctx.device, **settings["model"]
                )
                config = default_config(task, seed=data_seed, **settings["train"])
                result = train(model, task, config, checkpoint_dir=folder, progress=ctx.progress)
                labels = {"task": name, "positional": positional, "seed": seed}
                finals.append({**labels, **result.final, "chance_accuracy": task.chance})
                histories.append(result.history.assign(**labels))
                initial, final = load_initial_and_final(folder, device=ctx.device)
                for state, m in (("untrained", initial), ("trained", final)):
                    report = _analyze(ctx, m, tokens, ("resid_post",))
                    frames.append(report.scores.assign(**labels, state=state))
    scores = pd.concat(frames, ignore_index=True)
    accuracy = pd.DataFrame(finals)
    numbers: dict[str, Any] = {}
    for (name, positional), group in scores.groupby(["task", "positional"], sort=False):
        acc = accuracy[(accuracy["task"] == name) & (accuracy["positional"] == positional)]
        numbers[f"{name} {positional}"] = {
            "test_accuracy": float(acc["test_accuracy"].mean()),
            "test_exact_match": float(acc["test_exact_match"].mean()),
            "chance_accuracy": float(acc["chance_accuracy"].iloc[0]),
            **{
                f"{state} {where}": _ap_nc(group[group["state"] == state], layer=layer)
                for state in ("untrained", "trained")
                for where, layer in (("layer 0", "0"), ("last layer", None))
            },
        }
    return PartResult(
        numbers=numbers,
        tables={
            "scores": scores,
            "accuracy": accuracy,
            "history": pd.concat(histories, ignore_index=True),
        },
    )


def _figures_trained(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    frame = result.tables["scores"]
    out = []
    for task, group in frame.groupby("task", sort=False):
        group = group.assign(model=group["positional"] + " " + group["state"])
        out.append(
            viz.score_by_layer_figure(
                _seed_mean(group, "model"), title=f"Trained vs untrained — {task}"
            )
        )
    return [
        (
            "Trained models",
            _section(
                "Scores by layer on held-out task inputs, before and after training (mean over "
                "weight "
                "seeds), for NoPE and learned absolute positions; then the test accuracy of "
                "each run.",
                *out,
                result.tables["accuracy"],
            ),
        )
    ]


def _part_probes(ctx: Context) -> PartResult:
    """Position probes on hidden, cosine and variance features (random-init and trained).

    Settings: ``n_seqs``, ``seeds`` (probe seeds), ``features``, ``probes``, ``sites``,
    ``equal_dim``, ``drop_first`` (passed to :func:`nopelens.probes.probe.probe_positions`) and
    ``trained``: the task whose first-seed NoPE model from the ``trained`` part is also probed.
    """
    from nopelens.models import load_model
    from nopelens.probes import probe_positions
    from nopelens.training import get_task

    settings = ctx.config["settings"]
    prof = ctx.profile
    options = {
        "sites": tuple(settings["sites"]),
        "features": tuple(settings["features"]),
        "probes": tuple(settings["probes"]),
        "seeds": tuple(settings["seeds"]),
        "equal_dim": settings["equal_dim"],
        "drop_first": settings["drop_first"],
    }
    model = _base_model(ctx, prof.seeds[0])
    tokens = _tokens(ctx, settings["n_seqs"])
    frames, numbers, objects = [], {}, {}
    subjects = [("random-init NoPE", model, tokens)]
    name = settings.get("trained")
    if name:
        trained_settings = ctx.config["inputs"]["trained"]
        task = get_task(name, **trained_settings["tasks"][name])
        folder = _train_dir(
            ctx.part_dir.parent / "trained", name, "none", trained_settings["seeds"][0]
        )
        trained = load_model(folder / "final.pt", device=ctx.device)
        task_tokens = task.sample(settings["n_seqs"], split="test", generator=prof.data_seed).tokens
        subjects.append((f"trained NoPE ({name})", trained, task_tokens))
    for label, m, toks in subjects:
        report = probe_positions(m, toks, **options)
        frames.append(report.results.assign(subject=label))
        objects[label] = report
        numbers[label] = _probe_numbers(report)
    return PartResult(
        numbers=numbers, tables={"results": pd.concat(frames, ignore_index=True)}, objects=objects
    )


def _probe_numbers(report: Any) -> dict[str, Any]:
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


def _figures_probes(result: PartResult) -> list[Any]:
    from nopelens.viz import figures as viz

    out: list[Any] = []
    for label, report in result.objects.items():
        out.append(
            viz.probe_figure(report.results, metric="spearman", title=f"Position probes — {label}")
        )
        if (report.results["capacity"] == "matched").any():
            out.append(
                viz.probe_figure(
                    report.results,
                    metric="spearman",
                    capacity="matched",
                    title=f"Position probes, equal dimension — {label}",
                )
            )
    return [
        (
            "Position probes: cosine vs variance",
            _section(
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


PARTS: tuple[Part, ...] = (
    Part("random_init", "Random-init NoPE models", _part_random_init, _figures_random_init),
    Part("sweep", "Random-init hyperparameter sweep", _part_sweep, _figures_sweep),
    Part("controls", "Controls", _part_controls, _figures_controls),
    Part("theory", "First-layer theory", _part_theory, _figures_theory),
    Part("length", "Sequence-length sweep", _part_length, _figures_length),
    Part("ablation", "Hook ablations", _part_ablation, _figures_ablation),
    Part("trained", "Trained models", _part_trained, _figures_trained),
    Part("probes", "Position probes", _part_probes, _figures_probes, needs=("trained",)),
)
"""The pipeline, in order."""


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


def _resolve_device(device: Any) -> str:
    """``"auto"`` -> CUDA when available, else the CPU; any other value must be a usable device."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind is None or (kind == "cuda" and not torch.cuda.is_available()):
        raise ValueError(
            "The 'device' parameter of reproduce must be 'auto', 'cpu' or an available torch "
            f"device such as 'cuda'. Got {device!r} instead"
            + (" (CUDA is not available here)." if kind == "cuda" else ".")
        )
    return str(device)


def part_config(profile: Profile, part: Part, device: str) -> dict[str, Any]:
    """The JSON-able configuration of ``part`` under ``profile``: what its marker must match.

    It holds the profile-wide settings (base model, seeds, data sizes, device), the part's own
    settings, and the configurations of the parts it reads, so that changing any of them reruns
    the part.
    """
    config = {
        "format_version": FORMAT_VERSION,
        "part": part.name,
        "device": device,
        "seeds": list(profile.seeds),
        "data_seed": profile.data_seed,
        "model": dict(profile.model),
        "n_seqs": profile.n_seqs,
        "seq_len": profile.seq_len,
        "n_bootstrap": profile.n_bootstrap,
        "settings": dict(profile.parts.get(part.name, {})),
    }
    by_name = {p.name: p for p in PARTS}
    config["inputs"] = {
        name: part_config(profile, by_name[name], device)["settings"] for name in part.needs
    }
    return to_jsonable(config)


def _load_done(part_dir: Path, config: dict[str, Any]) -> tuple[PartResult, dict[str, Any]] | None:
    """The stored result of a finished part whose marker matches ``config``, else None."""
    import json

    import torch

    marker = part_dir / "done.json"
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
        if record.get("config") != config:
            logger.info("%s: configuration changed, rerunning", part_dir.name)
            return None
        result = torch.load(part_dir / "result.pt", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a damaged or outdated part is simply recomputed
        logger.warning("%s: cannot reuse the stored result (%s), rerunning", part_dir.name, err)
        return None
    if not isinstance(result, PartResult):
        return None
    return result, record


def _run_part(part: Part, ctx: Context) -> tuple[PartResult, dict[str, Any]]:
    """Compute ``part``, write its tables, result and marker (the marker last)."""
    start = time.perf_counter()
    ctx.part_dir.mkdir(parents=True, exist_ok=True)
    result = part.run(ctx)
    files = []
    for name, frame in result.tables.items():
        path = write_table(frame, ctx.part_dir / f"{name}.csv")
        files.append(path.name)
    atomic_torch_save(result, ctx.part_dir / "result.pt")
    record = {
        "config": ctx.config,
        "numbers": result.numbers,
        "files": sorted(files),
        "seconds": round(time.perf_counter() - start, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(ctx.part_dir / "done.json", record)
    return result, record


def _profile_of(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    check_choice(profile, "profile", tuple(PROFILES), "reproduce")
    return PROFILES[profile]


def reproduce(
    out_dir: str | Path,
    *,
    profile: str | Profile = "quick",
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Run every experiment of the paper and write ``summary.json`` and ``dashboard.html``.

    Finished parts found in ``out_dir`` with the same configuration are reused, not recomputed.

    Args:
        out_dir: Output folder (created if missing).
        profile: ``"test"``, ``"quick"`` or ``"full"`` (see :data:`PROFILES`), or a
            :class:`Profile`.
        progress: Show tqdm progress bars on stderr.
        device: Override the profile's device (``"cpu"``, ``"cuda"``, ``"auto"``).

    Returns:
        The summary written to ``out_dir/summary.json``: for each part its configuration and seeds,
        headline numbers, tables (as records), files, run time and whether it was reused.

    Raises:
        ValueError: If ``profile`` is not a known profile name or ``device`` is not usable.

    Examples:
        >>> sorted(PROFILES), [part.name for part in PARTS][:3]
        (['full', 'quick', 'test'], ['random_init', 'sweep', 'controls'])
        >>> try:
        ...     reproduce("unused", profile="fast")
        ... except ValueError as err:
        ...     print(str(err).split(". ")[0])
        The 'profile' parameter of reproduce must be one of 'test', 'quick', 'full'
    """
    prof = _profile_of(profile)
    resolved = _resolve_device(device if device is not None else prof.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _torch_threads(prof.threads):
        results, records = _run_parts(prof, resolved, out, progress)
    summary = _summary(prof, resolved, results, records, out)
    write_json(out / "summary.json", summary)
    _write_dashboard(out / "dashboard.html", prof, results, summary)
    return summary


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's CPU thread count for the duration of the run, then restore it."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_parts(
    prof: Profile, device: str, out: Path, progress: bool
) -> tuple[dict[str, PartResult], dict[str, dict[str, Any]]]:
    """Run or reuse every part, in order."""
    from tqdm.auto import tqdm

    results: dict[str, PartResult] = {}
    records: dict[str, dict[str, Any]] = {}
    bar = tqdm(PARTS, desc=f"reproduce[{prof.name}]", unit="part", disable=not progress)
    for part in bar:
        bar.set_postfix_str(part.name)
        part_dir = out / "parts" / part.name
        config = part_config(prof, part, device)
        done = _load_done(part_dir, config)
        if done is not None:
            result, record = done
            record = {**record, "reused": True}
            logger.info("%s: reused", part.name)
        else:
            ctx = Context(
                profile=prof,
                config=config,
                part_dir=part_dir,
                device=device,
                progress=progress,
                inputs={name: results[name] for name in part.needs},
            )
            result, record = _run_part(part, ctx)
            record = {**record, "reused": False}
            logger.info("%s: done in %.1f s", part.name, record["seconds"])
        results[part.name] = result
        records[part.name] = record
    return results, records


def _summary(
    profile: Profile,
    device: str,
    results: dict[str, PartResult],
    records: dict[str, dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    from importlib.metadata import version

    import torch

    from nopelens import __version__

    parts = {}
    for part in PARTS:
        result, record = results[part.name], records[part.name]
        parts[part.name] = {
            "title": part.title,
            "config": record["config"],
            "numbers": result.numbers,
            "tables": {k: v.to_dict(orient="records") for k, v in result.tables.items()},
            "files": [f"parts/{part.name}/{f}" for f in record["files"]],
            "seconds": record["seconds"],
            "reused": record["reused"],
        }
    return {
        "nopelens_version": __version__,
        "torch_version": torch.__version__,
        "transformer_lens_version": version("transformer-lens"),
        "profile": profile.name,
        "profile_config": dataclasses.asdict(profile),
        "device": device,
        "headline": _headline(results),
        "part_order": [part.name for part in PARTS],
        "parts": parts,
        "files": {"summary": "summary.json", "dashboard": "dashboard.html"},
        "out_dir": str(out.resolve()),
    }


def _headline(results: dict[str, PartResult]) -> dict[str, Any]:
    """The headline numbers of every part, keyed by part name (what the dashboard leads with)."""
    return {name: result.numbers for name, result in results.items()}


def _description(profile: Profile, summary: dict[str, Any]) -> str:
    seconds = sum(p["seconds"] for p in summary["parts"].values())
    reused = [name for name, p in summary["parts"].items() if p["reused"]]
    lines = [
        f"Profile **{profile.name}** ({profile.description}) on `{summary['device']}`; "
        f"model seeds {list(profile.seeds)}, data seed {profile.data_seed}; "
        f"{seconds:.0f} s of computation.",
        "",
        "Every number below, with the configuration and seeds that produced it, is in "
        "`summary.json`; each part's tables are CSV files under `parts/<part>/`. Run "
        f"`nopelens reproduce --out DIR --profile {profile.name}` to regenerate this page.",
    ]
    if reused:
        lines += ["", f"Reused finished parts: {', '.join(reused)}."]
    return "\n".join(lines)


def load_results(out_dir: str | Path) -> dict[str, PartResult]:
    """The finished parts of a :func:`reproduce` run in ``out_dir``, in pipeline order.

    Parts without a ``done.json`` marker (not run yet, or interrupted) are left out.

    Args:
        out_dir: The folder given to :func:`reproduce`.

    Returns:
        Part name -> :class:`PartResult` (numbers, tables and the objects its figures use).

    Examples:
        >>> import tempfile
        >>> load_results(tempfile.mkdtemp())
        {}
    """
    import torch

    results = {}
    for part in PARTS:
        part_dir = Path(out_dir) / "parts" / part.name
        if (part_dir / "done.json").is_file():
            results[part.name] = torch.load(part_dir / "result.pt", weights_only=False)
    return results


def part_sections(results: Mapping[str, PartResult]) -> list[tuple[str, Any]]:
    """The dashboard sections ``(heading, content)`` of the given parts, in pipeline order.

    ``content`` is a plotly figure, a DataFrame, a markdown string or a list of these (the
    section format of :func:`nopelens.viz.dashboard.write_dashboard`).

    Args:
        results: Part name -> result, e.g. from :func:`load_results`.

    Returns:
        The sections, figures built by :mod:`nopelens.viz.figures`.
    """
    sections: list[tuple[str, Any]] = []
    for part in PARTS:
        if part.name in results:
            sections.extend(part.figures(results[part.name]))
    return sections


def _write_dashboard(
    path: Path, profile: Profile, results: dict[str, PartResult], summary: dict[str, Any]
) -> Path:
    from nopelens.viz import write_dashboard

    return write_dashboard(
        path,
        part_sections(results),
        title=f"nopelens reproduce — {profile.name}",
        summary=summary["headline"],
        description=_description(profile, summary),
    )
