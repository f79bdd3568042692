"""nopelens reproduce: the pipeline, its resume logic, and its numbers against the library."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import socket

import pandas as pd
import pytest

PART_NAMES = [
    "random_init",
    "sweep",
    "controls",
    "theory",
    "layer_theory",
    "length",
    "ablation",
    "trained",
    "probes",
    "hybrid",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of the ``test`` profile, shared by the tests of this module."""
    from nopelens.experiments import reproduce

    out = tmp_path_factory.mktemp("reproduce")
    summary = reproduce(out, profile="test", progress=False)
    return out, summary


def _records(summary, part, table):
    return pd.DataFrame(summary["parts"][part]["tables"][table])


def _close(a, b, tol=1e-6):
    if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return abs(a - b) <= tol


def _assert_scores_equal(stored: pd.DataFrame, direct: pd.DataFrame, label: str) -> None:
    keys = ["site", "layer", "metric"]
    merged = stored.merge(direct, on=keys, suffixes=("_stored", "_direct"), validate="1:1")
    assert len(merged) == len(direct), f"{label}: rows differ"
    for column in ("value", "chance", "ci_low", "ci_high"):
        for a, b in zip(merged[f"{column}_stored"], merged[f"{column}_direct"], strict=True):
            assert _close(a, b), f"{label}: {column} stored {a} != direct {b}"


def test_summary_is_valid_and_complete(run):
    from nopelens.experiments import PROFILES

    out, summary = run
    on_disk = json.loads((out / "summary.json").read_text())
    from nopelens.files import to_jsonable

    assert on_disk == json.loads(json.dumps(to_jsonable(summary)))  # NaN -> null on disk
    assert on_disk["profile"] == "test"
    assert on_disk["profile_config"]["seeds"] == list(PROFILES["test"].seeds)
    assert on_disk["part_order"] == list(summary["parts"]) == PART_NAMES
    assert on_disk["transformer_lens_version"].startswith("3.")
    for name, part in on_disk["parts"].items():
        assert part["reused"] is False
        assert part["config"]["seeds"] == [0] and part["config"]["data_seed"] == 0
        assert part["numbers"], name
        assert (out / "parts" / name / "done.json").is_file()
        for path in part["files"]:
            assert (out / path).is_file(), path
    assert on_disk["parts"]["probes"]["config"]["inputs"]["trained"]["positional"] == [
        "none",
        "learned",
    ]
    page = (out / "dashboard.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    for heading in (
        "Summary numbers",
        "Random-init NoPE: self-similarity by layer",
        "Layer-0 theory vs observation",
        "Position probes: cosine vs variance",
        "Trained models",
        "Sequence length",
        "Ablations",
    ):
        assert heading in page, heading
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=[\"']?https?:", page)


def test_numbers_match_the_library_called_directly(run):
    from nopelens import (
        analyze,
        build_model,
        first_layer_theory,
        probe_positions,
        random_tokens,
    )
    from nopelens.experiments import PROFILES

    _, summary = run
    prof = PROFILES["test"]
    tokens = random_tokens(prof.n_seqs, prof.seq_len, prof.model["d_vocab"], seed=prof.data_seed)
    model = build_model(**prof.model, n_ctx=prof.seq_len, seed=prof.seeds[0])

    sites = tuple(prof.parts["random_init"]["sites"])
    report = analyze(model, tokens, sites=sites, n_bootstrap=prof.n_bootstrap, seed=prof.data_seed)
    stored = _records(summary, "random_init", "scores")
    _assert_scores_equal(stored[stored["seed"] == prof.seeds[0]], report.scores, "random_init")

    # The controls go through nopelens.sweep; its learned-position cell must be the same model.
    learned = build_model(
        **prof.model, n_ctx=prof.seq_len, seed=prof.seeds[0], positional="learned"
    )
    direct = analyze(
        learned, tokens, sites="resid_post", n_bootstrap=prof.n_bootstrap, seed=prof.data_seed
    ).scores
    stored = _records(summary, "controls", "results")
    stored = stored[(stored["positional"] == "learned") & (stored["attention"] == "causal")]
    _assert_scores_equal(stored[direct.columns.tolist()], direct, "controls learned/causal")

    distinct = random_tokens(
        prof.n_seqs, prof.seq_len, prof.model["d_vocab"], seed=prof.data_seed, distinct=True
    )
    theory = first_layer_theory(model, distinct)
    stored = _records(summary, "theory", "metrics")
    for (_, a), (_, b) in zip(stored.iterrows(), theory.metrics.iterrows(), strict=True):
        assert (a["site"], a["prediction"]) == (b["site"], b["prediction"])
        for column in ("pearson_r", "rmse", "ap_observed", "nc_predicted"):
            assert _close(a[column], float(b[column])), column
    numbers = summary["parts"]["theory"]["numbers"]
    pattern = theory.metrics[
        (theory.metrics["site"] == "attn_out") & (theory.metrics["prediction"] == "pattern")
    ].iloc[0]
    assert _close(numbers["attn_out pattern"]["pearson_r"], float(pattern["pearson_r"]))

    settings = prof.parts["probes"]
    probe_tokens = random_tokens(
        settings["n_seqs"], prof.seq_len, prof.model["d_vocab"], seed=prof.data_seed
    )
    probes = probe_positions(
        model,
        probe_tokens,
        sites=tuple(settings["sites"]),
        features=tuple(settings["features"]),
        probes=tuple(settings["probes"]),
        seeds=tuple(settings["seeds"]),
        equal_dim=settings["equal_dim"],
        drop_first=settings["drop_first"],
    )
    stored = _records(summary, "probes", "results")
    stored = stored[stored["subject"] == "random-init NoPE"]
    keys = ["model", "site", "layer", "feature", "capacity", "probe", "target", "metric"]
    merged = stored.merge(probes.results, on=keys, suffixes=("_stored", "_direct"))
    assert len(merged) == len(probes.results) > 0
    for a, b in zip(merged["value_stored"], merged["value_direct"], strict=True):
        assert _close(a, b), (a, b)


