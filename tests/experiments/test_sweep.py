"""Sweeps: grid expansion and ids, up-front validation, resume, executors, summaries."""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import logging
import math
import pickle

import pandas as pd
import pytest
from grids import TINY

SCORE_COLUMNS = [
    "site",
    "layer",
    "metric",
    "value",
    "chance",
    "ci_low",
    "ci_high",
    "n_seqs",
    "seq_len",
]


@pytest.fixture
def sw():
    """The nopelens.experiments package (``nopelens.sweep`` is its main function)."""
    return importlib.import_module("nopelens.experiments")


@pytest.fixture
def runner():
    """The module whose ``run_config`` the sweep submits (the one to monkeypatch)."""
    return importlib.import_module("nopelens.experiments.runner")


@pytest.fixture
def counting(sw, runner, monkeypatch):
    """Replace run_config by a wrapper recording the ids it runs."""
    calls: list[str] = []
    real = runner.run_config

    def wrapper(config):
        calls.append(sw.config_id(config))
        return real(config)

    monkeypatch.setattr(runner, "run_config", wrapper)
    return calls


def _lines(path):
    return path.read_bytes().split(b"\n")


# grids and ids --------------------------------------------------------------------------------


def test_expand_grid_order_defaults_and_duplicates(sw):
    configs = sw.expand_grid({"d_model": [16, 32], "seed": [0, 1], "n_heads": 2})
    assert [(c["d_model"], c["seed"]) for c in configs] == [(16, 0), (16, 1), (32, 0), (32, 1)]
    assert all(set(c) == set(sw.DEFAULTS) for c in configs)
    assert configs[0]["n_heads"] == 2 and configs[0]["normalization_type"] == "LN"
    # a list of grids is concatenated; the repeated configuration is kept once
    union = sw.expand_grid([{"seed": [0, 1]}, {"seed": [1, 2]}])
    assert [c["seed"] for c in union] == [0, 1, 2]
    # aliases and None normalisation
    (config,) = sw.expand_grid({"normalization": [None], "init_range": [1]})
    assert config["normalization_type"] == "none" and config["initializer_range"] == 1.0


def test_config_ids_are_stable(sw):
    base = sw.config_id({})
    assert base == sw.config_id(sw.DEFAULTS)
    assert base == sw.config_id({"d_model": 64, "device": "cuda"})  # device is not science
    assert sw.config_id({"seed": 0, "d_model": 32}) == sw.config_id({"d_model": 32, "seed": 0})
    assert sw.config_id({"init_range": 0.5}) == sw.config_id({"initializer_range": 0.5})
    assert len({sw.config_id({"seed": s}) for s in range(20)}) == 20
    # golden values: ids must not change between runs, processes or versions silently. An
    # explicit data_seed=0 (a shared batch) is what every configuration meant before data_seed
    # defaulted to None (a batch of its own), and keeps its old id; so do task=None configs.
    assert sw.config_id({"data_seed": 0}) == "5832a637b2a3"
    assert sw.config_id({"data_seed": 0, "task": None, "train_steps": None}) == "5832a637b2a3"
    assert base == "e8ae3e784bd8"


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"d_modle": [64]}, r"unknown key 'd_modle'\. Did you mean 'd_model'"),
        (
            {"d_model": [30], "n_heads": [4]},
            r"configuration \(d_model=30, n_heads=4\): The 'n_heads' setting must divide",
        ),
        ({"seq_len": [64], "n_ctx": [32]}, r"seq_len=64 is longer than n_ctx=32"),
        (
            {"normalization_type": ["LN", "BatchNorm"]},
            r"grid\['normalization_type'\] = 'BatchNorm'",
        ),
        (
            {"d_model": [64, 64.0]},
            r"grid\['d_model'\] = 64\.0: the 'd_model' setting must be an int",
        ),
        ({"attn_only": [True], "sites": ["resid_mid"]}, r"site 'resid_mid' does not exist"),
        ({"ablation": ["remove_residual:3"]}, r"names block 3 but the model has n_layers=2"),
        ({"sites": [["resid_post"], ["attn_out"]]}, r"sites are not a swept axis"),
        ([{"seed": [0]}, {"n_heads": [0]}], r"grid\[1\]\['n_heads'\] = 0"),
    ],
)
def test_bad_grids_are_rejected_before_anything_runs(sw, counting, tmp_path, grid, match):
    with pytest.raises(ValueError, match=match):
        sw.sweep(grid, out_dir=tmp_path / "out", max_workers=1, progress=False)
    assert counting == []
    assert not (tmp_path / "out").exists()


