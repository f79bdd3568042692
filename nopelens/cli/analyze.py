"""``nopelens analyze``: the neighborhood scores of every layer of a model, as a table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nopelens.cli.common import (
    add_input_arguments,
    add_load_arguments,
    add_model_arguments,
    add_output_argument,
    announce_loaded,
    announce_loading,
    layer_progress,
    log_settings,
    model_from_args,
    status,
    tokens_from_args,
)
from nopelens.cli.vocabulary import (
    add_bootstrap_argument,
    add_position_arguments,
    add_quiet_argument,
    add_site_arguments,
    add_token_arguments,
    flatten,
)
from nopelens.validation import InvalidParameterError

HELP = (
    "Measure the neighborhood pattern (adjacency probability AP and neighborhood concordance NC, "
    "with chance levels and bootstrap CIs) at every layer of a model on random tokens; --theory "
    "sets each layer beside the attention-pattern theory."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the model flags and the analysis flags."""
    add_model_arguments(parser)
    add_load_arguments(parser)
    add_input_arguments(parser)
    add_token_arguments(parser)
    add_site_arguments(parser)
    add_position_arguments(parser)
    add_bootstrap_argument(parser)
    group = parser.add_argument_group("theory")
    group.add_argument(
        "--theory",
        action="store_true",
        help=(
            "also set every layer beside the attention-pattern theory (first-layer theory held "
            "against each layer, one-step and propagated predictions, Kim et al.'s closed form) "
            "and print the fit table; with --out, the table is written beside it as *_theory.*"
        ),
    )
    add_output_argument(parser)
    add_quiet_argument(parser)


def _check_out(out: str | None) -> None:
    if out is not None and Path(out).suffix not in (".csv", ".json"):
        raise InvalidParameterError(
            f"The '--out' option must be a path ending in '.csv' or '.json'. Got {out!r} instead."
        )


def format_table(scores: Any) -> str:
    """One line per (site, layer): AP and NC with their bootstrap CI and chance level."""
    header = (
        f"{'site':<14} {'layer':<6} {'AP':>6} {'95% CI':>15} {'chance':>7}   "
        f"{'NC':>6} {'95% CI':>15} {'chance':>7}"
    )
    lines = [header, "-" * len(header)]
    wide = scores.set_index(["site", "layer", "metric"])
    seen: list[tuple[str, str]] = []
    for site, layer in zip(scores["site"], scores["layer"], strict=True):
        if (site, layer) not in seen:
            seen.append((site, layer))
    for site, layer in seen:
        cells = []
        for metric in ("adjacency_probability", "neighborhood_concordance"):
            row = wide.loc[(site, layer, metric)]
            ci = f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            cells.append(f"{row['value']:>6.3f} {ci:>15} {row['chance']:>7.3f}")
        lines.append(f"{site:<14} {layer:<6} {cells[0]}   {cells[1]}")
    return "\n".join(lines)


_PREDICTION_LABELS = {
    "first_layer": "first layer",
    "first_layer_closed_form": "first-layer closed form",
    "one_step": "one-step",
    "propagated": "propagated",
    "kim": "Kim et al.",
}


