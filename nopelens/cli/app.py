"""The ``nopelens`` command line.

Subcommands: ``analyze``, ``theory``, ``probe``, ``train``, ``sweep``, ``dashboard`` and
``reproduce``. Each subcommand lives in ``nopelens/commands/<name>.py`` with ``HELP``,
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
        description="Position information in transformers without positional encodings.",
    )
    parser.add_argument("--version", action="version", version=f"nopelens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nopelens.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"nopelens.cli.{name}":
                raise
            continue  # a command whose module is not installed in this build
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(_run=module.run)
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
    except (ValueError, FileNotFoundError) as err:
        print(f"nopelens {args.command}: error: {err}", file=sys.stderr)
        return 2