def test_every_problem_is_listed_at_once(sw):
    with pytest.raises(ValueError) as info:
        sw.expand_grid(
            {"d_model": [30, 64], "n_heads": [4], "act_fn": ["gelu", "swishy"], "seed": [-1]}
        )
    text = str(info.value)
    assert "'act_fn'] = 'swishy'" in text and "'seed'] = -1" in text
    # combination problems are checked once values are valid, and repeats are counted
    with pytest.raises(ValueError, match=r"and 2 more configurations"):
        sw.expand_grid({"d_model": [30], "n_heads": [4], "seed": [0, 1, 2]})


def test_presets_expand_and_cover_the_brief(sw):
    sizes = {name: len(sw.expand_grid(grid)) for name, grid in sw.PRESETS.items()}
    assert set(sizes) >= {"paper", "length", "controls"}
    assert all(n > 0 for n in sizes.values())
    lengths = {c["seq_len"] for c in sw.expand_grid(sw.PRESETS["length"])}
    assert min(lengths) == 16 and max(lengths) >= 1024
    controls = sw.expand_grid(sw.PRESETS["controls"])
    assert {c["positional"] for c in controls} == {"none", "learned", "rotary", "alibi"}
    assert {c["attention"] for c in controls} == {"causal", "bidirectional"}
    paper = sw.expand_grid(sw.PRESETS["paper"])
    assert {c["normalization_type"] for c in paper} == {"LN", "LNPre", "RMS", "none"}
    with pytest.raises(ValueError, match="'paper', 'length'"):
        sw.preset("papers")


def test_hybrid_nope_layers_is_a_list_valued_axis(sw):
    hybrid = sw.expand_grid(sw.PRESETS["hybrid"])
    variants = {tuple(c["nope_layers"]) for c in hybrid}
    assert variants == {(), (0,), (3, 7), (1, 3, 5, 7), tuple(range(8))}
    # The default (no NoPE block) keeps the ids published before the setting existed.
    assert sw.config_id({"data_seed": 0, "nope_layers": []}) == "5832a637b2a3"
    # One id per set of blocks, whatever the order given.
    assert sw.config_id({"positional": "rotary", "nope_layers": [3, 1]}) == sw.config_id(
        {"positional": "rotary", "nope_layers": [1, 3]}
    )
    config = {
        **{k: v[0] for k, v in TINY.items()},
        "n_layers": 3,
        "positional": "rotary",
        "nope_layers": [1],
        "data_seed": 0,  # the same batch for both variants
    }
    rows = sw.run_config(config)
    marked = {r["layer"] for r in rows if r["nope"]}
    assert marked == {"1"}, marked  # sweep rows carry layers as text ("embed", "0", ...)
    plain = sw.run_config({**config, "nope_layers": []})
    assert not any(r["nope"] for r in plain)
    # Blocks before the NoPE block are unchanged; from it on the hidden states differ.
    by_layer = {(r["layer"], r["metric"]): r["value"] for r in rows}
    plain_by_layer = {(r["layer"], r["metric"]): r["value"] for r in plain}
    for metric in ("adjacency_probability", "neighborhood_concordance"):
        assert by_layer[("0", metric)] == plain_by_layer[("0", metric)]
    assert (
        by_layer[("2", "neighborhood_concordance")]
        != plain_by_layer[("2", "neighborhood_concordance")]
    )
    for grid, match in [
        ({"nope_layers": [[1]]}, r"cannot be used with positional='none'"),
        ({"positional": ["rotary"], "nope_layers": [[5]]}, r"must hold block indices"),
    ]:
        with pytest.raises(ValueError, match=match):
            sw.expand_grid(grid)


