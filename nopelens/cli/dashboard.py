"""``nopelens dashboard``: one model's analysis as a self-contained offline HTML page."""

from __future__ import annotations

import argparse

from nopelens.cli.common import (
    add_input_arguments,
    add_load_arguments,
    add_model_arguments,
    announce_loaded,
    announce_loading,
    layer_progress,
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

HELP = (
    "analyze one model (a checkpoint or a random-init model) and write a self-contained HTML "
    "dashboard: similarity heatmaps per layer, scores by layer, distance profiles and the "
    "layer-0 theory"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the output, model, input and analysis arguments."""
    parser.add_argument("--out", metavar="FILE.html", required=True, help="the HTML file to write")
    add_model_arguments(parser, n_ctx=64)
    add_load_arguments(parser)
    add_input_arguments(parser)
    add_token_arguments(parser)
    add_site_arguments(parser, default=("resid_post", "attn_out"))
    add_position_arguments(parser)
    add_bootstrap_argument(parser)
    parser.add_argument("--no-theory", action="store_true", help="skip the layer-0 theory")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument(
        "--similarity-range",
        choices=("fixed", "auto"),
        default="fixed",
        help="colour scale the similarity heatmaps start on: fixed [-1, 1] or the data's range "
        "(buttons in each figure switch)",
    )
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Build or load the model, analyse it, write the dashboard and print its path."""
    import logging

    start = announce_loading(args)
    from nopelens import viz
    from nopelens.analyzer import analyze

    model = model_from_args(args)
    inputs = tokens_from_args(args, model)
    announce_loaded(args, model, inputs, start)
    tokens = inputs.tokens
    with layer_progress(args, model, len(tokens), args.layers, desc="analyze") as hooks:
        report = analyze(
            model,
            tokens,
            sites=tuple(flatten(args.sites) or ()),
            layers=args.layers,
            batch_size=args.batch_size,
            centered=args.centered,
            exclude_first=args.exclude_first,
            n_bootstrap=args.n_bootstrap,
            fwd_hooks=hooks,
        )
    theory = None
    if not args.no_theory:
        from nopelens.theory import first_layer_theory

        status(args, "comparing block 0 with the first-layer theory ...")

        try:
            theory = first_layer_theory(model, tokens)
        except ValueError as err:  # e.g. a model the theory does not cover
            logging.getLogger(__name__).warning("layer-0 theory skipped: %s", err)
    label = getattr(report, "model_label", None) or "model"
    summary = viz.report_summary(report, theory)
    summary["data"] = {
        **inputs.settings,
        "kind": inputs.kind,
        "n_seqs": int(tokens.shape[0]),
        "seq_len": int(tokens.shape[1]),
        "weights_seed": None if args.model else args.seed,
    }
    description = (
        f"Model **{label}**"
        + (f" loaded from `{args.model}`" if args.model else f" at random init (seed {args.seed})")
        + f"; {inputs.description}. Written by `nopelens dashboard`."
    )
    status(args, f"drawing the figures and writing {args.out} ...")
    path = viz.write_dashboard(
        args.out,
        viz.report_sections(report, theory, similarity_range=args.similarity_range),
        title=args.title or f"nopelens dashboard — {label}",
        summary=summary,
        description=description,
    )
    print(f"dashboard: {path}")
    return 0