def test_parts_agree_with_each_other(run):
    _, summary = run
    parts = summary["parts"]
    # Same model, tokens and bootstrap seed: random_init (last block), the NoPE/causal control
    # cell and the un-ablated condition are one measurement.
    last = parts["random_init"]["numbers"]["layer 1"]
    assert parts["controls"]["numbers"]["none / causal"] == pytest.approx(last)
    assert parts["ablation"]["numbers"]["none"] == pytest.approx(last)


def test_cli_rerun_reuses_finished_parts(run, capsys):
    from nopelens.cli.app import main

    out, first = run
    markers = {name: (out / "parts" / name / "done.json") for name in PART_NAMES}
    before = {name: (path.stat().st_mtime_ns, path.read_text()) for name, path in markers.items()}
    assert main(["reproduce", "--out", str(out), "--profile", "test", "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"{out.resolve()}/summary.json" in printed and "dashboard.html" in printed
    assert f"reused {len(PART_NAMES)} finished part(s)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert all(part["reused"] for part in summary["parts"].values())
    for name, path in markers.items():
        assert (path.stat().st_mtime_ns, path.read_text()) == before[name], name
        assert summary["parts"][name]["numbers"] == json.loads(
            json.dumps(first["parts"][name]["numbers"])
        )


def test_bad_profile_is_rejected(tmp_path, capsys):
    from nopelens.cli.app import main
    from nopelens.experiments import reproduce

    with pytest.raises(
        ValueError,
        match="The 'profile' parameter of reproduce must be one of "
        "'test', 'quick', 'full'. Got 'fast' instead.",
    ):
        reproduce(tmp_path, profile="fast")
    assert main(["reproduce", "--out", str(tmp_path), "--profile", "fast"]) == 2
    err = capsys.readouterr().err  # the CLI may name the flag (--profile) instead of the parameter
    assert re.search(r"('profile' parameter of reproduce|--profile option) must be one of", err)
    assert not (tmp_path / "summary.json").exists()
    with pytest.raises(ValueError, match="The 'device' parameter of reproduce must be 'auto'"):
        reproduce(tmp_path, profile="test", device="gpu0")
    assert not (tmp_path / "parts").exists()


# -- the resume machinery, on a pipeline of cheap fake parts ----------------------------------


@pytest.fixture
def fake_pipeline(monkeypatch):
    """Replace the pipeline by two cheap parts that count their runs."""
    # Not `from nopelens import reproduce`: that name is the function once the lazy re-export ran.
    module = importlib.import_module("nopelens.experiments.reproduction")

    calls = {"first": 0, "second": 0}

    def make(name, needs=()):
        def run_part(ctx):
            calls[name] += 1
            scale = ctx.config["settings"]["scale"]
            base = ctx.inputs["first"].numbers["x"] if needs else 0.0
            frame = pd.DataFrame({"seed": list(ctx.profile.seeds), "value": scale})
            return module.PartResult(numbers={"x": base + scale}, tables={"t": frame})

        return module.Part(name, name.title(), run_part, lambda result: [], needs)

    monkeypatch.setattr(module, "PARTS", (make("first"), make("second", ("first",))))
    profile = dataclasses.replace(
        module.PROFILES["test"],
        name="fake",
        parts={"first": {"scale": 1.0}, "second": {"scale": 2.0}},
    )
    return module, profile, calls


def test_rerun_reuses_and_reruns_what_changed(fake_pipeline, tmp_path):
    module, profile, calls = fake_pipeline
    summary = module.reproduce(tmp_path, profile=profile, progress=False)
    assert calls == {"first": 1, "second": 1}
    assert summary["parts"]["second"]["numbers"] == {"x": 3.0}
    assert (tmp_path / "parts" / "first" / "t.csv").read_text().splitlines()[0] == "seed,value"

    module.reproduce(tmp_path, profile=profile, progress=False)
    assert calls == {"first": 1, "second": 1}

    # A changed setting reruns that part and the parts that read it.
    changed = dataclasses.replace(
        profile, parts={"first": {"scale": 5.0}, "second": {"scale": 2.0}}
    )
    summary = module.reproduce(tmp_path, profile=changed, progress=False)
    assert calls == {"first": 2, "second": 2}
    assert summary["parts"]["second"]["numbers"] == {"x": 7.0}

    # Changing only the second part keeps the first.
    changed2 = dataclasses.replace(
        changed, parts={"first": {"scale": 5.0}, "second": {"scale": 3.0}}
    )
    module.reproduce(tmp_path, profile=changed2, progress=False)
    assert calls == {"first": 2, "second": 3}

    # Other seeds are another experiment.
    module.reproduce(tmp_path, profile=dataclasses.replace(changed2, seeds=(1,)), progress=False)
    assert calls == {"first": 3, "second": 4}


def test_interrupted_or_damaged_parts_are_rerun(fake_pipeline, tmp_path):
    module, profile, calls = fake_pipeline
    module.reproduce(tmp_path, profile=profile, progress=False)
    # A part interrupted before its marker was written has no done.json.
    (tmp_path / "parts" / "second" / "done.json").unlink()
    summary = module.reproduce(tmp_path, profile=profile, progress=False)
    assert calls == {"first": 1, "second": 2}
    assert [p["reused"] for p in summary["parts"].values()] == [True, False]
    # A damaged result file is recomputed, not trusted.
    (tmp_path / "parts" / "first" / "result.sealed.pt").write_bytes(b"not a pickle")
    module.reproduce(tmp_path, profile=profile, progress=False)
    assert calls["first"] == 2


# -- compact reprs ----------------------------------------------------------------------------


def test_profile_repr_is_short_and_names_the_sizes():
    from nopelens.experiments import PROFILES

    for profile in PROFILES.values():
        text = repr(profile)
        assert len(text) < 600 and "\n" not in text
        assert text.startswith(f"Profile({profile.name!r}")
        for part in ("seq_len=", "n_seqs=", "n_bootstrap=", "seeds=", "random_init", "probes"):
            assert part in text
    assert "d_model=128" in repr(PROFILES["quick"])


def test_part_result_repr_is_short_and_names_the_headline_numbers():
    from nopelens.experiments import PartResult

    numbers = {f"layer {i}": {"AP": 0.5, "NC": 0.6} for i in range(20)}
    numbers = {"share_above": 0.98765, "model": "x" * 500, **numbers}
    frame = pd.DataFrame({"value": range(1000), "chance": 0.5})
    result = PartResult(numbers, tables={"scores": frame}, objects={"report": object()})
    text = repr(result)
    assert len(text) < 600 and "\n" not in text
    assert "share_above=0.988" in text and "scores 1000x2" in text and "objects: report" in text
    assert "(+16 more)" in text and "x" * 100 not in text
    assert repr(PartResult({})) == "PartResult(numbers: none)"


def test_parts_receive_the_executor_and_reuse_does_not_depend_on_it(fake_pipeline, tmp_path):
    module, profile, calls = fake_pipeline
    seen = []
    parts = []
    for part in module.PARTS:

        def run_part(ctx, inner=part.run):
            seen.append((ctx.executor, ctx.address))
            return inner(ctx)

        parts.append(dataclasses.replace(part, run=run_part))
    module.PARTS = tuple(parts)  # restored by the fixture's monkeypatch
    module.reproduce(tmp_path, profile=profile, progress=False)
    assert seen == [("local", None)] * 2
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'nopelens[ray]')")
    with pytest.raises(ValueError, match=r"no Ray cluster answers at '127\.0\.0\.1:1'"):
        module.reproduce(tmp_path, profile=profile, executor="ray", address="127.0.0.1:1")
    with socket.create_server(("127.0.0.1", 0)) as server:  # something answers there
        address = f"127.0.0.1:{server.getsockname()[1]}"
        summary = module.reproduce(
            tmp_path, profile=profile, progress=False, executor="ray", address=address
        )
    # the executor changes where sweeps run, not what they compute: finished parts are reused
    assert all(part["reused"] for part in summary["parts"].values())
    module.reproduce(tmp_path / "other", profile=profile, progress=False, executor="ray")
    assert seen[2:] == [("ray", None)] * 2
    assert calls == {"first": 2, "second": 2}
