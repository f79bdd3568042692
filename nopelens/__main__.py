"""``python -m nopelens`` runs the command line."""

from nopelens.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
