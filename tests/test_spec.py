"""nopelens.spec: one vocabulary, one constraint table, one validator for every entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nopelens import spec


def test_spec_imports_nothing_heavy():
    code = (
        "import sys, nopelens.spec; "
        "print(sorted(m for m in ('torch', 'transformer_lens', 'numpy', 'pandas') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_option_lists_match_the_libraries_they_describe():
    from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

    from nopelens.measure import activations
    from nopelens.training import TASKS

    assert set(spec.ACTIVATIONS) == set(SUPPORTED_ACTIVATIONS)
    assert spec.TASKS == tuple(TASKS)
    assert set(spec.SITES) == set(activations.SITES)
    assert set(spec.HIDDEN_SITES) <= set(spec.SITES)
    assert set(spec.MLP_SITES) <= set(spec.HIDDEN_SITES)


@pytest.mark.parametrize(
    ("name", "good", "bad", "words"),
    [
        ("n_layers", 1, 0, "an int >= 1"),
        ("n_layers", 3, True, "an int >= 1"),  # bools are not ints
        ("n_layers", 3, 2.0, "an int >= 1"),
        ("d_vocab", 2, 1, "an int >= 2"),
        ("initializer_range", 0.02, float("inf"), "a float > 0 or None"),
        ("initializer_range", None, 0.0, "a float > 0 or None"),
        ("initializer_range", 1, float("nan"), "a float > 0 or None"),
        ("positional", "alibi", "sinusoidal", "one of 'none', 'learned', 'rotary', 'alibi'"),
        ("normalization_type", None, "BN", "one of 'LN'"),
        ("attn_only", False, "yes", "a bool"),
        ("sites", ["resid_post"], ["pattern"], "a non-empty list of sites"),
        ("sites", "attn_out", [], "a non-empty list of sites"),
    ],
)
def test_each_constraint_accepts_and_rejects_with_the_template(name, good, bad, words):
    assert spec.check_value(name, good, "f") is None
    message = spec.check_value(name, bad, "f")
    assert (
        message
        == f"The {name!r} parameter of f must be {words}"
        + message[len(f"The {name!r} parameter of f must be {words}") :]
    )
    assert message.endswith(f"Got {bad!r} instead.")


def test_model_spec_round_trips_and_rebuilds_the_same_model():
    import torch

    from nopelens import build_model, model_spec

    s = spec.ModelSpec(
        n_layers=1,
        d_model=16,
        n_heads=2,
        d_vocab=11,
        n_ctx=8,
        seed=4,
        normalization_type="RMS",
        config={"use_attn_result": True},
    )
    assert spec.ModelSpec.from_dict(s.to_dict()) == s
    a = build_model(**s.to_kwargs())
    b = build_model(**model_spec(a))
    tokens = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(a(tokens), b(tokens))
    assert a.cfg.normalization_type == "RMS" and a.cfg.use_attn_result


def test_from_dict_refuses_unknown_fields_instead_of_dropping_them():
    data = spec.ModelSpec(n_layers=1, d_model=8, n_heads=2, d_vocab=5, n_ctx=4).to_dict()
    with pytest.raises(ValueError, match="unknown field 'tokenizer_name'"):
        spec.ModelSpec.from_dict({**data, "tokenizer_name": "gpt2"})


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"n_key_value_heads": 3}, r"'n_key_value_heads' parameter of build_model must divide"),
        ({"trust_remote_code": True}, r"unknown parameter 'trust_remote_code'"),
        ({"use_attn_reslt": True}, r"Did you mean 'use_attn_result'"),
        ({"initializer_range": float("inf")}, r"'initializer_range' .* float > 0"),
    ],
)
def test_build_model_uses_the_spec_validator(extra, match):
    from nopelens import build_model

    with pytest.raises(ValueError, match=match):
        build_model(n_layers=1, d_model=16, n_heads=4, d_vocab=10, n_ctx=8, **extra)


def test_sweeps_and_build_model_share_one_bound():
    """d_vocab=1 was accepted by build_model but refused by sweeps; now both use the table."""
    from nopelens import build_model
    from nopelens.experiments import expand_grid

    with pytest.raises(ValueError, match="'d_vocab' parameter of build_model must be an int >= 2"):
        build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=1, n_ctx=4)
    with pytest.raises(ValueError, match="'d_vocab' setting must be an int >= 2"):
        expand_grid({"d_vocab": [1]})


def test_cli_choices_come_from_the_spec():
    from nopelens.cli.app import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    seen = 0
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            for flag, options in (
                ("--positional", spec.POSITIONAL),
                ("--attention", spec.ATTENTION),
                ("--normalization", spec.NORMALIZATIONS),
                ("--act-fn", spec.ACTIVATIONS),
                ("--init-mode", spec.INIT_MODES),
            ):
                if flag in action.option_strings:
                    assert tuple(action.choices) == options, (name, flag)
                    seen += 1
    assert seen >= 5


def test_nope_layers_is_a_spec_field_that_survives_json():
    import json

    s = spec.ModelSpec(
        n_layers=4, d_model=16, n_heads=2, d_vocab=10, n_ctx=8, positional="rotary",
        nope_layers=[3, 1],
    )  # fmt: skip
    assert s.nope_layers == (3, 1) and s.problems() == []
    data = json.loads(json.dumps(s.to_dict()))
    assert data == s.to_dict()  # a dict compares equal to its own JSON round trip
    assert spec.ModelSpec.from_dict(data) == s
    assert s.to_kwargs()["nope_layers"] == [3, 1]
    assert "nope_layers" not in spec.ModelSpec(**{**s.to_dict(), "nope_layers": ()}).to_kwargs()


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"nope_layers": [1]}, r"cannot be used with positional='none'"),
        ({"positional": "alibi", "nope_layers": [1]}, r"needs positional='rotary'"),
        ({"positional": "rotary", "nope_layers": [4]}, r"block indices in \[0, 3\]"),
        ({"positional": "rotary", "nope_layers": [1, 1]}, r"a list of distinct block indices"),
        ({"positional": "rotary", "nope_layers": [True]}, r"a list of distinct block indices"),
    ],
)
def test_nope_layers_rules(fields, match):
    s = spec.ModelSpec(n_layers=4, d_model=16, n_heads=2, d_vocab=10, n_ctx=8, **fields)
    problems = s.problems()
    assert len(problems) == 1 and problems[0].startswith("The 'nope_layers' parameter")
    assert __import__("re").search(match, problems[0])


def test_dtypes_are_the_models_dtype_options():
    assert spec.EXTRA_CONFIG["dtype"].values == spec.DTYPES
    assert spec.check_value("dtype", "int8", "f").startswith("The 'dtype' parameter of f must be")


def test_score_columns_are_defined_once_in_the_spec():
    """analyze's scores and the sweep records share spec.SCORE_COLUMNS (one definition)."""
    from nopelens.analyzer import analysis
    from nopelens.experiments import records

    assert analysis.SCORE_COLUMNS is spec.SCORE_COLUMNS
    assert records.SCORE_COLUMNS is spec.SCORE_COLUMNS
    assert spec.SCORE_COLUMNS[:4] == ("site", "layer", "nope", "metric")
    assert len(set(spec.SCORE_COLUMNS)) == len(spec.SCORE_COLUMNS)
    empty = records.records_frame([])
    assert list(empty.columns)[-len(spec.SCORE_COLUMNS) - 1 :] == [*spec.SCORE_COLUMNS, "elapsed_s"]
