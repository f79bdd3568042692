"""One flag per concept across every subcommand: the shared argument groups and list syntax.

Each concept has exactly one spelling, one type, one default and one help text, defined here
once and added to the subcommands that need it:

=========================  ==============================================================
flag                       concept
=========================  ==============================================================
``--n-seqs N``             number of token sequences (never ``--batch``/``--n-sequences``)
``--seq-len L``            tokens per sequence (default: fits the model, see
                           :func:`resolve_seq_len`; never ``--pos``)
``--data-seed S``          seed of the token draw (never ``--tokens-seed``/``--token-seed``)
``--distinct``             no repeated token within a sequence (``--no-distinct`` is the
                           default; never ``--allow-repeats``)
``--batch-size B``         sequences per forward pass
``--sites A B`` / ``A,B``  hook sites; spaces and commas both work everywhere
``--layers 0 2``           block indices (never ``each|last``: sweeps use ``--report-layers``)
``--exclude-first``        leave position 0 (BOS / attention sink) out (never ``--drop-first``)
``--centered``             subtract each sequence's mean hidden state before the cosines
``--n-bootstrap N``        bootstrap resamples of the confidence intervals
``-q/--quiet``             no progress bars or status lines: errors and results only
                           (never ``--no-progress``)
=========================  ==============================================================

:data:`SYNONYMS` lists the retired spellings; a test parses every subcommand and fails if one
comes back, or if one flag has two types or defaults in two subcommands.
:func:`flag_message` rewrites a library error that names a Python parameter (``The 'n_seqs'
parameter of analyze``) so that it names the flag the user typed (``--n-seqs``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from nopelens.spec import HIDDEN_SITES

#: Retired spellings -> the one flag that now means that concept.
SYNONYMS: dict[str, str] = {
    "--batch": "--n-seqs",
    "--n-sequences": "--n-seqs",
    "--pos": "--seq-len",
    "--tokens-seed": "--data-seed",
    "--token-seed": "--data-seed",
    "--allow-repeats": "--distinct",
    "--drop-first": "--exclude-first",
    "--no-progress": "--quiet",
}

#: Default number of tokens per random sequence when the model allows it.
DEFAULT_SEQ_LEN = 32


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every default (and argparse already lists choices)."""


class _Retired(argparse.Action):
    """A retired spelling: refused with the name of the flag that replaced it."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        parser.error(f"{option_string} is now {SYNONYMS[option_string]}")


def add_retired_flags(parser: argparse.ArgumentParser) -> None:
    """Refuse each retired spelling of :data:`SYNONYMS` with the flag that replaced it.

    Hidden from ``--help``; only added where the new flag exists (so ``--pos`` in a command
    without ``--seq-len`` stays an unknown argument).

    Examples:
        >>> p = argparse.ArgumentParser(prog="nopelens probe", allow_abbrev=False)
        >>> _ = p.add_argument("--seq-len", type=int)
        >>> add_retired_flags(p)
        >>> [a.option_strings for a in p._actions if isinstance(a, _Retired)]
        [['--pos']]

        ``nopelens probe --pos 32`` then stops with ``error: --pos is now --seq-len``.
    """
    flags = {s for action in parser._actions for s in action.option_strings}
    for old, new in SYNONYMS.items():
        if new in flags and old not in flags:
            parser.add_argument(old, action=_Retired, nargs="?", help=argparse.SUPPRESS)


def word_list(value: str) -> list[str]:
    """An argparse type that splits ``"a,b"`` into ``["a", "b"]``.

    Used with ``nargs="+"``, so both ``--sites a b`` and ``--sites a,b`` work.

    Examples:
        >>> word_list("resid_post, attn_out")
        ['resid_post', 'attn_out']
    """
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a name, got {value!r}")
    return items


def flatten(values: Sequence[Any] | None) -> list[str] | None:
    """Flatten what ``nargs="+"`` with :func:`word_list` gives (a list of lists).

    Examples:
        >>> flatten([["a", "b"], ["c"]])
        ['a', 'b', 'c']
    """
    if values is None:
        return None
    out: list[str] = []
    for group in values:
        out.extend(group if isinstance(group, list) else [group])
    return out


def add_token_arguments(parser: argparse.ArgumentParser, *, n_seqs: int = 32) -> None:
    """``--n-seqs``, ``--seq-len``, ``--data-seed``, ``--distinct`` and ``--batch-size``."""
    group = parser.add_argument_group("tokens (random unless --text is given)")
    group.add_argument("--n-seqs", type=int, default=n_seqs, help="number of token sequences")
    group.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help=f"tokens per sequence (default: {DEFAULT_SEQ_LEN}, or the model's n_ctx if "
        "smaller, or a task model's input length)",
    )
    group.add_argument("--data-seed", type=int, default=0, help="seed of the token draw")
    group.add_argument(
        "--distinct",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="no repeated token within a sequence (needs d_vocab >= --seq-len)",
    )
    group.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass")


def add_site_arguments(
    parser: argparse.ArgumentParser, *, default: Sequence[str] = ("resid_post",)
) -> None:
    """``--sites`` (spaces or commas) and ``--layers`` (block indices)."""
    group = parser.add_argument_group("where to look")
    group.add_argument(
        "--sites",
        nargs="+",
        type=word_list,
        default=[list(default)],
        metavar="SITE",
        help=f"hook sites, e.g. {', '.join(HIDDEN_SITES[:4])} (spaces or commas)",
    )
    group.add_argument(
        "--layers",
        nargs="+",
        type=int,
        default=None,
        metavar="L",
        help="block indices (default: every block; the embedding is always included)",
    )


def add_position_arguments(parser: argparse.ArgumentParser) -> None:
    """``--centered`` and ``--exclude-first``."""
    group = parser.add_argument_group("hidden states")
    group.add_argument(
        "--centered",
        action="store_true",
        help="subtract each sequence's mean hidden state before the cosines",
    )
    group.add_argument(
        "--exclude-first",
        action="store_true",
        help="leave position 0 (a BOS / attention-sink position) out",
    )


def add_bootstrap_argument(parser: argparse.ArgumentParser, *, default: int = 1000) -> None:
    """``--n-bootstrap``."""
    parser.add_argument(
        "--n-bootstrap",
        type=int,
        default=default,
        help="bootstrap resamples of the confidence intervals (0: none)",
    )


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` (dest ``quiet``): no progress bars or status lines on stderr.

    Errors and the final results (tables on stdout, the paths written) are still printed.

    Examples:
        >>> p = argparse.ArgumentParser()
        >>> add_quiet_argument(p)
        >>> p.parse_args(["-q"]).quiet, p.parse_args([]).quiet
        (True, False)
    """
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars or status lines on stderr (errors and results are still printed)",
    )