def test_load_grid_json_and_toml(sw, tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"grids": [{"d_model": [32]}, {"seed": 3}]}))
    assert sw.load_grid(path) == [{"d_model": [32]}, {"seed": [3]}]
    path = tmp_path / "grid.toml"
    path.write_text('sites = ["resid_post", "attn_out"]\nnormalization = ["LN", "none"]\n')
    assert sw.load_grid(path) == [
        {"sites": [["resid_post", "attn_out"]], "normalization_type": ["LN", "none"]}
    ]
    path.write_text("[[grids]]\nseed = [0, 1]\n[[grids]]\nd_model = 32\n")
    assert sw.load_grid(path) == [{"seed": [0, 1]}, {"d_model": [32]}]
    path.write_text("d_modl = [1]\n")
    with pytest.raises(ValueError, match="unknown key 'd_modl'"):
        sw.load_grid(path)
    path.write_text("d_model = [1\n")
    with pytest.raises(ValueError, match="not valid toml"):
        sw.load_grid(path)
    (tmp_path / "grid.yaml").write_text("{}")
    with pytest.raises(ValueError, match=r"must end in '\.json' or '\.toml'"):
        sw.load_grid(tmp_path / "grid.yaml")
    with pytest.raises(FileNotFoundError):
        sw.load_grid(tmp_path / "missing.json")


# the job --------------------------------------------------------------------------------------


def test_run_config_is_deterministic_picklable_and_applies_ablations(sw):
    assert pickle.loads(pickle.dumps(sw.run_config)) is sw.run_config
    config = {**{k: v[0] for k, v in TINY.items()}, "n_layers": 2, "sites": ["resid_mid"]}
    rows = sw.run_config(config)
    assert set(SCORE_COLUMNS) <= set(rows[0])
    assert {r["config_id"] for r in rows} == {sw.config_id(config)}
    again = sw.run_config(config)
    assert [r["value"] for r in again] == [r["value"] for r in rows]
    ablated = sw.run_config({**config, "ablation": "remove_residual:0"})
    assert [r["value"] for r in ablated] != [r["value"] for r in rows]
    with pytest.raises(ValueError, match="must divide"):
        sw.run_config({"d_model": 30, "n_heads": 4})


def test_kept_models_give_the_rows_of_fresh_builds(sw, monkeypatch):
    """A worker redraws a kept model of the same architecture: same rows as building it anew."""
    from nopelens.experiments import kept_models

    base = {**{k: v[0] for k, v in TINY.items()}, "n_layers": 2}
    configs = [
        {**base, "seed": seed, "init_mode": mode}
        for seed in (0, 1, 2)
        for mode in ("gpt2", "xavier_normal")
    ]

    def rows(config):
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in sw.run_config(config)]

    monkeypatch.setattr(kept_models, "_KEPT", {})
    warm = [rows(config) for config in configs]  # from the third on, a kept model is redrawn
    assert len(kept_models._KEPT) == 2
    cold = []
    for config in configs:
        kept_models._KEPT.clear()
        cold.append(rows(config))
    assert warm == cold
    monkeypatch.setattr(kept_models, "_KEEP_MODELS", 1)
    for config in configs[:2]:
        rows(config)
    assert len(kept_models._KEPT) == 1
    monkeypatch.setattr(kept_models, "_KEEP_BYTES", 1000)  # a larger model is not kept
    rows(configs[0])
    assert not kept_models._KEPT


def test_threads_of_one_process_never_share_a_kept_model(sw, monkeypatch):
    from nopelens.experiments import kept_models

    configs = [{**{k: v[0] for k, v in TINY.items()}, "n_layers": 2, "seed": s} for s in range(6)]
    monkeypatch.setattr(kept_models, "_KEPT", {})
    alone = [sw.run_config(c) for c in configs]
    kept_models._KEPT.clear()
    with cf.ThreadPoolExecutor(3) as pool:
        together = list(pool.map(sw.run_config, configs))
    for a, b in zip(alone, together, strict=True):
        assert [r["value"] for r in a] == [r["value"] for r in b]
    assert len(kept_models._KEPT) == 1


# running and resuming ---------------------------------------------------------------------------


