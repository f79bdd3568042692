"""`nopelens analyze`, run in-process on a tiny model."""

from __future__ import annotations

import json
import re
import warnings

import pandas as pd
import pytest

TINY = [
    "analyze",
    "--n-layers",
    "1",
    "--d-model",
    "32",
    "--n-heads",
    "4",
    "--d-vocab",
    "50",
    "--n-ctx",
    "16",
    "--n-seqs",
    "6",
    "--seq-len",
    "12",
    "--n-bootstrap",
    "50",
]
#: The scores table's columns (nopelens.spec.SCORE_COLUMNS, written as they are).
COLUMNS = [
    "site",
    "layer",
    "nope",
    "metric",
    "value",
    "chance",
    "ci_low",
    "ci_high",
    "ci_method",
    "n_seqs",
    "seq_len",
]


def test_analyze_prints_the_table_and_writes_csv(tmp_path, capsys):
    from nopelens.cli.app import main

    out = tmp_path / "scores.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main([*TINY, "--sites", "resid_post,attn_out", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "NoPE causal L1 d32 h4 LN gelu" in text
    assert "resid_post" in text and "attn_out" in text and "embed" in text
    assert "95% CI" in text and "chance" in text
    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 2 * 2 * 2  # sites x layers (embed, 0) x metrics
    assert set(frame.seq_len) == {12} and set(frame.n_seqs) == {6}
    assert frame.loc[frame.metric == "adjacency_probability", "chance"].eq(2 / 12).all()


def test_analyze_json_and_options(tmp_path, capsys):
    from nopelens.cli.app import main

    out = tmp_path / "scores.json"
    code = main(
        [
            *TINY,
            "--exclude-first",
            "--centered",
            "--layers",
            "0",
            "--data-seed",
            "3",
            "--n-bootstrap",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    records = json.loads(out.read_text())
    assert list(records[0]) == sorted(COLUMNS)  # write_json sorts keys
    assert {r["seq_len"] for r in records} == {11}
    assert all(r["ci_low"] is None for r in records)  # no bootstrap: NaN -> null
    assert "first position excluded" in capsys.readouterr().out


def test_analyze_progress_goes_to_stderr_and_quiet_silences_it(capsys):
    from nopelens.cli.app import main

    assert main([*TINY, "--n-layers", "2", "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0].startswith("nopelens analyze: loading torch and TransformerLens, then a ")
    assert (
        lines[1].startswith("nopelens analyze: NoPE causal L2 d32 h4") and " ready in " in lines[1]
    )
    assert "inputs: 6 random sequences x 12 tokens" in lines[1]
    # 6 sequences in batches of 4 through 2 blocks: 4 (batch, block) steps, as plain lines
    assert lines[-1].startswith("analyze: 100% 4/4"), lines
    assert "\r" not in captured.err and "nopelens analyze" not in captured.out
    assert "resid_post" in captured.out
    assert main([*TINY, "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "resid_post" in captured.out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--out", "scores.txt"], "must be a path ending in '.csv' or '.json'"),
        (["--sites", "pattern"], "holds attention patterns"),
        (["--layers", "3"], "--layers option must be None or block indices"),
        (["--seq-len", "20"], r"--seq-len option \(20\) is longer than the model's n_ctx \(16\)"),
        (["--seq-len", "2"], "at least 3 positions"),
    ],
)
def test_analyze_bad_arguments_exit_2_with_a_message(tmp_path, capsys, extra, match):
    from nopelens.cli.app import main

    args = [a if a != "scores.txt" else str(tmp_path / a) for a in extra]
    assert main([*TINY, *args, "-q"]) == 2  # quiet: the error is all of stderr
    err = capsys.readouterr().err
    assert err.startswith("nopelens analyze: error:")
    assert re.search(match, err), err
    assert not list(tmp_path.iterdir())