def resolve_seq_len(seq_len: int | None, n_ctx: int, task_len: int | None = None) -> int:
    """The sequence length to use: the flag, else a task's input length, else 32 capped by n_ctx.

    Examples:
        >>> resolve_seq_len(None, 64), resolve_seq_len(None, 11), resolve_seq_len(None, 64, 9)
        (32, 11, 9)
        >>> resolve_seq_len(16, 64)
        16
    """
    if seq_len is not None:
        return seq_len
    if task_len is not None:
        return task_len
    return min(DEFAULT_SEQ_LEN, n_ctx)


_PARAMETER = re.compile(r"The '(\w+)' parameter of [\w.]+")
#: Python parameter -> flag where the two are not spelled alike.
_PARAMETER_FLAGS: dict[str, str] = {
    "batch": "--n-seqs",
    "pos": "--seq-len",
    "drop_first": "--exclude-first",
    "normalization_type": "--normalization",
    "initializer_range": "--init-range",
    "path": "--model",
    "name_or_dir": "--model",
    "tokens": "--seq-len",
}


def flag_message(message: str, parser: argparse.ArgumentParser | None) -> str:
    """Name the flag instead of the Python parameter when the subcommand has that flag.

    Examples:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--n-seqs")
        >>> flag_message("The 'n_seqs' parameter of analyze must be an int >= 2. Got 1 instead.", p)
        'The --n-seqs option must be an int >= 2. Got 1 instead.'
        >>> flag_message("The 'tau' parameter of f must be > 0.", p)
        "The 'tau' parameter of f must be > 0."
        >>> flag_message("The 'tokens' parameter of f must hold at least 3 sequences.", p)
        'The --n-seqs option must hold at least 3 sequences.'
    """
    if parser is None:
        return message
    flags = {s for action in parser._actions for s in action.option_strings}

    def swap(match: re.Match[str]) -> str:
        name = match.group(1)
        flag = _PARAMETER_FLAGS.get(name, "--" + name.replace("_", "-"))
        if name == "tokens" and "sequences" in message:
            flag = "--n-seqs"  # the token batch has too few rows, not too few positions
        return f"The {flag} option" if flag in flags else match.group(0)

    return _PARAMETER.sub(swap, message)


def option_table(parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """Every option of ``parser`` but retired spellings: flag -> dest, type, default, choices."""
    out = {}
    for action in parser._actions:
        if isinstance(action, _Retired):
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                out[flag] = {
                    "dest": action.dest,
                    "type": getattr(action.type, "__name__", repr(action.type)),
                    "default": action.default,
                    "choices": tuple(action.choices) if action.choices else None,
                    "nargs": action.nargs,
                }
    return out