@pytest.mark.parametrize("interrupt", [RuntimeError, KeyboardInterrupt])
def test_resume_after_interruption_runs_only_missing_configs(
    sw, runner, monkeypatch, tmp_path, interrupt
):
    grid = {**TINY, "seed": [0, 1, 2, 3]}
    ids = [sw.config_id(c) for c in sw.expand_grid(grid)]
    real = runner.run_config
    calls: list[str] = []

    class Boom(Exception):
        pass

    def flaky(config):
        if len(calls) == 2:
            raise Boom("worker died") if interrupt is RuntimeError else KeyboardInterrupt
        calls.append(sw.config_id(config))
        return real(config)

    monkeypatch.setattr(runner, "run_config", flaky)
    with pytest.raises(interrupt) as info:
        sw.sweep(grid, out_dir=tmp_path, max_workers=1, progress=False)
    if interrupt is RuntimeError:
        assert ids[2] in str(info.value) and isinstance(info.value.__cause__, Boom)
    lines = _lines(tmp_path / "results.jsonl")
    assert lines[-1] == b"" and len(lines) == 3  # two whole lines, nothing partial
    assert [json.loads(line)["config_id"] for line in lines[:-1]] == ids[:2]

    calls.clear()
    monkeypatch.setattr(
        runner, "run_config", lambda config: (calls.append(sw.config_id(config)), real(config))[1]
    )
    frame = sw.sweep(grid, out_dir=tmp_path, max_workers=1, progress=False)
    assert calls == ids[2:]
    assert list(dict.fromkeys(frame["config_id"])) == ids
    calls.clear()
    sw.sweep(grid, out_dir=tmp_path, max_workers=1, progress=False)
    assert calls == []


def test_truncated_last_line_is_ignored_then_repaired(sw, counting, tmp_path, caplog):
    grid = {**TINY, "seed": [0, 1, 2]}
    ids = [sw.config_id(c) for c in sw.expand_grid(grid)]
    sw.sweep(grid, out_dir=tmp_path, max_workers=1, progress=False)
    path = tmp_path / "results.jsonl"
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last_start + (len(data) - last_start) // 2])  # torn final write
    with caplog.at_level(logging.WARNING, logger="nopelens.experiments.records"):
        assert list(sw.read_records(tmp_path)) == ids[:2]
    assert "truncated last line" in caplog.text
    assert sw.read_results(tmp_path)["config_id"].nunique() == 2

    counting.clear()
    frame = sw.sweep(grid, out_dir=tmp_path, max_workers=1, progress=False)
    assert counting == ids[2:]
    assert frame["config_id"].nunique() == 3
    lines = _lines(path)
    assert lines[-1] == b"" and [json.loads(x)["config_id"] for x in lines[:-1]] == ids


def test_unreadable_lines_are_skipped(sw, tmp_path, caplog):
    grid = {**TINY, "seed": [0]}
    sw.sweep(grid, out_dir=tmp_path, max_workers=1, progress=False)
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"{not json\n" + path.read_bytes() + b"[1, 2]\n")
    with caplog.at_level(logging.WARNING, logger="nopelens.experiments.records"):
        assert len(sw.read_records(path)) == 1
    assert "unreadable line 1" in caplog.text and "line 3" in caplog.text


def test_max_configs_and_grid_filter(sw, counting, tmp_path):
    grid = {**TINY, "seed": [0, 1, 2]}
    frame = sw.sweep(grid, out_dir=tmp_path, max_workers=1, progress=False, max_configs=1)
    assert len(counting) == 1 and frame["config_id"].nunique() == 1
    sw.sweep({**TINY, "seed": [7]}, out_dir=tmp_path, max_workers=1, progress=False)
    assert sw.read_results(tmp_path)["config_id"].nunique() == 2
    assert sw.read_results(tmp_path, grid=grid)["config_id"].nunique() == 1
    manifest = json.loads((tmp_path / "grid.json").read_text())
    assert manifest["n_configs"] == 1


def test_results_frame_is_tidy(sw, tmp_path):
    frame = sw.sweep({**TINY, "seed": [0, 1]}, out_dir=tmp_path, max_workers=1, progress=False)
    assert list(frame.columns[:2]) == ["config_id", "n_layers"]
    assert set(SCORE_COLUMNS) | {"elapsed_s", "seed", "normalization_type"} <= set(frame.columns)
    assert "sites" not in frame.columns
    per_config = frame.groupby("config_id").size()
    assert per_config.nunique() == 1  # same rows for every configuration


