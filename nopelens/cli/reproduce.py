"""``nopelens reproduce``: every experiment of the paper, resumable, into one folder."""

from __future__ import annotations

import argparse
import sys
import time

from nopelens.cli.sweep import add_executor_arguments
from nopelens.cli.vocabulary import add_quiet_argument

HELP = (
    "run the paper's experiments (random-init models, sweep, controls, trained tasks, first-layer "
    "theory, probes, length sweep, ablations) and write DIR/summary.json and DIR/dashboard.html; "
    "rerunning into the same DIR reuses finished parts"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``reproduce`` arguments."""
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument(
        "--profile",
        default="quick",
        help="test (seconds), quick (minutes on 2 CPU cores; the default) or full (for a GPU)",
    )
    parser.add_argument(
        "--device", default=None, help="override the profile's device (cpu, cuda, auto)"
    )
    add_executor_arguments(parser)
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run the pipeline and print where its files went."""
    from nopelens.experiments import PROFILES, reproduce

    profile = PROFILES.get(args.profile)
    if args.executor == "local" and profile is not None and profile.workers > 1:
        from nopelens.experiments.workers import start_fork_server

        start_fork_server()  # the sweeps' worker pool imports while the first parts run

    start = time.perf_counter()
    if not args.quiet:
        print(f"nopelens reproduce: profile {args.profile!r} -> {args.out}", file=sys.stderr)
    summary = reproduce(
        args.out,
        profile=args.profile,
        progress=not args.quiet,
        device=args.device,
        executor=args.executor,
        address=args.address,
    )
    seconds = time.perf_counter() - start
    reused = [name for name, part in summary["parts"].items() if part["reused"]]
    for name, part in summary["parts"].items():
        state = "reused" if part["reused"] else f"{part['seconds']:.1f} s"
        print(f"  {name:<12} {state:>10}  {part['title']}")
    if reused:
        print(f"reused {len(reused)} finished part(s): {', '.join(reused)}")
    out = summary["out_dir"]
    print(f"summary:   {out}/summary.json")
    print(f"dashboard: {out}/dashboard.html")
    print(f"parts:     {out}/parts/")
    print(f"done in {seconds:.1f} s")
    return 0
