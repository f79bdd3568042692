"""Arguments shared by several subcommands: the model to analyse, its inputs, output files.

Three groups of flags and the helpers that read them:

* :func:`add_model_arguments` (every model command, ``train`` too): ``--model SOURCE`` or the
  ``build_model`` flags of a random-init model, ``--device`` and ``--nope-layers``.
* :func:`add_load_arguments` (analysis commands): ``--dtype``, ``--allow-download``,
  ``--strip-positional``. :func:`model_from_args` reads both groups and returns the model.
* :func:`add_input_arguments` (analysis commands): ``--text FILE|FOLDER|stdlib``, ``--no-bos``,
  ``--random-tokens``. :func:`tokens_from_args` returns the token batch to analyse.

``--model SOURCE`` is, in this order: a nopelens checkpoint file (``save_model``), a
``nopelens train`` folder (its ``final.pt``), a local Hugging Face folder (``config.json``), or
a TransformerLens model name (``gpt2``, ``pythia-70m``, ...; read from the local Hugging Face
cache, downloaded only with ``--allow-download``).

Inputs, by default, are what the model was made for: a ``nopelens train`` model is analysed on
test examples of its own task, a model with a tokenizer on real text (the Python standard
library's source, bundled with Python), and a random-init nopelens model on uniformly random
tokens. ``--text`` and ``--random-tokens`` override the default.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nopelens.experiments.sources import (
    STDLIB,
    TEXT_SUFFIXES,
    Inputs,
    load_source,
    model_inputs,
    source_task,
    tokenizer_for,
)
from nopelens.spec import ACTIVATIONS, ATTENTION, DTYPES, INIT_MODES, NORMALIZATIONS, POSITIONAL
from nopelens.validation import InvalidParameterError

# Loading a source and choosing its inputs live in nopelens.experiments.sources, shared with
# sweeps (`model` and `text` settings); re-exported here for the subcommands.
__all__ = ["STDLIB", "TEXT_SUFFIXES", "Inputs", "load_source", "tokens_from_args"]


def _layer_list(text: str) -> tuple[int, ...]:
    """``"3,7"`` -> ``(3, 7)`` (argparse type of ``--nope-layers``)."""
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--nope-layers takes comma-separated block indices such as 3,7. Got {text!r}."
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("--nope-layers needs at least one block index.")
    return values


def add_model_arguments(parser: argparse.ArgumentParser, *, n_ctx: int = 64) -> None:
    """Add ``--model SOURCE`` or the ``build_model`` flags of a random-init model."""
    group = parser.add_argument_group("model (a saved or pretrained model, or a random-init one)")
    group.add_argument(
        "--model",
        metavar="SOURCE",
        help="a nopelens checkpoint (.pt), a `nopelens train` folder, a local Hugging Face "
        "folder (with config.json) or a TransformerLens model name such as gpt2 (read from the "
        "local Hugging Face cache)",
    )
    group.add_argument("--n-layers", type=int, default=2)
    group.add_argument("--d-model", type=int, default=64)
    group.add_argument("--n-heads", type=int, default=4)
    group.add_argument("--d-mlp", type=int, default=None, help="default 4 * d_model")
    group.add_argument("--d-vocab", type=int, default=256)
    group.add_argument("--n-ctx", type=int, default=n_ctx)
    group.add_argument("--positional", choices=POSITIONAL, default="none")
    group.add_argument(
        "--nope-layers",
        type=_layer_list,
        default=None,
        metavar="L1,L2",
        help="blocks without positional encoding: with --positional rotary a SmolLM3 / Llama "
        "4-style hybrid stack; with a rotary --model, those blocks are stripped of RoPE",
    )
    group.add_argument("--attention", choices=ATTENTION, default="causal")
    group.add_argument("--normalization", choices=NORMALIZATIONS, default="LN")
    group.add_argument("--act-fn", choices=ACTIVATIONS, default="gelu")
    group.add_argument("--init-mode", choices=INIT_MODES, default="gpt2")
    group.add_argument(
        "--init-range",
        type=float,
        default=None,
        help="initializer_range (default 0.8/sqrt(d_model) for gpt2)",
    )
    group.add_argument("--attn-only", action="store_true")
    group.add_argument("--seed", type=int, default=0, help="weights seed")
    group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--dtype``, ``--allow-download`` and ``--strip-positional`` (analysis commands)."""
    group = parser.add_argument_group("loading")
    group.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="floating-point type to run the model in (refused if the device cannot run it); "
        "similarities are always computed in float32",
    )
    group.add_argument(
        "--allow-download",
        action="store_true",
        help="let a TransformerLens model name download its files from the Hugging Face Hub "
        "when they are not cached (default: nothing is fetched)",
    )
    group.add_argument(
        "--strip-positional",
        action="store_true",
        help="remove the model's positional encoding (learned or rotary) before the analysis, "
        "to measure what the causal mask alone produces",
    )


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--text``, ``--no-bos`` and ``--random-tokens`` (analysis commands)."""
    group = parser.add_argument_group("inputs (default: task inputs, real text or random tokens)")
    group.add_argument(
        "--text",
        metavar="FILE|FOLDER|stdlib",
        help="cut UTF-8 text into windows with the model's tokenizer: a file, a folder (its "
        f"{', '.join(TEXT_SUFFIXES)} files) or 'stdlib' (the Python standard library's source, "
        "no download; the default for models with a tokenizer)",
    )
    group.add_argument(
        "--no-bos",
        action="store_true",
        help="do not start each text window with the BOS token (default: prepend it; a BOS "
        "changes position 0 and, through attention, every position)",
    )
    group.add_argument(
        "--random-tokens",
        action="store_true",
        help="analyse uniformly random tokens instead of the model's default inputs",
    )


def model_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``build_model`` keyword arguments given by the model flags."""
    kwargs: dict[str, Any] = {
        "n_layers": args.n_layers,
        "d_model": args.d_model,
        "n_heads": args.n_heads,
        "d_vocab": args.d_vocab,
        "n_ctx": args.n_ctx,
        "positional": args.positional,
        "attention": args.attention,
        "seed": args.seed,
        "device": args.device,
        "normalization_type": None if args.normalization == "none" else args.normalization,
        "act_fn": args.act_fn,
        "init_mode": args.init_mode,
        "attn_only": args.attn_only,
    }
    if args.d_mlp is not None:
        kwargs["d_mlp"] = args.d_mlp
    if args.init_range is not None:
        kwargs["initializer_range"] = args.init_range
    if getattr(args, "nope_layers", None):
        kwargs["nope_layers"] = list(args.nope_layers)
    return kwargs


