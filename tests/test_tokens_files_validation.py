"""random_tokens, atomic writers and validation helpers."""

from __future__ import annotations

import json
import math

import pytest
import torch


def test_random_tokens_deterministic_and_distinct():
    from nopelens import random_tokens

    a = random_tokens(4, 10, 12, seed=3)
    assert torch.equal(a, random_tokens(4, 10, 12, seed=3))
    assert not torch.equal(a, random_tokens(4, 10, 12, seed=4))
    assert a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) < 12
    d = random_tokens(50, 12, 12, seed=0, distinct=True)
    assert all(len(set(row.tolist())) == 12 for row in d)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0, 4, 10), {}, r"'batch' parameter of random_tokens must be an int >= 1. Got 0"),
        ((2, 4, 3), {"distinct": True}, r"'d_vocab' parameter .* >= pos=4 when distinct=True"),
    ],
)
def test_random_tokens_errors(args, kwargs, match):
    from nopelens import random_tokens

    with pytest.raises(ValueError, match=match):
        random_tokens(*args, **kwargs)


def test_random_tokens_wrong_type():
    from nopelens import random_tokens
    from nopelens.validation import check_int

    with pytest.raises(TypeError):
        random_tokens(2, 4.0, 10)
    with pytest.raises(TypeError, match=r"'pos' parameter of random_tokens must be an int >= 1"):
        check_int(4.0, "pos", "random_tokens", min=1)


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    import pandas as pd

    from nopelens.files import atomic_write_text, write_json, write_table

    atomic_write_text(tmp_path / "a" / "x.txt", "hello")
    write_json(tmp_path / "a" / "x.json", {"b": float("nan"), "a": torch.tensor([1.5])})
    frame = pd.DataFrame({"site": ["resid_post"], "value": [0.5]})
    write_table(frame, tmp_path / "a" / "t.csv")
    write_table(frame, tmp_path / "a" / "t.json")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "t.csv",
        "t.json",
        "x.json",
        "x.txt",
    ]
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"a": [1.5], "b": None}
    assert pd.read_csv(tmp_path / "a" / "t.csv").equals(frame)
    with pytest.raises(ValueError, match=r"'out' parameter must be a path ending in '.csv'"):
        write_table(frame, tmp_path / "t.parquet")


def test_failed_write_keeps_the_old_file(tmp_path):
    from nopelens.files import atomic_write_text, write_json

    path = atomic_write_text(tmp_path / "x.json", '{"ok": 1}')
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert path.read_text() == '{"ok": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_validation_messages():
    from nopelens.validation import check_choice, check_float, check_int

    with pytest.raises(ValueError, match=r"^The 'k' parameter of f must be one of 'a', 'b'. Got"):
        check_choice("c", "k", ("a", "b"), "f")
    with pytest.raises(ValueError, match=r"must be an int in \[1, 3\]. Got True instead"):
        check_int(True, "k", "f", min=1, max=3)
    with pytest.raises(ValueError, match=r"must be a finite float > 0.0 and <= 1.0. Got nan"):
        check_float(math.nan, "k", "f", min=0.0, max=1.0, min_inclusive=False)
    assert check_float(1, "k", "f") == 1.0