def test_other_executor_through_the_seam(sw, tmp_path):
    grid = {**TINY, "seed": [0, 1, 2]}
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        frame = sw.sweep(grid, out_dir=tmp_path, executor=pool, max_workers=2, progress=False)
        assert pool.submit(lambda: 1).result() == 1  # the caller's executor is not shut down
    assert frame["config_id"].nunique() == 3
    with pytest.raises(ValueError, match="concurrent.futures.Executor"):
        sw.sweep(grid, out_dir=tmp_path, executor=object(), progress=False)


def test_process_pool_matches_in_process_run_and_is_kept_between_sweeps(sw, runner, tmp_path):
    workers = importlib.import_module("nopelens.experiments.workers")  # keeps the pool
    grid = {**TINY, "seed": [0, 1]}
    pooled = sw.sweep(grid, out_dir=tmp_path / "pool", max_workers=2, progress=False)
    pool = workers._POOL["pool"]
    again = sw.sweep(grid, out_dir=tmp_path / "again", executor="local", max_workers=2)
    assert workers._POOL["pool"] is pool  # the workers (and their imports) are reused
    local = sw.sweep(grid, out_dir=tmp_path / "local", max_workers=1, progress=False)
    columns = ["config_id", "site", "layer", "metric", "value", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(pooled[columns], local[columns])
    pd.testing.assert_frame_equal(again[columns], local[columns])
    sw.shutdown_local_pool()
    assert "pool" not in workers._POOL
    sw.shutdown_local_pool()  # idempotent


def test_executor_and_address_arguments_are_checked(sw, counting, tmp_path):
    with pytest.raises(ValueError, match=r"'executor' parameter of sweep must be one of 'local'"):
        sw.sweep(TINY, out_dir=tmp_path, executor="dask", progress=False)
    with pytest.raises(ValueError, match=r"'address' parameter of sweep .* needs executor='ray'"):
        sw.sweep(TINY, out_dir=tmp_path, address="10.0.0.5:6379", progress=False)
    with pytest.raises(ValueError, match=r"'executor' parameter of reproduce must be one of"):
        sw.reproduce(tmp_path / "r", profile="test", executor="dask")
    assert counting == []


def test_the_driver_appends_each_configuration_once(sw, runner, tmp_path):
    (config,) = sw.expand_grid({**TINY, "seed": [0]})
    rows = sw.run_config(config)
    with runner.ResultWriter(tmp_path / "r.jsonl", total=2, progress=False) as writer:
        assert writer.add(config, rows) is True
        assert writer.add(config, rows) is False  # a retried task reporting twice
    assert len(sw.read_records(tmp_path / "r.jsonl")) == 1
    assert len(_lines(tmp_path / "r.jsonl")) == 2  # one line and the final newline


# token batches and trained-model sweeps ---------------------------------------------------------


def test_each_configuration_has_its_own_batch_unless_data_seed_is_set(sw, runner):
    import torch

    own = sw.expand_grid({**TINY, "seed": [0, 1]})
    shared = sw.expand_grid({**TINY, "seed": [0, 1], "data_seed": [5]})
    assert all(c["data_seed"] is None for c in own)
    seeds = [sw.data_seed_of(c) for c in own]
    assert seeds == [int(sw.config_id(c), 16) for c in own] and seeds[0] != seeds[1]
    assert [sw.data_seed_of(c) for c in shared] == [5, 5]
    a, b = (sw.config_tokens(c) for c in own)
    assert not torch.equal(a, b)
    c, d = (sw.config_tokens(c) for c in shared)
    assert torch.equal(c, d)
    # the id (hence the batch) does not depend on the device
    assert sw.data_seed_of({**own[0], "device": "cuda"}) == seeds[0]
    # a batch handed over by the caller (a shared one sent once) gives the same rows
    given = sw.run_config(shared[1], c)
    drawn = sw.run_config(shared[1])
    assert [{**r, "elapsed_s": 0} for r in given] == [{**r, "elapsed_s": 0} for r in drawn]


TRAINED = {
    "task": ["parity"],
    "positional": ["none", "learned"],
    "n_layers": [1],
    "d_model": [16],
    "n_heads": [2],
    "n_seqs": [8],
    "n_bootstrap": [10],
    "train_steps": [3],
}


def test_trained_model_sweep_is_a_grid_axis(sw, tmp_path):
    from nopelens.training import get_task

    configs = sw.expand_grid(TRAINED)
    task = get_task("parity")
    assert [c["positional"] for c in configs] == ["none", "learned"]
    assert all((c["d_vocab"], c["seq_len"]) == (task.d_vocab, task.seq_len) for c in configs)
    assert sw.config_id(configs[0]) != sw.config_id({**configs[0], "task": None})
    frame = sw.sweep(TRAINED, out_dir=tmp_path, max_workers=1, progress=False)
    assert set(frame["task"]) == {"parity"} and set(frame["train_steps"]) == {3}
    assert frame["test_accuracy"].between(0, 1).all()
    assert (frame["chance_accuracy"] == task.chance).all()
    assert frame["config_id"].nunique() == 2
    # the tokens are held-out test examples of the task, drawn with the configuration's seed
    expected = task.sample(8, split="test", generator=sw.data_seed_of(configs[0])).tokens
    assert bool((sw.config_tokens(configs[0]) == expected).all())


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({"task": ["sum"]}, r"grid\['task'\] = 'sum': the 'task' setting must be None"),
        ({"task": ["parity"], "seq_len": [32]}, r"task='parity' fixes seq_len=\d+; got seq_len=32"),
        ({"train_steps": [10]}, r"train_steps=10 needs a task"),
        ({"task": ["parity"], "train_steps": [0]}, r"'train_steps' setting must be an int >= 1"),
    ],
)
def test_bad_trained_grids_are_rejected(sw, grid, match):
    with pytest.raises(ValueError, match=match):
        sw.expand_grid(grid)


