"""``nopelens sweep`` in-process: outputs, resume, presets and error messages."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
from grids import TINY

#: Two configurations: the tiny grid with seeds 0 and 1.
GRID = {**TINY, "seed": [0, 1]}


def _main(argv):
    from nopelens.cli.app import main

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return main(argv)


def test_sweep_grid_file_writes_tables_and_resumes(tmp_path, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(GRID))
    out = tmp_path / "out"
    argv = ["sweep", "--grid", str(grid), "--out", str(out), "--workers", "1", "-q"]
    assert _main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 configurations finished (2 run now)" in printed
    for name in ("results.jsonl", "results.csv", "summary.csv", "grid.json"):
        assert (out / name).is_file(), name
    results = pd.read_csv(out / "results.csv")
    assert {
        "config_id",
        "seed",
        "site",
        "layer",
        "metric",
        "value",
        "chance",
        "ci_low",
        "ci_high",
    } <= set(results.columns)
    assert results["config_id"].nunique() == 2
    summary = pd.read_csv(out / "summary.csv")
    assert {"param", "value", "verdict", "frac_above", "excess_ci_low"} <= set(summary.columns)

    assert _main(argv) == 0  # everything is finished: nothing runs again
    assert "(0 run now)" in capsys.readouterr().out
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_sweep_preset_with_overrides_and_dry_run(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", "--preset", "controls", "--out", str(out), "--dry-run"]
    assert _main(argv) == 0
    assert "24 configurations; 0 already finished" in capsys.readouterr().out
    assert not out.exists()
    small = [
        "--set",
        "d_model=16",
        "--set",
        "n_heads=2",
        "--set",
        "seq_len=8",
        "--set",
        "n_seqs=4",
        "--set",
        "n_bootstrap=10",
        "--set",
        "seed=[0]",
        "--set",
        "positional=none",
        "--set",
        'attention=["causal","bidirectional"]',
    ]
    argv = [
        "sweep",
        "--preset",
        "controls",
        "--out",
        str(out),
        "--workers",
        "1",
        "-q",
        "--report-layers",
        "last",
        *small,
    ]
    assert _main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 configurations finished" in printed
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["layer"]) == {"last"} and set(summary["param"]) == {"attention"}
    assert _main([*argv, "--by", "attention"]) == 0
    assert "(0 run now)" in capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv")
    assert "attention" in summary.columns and set(summary["param"]) == {"(all)"}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--preset", "nope"], "'preset' parameter must be one of 'paper'"),
        (
            ["--preset", "paper", "--set", "d_model=[30]", "--set", "n_heads=4"],
            "must divide d_model=30",
        ),
        (["--preset", "paper", "--set", "n_layer=2"], "unknown key 'n_layer'"),
        (["--preset", "paper", "--set", "seed"], "--set takes KEY=VALUE"),
    ],
)
def test_sweep_errors_name_the_problem(tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    assert _main(["sweep", "--out", str(out), "--workers", "1", *extra]) == 2
    assert match in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()


def test_sweep_needs_exactly_one_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _main(["sweep", "--out", str(tmp_path)])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        _main(["sweep", "--preset", "paper", "--grid", "g.json", "--out", str(tmp_path)])
    assert "not allowed with argument" in capsys.readouterr().err


def test_sweep_help_lists_presets(capsys):
    with pytest.raises(SystemExit):
        _main(["sweep", "--help"])
    text = capsys.readouterr().out
    for name in ("paper", "length", "controls", "ablations", "hybrid"):
        assert name in text
    from nopelens.experiments import PRESETS

    assert set(PRESETS) == {"paper", "length", "controls", "ablations", "hybrid"}
