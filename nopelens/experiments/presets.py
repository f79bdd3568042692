"""The named sweep grids of the paper (``nopelens sweep --preset NAME``)."""

from __future__ import annotations

import copy
from typing import Any

from nopelens.spec import ATTENTION, POSITIONAL
from nopelens.validation import InvalidParameterError

_PAPER_BASE = {"n_layers": [2], "d_model": [128], "n_heads": [4], "seed": [0, 1, 2]}

#: Named grids. ``paper``: the common range of the paper (a factorial core over size plus
#: one-factor-at-a-time arms over normalisation, activation, initialisation, init range,
#: attention-only and depth, sequences of 32 tokens); ``length``: sequence length 16..1024;
#: ``controls``: NoPE vs learned / rotary / ALiBi positions, causal vs bidirectional;
#: ``ablations``: residual removal and prefix shuffling in NoPE models; ``hybrid``: NoPE vs
#: rotary vs hybrid RoPE/NoPE stacks (:data:`HYBRID_GRID`).
PRESETS: dict[str, list[dict[str, list[Any]]]] = {
    "paper": [
        {"n_layers": [1, 2, 4], "d_model": [64, 128, 256], "n_heads": [1, 4, 8], "seed": [0, 1, 2]},
        {**_PAPER_BASE, "normalization_type": ["LN", "LNPre", "RMS", "none"]},
        {**_PAPER_BASE, "act_fn": ["gelu", "relu", "silu", "gelu_new", "solu_ln"]},
        {
            **_PAPER_BASE,
            "init_mode": [
                "gpt2",
                "xavier_uniform",
                "xavier_normal",
                "kaiming_uniform",
                "kaiming_normal",
            ],
        },
        {**_PAPER_BASE, "initializer_range": [0.005, 0.02, 0.05, 0.2, 0.5, 1.0]},
        {**_PAPER_BASE, "attn_only": [False, True]},
        {**_PAPER_BASE, "n_layers": [6, 8]},
    ],
    "length": [
        {
            "seq_len": [16, 32, 64, 128, 256, 512, 1024],
            "n_layers": [1, 2],
            "d_model": [128],
            "n_heads": [4],
            "d_vocab": [2048],
            "n_seqs": [16],
            "seed": [0, 1, 2],
        },
    ],
    "controls": [
        {
            "positional": list(POSITIONAL),
            "attention": list(ATTENTION),
            "d_model": [128],
            "n_heads": [4],
            "seed": [0, 1, 2],
        },
    ],
    "ablations": [
        {
            "ablation": [
                "none",
                "remove_residual:0",
                "remove_residual:all",
                "remove_attn_residual:0",
                "remove_residual:0@8",
                "shuffle_prefix:8",
            ],
            "d_model": [128],
            "n_heads": [4],
            "sites": ["resid_mid", "resid_post"],
            "seed": [0, 1, 2],
        },
    ],
}


#: The ``hybrid`` grid: NoPE vs RoPE vs hybrid RoPE/NoPE stacks of 8 blocks (``nope_layers``:
#: none, the first block, every fourth block as in SmolLM3 and Llama 4, every other block, all
#: blocks; the rotary variants of a seed share every weight), plus the plain NoPE model, scored at
#: ``attn_out`` and ``resid_post``. ``nope_layers`` is a list-valued axis: each value is one
#: list of blocks. The ``hybrid`` reproduce part (:mod:`nopelens.experiments.parts.hybrid`) runs
#: a smaller version of the same comparison, trained models included.
HYBRID_GRID: list[dict[str, list[Any]]] = [
    {
        "positional": ["none"],
        "n_layers": [8],
        "d_model": [128],
        "n_heads": [4],
        "sites": ["attn_out", "resid_post"],
        "seed": [0, 1, 2],
    },
    {
        "positional": ["rotary"],
        "nope_layers": [[], [0], [3, 7], [1, 3, 5, 7], list(range(8))],
        "n_layers": [8],
        "d_model": [128],
        "n_heads": [4],
        "sites": ["attn_out", "resid_post"],
        "seed": [0, 1, 2],
    },
]

PRESETS["hybrid"] = HYBRID_GRID


def preset(name: str) -> list[dict[str, list[Any]]]:
    """A copy of the :data:`PRESETS` grid called ``name``.

    Raises:
        ValueError: Naming the presets, if there is none called ``name``.

    Examples:
        >>> from nopelens.experiments import expand_grid
        >>> len(expand_grid(preset("controls")))
        24
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise InvalidParameterError(
            f"The 'preset' parameter must be one of {', '.join(repr(p) for p in PRESETS)}. "
            f"Got {name!r} instead."
        )
    return copy.deepcopy(PRESETS[name])
