"""The sizes of a reproduce run: :class:`Profile` and the built-in :data:`PROFILES`.

A profile fixes the base model, seeds, data sizes and each part's own settings. ``test`` is a tiny
run for the test suite, ``quick`` the README's command (minutes on a laptop CPU) and ``full`` the
paper-sized run (meant for a GPU). What every profile shares is filled in by one function, so
each profile lists only its own sizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from nopelens.spec import ATTENTION, POSITIONAL


@dataclasses.dataclass(frozen=True, repr=False)
class Profile:
    """Sizes, seeds and switches of one :func:`~nopelens.experiments.reproduce` run.

    Attributes:
        name: Profile name, as passed to ``--profile``.
        description: One line for the dashboard and ``--help``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        threads: torch CPU threads during the run (restored afterwards); ``None`` keeps the
            current setting. One thread is fastest for these small models on a busy machine.
        workers: Worker processes of the sweeps (1: run in this process).
        seeds: Weight seeds of the random-init models (one model per seed).
        data_seed: Seed of the random token batches.
        model: ``build_model`` keyword arguments of the base NoPE model (without ``seed``).
        n_seqs: Random sequences per analysis.
        seq_len: Sequence length of the analyses (the paper used about 30 tokens).
        n_bootstrap: Bootstrap resamples of the confidence intervals.
        parts: Part name -> that part's own settings (see each part's ``run`` function in
            :mod:`nopelens.experiments.parts`).

    Examples:
        >>> PROFILES["test"]  # doctest: +NORMALIZE_WHITESPACE
        Profile('test': device='cpu', threads=1, workers=1, seeds=(0,), data_seed=0,
                model(n_layers=2, d_model=32, n_heads=4, d_vocab=64), n_seqs=8, seq_len=12,
                n_bootstrap=50, parts=[random_init, sweep, controls, length, theory,
                layer_theory, ablation, trained, probes, hybrid])
    """

    name: str
    description: str
    device: str
    threads: int | None
    workers: int
    seeds: tuple[int, ...]
    data_seed: int
    model: Mapping[str, Any]
    n_seqs: int
    seq_len: int
    n_bootstrap: int
    parts: Mapping[str, Mapping[str, Any]]

    def __repr__(self) -> str:
        model = ", ".join(f"{k}={v!r}" for k, v in self.model.items())
        return (
            f"Profile({self.name!r}: device={self.device!r}, threads={self.threads}, "
            f"workers={self.workers}, seeds={self.seeds}, data_seed={self.data_seed}, "
            f"model({model}), n_seqs={self.n_seqs}, seq_len={self.seq_len}, "
            f"n_bootstrap={self.n_bootstrap}, parts=[{', '.join(self.parts)}])"
        )


#: Every positional type against both attention directions (the controls of NoPE).
_CONTROLS = {"positional": list(POSITIONAL), "attention": list(ATTENTION)}
#: The hook ablations of ``quick`` and ``full``.
_ABLATIONS = [
    "none",
    "remove_residual:0",
    "remove_residual:all",
    "remove_attn_residual:0",
    "remove_residual:0@8",
    "shuffle_prefix:8",
]


#: The ``hybrid`` part's settings by profile (:mod:`nopelens.experiments.parts.hybrid`; a custom
#: profile's own ``hybrid`` settings replace these keys over the ``quick`` ones).
#: ``test`` and ``quick`` are sized to cost about 2 s and 10 s on one core.
HYBRID_DEFAULTS: dict[str, dict[str, Any]] = {
    "test": {
        "model": {"n_layers": 4},
        "nope_layers": [1, 3],
        "sites": ["attn_out", "resid_post"],
        "trained": {
            "task": {"n_symbols": 8, "length": 8},
            "model": {"n_layers": 2, "d_model": 16, "n_heads": 2},
            "nope_layers": [1],
            "train": {
                "steps": 15,
                "batch_size": 16,
                "lr": 3e-3,
                "warmup": 2,
                "eval_every": 15,
                "eval_batches": 1,
                "checkpoint_every": 15,
            },
            "seeds": [0],
            "n_seqs": 8,
        },
    },
    "quick": {
        "model": {"n_layers": 8},
        "nope_layers": [3, 7],
        "sites": ["attn_out", "resid_post"],
        "trained": {
            "task": {"n_symbols": 12, "length": 12},
            "model": {"n_layers": 4, "d_model": 32, "n_heads": 2},
            "nope_layers": [1, 3],
            "train": {
                "steps": 80,
                "batch_size": 32,
                "lr": 3e-3,
                "warmup": 8,
                "eval_every": 80,
                "eval_batches": 1,
                "checkpoint_every": 80,
            },
            "seeds": [0],
            "n_seqs": 32,
        },
    },
    "full": {
        "model": {"n_layers": 8},
        "nope_layers": [3, 7],
        "sites": ["attn_out", "resid_post"],
        "trained": {
            "task": {},
            "model": {"n_layers": 8, "d_model": 64, "n_heads": 4},
            "nope_layers": [3, 7],
            "train": {},
            "seeds": [0, 1, 2],
            "n_seqs": 128,
        },
    },
}


def _parts(
    *,
    sweep: Mapping[str, Any],
    controls: Mapping[str, Any],
    length: Mapping[str, Any],
    theory_scales: list[float],
    layer_theory: Mapping[str, Any],
    ablation: Mapping[str, Any],
    trained: Mapping[str, Any],
    probes: Mapping[str, Any],
    hybrid: Mapping[str, Any],
) -> dict[str, Mapping[str, Any]]:
    """Every part's settings, in pipeline order; what all profiles share is filled in here.

    ``trained`` gets the positional types ``none`` and ``learned`` and empty ``model`` and
    ``train`` overrides unless given; ``probes`` the three feature families, ``resid_post``,
    4 equal dimensions, the first position dropped and the ``previous_token`` model unless given.
    """
    return {
        "random_init": {"sites": ["attn_out", "resid_mid", "resid_post"]},
        "sweep": sweep,
        "controls": controls,
        "length": length,
        "theory": {"scales": theory_scales},
        "layer_theory": layer_theory,
        "ablation": ablation,
        "trained": {"positional": ["none", "learned"], "model": {}, "train": {}, **trained},
        "probes": {
            "features": ["hidden", "cosine", "variance"],
            "sites": ["resid_post"],
            "equal_dim": 4,
            "drop_first": True,
            "trained": "previous_token",
            **probes,
        },
        "hybrid": hybrid,
    }


#: The ablation settings of ``quick`` and ``full``.
_ABLATION = {"conditions": _ABLATIONS, "sites": ["resid_mid", "resid_post"]}

PROFILES: dict[str, Profile] = {
    "test": Profile(
        name="test",
        description="a tiny run of every part for the test suite (well under a minute)",
        device="cpu",
        threads=1,
        workers=1,
        seeds=(0,),
        data_seed=0,
        model={"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 64},
        n_seqs=8,
        seq_len=12,
        n_bootstrap=50,
        parts=_parts(
            sweep={
                "grid": [
                    {"d_model": [16, 32], "n_heads": [1, 4]},
                    {"normalization_type": ["LN", "none"]},
                ]
            },
            controls={
                "grid": [
                    {"positional": ["none", "learned"], "attention": ["causal", "bidirectional"]}
                ]
            },
            length={"grid": [{"seq_len": [8, 16]}]},
            theory_scales=[0.0, 1.0, 8.0],
            layer_theory={"model": {"n_layers": 3}, "scales": [0.0, 8.0]},
            ablation={
                "conditions": ["none", "remove_residual:0", "shuffle_prefix:4"],
                "sites": ["resid_mid", "resid_post"],
            },
            trained={
                "tasks": {"previous_token": {"n_symbols": 8, "length": 8}},
                "model": {"n_layers": 1, "d_model": 32, "n_heads": 2},
                "train": {
                    "steps": 20,
                    "batch_size": 16,
                    "warmup": 2,
                    "eval_every": 20,
                    "eval_batches": 1,
                    "checkpoint_every": 20,
                },
                "seeds": [0],
                "n_seqs": 8,
            },
            probes={
                "n_seqs": 12,
                "seeds": [0, 1],
                "probes": ["ridge", "isotonic"],
                "equal_dim": 2,
            },
            hybrid=HYBRID_DEFAULTS["test"],
        ),
    ),
    "quick": Profile(
        name="quick",
        description="the README's command: every experiment at small scale, minutes on 2 CPU cores",
        device="cpu",
        threads=1,
        workers=2,
        seeds=(0, 1, 2),
        data_seed=0,
        model={"n_layers": 4, "d_model": 128, "n_heads": 4, "d_vocab": 256},
        n_seqs=32,
        seq_len=32,
        n_bootstrap=200,
        parts=_parts(
            sweep={
                "grid": [
                    {"n_layers": [1, 2, 4], "d_model": [64, 128], "n_heads": [1, 4], "seed": [0]},
                    {"n_layers": [2], "normalization_type": ["LN", "LNPre", "RMS", "none"]},
                    {"n_layers": [2], "act_fn": ["gelu", "relu", "silu"]},
                    {"n_layers": [2], "init_mode": ["gpt2", "xavier_normal", "kaiming_normal"]},
                    {"n_layers": [2], "initializer_range": [0.02, 0.05, 0.2, 0.5, 1.0]},
                    {"n_layers": [2], "attn_only": [False, True]},
                ]
            },
            controls={"grid": [_CONTROLS]},
            length={
                "grid": [
                    {
                        "seq_len": [16, 32, 64, 128, 256, 512],
                        "n_layers": [2],
                        "d_vocab": [1024],
                        "n_seqs": [16],
                    }
                ]
            },
            theory_scales=[0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
            layer_theory={"model": {"n_layers": 4}, "scales": [0.0, 1.0, 4.0, 16.0]},
            ablation=_ABLATION,
            trained={
                "tasks": {"previous_token": {}, "index_counting": {}},
                "train": {"steps": 300, "warmup": 30, "eval_every": 150},
                "seeds": [0, 1],
                "n_seqs": 32,
            },
            probes={"n_seqs": 64, "seeds": [0, 1, 2], "probes": ["ridge", "isotonic"]},
            hybrid=HYBRID_DEFAULTS["quick"],
        ),
    ),
    "full": Profile(
        name="full",
        description="paper-sized: the full sweep presets, more seeds and sequences, longer "
        "training, every task (meant for a GPU)",
        device="auto",
        threads=None,
        workers=1,
        seeds=(0, 1, 2, 3, 4),
        data_seed=0,
        model={"n_layers": 4, "d_model": 256, "n_heads": 8, "d_vocab": 2048},
        n_seqs=128,
        seq_len=32,
        n_bootstrap=1000,
        parts=_parts(
            sweep={"preset": "paper"},
            controls={"preset": "controls"},
            length={"preset": "length"},
            theory_scales=[0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            layer_theory={
                "model": {"n_layers": 6},
                "scales": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
            },
            ablation=_ABLATION,
            trained={
                "tasks": {
                    name: {}
                    for name in (
                        "previous_token",
                        "reverse",
                        "addition",
                        "modular",
                        "parity",
                        "index_counting",
                        "stdlib_chars",
                    )
                },
                "seeds": [0, 1, 2],
                "n_seqs": 128,
            },
            probes={
                "n_seqs": 256,
                "seeds": [0, 1, 2, 3, 4],
                "probes": ["ridge", "logistic", "isotonic"],
                "sites": ["attn_out", "resid_post"],
            },
            hybrid=HYBRID_DEFAULTS["full"],
        ),
    ),
}
"""The built-in profiles: ``test``, ``quick`` and ``full``."""