def format_theory_table(fit: Any) -> str:
    """One line per (site, layer, prediction): r and RMSE with CIs, max error, AP and NC.

    Examples:
        >>> import pandas as pd
        >>> row = {"site": "attn_out", "layer": 0, "prediction": "propagated", "pearson_r": 0.99,
        ...        "pearson_r_ci_low": 0.98, "pearson_r_ci_high": 1.0, "rmse": 0.02,
        ...        "rmse_ci_low": 0.01, "rmse_ci_high": 0.03, "max_error": 0.05,
        ...        "ap_observed": 0.5, "ap_predicted": 0.6, "nc_observed": 0.8, "nc_predicted": 0.9}
        >>> print(format_theory_table(pd.DataFrame([row])).splitlines()[2])
        attn_out   0      propagated                0.990 [0.980, 1.000]  0.020 [0.010, 0.030] ...
    """
    header = (
        f"{'site':<10} {'layer':<6} {'prediction':<25} {'r':>5} {'95% CI':>14}  {'RMSE':>5} "
        f"{'95% CI':>14}  {'max err':>7}  {'AP obs/pred':>11}  {'NC obs/pred':>11}"
    )
    lines = [header, "-" * len(header)]
    for row in fit.to_dict("records"):
        label = _PREDICTION_LABELS.get(row["prediction"], row["prediction"])
        r_ci = f"[{row['pearson_r_ci_low']:.3f}, {row['pearson_r_ci_high']:.3f}]"
        e_ci = f"[{row['rmse_ci_low']:.3f}, {row['rmse_ci_high']:.3f}]"
        lines.append(
            f"{row['site']:<10} {row['layer']!s:<6} {label:<25} {row['pearson_r']:>5.3f} "
            f"{r_ci:>14}  {row['rmse']:>5.3f} {e_ci:>14}  {row['max_error']:>7.3f}  "
            f"{row['ap_observed']:>5.2f}/{row['ap_predicted']:<5.2f}  "
            f"{row['nc_observed']:>5.2f}/{row['nc_predicted']:<5.2f}"
        )
    return "\n".join(lines)


def _print_theory(model: Any, tokens: Any, args: argparse.Namespace, layers: Any) -> None:
    """Run :func:`nopelens.analyzer.layer_theory` and print (and write) its fit table."""
    from nopelens.analyzer import layer_theory
    from nopelens.files import write_table

    status(args, "setting every layer beside the attention-pattern theory ...")
    theory = layer_theory(model, tokens, layers=layers, n_bootstrap=args.n_bootstrap)
    print()
    print(
        "Theory vs observation (off-diagonal entries of the batch-mean similarity; r and RMSE "
        "with basic-bootstrap 95% CIs over sequences, which target the noise-free mean):"
    )
    print(format_theory_table(theory.fit))
    print(
        "first layer = block 0's prediction held against each layer; one-step = the layer's own "
        "patterns and observed input Gram; propagated = the embedding Gram carried through every "
        "layer's patterns; Kim et al. = parameter-free L2-normalised layer (closed form)."
    )
    if args.out:
        path = Path(args.out)
        written = write_table(theory.fit, path.with_name(f"{path.stem}_theory{path.suffix}"))
        print(f"wrote {written}")


def run(args: argparse.Namespace) -> int:
    """Build or load the model, analyse its inputs, print the table, write ``--out``."""
    _check_out(args.out)
    sites = flatten(args.sites) or ["resid_post"]
    layers = tuple(args.layers) if args.layers is not None else None
    start = announce_loading(args)
    from nopelens.analyzer import analyze
    from nopelens.files import write_table

    model = model_from_args(args)
    inputs = tokens_from_args(args, model)
    announce_loaded(args, model, inputs, start)
    tokens = inputs.tokens
    log_settings(
        args,
        sites=sites,
        layers=layers or "all",
        centered=args.centered,
        exclude_first=args.exclude_first,
        n_bootstrap=args.n_bootstrap,
        batch_size=args.batch_size,
    )
    with layer_progress(args, model, len(tokens), layers, desc="analyze") as hooks:
        report = analyze(
            model,
            tokens,
            sites=sites,
            layers=layers,
            centered=args.centered,
            exclude_first=args.exclude_first,
            batch_size=args.batch_size,
            n_bootstrap=args.n_bootstrap,
            fwd_hooks=hooks,
        )
    options = [
        o
        for o, on in (("centered", args.centered), ("first position excluded", args.exclude_first))
        if on
    ]
    print(
        f"{report.model_label} · {inputs.description}"
        + (f" · {', '.join(options)}" if options else "")
        + (
            f" · 95% {report.scores['ci_method'].iloc[0]} bootstrap CI over sequences "
            f"({args.n_bootstrap} resamples)"
            if args.n_bootstrap
            else ""
        )
    )
    print(format_table(report.scores))
    print(
        "chance = the score's expectation when each sequence's positions are shuffled "
        "(AP 2/n, NC 0.5); 1.0 = perfect neighborhood pattern."
    )
    if args.out:
        path = write_table(report.scores, args.out)
        print(f"wrote {path}")
    if args.theory:
        _print_theory(model, tokens, args, layers)
    return 0
