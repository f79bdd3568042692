"""The ``nopelens`` command line: ``main(argv) -> int``; one module per subcommand."""

from nopelens.cli.app import main

__all__ = ["main"]
