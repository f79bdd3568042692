"""``python -m nopelens`` runs the command line."""

from nopelens.cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
