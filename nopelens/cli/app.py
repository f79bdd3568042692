"""The ``nopelens`` command line.

Subcommands: ``analyze``, ``theory``, ``probe``, ``train``, ``sweep``, ``dashboard`` and
``reproduce``. Each subcommand lives in ``nopelens/cli/<name>.py`` with ``HELP``,
``configure(parser)`` and ``run(args) -> int``; command modules import torch and
TransformerLens only inside ``run`` so that ``nopelens --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from nopelens import __version__
from nopelens.cli.vocabulary import HelpFormatter, add_retired_flags, flag_message

COMMANDS: tuple[str, ...] = (
    "analyze",
    "theory",
    "probe",
    "train",
    "sweep",
    "dashboard",
    "reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="nopelens",
        allow_abbrev=False,
        description="Position information in transformers without positional encodings.",
    )
    parser.add_argument("--version", action="version", version=f"nopelens {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log details (settings, each step)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nopelens.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"nopelens.cli.{name}":
                raise
            continue  # a command whose module is not installed in this build
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            formatter_class=HelpFormatter,
            allow_abbrev=False,  # `--pos` must not quietly mean `--positional`
        )
        module.configure(command)
        add_retired_flags(command)
        # `nopelens analyze -v` works as well as `nopelens -v analyze` (SUPPRESS: not given
        # here leaves the top-level value alone).
        command.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="also log details (settings, each step)",
        )
        command.set_defaults(_run=module.run, _parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (defaults to ``sys.argv[1:]``); return the exit code.

    Bad arguments print a one-line error naming the argument (exit code 2) instead of a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"nopelens {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except Exception as err:
        message = expected_failure(err)
        if message is None or args.debug:
            raise
        message = flag_message(message, getattr(args, "_parser", None))
        print(f"nopelens {args.command}: error: {message}", file=sys.stderr)
        return 2


def expected_failure(err: BaseException) -> str | None:
    """One line for an expected failure (bad input, I/O, memory, lock), or None for a bug.

    Examples:
        >>> expected_failure(PermissionError(13, "Permission denied", "/out"))
        "cannot write or read '/out': permission denied"
        >>> expected_failure(OSError(28, "No space left on device", "/out/x.pt"))
        "no space left on the disk while writing '/out/x.pt' (errno 28)"
        >>> expected_failure(ZeroDivisionError()) is None
        True
    """
    import errno

    from nopelens.validation import InvalidParameterError, NopelensError

    if isinstance(err, (InvalidParameterError, NopelensError, ValueError)):
        return str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return (
            "out of memory: use fewer sequences (--n-seqs), a shorter --seq-len, a smaller "
            f"--batch-size or fewer layers ({type(err).__name__}: {str(err)[:200]})"
        )
    if isinstance(err, OSError):
        where = repr(err.filename) if err.filename else "a file"
        if err.errno == errno.ENOSPC:
            return f"no space left on the disk while writing {where} (errno 28)"
        if isinstance(err, PermissionError):
            return f"cannot write or read {where}: permission denied"
        if isinstance(err, FileNotFoundError):
            return str(err) if not err.filename else f"no such file or folder: {where}"
        if isinstance(err, IsADirectoryError):
            return f"{where} is a folder, but a file is needed there"
        if isinstance(err, NotADirectoryError):
            return f"{where} is a file (or lies under one), but a folder is needed there"
        if isinstance(err, FileExistsError):
            return f"{where} already exists"
        return f"{err.strerror or type(err).__name__} ({where})"
    return None