def _check_load_flags(args: argparse.Namespace) -> None:
    """``--dtype`` and ``--device`` must work here; ``--strip-positional`` excludes a hybrid."""
    from nopelens.models import device_problem, dtype_problem

    problems = [
        p.replace("'device' parameter of CLI", "'--device' option").replace(
            "'dtype' parameter of CLI", "'--dtype' option"
        )
        for p in (
            device_problem(args.device, "CLI"),
            dtype_problem(getattr(args, "dtype", "float32"), args.device, "CLI"),
        )
        if p
    ]
    if getattr(args, "strip_positional", False) and getattr(args, "nope_layers", None):
        problems.append(
            "--strip-positional strips every block; --nope-layers strips some. Pass one of them."
        )
    if problems:
        raise InvalidParameterError(" ".join(problems))


def model_from_args(args: argparse.Namespace) -> Any:
    """The model the flags describe: ``--model SOURCE`` loaded, or a random-init model built.

    Then ``--nope-layers`` (a loaded rotary model) or ``--strip-positional`` strip positional
    encodings, and ``--dtype`` sets the floating-point type. Device, dtype and flag conflicts are
    checked before anything is loaded or built.
    """
    import torch

    from nopelens.models import build_model, strip_positional

    _check_load_flags(args)
    dtype = getattr(args, "dtype", "float32")
    if args.model:
        model = load_source(
            args.model,
            device=args.device,
            dtype=dtype,
            allow_download=getattr(args, "allow_download", False),
        )
        if getattr(args, "nope_layers", None):
            model = strip_positional(model, layers=list(args.nope_layers), inplace=True)
    else:
        model = build_model(**model_kwargs_from_args(args))
        if dtype != "float32":
            model = model.to(getattr(torch, dtype), print_details=False)
    if getattr(args, "strip_positional", False):
        model = strip_positional(model, inplace=True)
    return model


def task_of_args(args: argparse.Namespace) -> Any:
    """The task of a ``--model`` made by ``nopelens train`` (its folder or a file in it), or None.

    Read from the run's ``metrics.json`` (plain JSON), else from its ``checkpoint.pt``
    (:func:`nopelens.experiments.sources.source_task`).
    """
    return source_task(getattr(args, "model", None))


def tokens_from_args(args: argparse.Namespace, model: Any) -> Inputs:
    """The token batch to analyse: ``--text`` windows, task inputs, or random tokens.

    The flags read (absent flags count as not given):

    * ``--n-seqs``: sequences (windows, examples) wanted (default 32).
    * ``--seq-len``: tokens per sequence (BOS included). Not given: the task's input length for
      a task model, else 32 capped by the model's ``n_ctx``
      (:func:`nopelens.cli.vocabulary.resolve_seq_len`). Task inputs have the task's length, so
      another explicit value is refused.
    * ``--data-seed``: seed of the random tokens, of the task examples and of the order of the
      standard-library files.
    * ``--distinct``: random tokens without repeats within a sequence.
    * ``--text``, ``--no-bos``, ``--random-tokens`` and ``--model`` (its task, if any).

    The choice itself is :func:`nopelens.experiments.sources.model_inputs`, which sweeps with a
    ``model`` setting call too, so both give the same tokens.

    Args:
        args: Parsed flags (:func:`nopelens.cli.vocabulary.add_token_arguments` and
            :func:`add_input_arguments`).
        model: The model from :func:`model_from_args`.

    Returns:
        :class:`Inputs` with the tokens on the model's device.
    """
    return model_inputs(
        model,
        task=task_of_args(args),
        text=getattr(args, "text", None),
        n_seqs=getattr(args, "n_seqs", 32),
        seq_len=getattr(args, "seq_len", None),
        seed=getattr(args, "data_seed", 0),
        distinct=getattr(args, "distinct", False),
        prepend_bos=not getattr(args, "no_bos", False),
        random=getattr(args, "random_tokens", False),
        cli=True,
    )


