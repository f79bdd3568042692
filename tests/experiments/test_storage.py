"""Part results on disk: exact round trips, no unpickling, tampering refused."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch


def _same(a, b, where="result"):
    """Exact equality of nested results: frames (dtypes, index, attrs), tensors, dataclasses."""
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(
            a, b, check_exact=True, check_column_type=True, check_index_type=True, obj=where
        )
        assert a.attrs == b.attrs, where
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for field in dataclasses.fields(a):
            _same(getattr(a, field.name), getattr(b, field.name), f"{where}.{field.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _awkward_frame():
    frame = pd.DataFrame(
        {
            "i": np.arange(4, dtype=np.int64),
            "i32": np.arange(4, dtype=np.int32),
            "u8": np.arange(4, dtype=np.uint8),
            "u32": np.arange(4, dtype=np.uint32),  # no torch dtype: stored as values
            "f": [0.1, np.nan, np.inf, -0.0],
            "f32": np.array([1.5, 2.5, np.nan, 3.0], dtype=np.float32),
            "b": [True, False, True, True],
            "s": ["embed", "0", "1", 'x,y\n"z"'],
            "mixed": ["default", 16, None, 0.5],  # what summarize puts in "value"
            "lists": [[1, 2], ["resid_post"], [], None],
            "cat": pd.Categorical(["a", "b", "a", "c"]),
        },
        index=pd.Index([10, 11, 12, 13], name="row"),
    )
    frame.attrs["margin"] = 0.1
    return frame


def test_frames_round_trip_exactly(tmp_path):
    from nopelens.experiments import PartResult
    from nopelens.experiments.storage import load_part_result, save_part_result

    frame = _awkward_frame()
    empty = pd.DataFrame({"x": pd.Series(dtype="float64"), "y": pd.Series(dtype=object)})
    result = PartResult(
        numbers={"AP": 0.8, "nested": {"ints": [1, 2], "none": None}, "nan": float("nan")},
        tables={"awkward": frame, "empty": empty, "range": frame.reset_index(drop=True)},
        objects={
            "tensor": torch.randn(2, 3, dtype=torch.float64),
            "array": np.arange(6).reshape(2, 3),
            "by_seed": {0: (1, "a"), 1: (2, "b")},  # int keys and tuples survive
        },
    )
    save_part_result(result, tmp_path / "r.pt")
    _same(result, load_part_result(tmp_path / "r.pt"))


def test_report_objects_round_trip_exactly(tmp_path):
    from nopelens import analyze, build_model, first_layer_theory, probe_positions, random_tokens
    from nopelens.experiments import PartResult
    from nopelens.experiments.storage import load_part_result, save_part_result

    model = build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=32, n_ctx=10, seed=0)
    tokens = random_tokens(6, 10, 32, seed=0, distinct=True)
    objects = {
        "report": analyze(model, tokens, sites=("resid_post", "attn_out"), n_bootstrap=20),
        "theory": first_layer_theory(model, tokens),
        "probes": probe_positions(
            model, tokens, features=("hidden", "variance"), probes=("ridge",), seeds=(0,)
        ),
    }
    result = PartResult(numbers={}, objects=objects)
    save_part_result(result, tmp_path / "r.pt")
    loaded = load_part_result(tmp_path / "r.pt")
    _same(result, loaded)
    assert repr(loaded.objects["theory"]) == repr(objects["theory"])


def test_objects_that_need_a_pickle_are_refused_when_writing(tmp_path):
    from nopelens.experiments import PartResult
    from nopelens.experiments.storage import save_part_result

    for bad in (lambda x: x, object(), torch.nn.Linear(2, 2), {"x": {1, 2}}):
        with pytest.raises(TypeError, match="A part result cannot hold a"):
            save_part_result(PartResult({}, objects={"bad": bad}), tmp_path / "r.pt")
    assert not list(tmp_path.iterdir())


def test_a_modified_result_is_refused(tmp_path):
    from nopelens.experiments import PartResult
    from nopelens.experiments.storage import load_part_result, save_part_result

    path = tmp_path / "r.pt"
    save_part_result(PartResult({"AP": 0.5}, objects={"w": torch.ones(3)}), path)
    payload = torch.load(path, weights_only=True)
    payload["result"]["fields"]["numbers"]["AP"] = 0.9  # edited, checksum kept
    torch.save(payload, path)
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_part_result(path)
    data = bytearray(path.read_bytes())  # and a torn or flipped file is not read either
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a readable nopelens part result|checksum"):
        load_part_result(path)


class _RunsCode:
    """Unpickling this runs ``exec``: what an attacker would put in a results folder."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"__import__('pathlib').Path({self.marker!r}).write_text('ran')",))


@pytest.fixture
def fake_reproduce(monkeypatch):
    module = importlib.import_module("nopelens.experiments.reproduction")
    faultchild = importlib.import_module("faultchild")
    monkeypatch.setattr(module, "PARTS", faultchild._fake_parts())
    profile = dataclasses.replace(
        module.PROFILES["test"],
        name="fake",
        parts={"first": {"scale": 1.0}, "second": {"scale": 2.0}},
    )
    return module, profile


def test_a_result_file_that_would_run_code_never_runs(fake_reproduce, tmp_path, caplog):
    from nopelens.experiments.storage import LEGACY_RESULT_FILE, RESULT_FILE

    module, profile = fake_reproduce
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"result": _RunsCode(marker)}, evil)
    torch.load(evil, weights_only=False)  # proof: unpickling it runs the code
    assert marker.read_text() == "ran"
    marker.unlink()

    out = tmp_path / "out"
    module.reproduce(out, profile=profile, progress=False)
    first = out / "parts" / "first"
    (first / RESULT_FILE).write_bytes(evil.read_bytes())
    with pytest.raises(ValueError, match="is not a readable nopelens part result"):
        module.load_results(out)
    with caplog.at_level(logging.WARNING):
        summary = module.reproduce(out, profile=profile, progress=False)
    assert "first: cannot reuse the stored result" in caplog.text
    assert not summary["parts"]["first"]["reused"] and summary["parts"]["second"]["reused"]
    assert not marker.exists()

    # a run of an older nopelens: done.json of format 2 and a pickled result.pt
    record = json.loads((first / "done.json").read_text())
    record["config"]["format_version"] = 2
    (first / "done.json").write_text(json.dumps(record))
    (first / RESULT_FILE).unlink()
    (first / LEGACY_RESULT_FILE).write_bytes(evil.read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert "first" not in module.load_results(out)
        summary = module.reproduce(out, profile=profile, progress=False)
    assert "written by an older nopelens (its result.pt is never unpickled), rebuilding" in (
        caplog.text
    )
    assert "removed the old pickled result.pt" in caplog.text
    assert not summary["parts"]["first"]["reused"]
    assert not (first / LEGACY_RESULT_FILE).exists() and not marker.exists()
    assert list(module.load_results(out)) == ["first", "second"]


def test_load_results_of_a_missing_folder_is_an_error(tmp_path):
    from nopelens.experiments import load_results

    with pytest.raises(FileNotFoundError, match="No reproduce folder at .*nothing"):
        load_results(tmp_path / "nothing")
