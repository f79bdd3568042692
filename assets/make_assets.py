"""Generate the README figures in ``assets/`` from a ``nopelens reproduce`` run.

The figures are built by :mod:`nopelens.viz` from the results of the ``quick`` profile (the run
is reused when its folder already holds finished parts), written as small standalone HTML files
with plotly.js inlined, and photographed with headless Chromium (plotly's own PNG export needs
kaleido and Chrome, which we do not depend on). Nothing is drawn by hand.

Usage::

    python assets/make_assets.py                      # runs or reuses the quick profile
    python assets/make_assets.py --run-dir /tmp/nl-quick --only theory

Needs Chromium (Debian package ``chromium``; ``--chromium PATH`` to point at another binary).

``assets/manifest.json`` records, for every PNG, a SHA-256 of the code that draws it (its builder
here plus the :mod:`nopelens.viz` modules it uses). ``tests/test_assets.py`` recomputes those
hashes and fails when a figure's code changed but its asset was not regenerated
(``make assets``).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
)
WIDTH = 1000
SCALE = 1.5


def _seed_mean(frame: Any, by: str) -> Any:
    keys = [by, "site", "layer", "metric"]
    columns = ["value", "chance", "ci_low", "ci_high"]
    return (
        frame.groupby(keys, sort=False)[columns].mean().reset_index().rename(columns={by: "model"})
    )


def _similarity(results: dict[str, Any]) -> Any:
    from nopelens import viz

    report = results["random_init"].objects["report"]
    return viz.similarity_heatmap_figure(report, sites="resid_post", initial_layer="0", height=640)


def _controls(results: dict[str, Any]) -> Any:
    from nopelens import viz

    frame = results["controls"].tables["results"]
    frame = frame.assign(model=frame["positional"] + " / " + frame["attention"])
    return viz.score_by_layer_figure(
        _seed_mean(frame, "model"), title="NoPE vs controls (random init, mean of 3 seeds)"
    )


def _theory(results: dict[str, Any]) -> Any:
    from nopelens import viz

    return viz.theory_figure(
        results["theory"].objects["theory"], sites="attn_out", include_closed_form=True
    )


def _sharpness(results: dict[str, Any]) -> Any:
    from nopelens import viz

    study = results["theory"].tables["sharpness"]
    return viz.sweep_line_figure(
        study,
        x="scale",
        color="prediction",
        value="pearson_r",
        site="attn_out",
        title="Layer-0 theory fit (Pearson r) as attention sharpens",
    )


def _variance(results: dict[str, Any]) -> Any:
    from nopelens import viz

    theory = results["theory"].objects["theory"]
    return viz.variance_figure(theory.variance, sites="attn_out", model_label=theory.model_label)


def _length(results: dict[str, Any]) -> Any:
    from nopelens import viz

    frame = results["length"].tables["results"]
    return viz.sweep_line_figure(
        frame,
        x="seq_len",
        metric="neighborhood_concordance",
        layer="last",
        log_x=True,
        title="Neighborhood concordance by sequence length",
    )


def _sweep(results: dict[str, Any]) -> Any:
    from nopelens import viz

    frame, arms = results["sweep"].tables["results"], results["sweep"].tables["arms"]
    core = frame[frame["config_id"].isin(set(arms.loc[arms["arm"] == 0, "config_id"]))]
    return viz.sweep_heatmap_figure(core, x="d_model", y="n_layers", metric="adjacency_probability")


def _trained(results: dict[str, Any]) -> Any:
    from nopelens import viz

    frame = results["trained"].tables["scores"]
    frame = frame[frame["task"] == "index_counting"]
    frame = frame.assign(model=frame["positional"] + " " + frame["state"])
    return viz.score_by_layer_figure(frame, title="Index counting: trained vs untrained")


def _probes(results: dict[str, Any]) -> Any:
    from nopelens import viz

    report = results["probes"].objects["random-init NoPE"]
    frame = report.results[report.results["capacity"] == "full"]
    return viz.probe_figure(
        frame, metric="spearman", title="Position probes — random-init NoPE (Spearman ρ)"
    )


#: Asset name -> figure builder. Each becomes ``assets/<name>.png``.
FIGURES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "similarity_heatmap": _similarity,
    "controls": _controls,
    "theory": _theory,
    "sharpness": _sharpness,
    "variance": _variance,
    "length": _length,
    "sweep": _sweep,
    "trained": _trained,
    "probes": _probes,
}


#: The nopelens.viz modules behind each figure (all of them use style.py and inputs.py).
FIGURE_MODULES: dict[str, tuple[str, ...]] = {
    "similarity_heatmap": ("similarity",),
    "controls": ("scores",),
    "theory": ("theory",),
    "sharpness": ("theory", "scores", "sweeps"),
    "variance": ("variance",),
    "length": ("scores", "sweeps"),
    "sweep": ("sweeps",),
    "trained": ("scores",),
    "probes": ("probes",),
}
MANIFEST = ASSETS / "manifest.json"


def code_hash(name: str) -> str:
    """SHA-256 of the code that draws asset ``name``: its builder and its viz modules."""
    viz = Path(__file__).resolve().parents[1] / "nopelens" / "viz"
    hasher = hashlib.sha256(inspect.getsource(FIGURES[name]).encode())
    for module in ("style", "inputs", *FIGURE_MODULES[name]):
        hasher.update((viz / f"{module}.py").read_bytes())
    return hasher.hexdigest()


def write_manifest(names: list[str]) -> None:
    """Record the code hash of every regenerated asset (others keep their entries)."""
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    for name in names:
        manifest[name] = {"code_sha256": code_hash(name)}
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")


def screenshot(
    figure: Any, png: Path, *, chromium: str, width: int = WIDTH, scale: float = SCALE
) -> Path:
    """Render ``figure`` to ``png`` with headless Chromium (plotly.js inlined, no network).

    Args:
        figure: A plotly figure.
        png: Output file.
        chromium: The Chromium binary.
        width: Page width in CSS pixels (the figure is drawn this wide).
        scale: Device scale factor (1.5 gives crisp text on high-density screens).

    Returns:
        ``png``.

    Raises:
        RuntimeError: If Chromium fails or writes no file.
    """
    height = int(figure.layout.height or 500)
    figure = figure.update_layout(width=width, height=height, margin_r=40)
    with tempfile.TemporaryDirectory(prefix="nopelens-shot-") as tmp:
        page = Path(tmp) / "figure.html"
        figure.write_html(
            page,
            include_plotlyjs=True,
            full_html=True,
            config={"displayModeBar": False, "staticPlot": False},
        )
        html = page.read_text()
        page.write_text(html.replace("<body>", '<body style="margin:0">', 1))
        out = Path(tmp) / "shot.png"
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp}/profile",
            f"--window-size={width},{height}",
            f"--force-device-scale-factor={scale}",
            f"--screenshot={out}",
            page.as_uri(),
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if not out.is_file():
            raise RuntimeError(f"chromium wrote no screenshot for {png.name}:\n{proc.stderr}")
        png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, png)
    return png


def main(argv: list[str] | None = None) -> int:
    """Build the figures and write ``assets/*.png``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "nopelens-assets-quick",
        help="reproduce output folder (reused when finished)",
    )
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--out", type=Path, default=ASSETS, help="where the PNGs go")
    parser.add_argument("--only", nargs="*", choices=sorted(FIGURES), help="some figures only")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        parser.error(
            f"Chromium not found at {args.chromium}; install the 'chromium' package "
            "or pass --chromium PATH"
        )

    from nopelens.experiments import load_results, reproduce

    reproduce(args.run_dir, profile=args.profile)
    results = load_results(args.run_dir)
    for name in args.only or FIGURES:
        png = screenshot(FIGURES[name](results), args.out / f"{name}.png", chromium=args.chromium)
        print(f"{png}  {png.stat().st_size / 1024:.0f} KiB")
    if args.out == ASSETS:
        write_manifest(list(args.only or FIGURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
