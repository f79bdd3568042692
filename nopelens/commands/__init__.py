"""Subcommands of the ``nopelens`` command line, one module each."""
