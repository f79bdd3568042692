"""``nopelens theory`` in-process: tables, files, the sharpness study and error messages."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

TINY = [
    "--n-layers",
    "1",
    "--d-model",
    "16",
    "--n-heads",
    "2",
    "--d-vocab",
    "40",
    "--n-ctx",
    "12",
    "--n-seqs",
    "3",
    "--seq-len",
    "8",
]


def _main(argv):
    from nopelens.cli.app import main

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return main(argv)


def test_theory_prints_and_writes_tables(tmp_path, capsys):
    out, matrices, variance = tmp_path / "m.csv", tmp_path / "x.json", tmp_path / "v.csv"
    argv = [
        "theory",
        *TINY,
        "--out",
        str(out),
        "--matrices",
        str(matrices),
        "--variance",
        str(variance),
    ]
    assert _main(argv) == 0
    printed = capsys.readouterr().out
    assert "first-layer theory, NoPE causal L1 d16 h2 LN gelu, 3 sequences x 8 tokens" in printed
    assert "relative entropy" in printed and "closed_form" in printed
    metrics = pd.read_csv(out)
    assert list(metrics.columns) == [
        "site",
        "prediction",
        "pearson_r",
        "rmse",
        "max_error",
        "ap_observed",
        "ap_predicted",
        "nc_observed",
        "nc_predicted",
    ]
    assert set(metrics["site"]) == {"attn_out", "resid_mid", "resid_post"}
    records = json.loads(matrices.read_text())
    assert len(records) == 3 * 3 * 8 * 8
    assert set(records[0]) == {"model", "site", "matrix", "pos", "pos_other", "value"}
    assert list(pd.read_csv(variance).columns) == [
        "site",
        "pos",
        "observed",
        "predicted",
        "closed_form",
    ]


def test_theory_attention_scale_zero_gives_uniform_attention(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert _main(["theory", *TINY, "--attention-scale", "0", "--attn-only", "--out", str(out)]) == 0
    assert "relative entropy 1.000 (1 = uniform)" in capsys.readouterr().out
    assert {row["site"] for row in json.loads(out.read_text())} == {"attn_out", "resid_mid"}


def test_theory_sharpness_study(tmp_path, capsys):
    out = tmp_path / "study.csv"
    assert _main(["theory", *TINY, "--sharpness-study", "--scales", "0,8", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "attention-sharpness study" in captured.out and f"wrote {out}" in captured.out
    assert captured.err.splitlines()[-1].startswith("sharpness study: 100% 2/2"), captured.err
    study = pd.read_csv(out)
    assert sorted(study["scale"].unique()) == [0.0, 8.0]
    assert {
        "scale",
        "attention_entropy",
        "relative_entropy",
        "max_attention",
        "site",
        "prediction",
        "pearson_r",
        "rmse",
        "max_error",
    } <= set(study.columns)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seq-len", "2"], "must hold sequences of at least 3 tokens"),
        (["--seq-len", "20"], "--seq-len option (20) is longer than the model's n_ctx (12)"),
        (["--out", "m.parquet"], "--out must be a path ending in '.csv' or '.json'"),
        (["--scales", "0,1"], "--scales is only used with --sharpness-study"),
        (["--sharpness-study", "--matrices", "x.csv"], "not written by --sharpness-study"),
        (["--attention-scale", "-1"], "'scale' parameter of query_scale_hooks"),
    ],
)
def test_theory_bad_arguments(extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _main(["theory", *TINY, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_theory_bad_scales_are_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _main(["theory", *TINY, "--sharpness-study", "--scales", "0,sharp"])
    assert exit_info.value.code == 2
    assert "--scales takes comma-separated numbers" in capsys.readouterr().err
