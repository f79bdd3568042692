"""The public field order of the decompositions, which their mixin bases must keep."""

from __future__ import annotations

import dataclasses

import pytest
import torch

FIRST_LAYER_FIELDS = [
    "tokens",
    "heads",
    "bias",
    "residual",
    "embed",
    "pos_embed",
    "pattern",
    "values",
    "attn_out",
    "resid_mid",
    "resid_post",
    "resid_mid_hook",
]
BLOCK_FIELDS = ["layer", *(f for f in FIRST_LAYER_FIELDS if f not in ("embed", "pos_embed"))]


def _model(**config):
    from nopelens import build_model

    return build_model(n_layers=2, d_model=16, n_heads=2, d_vocab=20, n_ctx=8, seed=3, **config)


def test_field_order_and_match_args():
    from nopelens.theory import BlockDecomposition, FirstLayerDecomposition

    expected = {FirstLayerDecomposition: FIRST_LAYER_FIELDS, BlockDecomposition: BLOCK_FIELDS}
    for cls, names in expected.items():
        assert [f.name for f in dataclasses.fields(cls)] == names
        assert list(cls.__match_args__) == names
        assert cls.__dataclass_params__.frozen


@pytest.mark.parametrize("config", [{}, {"positional": "learned", "attn_only": True}])
def test_positional_rebuild_is_equal(config):
    from nopelens import random_tokens
    from nopelens.theory import decompose_blocks, decompose_first_layer

    model = _model(**config)
    tokens = random_tokens(2, 6, 20, seed=0)
    objs = [decompose_first_layer(model, tokens), *decompose_blocks(model, tokens)]
    for obj in objs:
        values = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
        copy = type(obj)(*values)
        assert repr(copy) == repr(obj)
        assert copy.reconstruction_error() == obj.reconstruction_error()
        for a, b in zip(values, dataclasses.astuple(copy), strict=True):
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    assert [b.layer for b in objs[1:]] == [0, 1]
    assert objs[0].head_labels() == objs[1].head_labels() == ["L0H0", "L0H1"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        objs[0].heads = None