def test_a_second_sweep_on_the_same_folder_is_refused(sw, counting, tmp_path):
    from faultkit import held_by_another_process

    from nopelens.validation import LockHeldError

    with held_by_another_process(tmp_path) as pid:
        with pytest.raises(LockHeldError, match=f"sweep folder .* is in use by pid {pid} "):
            sw.sweep(TINY, out_dir=tmp_path, max_workers=1, progress=False)
    assert counting == []
    assert not (tmp_path / "results.jsonl").exists()


def test_public_functions_survive_importing_their_modules():
    import nopelens
    import nopelens.experiments.reproduction
    import nopelens.experiments.runner

    assert nopelens.sweep is nopelens.experiments.runner.sweep
    assert nopelens.experiments.sweep is nopelens.experiments.runner.sweep
    assert nopelens.reproduce is nopelens.experiments.reproduction.reproduce


# summaries --------------------------------------------------------------------------------------


def _synthetic():
    """NC ~0.8 for sequences < 512 and at chance from 512 on; act_fn 'solu_ln' always at chance."""
    rows = []
    for seq_len in (16, 32, 512, 1024):
        for act_fn in ("gelu", "relu", "solu_ln"):
            for seed in range(3):
                good = seq_len < 512 and act_fn != "solu_ln"
                value = (0.8 if good else 0.49) + 0.01 * seed
                rows.append(
                    {
                        "config_id": f"{seq_len}-{act_fn}-{seed}",
                        "seq_len": seq_len,
                        "act_fn": act_fn,
                        "seed": seed,
                        "n_layers": 2,
                        "site": "resid_post",
                        "layer": "1",
                        "metric": "NC",
                        "value": value,
                        "chance": 0.5,
                        "ci_low": value - 0.05,
                        "ci_high": value + 0.05,
                    }
                )
                rows.append(
                    {**rows[-1], "layer": "embed", "value": 0.5, "ci_low": 0.45, "ci_high": 0.55}
                )
    return pd.DataFrame(rows)


