"""``nopelens dashboard``: one model's analysis as a self-contained offline HTML page."""

from __future__ import annotations

import argparse

from nopelens.cli.common import add_model_arguments
from nopelens.spec import HIDDEN_SITES

HELP = (
    "analyze one model (a checkpoint or a random-init model) and write a self-contained HTML "
    "dashboard: similarity heatmaps per layer, scores by layer, distance profiles and the "
    "layer-0 theory"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``dashboard`` arguments."""
    parser.add_argument("--out", metavar="FILE.html", required=True, help="the HTML file to write")
    add_model_arguments(parser, n_ctx=64)
    data = parser.add_argument_group("data and analysis")
    data.add_argument("--n-seqs", type=int, default=32, help="random sequences to average")
    data.add_argument("--seq-len", type=int, default=32, help="tokens per sequence (<= n_ctx)")
    data.add_argument("--data-seed", type=int, default=0, help="seed of the random tokens")
    data.add_argument(
        "--distinct",
        action="store_true",
        help="no repeated token within a sequence (the theory's assumption)",
    )
    data.add_argument(
        "--sites",
        nargs="+",
        default=["resid_post", "attn_out"],
        metavar="SITE",
        help=f"hook sites to analyse (from {', '.join(HIDDEN_SITES)})",
    )
    data.add_argument(
        "--centered", action="store_true", help="subtract each sequence's mean hidden state first"
    )
    data.add_argument(
        "--exclude-first", action="store_true", help="leave position 0 (the sink) out of scores"
    )
    data.add_argument(
        "--n-bootstrap", type=int, default=1000, help="bootstrap resamples of the intervals"
    )
    data.add_argument("--no-theory", action="store_true", help="skip the layer-0 theory")
    data.add_argument("--title", default=None, help="page title")


def run(args: argparse.Namespace) -> int:
    """Build or load the model, analyse it, write the dashboard and print its path."""
    import logging

    from nopelens import viz
    from nopelens.analyzer import analyze
    from nopelens.cli.common import model_from_args
    from nopelens.measure import random_tokens

    model = model_from_args(args)
    tokens = random_tokens(
        args.n_seqs,
        args.seq_len,
        model.cfg.d_vocab,
        seed=args.data_seed,
        distinct=args.distinct,
    ).to(model.cfg.device)
    report = analyze(
        model,
        tokens,
        sites=tuple(args.sites),
        centered=args.centered,
        exclude_first=args.exclude_first,
        n_bootstrap=args.n_bootstrap,
    )
    theory = None
    if not args.no_theory:
        from nopelens.theory import first_layer_theory

        try:
            theory = first_layer_theory(model, tokens)
        except ValueError as err:  # e.g. a model the theory does not cover
            logging.getLogger(__name__).warning("layer-0 theory skipped: %s", err)
    label = getattr(report, "model_label", None) or "model"
    summary = viz.report_summary(report, theory)
    summary["data"] = {
        "n_seqs": args.n_seqs,
        "seq_len": args.seq_len,
        "data_seed": args.data_seed,
        "distinct": args.distinct,
        "weights_seed": None if args.model else args.seed,
    }
    description = (
        f"Model **{label}**"
        + (f" loaded from `{args.model}`" if args.model else f" at random init (seed {args.seed})")
        + f"; {args.n_seqs} random sequences of {args.seq_len} tokens (data seed "
        f"{args.data_seed}). Written by `nopelens dashboard`."
    )
    path = viz.write_dashboard(
        args.out,
        viz.report_sections(report, theory),
        title=args.title or f"nopelens dashboard — {label}",
        summary=summary,
        description=description,
    )
    print(f"dashboard: {path}")
    return 0
