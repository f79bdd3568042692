"""``nopelens probe`` in-process: output files, columns and argument errors."""

from __future__ import annotations

import json

import pytest

TINY = [
    "--n-layers",
    "1",
    "--d-model",
    "16",
    "--n-heads",
    "2",
    "--d-vocab",
    "20",
    "--n-ctx",
    "8",
    "--n-seqs",
    "12",
    "--seq-len",
    "8",
]


def test_probe_writes_csv_and_per_seed_json(tmp_path, capsys):
    import pandas as pd

    from nopelens.cli.app import main

    out, per_seed = tmp_path / "probe.csv", tmp_path / "seeds.json"
    code = main(
        [
            "probe",
            *TINY,
            "--seeds",
            "0",
            "1",
            "--features",
            "cosine",
            "variance",
            "--probes",
            "ridge",
            "isotonic",
            "--equal-dim",
            "2",
            "--out",
            str(out),
            "--per-seed",
            str(per_seed),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "best feature family per layer (spearman, model=given)" in printed
    # one progress step per layer probed (embed + block 0), counted from the library's log
    assert captured.err.splitlines()[-1].startswith("probe: 100% 2/2"), captured.err
    assert f"wrote {out}" in printed
    frame = pd.read_csv(out)
    for column in (
        "site",
        "layer",
        "feature",
        "probe",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n_seeds",
        "chance",
        "target",
        "capacity",
    ):
        assert column in frame.columns
    assert set(frame["layer"].astype(str)) == {"embed", "0"}
    assert set(frame["feature"]) == {"cosine", "variance"}
    assert set(frame["capacity"]) == {"full", "matched"}
    assert set(frame["target"]) == {"position", "control", "shuffled"}
    assert (frame["n_seeds"] == 2).all()
    rows = json.loads(per_seed.read_text())
    assert {row["seed"] for row in rows} == {0, 1}


def test_probe_writes_json_without_controls(tmp_path):
    from nopelens.cli.app import main

    out = tmp_path / "probe.json"
    code = main(
        [
            "probe",
            *TINY,
            "--seeds",
            "0",
            "--features",
            "variance",
            "--probes",
            "isotonic",
            "--equal-dim",
            "0",
            "--no-control-task",
            "--no-shuffled-control",
            "--no-embed",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())
    assert {row["target"] for row in rows} == {"position"}
    assert {row["layer"] for row in rows} == {"0"}
    assert {row["capacity"] for row in rows} == {"full"}
    assert all(row["ci_low"] is None for row in rows)  # one seed: no interval (NaN -> null)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--out", "probe.txt"], "The '--out' argument must be a path ending in '.csv'"),
        (["--features", "bogus"], "The --features option must be one of"),
        (["--seq-len", "9"], r"--seq-len option \(9\) is longer than the model.s n_ctx \(8\)"),
        (["--n-seqs", "2"], "--n-seqs option must hold at least 3 sequences"),
        (["--equal-dim", "-1"], "The '--equal-dim' argument must be an int >= 0"),
        (["--sites", "pattern"], "residual-stream-shaped"),
    ],
)
def test_probe_bad_arguments(tmp_path, capsys, extra, match):
    import re

    from nopelens.cli.app import main

    extra = [str(tmp_path / e) if e.endswith(".txt") else e for e in extra]
    code = main(
        ["probe", *TINY, "--seeds", "0", "--features", "variance", "--probes", "isotonic", "-q",
         *extra]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("nopelens probe: error: ")
    assert re.search(match, err), err


def test_probe_is_listed_in_help(capsys):
    from nopelens.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(["probe", "--help"])
    assert info.value.code == 0
    assert "--equal-dim" in capsys.readouterr().out
