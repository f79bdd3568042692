"""``nopelens theory``: the first-layer theory next to the model, and the sharpness study."""

from __future__ import annotations

import argparse
from typing import Any

from nopelens.cli.common import (
    add_input_arguments,
    add_load_arguments,
    add_model_arguments,
    add_output_argument,
    announce_loaded,
    announce_loading,
    log_settings,
    model_from_args,
    quiet,
    status,
    tokens_from_args,
)
from nopelens.cli.vocabulary import add_quiet_argument, add_token_arguments

HELP = (
    "Compare block 0 of a model with the first-layer theory (pattern-based prediction and "
    "uniform-attention closed forms); --sharpness-study sweeps the attention sharpness."
)

_METRIC_COLUMNS = [
    "site",
    "prediction",
    "pearson_r",
    "rmse",
    "max_error",
    "ap_observed",
    "ap_predicted",
    "nc_observed",
    "nc_predicted",
]


def _scales(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--scales takes comma-separated numbers such as 0,1,4,16. Got {text!r}."
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("--scales needs at least one number.")
    return values


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``theory`` arguments."""
    add_model_arguments(parser)
    add_load_arguments(parser)
    add_input_arguments(parser)
    add_token_arguments(parser)
    parser.add_argument(
        "--attention-scale",
        type=float,
        default=1.0,
        metavar="S",
        help="multiply block 0's attention scores by S (W_Q, b_Q scaled): 0 gives "
        "uniform attention, large values sharpen it (default 1: unchanged)",
    )
    parser.add_argument(
        "--sharpness-study",
        action="store_true",
        help="sweep the attention scale over --scales instead of one comparison",
    )
    parser.add_argument(
        "--scales",
        type=_scales,
        default=None,
        metavar="S1,S2,...",
        help="scales of the sharpness study (default 0,0.5,1,2,4,8,16)",
    )
    add_output_argument(parser)
    parser.add_argument(
        "--matrices",
        metavar="FILE",
        help="also write the observed/predicted/closed-form matrices in long form (.csv or .json)",
    )
    parser.add_argument(
        "--variance",
        metavar="FILE",
        help="also write the variance-by-position table (.csv or .json)",
    )
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Build or load the model, run the theory (or the study), print and write the tables."""
    if args.sharpness_study and (args.matrices or args.variance):
        raise ValueError("--matrices and --variance are not written by --sharpness-study.")
    if args.scales is not None and not args.sharpness_study:
        raise ValueError("--scales is only used with --sharpness-study.")
    for flag, path in (
        ("--out", args.out),
        ("--matrices", args.matrices),
        ("--variance", args.variance),
    ):
        if path and not str(path).endswith((".csv", ".json")):
            raise ValueError(f"{flag} must be a path ending in '.csv' or '.json'. Got {path!r}.")
    start = announce_loading(args)
    import pandas as pd

    from nopelens.files import write_table
    from nopelens.progress import log_progress
    from nopelens.theory import (
        DEFAULT_SCALES,
        attention_sharpness_study,
        first_layer_theory,
        query_scale_hooks,
    )

    model = model_from_args(args)
    inputs = tokens_from_args(args, model)
    announce_loaded(args, model, inputs, start)
    tokens = inputs.tokens
    scales = list(args.scales or DEFAULT_SCALES)
    log_settings(
        args,
        sharpness_study=args.sharpness_study,
        scales=scales if args.sharpness_study else None,
        attention_scale=args.attention_scale,
        batch_size=args.batch_size,
    )
    written: list[str] = []
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4f}".format
    ):
        if args.sharpness_study:
            with log_progress(
                "nopelens.theory.sharpness",
                desc="sharpness study",
                unit="scale",
                total=len(scales),
                quiet=quiet(args),
            ):
                table = attention_sharpness_study(
                    scales=scales, model=model, tokens=tokens, batch_size=args.batch_size
                )
            print(f"attention-sharpness study, block 0 of {_label(model)}, {inputs.description}")
            shown = [
                "scale",
                "relative_entropy",
                "max_attention",
                *_METRIC_COLUMNS[:5],
                "nc_observed",
                "nc_predicted",
            ]
            print(table[shown].to_string(index=False))
        else:
            status(args, "comparing block 0 with the first-layer theory ...")
            theory = first_layer_theory(
                model,
                tokens,
                batch_size=args.batch_size,
                fwd_hooks=query_scale_hooks(args.attention_scale)
                if args.attention_scale != 1.0
                else (),
            )
            table = theory.metrics
            stats = theory.sharpness
            print(
                f"first-layer theory, {theory.model_label}, {theory.n_sequences} sequences x "
                f"{theory.n_positions} tokens, attention scale {args.attention_scale:g}"
            )
            print(
                f"attention: relative entropy {stats['relative_entropy']:.3f} (1 = uniform), "
                f"mean max weight {stats['max_attention']:.3f} "
                f"(uniform {stats['uniform_max_attention']:.3f})"
            )
            print(table.to_string(index=False))
            if args.matrices:
                written.append(str(write_table(theory.to_frame(), args.matrices)))
            if args.variance:
                written.append(str(write_table(theory.variance, args.variance)))
    if args.out:
        written.insert(0, str(write_table(table, args.out)))
    for path in written:
        print(f"wrote {path}")
    return 0


def _label(model: Any) -> str:
    from nopelens.models import describe_model

    return describe_model(model)