def _tokenizer_for(model: Any, task: Any) -> tuple[Any, int | None]:
    """The model's tokenizer (and BOS id), or the character encoding of a stdlib_chars model."""
    return tokenizer_for(model, task)


def describe_source(args: argparse.Namespace) -> str:
    """What ``--model`` (or the random-init flags) will load, in words; needs no torch.

    Printed before torch and TransformerLens are imported (which takes seconds), so that a
    command says at once what it is doing.

    Examples:
        >>> parser = argparse.ArgumentParser()
        >>> add_model_arguments(parser)
        >>> describe_source(parser.parse_args(["--n-layers", "3"]))
        'a random-init model (3 layers, d_model 64, positional none, weights seed 0)'
        >>> describe_source(parser.parse_args(["--model", "gpt2"]))
        "the TransformerLens model 'gpt2' (from the local Hugging Face cache)"
    """
    source = getattr(args, "model", None)
    if not source:
        layers = f"{args.n_layers} layer{'' if args.n_layers == 1 else 's'}"
        return (
            f"a random-init model ({layers}, d_model {args.d_model}, positional "
            f"{args.positional}, weights seed {args.seed})"
        )
    path = Path(source)
    if path.is_file():
        return f"the checkpoint {source}"
    if path.is_dir():
        if (path / "config.json").exists():
            return f"the Hugging Face model folder {source}"
        return f"the training run {source}"
    where = (
        "downloaded if it is not cached"
        if getattr(args, "allow_download", False)
        else "from the local Hugging Face cache"
    )
    return f"the TransformerLens model {source!r} ({where})"


def status(args: argparse.Namespace, message: str) -> None:
    """One progress line on stderr, ``nopelens COMMAND: message`` (nothing with ``--quiet``)."""
    from nopelens.progress import say

    say(f"nopelens {getattr(args, 'command', None) or 'run'}: {message}", quiet=quiet(args))


def quiet(args: argparse.Namespace) -> bool:
    """Whether ``-q/--quiet`` was given."""
    return bool(getattr(args, "quiet", False))


def announce_loading(args: argparse.Namespace) -> float:
    """Say what is being loaded (first line of a command, before the heavy imports).

    Returns:
        The start time (``time.perf_counter()``) for :func:`announce_loaded`.
    """
    import time

    status(args, f"loading torch and TransformerLens, then {describe_source(args)} ...")
    return time.perf_counter()


def announce_loaded(args: argparse.Namespace, model: Any, inputs: Inputs, start: float) -> None:
    """Say which model was loaded (and how long it took) and what it will read."""
    import time

    from nopelens.models import describe_model

    seconds = time.perf_counter() - start
    status(args, f"{describe_model(model)} ready in {seconds:.1f} s; inputs: {inputs.description}")


def log_settings(args: argparse.Namespace, **settings: Any) -> None:
    """Log the settings a command runs with (shown with ``-v``)."""
    text = ", ".join(f"{key}={value}" for key, value in settings.items())
    logging.getLogger("nopelens.cli").info("%s: %s", getattr(args, "command", "run"), text)


@contextlib.contextmanager
def layer_progress(
    args: argparse.Namespace, model: Any, n_seqs: int, layers: Sequence[int] | None, *, desc: str
) -> Iterator[list[tuple[str, Any]]]:
    """A progress bar over (batch, block) forward steps, and the hooks that advance it.

    Pass the yielded hooks as ``fwd_hooks`` to an analysis that streams ``n_seqs`` sequences
    in batches of ``--batch-size`` through the blocks ``layers`` (``None``: all): each hook
    only counts (it returns ``None``, so activations are unchanged). With ``--quiet``: no bar
    and no hooks.
    """
    if quiet(args):
        yield []
        return
    from nopelens.measure import hook_name
    from nopelens.progress import progress_bar

    blocks = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    batch = getattr(args, "batch_size", None) or n_seqs
    bar = progress_bar(total=math.ceil(n_seqs / batch) * len(blocks), desc=desc, unit="layer")

    def tick(activation: Any, hook: Any) -> None:
        bar.update(1)

    try:
        yield [(hook_name("resid_post", block), tick) for block in blocks]
    finally:
        bar.close()


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--out FILE`` (``.csv`` or ``.json``)."""
    parser.add_argument("--out", metavar="FILE", help="also write the table as .csv or .json")