def _t_interval(excess):
    from scipy import stats

    n = len(excess)
    mean = sum(excess) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in excess) / (n - 1))
    half = stats.t.ppf(0.975, df=n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_summarize_synthetic_results(sw):
    summary = sw.summarize(_synthetic())
    assert set(summary["param"]) == {"seq_len", "act_fn"}  # seeds are replicates
    assert list(summary.columns[:5]) == ["param", "value", "site", "layer", "metric"]
    layer1 = summary[summary["layer"] == "1"].set_index(["param", "value"])
    # gelu: 6 configurations at 0.80/0.81/0.82 (seq_len < 512) and 6 at 0.49/0.50/0.51
    mean, low, high = _t_interval([0.30, 0.31, 0.32] * 2 + [-0.01, 0.0, 0.01] * 2)
    row = layer1.loc[("act_fn", "gelu")]
    assert row["n_configs"] == 12 and row["frac_above"] == pytest.approx(0.5)
    assert row["frac_below"] == 0.0
    assert row["mean_excess"] == pytest.approx(mean)
    assert row["excess_ci_low"] == pytest.approx(low)
    assert row["excess_ci_high"] == pytest.approx(high)
    assert low > 0 and row["above_chance"] and row["verdict"] == "mixed"
    assert layer1.loc[("act_fn", "solu_ln"), "verdict"] == "fails"
    assert layer1.loc[("act_fn", "solu_ln"), "failing_range"] == "act_fn = 'solu_ln'"
    assert layer1.loc[("seq_len", 16), "frac_above"] == pytest.approx(2 / 3)
    assert layer1.loc[("seq_len", 512), "verdict"] == "fails"
    assert layer1.loc[("seq_len", 1024), "failing_range"] == "seq_len >= 512"

    healthy = sw.summarize(_synthetic().query("act_fn != 'solu_ln'"))
    by_len = healthy[(healthy["layer"] == "1") & (healthy["param"] == "seq_len")]
    assert list(by_len["verdict"]) == ["holds", "holds", "fails", "fails"]
    assert list(by_len["frac_above"]) == [1.0, 1.0, 0.0, 0.0]

    lines = sw.failure_ranges(summary)
    assert "NC at resid_post layer embed is not above chance in any configuration group" in lines
    (line,) = [x for x in lines if "layer 1" in x]
    assert line.startswith(
        "NC at resid_post layer 1 is not above chance for seq_len >= 512; "
        "act_fn = 'solu_ln'; above chance in only some configurations for "
        "seq_len = 16 (67%), seq_len = 32 (67%), act_fn = 'gelu' (50%)"
    )


def test_summarize_by_splits_interacting_settings(sw):
    frame = _synthetic()
    frame["attention"] = frame["seq_len"].map(lambda n: "causal" if n < 512 else "bidirectional")
    frame = frame.query("act_fn != 'solu_ln'").drop(columns="seq_len")
    pooled = sw.summarize(frame, layers="last")
    pooled = pooled[pooled["param"] == "act_fn"]
    assert set(pooled["verdict"]) == {"mixed"}  # half the configurations are bidirectional
    split = sw.summarize(frame, by=["attention"], layers="last")
    assert list(split.columns[:4]) == ["param", "value", "attention", "site"]
    verdicts = split.set_index(["value", "attention"])["verdict"]
    assert verdicts[("gelu", "causal")] == "holds"
    assert verdicts[("gelu", "bidirectional")] == "fails"
    assert (
        "NC at resid_post layer last with attention='bidirectional' is not above chance in "
        "any configuration group"
    ) in sw.failure_ranges(split)
    strict = sw.summarize(frame, by=["attention"], layers="last", margin=0.4)
    assert set(strict["verdict"]) == {"fails"}  # NC 0.8 is not 0.4 above chance
    with pytest.raises(ValueError, match="'by' parameter"):
        sw.summarize(frame, by=["nope"])


def test_summarize_ranges_last_layer_and_single_configs(sw):
    frame = _synthetic().query("act_fn == 'gelu' and seed == 0")
    frame = frame.assign(seq_len=frame["seq_len"].map({16: 16, 32: 64, 512: 256, 1024: 1024}))
    frame.loc[frame["seq_len"] == 16, ["value", "ci_low", "ci_high"]] = [0.5, 0.45, 0.55]
    summary = sw.summarize(frame, layers="last")
    assert set(summary["layer"]) == {"last"}
    by_value = summary.set_index("value")
    assert by_value.loc[16, "failing_range"] == "seq_len <= 16"
    assert by_value.loc[256, "failing_range"] == "seq_len >= 256"
    # one configuration per value: the interval is that configuration's own
    assert by_value.loc[64, "excess_ci_low"] == pytest.approx(0.25)
    assert sw.summarize(frame.iloc[:0]).empty
    with pytest.raises(ValueError, match="Missing"):
        sw.summarize(frame.drop(columns="chance"))
