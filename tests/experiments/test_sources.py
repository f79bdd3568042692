"""Sweeps over saved models and texts (the ``model`` and ``text`` settings): validation before any
work, unchanged ids, the same scores as ``nopelens analyze``, resume, stale files, ``--models``."""

from __future__ import annotations

import json
import re
import socket
import sysconfig
import warnings
from pathlib import Path

import pandas as pd
import pytest

SMALL = {"n_seqs": 4, "seq_len": 16, "n_bootstrap": 20, "data_seed": 0}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny Hugging Face folders with tokenizers (GPT-2 and Llama) and a checkpoint."""
    import nopelens
    from nopelens.models import write_tiny_hf_model

    root = tmp_path_factory.mktemp("models")
    sizes = {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_ctx": 32, "vocab_size": 260}
    gpt2 = write_tiny_hf_model(root / "gpt2", architecture="gpt2", **sizes)
    llama = write_tiny_hf_model(root / "llama", architecture="llama", seed=1, **sizes)
    model = nopelens.build_model(n_layers=1, d_model=16, n_heads=2, d_vocab=20, n_ctx=16)
    checkpoint = nopelens.save_model(model, root / "random.pt")
    return {"gpt2": str(gpt2), "llama": str(llama), "checkpoint": str(checkpoint)}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for name in ("textwrap.py", "heapq.py"):
        path = root / f"{name}.txt"
        path.write_text((stdlib / name).read_text(encoding="utf-8")[:3000], encoding="utf-8")
        out.append(str(path))
    return out


def _main(argv):
    from nopelens.cli.app import main

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return main(argv)


def _scores(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["site", "layer", "metric", "value", "chance", "ci_low", "ci_high"]
    return frame[columns].astype({"layer": str}).reset_index(drop=True)


def test_published_ids_are_unchanged():
    from nopelens.experiments import config_id, expand_grid, preset

    assert config_id(expand_grid(preset("paper")[0])[0]) == "6f7accc5aa48"  # published
    assert config_id({"task": "parity", "seed": 1}) == "2002756b0ad1"
    assert config_id({"model": None, "text": None}) == config_id({})


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"model": ["/no/such/model.pt"]}, r"'model' setting .*'/no/such/model.pt' does not exist"),
        ({"model": ["not-a-model-anywhere"]}, r"'model' setting .*no TransformerLens model name"),
        ({"text": ["stdlib"]}, r"text='stdlib' needs a model"),
    ],
)
def test_bad_sources_are_refused_before_any_work(grid, match):
    from nopelens.experiments import expand_grid

    with pytest.raises(ValueError, match=match):
        expand_grid(grid)


def test_settings_that_conflict_with_a_saved_model_are_named(models, texts):
    from nopelens.experiments import expand_grid

    with pytest.raises(ValueError, match=r"'text' setting .*'/no/such.txt' does not exist"):
        expand_grid({"model": [models["gpt2"]], "text": ["/no/such.txt"]})
    with pytest.raises(
        ValueError, match=r"fixes the architecture .* leave d_model, .*task out of the grid"
    ):
        expand_grid({"model": [models["gpt2"]], "d_model": [32], "task": ["parity"]})


def test_a_name_missing_from_the_local_cache_is_refused(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from nopelens.experiments import expand_grid

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"'model' setting .*'gpt2' .* not in the local Hugging"):
        expand_grid({"model": ["gpt2"]})


def test_paths_are_stored_absolute_and_memory_check_skips_saved_models(models, monkeypatch):
    from nopelens.experiments import check_sweep_memory, expand_grid

    folder = Path(models["gpt2"])
    monkeypatch.chdir(folder.parent)
    (config,) = expand_grid({"model": [folder.name]})
    assert config["model"] == str(folder)
    assert check_sweep_memory([config], max_workers=1)["peak_bytes"] == 0


def test_a_models_by_texts_sweep_equals_analyze_and_resumes(models, texts, tmp_path):
    import nopelens
    from nopelens.experiments import sweep
    from nopelens.experiments.sources import load_source, model_inputs

    grid = {"model": [models["gpt2"], models["llama"]], "text": texts, **SMALL}
    out = tmp_path / "out"
    first = sweep(grid, out_dir=out, max_workers=1, progress=False, max_configs=3)
    assert first["config_id"].nunique() == 3
    frame = sweep(grid, out_dir=out, max_workers=1, progress=False)  # runs the 4th only
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    assert frame[["model", "text"]].drop_duplicates().shape == (4, 2)
    assert frame["n_layers"].isna().all()  # a saved model's sizes are not grid settings
    for (source, text), rows in frame.groupby(["model", "text"], sort=False):
        model = load_source(source)
        tokens = model_inputs(model, text=text, n_seqs=4, seq_len=16).tokens
        report = nopelens.analyze(model, tokens, n_bootstrap=20, seed=0)
        pd.testing.assert_frame_equal(_scores(rows), _scores(report.scores), check_exact=True)
    again = sweep(grid, out_dir=out, max_workers=1, progress=False)  # nothing left to run
    pd.testing.assert_frame_equal(again, frame)


def test_the_cli_analyze_gives_the_sweep_row(models, texts, tmp_path):
    from nopelens.experiments import sweep

    grid = {"model": [models["llama"]], "text": [texts[0]], **SMALL}
    frame = sweep(grid, out_dir=tmp_path / "sweep", max_workers=1, progress=False)
    table = tmp_path / "analyze.csv"
    argv = ["analyze", "--model", models["llama"], "--text", texts[0], "--n-seqs", "4",
            "--seq-len", "16", "--n-bootstrap", "20", "--out", str(table), "-q"]  # fmt: skip
    assert _main(argv) == 0
    pd.testing.assert_frame_equal(_scores(frame), _scores(pd.read_csv(table)), check_exact=False)


def test_a_model_without_tokenizer_reads_random_tokens_and_nope_layers_strip(models, tmp_path):
    import nopelens
    from nopelens.experiments import run_config
    from nopelens.experiments.sources import load_source

    rows = run_config({"model": models["checkpoint"], **SMALL})
    model = load_source(models["checkpoint"])
    tokens = nopelens.random_tokens(4, 16, 20, seed=0)
    expected = nopelens.analyze(model, tokens, n_bootstrap=20, seed=0).scores
    assert _scores(pd.DataFrame(rows)).equals(_scores(expected))
    stripped = run_config({"model": models["llama"], "nope_layers": [0], **SMALL})
    assert pd.DataFrame(stripped)["nope"].all()


def test_a_training_run_reads_its_task_inputs_as_analyze_does(tmp_path):
    from nopelens.experiments import sweep

    run = tmp_path / "parity"
    train = ["train", "parity", "--out", str(run), "--task-arg", "length=4", "--n-layers", "1",
             "--d-model", "16", "--n-heads", "2", "--steps", "4", "--eval-every", "2",
             "--eval-batches", "1", "--batch-size", "8", "--quiet"]  # fmt: skip
    assert _main(train) == 0
    grid = {"model": [str(run)], "n_seqs": 4, "n_bootstrap": 20, "data_seed": 0}
    frame = sweep(grid, out_dir=tmp_path / "out", max_workers=1, progress=False)
    table = tmp_path / "analyze.csv"
    argv = ["analyze", "--model", str(run), "--n-seqs", "4", "--n-bootstrap", "20",
            "--out", str(table), "-q"]  # fmt: skip
    assert _main(argv) == 0
    expected = pd.read_csv(table)
    assert (frame["seq_len"] == expected["seq_len"].iloc[0]).all()  # the task's length, not 32
    pd.testing.assert_frame_equal(_scores(frame), _scores(expected), check_exact=False)


def test_a_changed_file_stops_the_resume(models, texts, tmp_path):
    from nopelens.experiments import sweep

    text = tmp_path / "text.txt"
    text.write_text(Path(texts[0]).read_text(encoding="utf-8"), encoding="utf-8")
    grid = {"model": [models["gpt2"]], "text": [str(text)], **SMALL}
    sweep(grid, out_dir=tmp_path / "out", max_workers=1, progress=False)
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert len(record["fingerprint"]) == 16
    text.write_text(text.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(text))}' changed since .* new out_dir"):
        sweep(grid, out_dir=tmp_path / "out", max_workers=1, progress=False)


def test_a_worker_that_cannot_see_the_path_names_path_and_host(tmp_path):
    from nopelens.experiments import run_config

    missing = str(tmp_path / "gone.pt")
    expected = re.escape(f"'{missing}' does not exist on host {socket.gethostname()}")
    with pytest.raises(ValueError, match=expected):
        run_config({"model": missing})


def test_saved_models_never_share_a_ray_batch(models, texts):
    from nopelens.experiments import expand_grid
    from nopelens.experiments.distributed import _batches

    configs = expand_grid({"model": [models["gpt2"]], "text": texts, **SMALL})
    assert [key for key, _ in _batches(configs, 4)] == [None]


def test_cli_sweep_models_and_texts(models, texts, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", "--models", models["gpt2"], models["llama"], "--texts", texts[1],
            "--out", str(out), "--workers", "1", "--set", "n_seqs=4", "--set", "seq_len=16",
            "--set", "n_bootstrap=20", "-q"]  # fmt: skip
    assert _main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 configurations finished (2 run now)" in printed
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["param"]) == {"model"}
    assert set(summary["value"]) == {models["gpt2"], models["llama"]}
    assert _main(["sweep", "--models", models["gpt2"], "--out", str(out), "--dry-run"]) == 0
    assert "Saved models are not in the estimate" in capsys.readouterr().out
    assert _main(["sweep", "--preset", "paper", "--texts", texts[0], "--out", str(out)]) == 2
    assert "--texts needs --models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _main(["sweep", "--models", models["gpt2"], "--preset", "paper", "--out", str(out)])
