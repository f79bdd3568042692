"""Sweeps refuse what does not fit in memory; summaries refuse a missing folder."""

from __future__ import annotations

import importlib

import pytest
from grids import TINY

#: The tiny grid with 10 bootstrap resamples.
GRID = {**TINY, "n_bootstrap": [10]}


@pytest.fixture
def runner():
    return importlib.import_module("nopelens.experiments.runner")


def test_a_grid_that_cannot_fit_is_refused_with_the_estimate(runner, monkeypatch, tmp_path):
    from nopelens.experiments import expand_grid, sweep
    from nopelens.memory import analysis_bytes, available_bytes, format_bytes

    configs = expand_grid({**GRID, "seq_len": [16, 100_000]})
    with pytest.raises(ValueError) as info:
        runner.check_sweep_memory(configs)
    message = str(info.value)
    big = configs[1]
    assert message.startswith(
        f"sweep would need about {format_bytes(analysis_bytes(big))} for configuration "
        f"{runner.config_id(big)} ("
    )
    assert "seq_len=100000" in message and "\n" not in message
    assert "of memory is available. Use smaller sizes in the grid" in message
    assert format_bytes(available_bytes())[:-4] in message  # the machine's available memory
    calls = []
    monkeypatch.setattr(runner, "run_config", lambda config: calls.append(config))
    with pytest.raises(ValueError, match="sweep would need about"):
        sweep({**GRID, "seq_len": [16, 100_000]}, out_dir=tmp_path, progress=False)
    assert calls == [] and not (tmp_path / "results.jsonl").exists()  # before anything ran


def test_run_config_checks_its_own_configuration(monkeypatch):
    from nopelens.experiments import run_config
    from nopelens.memory import AVAILABLE_ENV

    monkeypatch.setenv(AVAILABLE_ENV, str(2**16))  # 64 KiB: not even the model fits
    with pytest.raises(ValueError, match=r"sweep would need about .* for configuration \w{12} "):
        run_config({"n_layers": 1, "d_model": 16, "n_heads": 2, "seq_len": 8, "n_seqs": 4})


def test_workers_are_limited_to_what_fits(runner):
    from nopelens.experiments import expand_grid
    from nopelens.memory import analysis_bytes

    configs = expand_grid({**GRID, "seed": list(range(8))})
    peak = analysis_bytes(configs[0])
    fits = runner.check_sweep_memory(configs, max_workers=4, available=10 * peak)
    assert fits == {
        "peak_bytes": peak,
        "workers": 4,
        "total_bytes": 4 * peak,
        "available_bytes": 10 * peak,
    }
    with pytest.raises(
        ValueError, match=r"for 4 workers .* Use at most 2 worker\(s\) \(--workers 2\)"
    ):
        runner.check_sweep_memory(configs, max_workers=4, available=int(2.5 * peak))
    chosen = runner.check_sweep_memory(configs, max_workers=None, available=int(2.5 * peak))
    workers = importlib.import_module("nopelens.experiments.workers")
    assert chosen["workers"] == min(2, workers._available_cpus())


def test_summarize_of_a_missing_path_raises(tmp_path):
    from nopelens.experiments import summarize

    with pytest.raises(FileNotFoundError, match=r"No sweep results at '.*nowhere': no such file"):
        summarize(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"has no results.jsonl: not a sweep folder"):
        summarize(tmp_path)
    with pytest.raises(TypeError):  # under pytest the type checker may answer first
        summarize(3)
