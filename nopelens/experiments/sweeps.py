"""Resumable hyperparameter sweeps of the neighborhood pattern in random-init models.

A *grid* maps each setting to a list of values; its Cartesian product is a list of
*configurations*. A configuration is a complete, canonical dict of settings (every key of
:data:`DEFAULTS`) with a stable id: the first 12 hex digits of the SHA-256 of its canonical JSON
(sorted keys, no whitespace), so the same settings get the same id whatever the key order, grid
shape or run. A grid may also be a list of such dicts, whose expansions are concatenated (a
factorial core plus one-factor-at-a-time arms, as in the ``paper`` preset).

:func:`sweep` validates every configuration before running any, then runs the missing ones
through a :class:`concurrent.futures.Executor`. Each job is :func:`run_config`, a pure,
picklable, top-level function of a plain dict that builds the model with
:func:`nopelens.build_model`, draws seeded random tokens, applies the grid's ablation hooks and
calls :func:`nopelens.analyze`, returning the score rows as plain dicts. Because the job and its
input and output are plain Python, any executor that can pickle a function by reference runs
the same sweep: the default local process pool, the in-process sequential executor, a Dask
``Client.get_executor()`` or a small Ray adapter (see the README).

Every finished configuration is appended to ``out_dir/results.jsonl`` as ONE line (its config,
id and all its score rows), written by the parent process with a single ``os.write`` on an
``O_APPEND`` descriptor followed by ``fsync``. An interrupted run therefore leaves whole lines
plus at most one truncated last line, which readers ignore and the next :func:`sweep` cuts off
before appending. A rerun reads the finished ids and skips them.

:func:`summarize` turns the results into one row per hyperparameter value (and site, layer,
metric): how many configurations are above chance, the mean excess over chance with a
confidence interval over configurations, a verdict, and the contiguous value range where the
pattern fails; :func:`failure_ranges` says the same in sentences.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import difflib
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nopelens.files import to_jsonable, write_json
from nopelens.validation import InvalidParameterError

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
GRID_FILE = "grid.json"
LOCK_FILE = ".sweep.lock"
#: Refuse grids larger than this many configurations (a typo such as a 1000-value range).
MAX_CONFIGS = 100_000

#: Every configuration setting and its default. Model settings are passed to
#: :func:`nopelens.build_model`; the others choose the tokens, the analysis and the ablation.
DEFAULTS: dict[str, Any] = {
    # model (build_model arguments)
    "n_layers": 2,
    "d_model": 64,
    "n_heads": 4,
    "d_head": None,  # None: d_model // n_heads
    "d_mlp": None,  # None: 4 * d_model
    "d_vocab": 256,
    "n_ctx": None,  # None: seq_len
    "positional": "none",
    "attention": "causal",
    "normalization_type": "LN",
    "act_fn": "gelu",
    "attn_only": False,
    "init_mode": "gpt2",
    "initializer_range": None,  # None: TransformerLens' default (0.8/sqrt(d_model) for gpt2)
    "seed": 0,
    # data and analysis
    "seq_len": 32,
    "n_seqs": 32,
    "data_seed": 0,
    "sites": ["resid_post"],
    "centered": False,
    "exclude_first": False,
    "n_bootstrap": 1000,
    "ablation": "none",
    # execution (not part of the configuration id)
    "device": "cpu",
}
MODEL_KEYS: tuple[str, ...] = (
    "n_layers",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "d_vocab",
    "n_ctx",
    "positional",
    "attention",
    "normalization_type",
    "act_fn",
    "attn_only",
    "init_mode",
    "initializer_range",
    "seed",
)
#: Settings that change how a configuration runs but not what it computes; left out of its id.
EXECUTION_KEYS: tuple[str, ...] = ("device",)
#: Accepted spellings -> canonical key.
ALIASES: dict[str, str] = {
    "init_range": "initializer_range",
    "normalization": "normalization_type",
    "activation": "act_fn",
}
#: Block sites a sweep can analyse (hidden states, one vector per position); the input
#: embedding is always reported as layer ``"embed"``.
SWEEP_SITES: tuple[str, ...] = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "ln1_normalized",
    "ln2_normalized",
    "mlp_post",
    "q",
    "k",
    "v",
    "z",
)
_MLP_SITES = ("resid_mid", "mlp_out", "ln2_normalized", "mlp_post")
_NORMALIZATION = ("LN", "LNPre", "RMS", "RMSPre", "none")
#: Score columns of :func:`nopelens.analyze`, in order; ``elapsed_s`` is added by the sweep.
SCORE_COLUMNS: tuple[str, ...] = (
    "site",
    "layer",
    "metric",
    "value",
    "chance",
    "ci_low",
    "ci_high",
    "n_seqs",
    "seq_len",
)

# Presets ------------------------------------------------------------------------------------------

_PAPER_BASE = {"n_layers": [2], "d_model": [128], "n_heads": [4], "seed": [0, 1, 2]}

#: Named grids. ``paper``: the common range of the paper (a factorial core over size plus
#: one-factor-at-a-time arms over normalisation, activation, initialisation, init range,
#: attention-only and depth, sequences of 32 tokens); ``length``: sequence length 16..1024;
#: ``controls``: NoPE vs learned / rotary / ALiBi positions, causal vs bidirectional;
#: ``ablations``: residual removal and prefix shuffling in NoPE models.
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
            "positional": ["none", "learned", "rotary", "alibi"],
            "attention": ["causal", "bidirectional"],
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


# Grids ------------------------------------------------------------------------------------------


def _canonical_key(key: Any, where: str, known: Sequence[str]) -> str:
    if isinstance(key, str) and key in ALIASES:
        return ALIASES[key]
    if not isinstance(key, str) or key not in known:
        close = difflib.get_close_matches(str(key), list(known) + list(ALIASES), n=2)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise InvalidParameterError(
            f"{where} has an unknown key {key!r}.{hint} Known keys: {', '.join(known)}."
        )
    return key


def _normalize_grids(grid: Any) -> list[dict[str, list[Any]]]:
    """Check the shape of a grid (dict or list of dicts) and promote scalars to one-value lists."""
    if isinstance(grid, Mapping) and set(grid) == {"grids"}:
        grid = grid["grids"]
    grids = [grid] if isinstance(grid, Mapping) else grid
    if isinstance(grids, (str, bytes)) or not isinstance(grids, Sequence) or not grids:
        raise InvalidParameterError(
            "The 'grid' parameter of sweep must be a dict of setting -> list of values, or a "
            f"non-empty list of such dicts. Got {type(grid).__name__} {grid!r:.80} instead."
        )
    out = []
    for index, entry in enumerate(grids):
        where = f"grid[{index}]" if len(grids) > 1 else "grid"
        if not isinstance(entry, Mapping):
            raise InvalidParameterError(
                f"{where} must be a dict of setting -> list of values. Got {entry!r:.80} instead."
            )
        normalized: dict[str, list[Any]] = {}
        for key, values in entry.items():
            canonical = _canonical_key(key, where, list(DEFAULTS))
            if canonical in normalized:
                raise InvalidParameterError(f"{where} sets {canonical!r} twice (via {key!r}).")
            if canonical == "sites":
                values = [values] if isinstance(values, str) else list(values)
                if len(values) == 1 and isinstance(values[0], (list, tuple)):
                    values = list(values[0])  # already normalised
                if not values or any(not isinstance(v, str) for v in values):
                    raise InvalidParameterError(
                        f"{where}['sites'] must be a list of site names (every configuration "
                        f"analyses all of them; sites are not a swept axis). Got {values!r}."
                    )
                values = [values]
            elif isinstance(values, (list, tuple)):
                values = list(values)
            else:
                values = [values]
            if not values:
                raise InvalidParameterError(f"{where}[{canonical!r}] has no values.")
            normalized[canonical] = values
        out.append(normalized)
    return out


def load_grid(path: str | os.PathLike[str]) -> list[dict[str, list[Any]]]:
    """Read a grid from a ``.json`` or ``.toml`` file.

    The file holds one grid (a table of setting = list of values; a scalar means one value) or
    several under ``grids`` (a JSON list, or TOML ``[[grids]]`` tables). ``sites`` lists the sites
    that every configuration analyses. Keys are checked here; values are checked by
    :func:`expand_grid`.

    Args:
        path: A ``.json`` or ``.toml`` file.

    Returns:
        A list of grids, each a dict of canonical setting name -> list of values.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: For another suffix, unparseable content or unknown keys (named).

    Examples:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "grid.json"
        >>> _ = path.write_text('{"d_model": [32, 64], "normalization": "RMS"}')
        >>> load_grid(path)
        [{'d_model': [32, 64], 'normalization_type': ['RMS']}]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The 'path' parameter of load_grid: no such file {str(path)!r}.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise InvalidParameterError(
                "The 'path' parameter of load_grid must end in '.json' or '.toml'. "
                f"Got {str(path)!r} instead."
            )
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise InvalidParameterError(
            f"{str(path)!r} is not valid {path.suffix[1:]}: {err}"
        ) from None
    return _normalize_grids(data)


def preset(name: str) -> list[dict[str, list[Any]]]:
    """A copy of the :data:`PRESETS` grid called ``name``.

    Raises:
        ValueError: Naming the presets, if there is none called ``name``.

    Examples:
        >>> len(expand_grid(preset("controls")))
        24
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise InvalidParameterError(
            f"The 'preset' parameter must be one of {', '.join(repr(p) for p in PRESETS)}. "
            f"Got {name!r} instead."
        )
    return copy.deepcopy(PRESETS[name])


def override_grid(grid: Any, overrides: Mapping[str, Any]) -> list[dict[str, list[Any]]]:
    """Set some keys of every sub-grid (e.g. fewer sequences for a quick run).

    Examples:
        >>> override_grid({"d_model": [32, 64]}, {"seed": [0, 1]})
        [{'d_model': [32, 64], 'seed': [0, 1]}]
    """
    grids = copy.deepcopy(_normalize_grids(grid))
    extra = _normalize_grids(dict(overrides))[0] if overrides else {}
    return [{**g, **extra} for g in grids]


def _complete(values: Mapping[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(DEFAULTS)
    config.update(copy.deepcopy({ALIASES.get(k, k): v for k, v in values.items()}))
    if config["normalization_type"] is None:
        config["normalization_type"] = "none"
    if isinstance(config["initializer_range"], int) and not isinstance(
        config["initializer_range"], bool
    ):
        config["initializer_range"] = float(config["initializer_range"])
    if isinstance(config["sites"], str):
        config["sites"] = [config["sites"]]
    elif isinstance(config["sites"], (list, tuple)):
        config["sites"] = list(config["sites"])
    return config


def config_id(config: Mapping[str, Any]) -> str:
    """The stable id of a configuration: 12 hex digits of the SHA-256 of its canonical JSON.

    Missing settings take their :data:`DEFAULTS` first, and execution settings (``device``) are
    left out, so ``{"d_model": 64}`` and the full default configuration share an id.

    Examples:
        >>> config_id({"d_model": 64}) == config_id({})
        True
        >>> len(config_id({"seed": 1}))
        12
    """
    full = _complete(config)
    payload = {k: v for k, v in full.items() if k not in EXECUTION_KEYS}
    text = json.dumps(to_jsonable(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _int_problem(value: Any, minimum: int, optional: bool = False) -> str | None:
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"an int >= {minimum}" + (" or null" if optional else "")
    return None


def _value_problem(key: str, value: Any) -> str | None:
    """What ``value`` must be for ``key`` (None when it is fine), without looking at other keys."""
    from nopelens.models import ATTENTION, INIT_MODES, POSITIONAL

    minimums = {
        "n_layers": 1,
        "d_model": 1,
        "n_heads": 1,
        "d_vocab": 2,
        "seed": 0,
        "seq_len": 3,
        "n_seqs": 2,
        "data_seed": 0,
        "n_bootstrap": 1,
    }
    if key in minimums:
        return _int_problem(value, minimums[key])
    if key in ("d_head", "d_mlp", "n_ctx"):
        return _int_problem(value, 1, optional=True)
    choices: dict[str, Sequence[Any]] = {
        "positional": POSITIONAL,
        "attention": ATTENTION,
        "init_mode": INIT_MODES,
        "normalization_type": _NORMALIZATION,
    }
    if key == "act_fn":
        from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

        choices["act_fn"] = tuple(SUPPORTED_ACTIVATIONS)
    if key in choices:
        if value is None and key == "normalization_type":
            return None
        if not isinstance(value, str) or value not in choices[key]:
            return f"one of {', '.join(repr(c) for c in choices[key])}"
        return None
    if key in ("attn_only", "centered", "exclude_first"):
        return None if isinstance(value, bool) else "a bool"
    if key == "initializer_range":
        if value is None:
            return None
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (math.isfinite(value) and value > 0)
        )
        return None if ok else "a float > 0 or null"
    if key == "sites":
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, (list, tuple))
            or not value
            or any(s not in SWEEP_SITES for s in value)
        ):
            return f"a non-empty list of sites from {', '.join(SWEEP_SITES)}"
        return None
    if key == "ablation":
        from nopelens.measure import parse_ablation

        try:
            parse_ablation(value)
        except ValueError as err:
            return (
                str(err)
                .removeprefix("The 'ablation' setting must be ")
                .removesuffix(f" Got {value!r} instead.")
            )
        return None
    if key == "device":
        return None if isinstance(value, str) and value else "a torch device name such as 'cpu'"
    raise AssertionError(f"no validator for {key!r}")  # every DEFAULTS key has one


def _config_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems of a complete configuration that involve several settings."""
    from nopelens.measure import check_ablation
    from nopelens.models import validate_model_config

    problems = validate_model_config(
        _model_extra(config),
        n_layers=config["n_layers"],
        d_model=config["d_model"],
        n_heads=config["n_heads"],
        d_vocab=config["d_vocab"],
        n_ctx=_n_ctx(config),
        positional=config["positional"],
        attention=config["attention"],
        seed=config["seed"],
        device=config["device"],
    )
    problems = [p.replace("parameter of build_model", "setting") for p in problems]
    if config["n_ctx"] is not None and config["seq_len"] > config["n_ctx"]:
        problems.append(
            f"seq_len={config['seq_len']} is longer than n_ctx={config['n_ctx']}; use "
            "n_ctx >= seq_len (or leave n_ctx unset: it defaults to seq_len)."
        )
    if config["exclude_first"] and config["seq_len"] < 4:
        problems.append(
            f"seq_len={config['seq_len']} leaves fewer than 3 positions with exclude_first=True; "
            "use seq_len >= 4."
        )
    for site in config["sites"]:
        if config["attn_only"] and site in _MLP_SITES:
            problems.append(
                f"site {site!r} does not exist in attention-only models (attn_only=True)."
            )
        if config["normalization_type"] == "none" and "normalized" in site:
            problems.append(f"site {site!r} does not exist with normalization_type='none'.")
    problems += check_ablation(
        config["ablation"],
        n_layers=config["n_layers"],
        seq_len=config["seq_len"],
        attn_only=config["attn_only"],
    )
    return problems


def _n_ctx(config: Mapping[str, Any]) -> int:
    return config["n_ctx"] if config["n_ctx"] is not None else config["seq_len"]


def _model_extra(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``**config`` part of the build_model arguments of a configuration."""
    extra: dict[str, Any] = {
        "normalization_type": None
        if config["normalization_type"] == "none"
        else config["normalization_type"],
        "act_fn": config["act_fn"],
        "attn_only": config["attn_only"],
        "init_mode": config["init_mode"],
    }
    for key in ("d_head", "d_mlp", "initializer_range"):
        if config[key] is not None:
            extra[key] = config[key]
    return extra


def _label(config: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """``k=v`` for ``keys`` (default: the settings that differ from :data:`DEFAULTS`)."""
    if keys is None:
        keys = [k for k in config if k in DEFAULTS and config[k] != DEFAULTS[k]]
    shown = [k for k in keys if k in config] or ["seed"]
    return ", ".join(f"{k}={config[k]!r}" for k in shown)


def expand_grid(grid: Any) -> list[dict[str, Any]]:
    """Expand and validate a grid: every configuration, complete and canonical, in grid order.

    All problems are collected before anything runs and raised together, each naming the grid
    entry (``grid[1]['n_heads'] = 3``) or the configuration (its swept settings) it comes from.
    Duplicate configurations (same id) are kept once.

    Args:
        grid: A dict of setting -> list of values, or a list of such dicts (see :data:`DEFAULTS`
            for the settings).

    Returns:
        The configurations, each a dict with every key of :data:`DEFAULTS`.

    Raises:
        ValueError: Listing every unknown key, bad value and impossible combination.

    Examples:
        >>> configs = expand_grid({"d_model": [32, 64], "seed": [0, 1]})
        >>> len(configs), configs[0]["d_model"], configs[0]["seed"], configs[1]["seed"]
        (4, 32, 0, 1)
        >>> try:
        ...     expand_grid({"d_model": [30], "n_heads": [4]})
        ... except ValueError as err:
        ...     print(str(err)[:72])
        grid configuration (d_model=30, n_heads=4): The 'n_heads' setting must d
    """
    grids = _normalize_grids(grid)
    problems: list[str] = []
    for index, entry in enumerate(grids):
        where = f"grid[{index}]" if len(grids) > 1 else "grid"
        for key, values in entry.items():
            for value in values:
                need = _value_problem(key, value)
                if need is not None:
                    problems.append(
                        f"{where}[{key!r}] = {value!r}: the {key!r} setting must be "
                        f"{need.rstrip('.')}."
                    )
    sizes = [math.prod(len(v) for v in entry.values()) for entry in grids]
    if sum(sizes) > MAX_CONFIGS:
        problems.append(
            f"the grid expands to {sum(sizes)} configurations (more than {MAX_CONFIGS}); "
            "split it into smaller sweeps."
        )
    _raise(problems)

    configs: dict[str, dict[str, Any]] = {}
    combo: dict[str, tuple[str, int]] = {}
    for index, entry in enumerate(grids):
        where = f"grid[{index}]" if len(grids) > 1 else "grid"
        keys = list(entry)
        for values in itertools.product(*entry.values()):
            config = _complete(dict(zip(keys, values, strict=True)))
            for problem in _config_problems(config):
                label = f"{where} configuration ({_label(config, keys)})"
                first, count = combo.get(problem, (label, 0))
                combo[problem] = (first, count + 1)
            configs.setdefault(config_id(config), config)
    _raise(
        [
            f"{label}: {problem}" + (f" (and {count - 1} more configurations)" if count > 1 else "")
            for problem, (label, count) in combo.items()
        ]
    )
    return list(configs.values())


def _raise(problems: list[str]) -> None:
    if not problems:
        return
    if len(problems) == 1:
        raise InvalidParameterError(problems[0])
    shown = problems[:25]
    more = f"\n- ... and {len(problems) - 25} more" if len(problems) > 25 else ""
    raise InvalidParameterError(
        f"The grid has {len(problems)} problems (nothing was run):\n- " + "\n- ".join(shown) + more
    )


# The job ----------------------------------------------------------------------------------------


def init_worker(n_threads: int = 1) -> None:
    """Limit torch to ``n_threads`` threads in a worker process (avoids oversubscription).

    Used as the ``initializer`` of the default process pool; call it once per worker when
    running sweeps on another engine (Ray, Dask).
    """
    os.environ["OMP_NUM_THREADS"] = str(n_threads)
    os.environ["MKL_NUM_THREADS"] = str(n_threads)
    import torch

    torch.set_num_threads(n_threads)
    with contextlib.suppress(RuntimeError):  # only allowed before the first inter-op work
        torch.set_num_interop_threads(n_threads)


def run_config(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one configuration: build the model, draw tokens, analyse, return the score rows.

    This is the job that executors run. It is a top-level function of a plain dict returning
    plain dicts, so it pickles by reference and runs unchanged in a process pool, on Ray or on
    Dask. It is deterministic in the configuration (``seed`` draws the weights, ``data_seed`` the
    tokens, the bootstrap and the prefix permutation).

    Args:
        config: A configuration; missing settings take their :data:`DEFAULTS`.

    Returns:
        One dict per score row of :func:`nopelens.analyze` (``site, layer, metric, value, chance,
        ci_low, ci_high, n_seqs, seq_len``) plus ``config_id`` and ``elapsed_s`` (the seconds
        this configuration took).

    Raises:
        ValueError: If the configuration is invalid.

    Examples:
        >>> config = {"n_layers": 1, "d_model": 16, "n_heads": 2, "seq_len": 8, "n_seqs": 4,
        ...           "n_bootstrap": 10}
        >>> rows = run_config(config)
        >>> rows[0]["config_id"] == config_id(config), rows[0]["site"]
        (True, 'resid_post')
    """
    start = time.perf_counter()
    config = _complete(config)
    problems = [
        f"the {k!r} setting must be {need}"
        for k, v in config.items()
        if k in DEFAULTS and (need := _value_problem(k, v)) is not None
    ]
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        problems.append(f"unknown settings {unknown}")
    _raise(problems or _config_problems(config))

    from nopelens.measure import ablation_hooks, analyze, random_tokens
    from nopelens.models import build_model

    model = build_model(
        n_layers=config["n_layers"],
        d_model=config["d_model"],
        n_heads=config["n_heads"],
        d_vocab=config["d_vocab"],
        n_ctx=_n_ctx(config),
        positional=config["positional"],
        attention=config["attention"],
        seed=config["seed"],
        device=config["device"],
        **_model_extra(config),
    )
    tokens = random_tokens(
        config["n_seqs"], config["seq_len"], config["d_vocab"], seed=config["data_seed"]
    )
    hooks = ablation_hooks(model, config["ablation"], seed=config["data_seed"])
    report = analyze(
        model,
        tokens,
        sites=tuple(config["sites"]),
        centered=config["centered"],
        exclude_first=config["exclude_first"],
        n_bootstrap=config["n_bootstrap"],
        seed=config["data_seed"],
        fwd_hooks=hooks,
    )
    rows = to_jsonable(report.scores.to_dict(orient="records"))
    elapsed = time.perf_counter() - start
    cid = config_id(config)
    return [{"config_id": cid, **row, "elapsed_s": elapsed} for row in rows]


# Running ----------------------------------------------------------------------------------------


class SequentialExecutor(cf.Executor):
    """A :class:`concurrent.futures.Executor` that runs each job in this process at submit time.

    Exceptions are stored in the returned future (as in a real pool); ``KeyboardInterrupt``
    propagates immediately.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Run ``fn(*args, **kwargs)`` now and return a finished future."""
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - delivered through the future
            future.set_exception(err)
        return future


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` so two sweeps never append to the same file."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; single-writer is the caller's job
        yield
        return
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"Another sweep is writing to {str(out_dir)!r}; wait for it or use another --out."
            ) from None
        yield
    finally:
        os.close(fd)


def _repair(path: Path) -> None:
    """Cut a truncated last line (from an interrupted write) off the results file."""
    if not path.exists():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            logger.warning("%s: dropping a truncated last line (%d bytes)", path, len(data) - keep)
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())


def _append_line(fd: int, record: Mapping[str, Any]) -> None:
    """Append one record as one JSON line with a single write (looping only on a short write)."""
    text = json.dumps(to_jsonable(record), sort_keys=True, allow_nan=False, separators=(",", ":"))
    view = memoryview((text + "\n").encode("utf-8"))
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _iter_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1]:
        logger.warning("%s: ignoring a truncated last line (interrupted write)", path)
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s: ignoring unreadable line %d", path, number)
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("config_id"), str)
            and isinstance(record.get("rows"), list)
        ):
            yield record
        else:
            logger.warning("%s: ignoring line %d (not a sweep record)", path, number)


def _results_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() or not path.suffix else path


def read_records(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The finished configurations in a results file: config id -> record.

    Each record holds ``config_id``, ``config`` and ``rows``. Whole lines only: a truncated last
    line or an unreadable line is ignored (with a logged warning). The first record of an id wins.

    Args:
        path: A sweep's ``out_dir`` or its ``results.jsonl``.
    """
    records: dict[str, dict[str, Any]] = {}
    for record in _iter_records(_results_path(path)):
        records.setdefault(record["config_id"], record)
    return records


def _frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    score_columns = [*SCORE_COLUMNS, "elapsed_s"]
    config_columns = [k for k in DEFAULTS if k != "sites" and k not in score_columns]
    rows = []
    for record in records:
        config = _complete(record["config"])
        base = {"config_id": record["config_id"], **{k: config[k] for k in config_columns}}
        rows.extend({**base, **row} for row in record["rows"])
    columns = ["config_id", *config_columns, *score_columns]
    frame = pd.DataFrame(rows, columns=None if rows else columns)
    extra = [c for c in frame.columns if c not in columns]
    return frame.reindex(columns=[*columns, *extra])


def read_results(path: str | os.PathLike[str], *, grid: Any = None) -> pd.DataFrame:
    """The results of a sweep as a tidy DataFrame: one row per configuration and score.

    Columns: ``config_id``, every setting of :data:`DEFAULTS` except ``sites``, then the score
    columns of :func:`nopelens.analyze` (``site, layer, metric, value, chance, ci_low, ci_high,
    n_seqs, seq_len``) and ``elapsed_s``.

    Args:
        path: A sweep's ``out_dir`` or its ``results.jsonl``.
        grid: If given, only the configurations of this grid, in grid order.

    Examples:
        >>> import tempfile
        >>> read_results(tempfile.mkdtemp()).empty
        True
    """
    records = read_records(path)
    if grid is not None:
        ids = [config_id(c) for c in expand_grid(grid)]
        chosen = [records[i] for i in ids if i in records]
    else:
        chosen = list(records.values())
    return _frame(chosen)


#: Modules the fork server imports once, so that workers start without importing torch again.
_PRELOAD = [
    "nopelens.experiments.sweeps",
    "nopelens.measure.activations",
    "nopelens.measure.analysis",
    "nopelens.measure.ablation",
]


def _pool_context() -> multiprocessing.context.BaseContext:
    """A fork server preloaded with torch and TransformerLens where available, else spawn.

    Plain ``fork`` of a process that has already run torch can deadlock in OpenMP; the fork
    server is a fresh single-threaded process that imports the heavy modules once and forks
    each worker from there (about 3x faster to start two workers than ``spawn`` here).
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def _default_workers(max_workers: int | None, n_jobs: int) -> int:
    workers = _available_cpus() if max_workers is None else max_workers
    return max(1, min(workers, n_jobs))


def sweep(
    grid: Any,
    *,
    out_dir: str | os.PathLike[str],
    executor: Any = None,
    max_workers: int | None = None,
    progress: bool = True,
    max_configs: int | None = None,
) -> pd.DataFrame:
    """Run every configuration of ``grid`` that ``out_dir`` has not finished; return all results.

    Every configuration is validated first (:func:`expand_grid`); nothing runs if any is bad.
    Finished configurations in ``out_dir/results.jsonl`` are skipped, the others run through
    ``executor`` (each job is ``run_config(config)``) and are appended, one line each, as they
    finish. If a job raises, the configurations finished so far stay written, the ones not
    started are cancelled, and the error is raised naming the configuration; running the same
    sweep again continues from there.

    Args:
        grid: A dict of setting -> list of values, a list of such dicts, or a :data:`PRESETS`
            entry.
        out_dir: Folder of ``results.jsonl`` and ``grid.json`` (created if needed).
        executor: Any :class:`concurrent.futures.Executor` (e.g. a Dask ``client.get_executor()``
            or a Ray adapter); it is not shut down. ``None``: a local process pool of
            ``max_workers`` workers (forked from a fork server, one torch thread each), or this
            process when ``max_workers == 1`` or a single configuration is pending.
        max_workers: Worker processes of the default pool (default: the available CPUs); with
            an ``executor``, the number of jobs kept in flight (default: all).
        progress: Show a progress bar (tqdm, on stderr).
        max_configs: Run at most this many pending configurations now (the rest stay pending).

    Returns:
        :func:`read_results` of the grid's configurations, in grid order.

    Raises:
        ValueError: For an invalid grid or argument, before anything runs.
        RuntimeError: If a configuration fails (after writing the finished ones), or another
            sweep holds ``out_dir``.

    Examples:
        >>> import tempfile
        >>> grid = {"n_layers": [1], "d_model": [16], "n_heads": [2], "seq_len": [8],
        ...         "n_seqs": [4], "n_bootstrap": [10], "seed": [0, 1]}
        >>> frame = sweep(grid, out_dir=tempfile.mkdtemp(), max_workers=1, progress=False)
        >>> frame["config_id"].nunique()
        2
    """
    func = "sweep"
    configs = expand_grid(grid)
    if max_workers is not None and (
        isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
    ):
        raise InvalidParameterError(
            f"The 'max_workers' parameter of {func} must be None or an int >= 1. "
            f"Got {max_workers!r} instead."
        )
    if max_configs is not None and (
        isinstance(max_configs, bool) or not isinstance(max_configs, int) or max_configs < 0
    ):
        raise InvalidParameterError(
            f"The 'max_configs' parameter of {func} must be None or an int >= 0. "
            f"Got {max_configs!r} instead."
        )
    if executor is not None and not isinstance(executor, cf.Executor):
        raise InvalidParameterError(
            f"The 'executor' parameter of {func} must be None or a concurrent.futures.Executor. "
            f"Got {type(executor).__name__} instead."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE
    with _locked(out):
        _repair(results_path)
        done = read_records(results_path)
        pending = [c for c in configs if config_id(c) not in done]
        if max_configs is not None:
            pending = pending[:max_configs]
        logger.info(
            "sweep: %d configurations, %d already finished, %d to run now",
            len(configs),
            sum(config_id(c) in done for c in configs),
            len(pending),
        )
        write_json(
            out / GRID_FILE,
            {
                "grids": _normalize_grids(grid),
                "n_configs": len(configs),
                "config_ids": [config_id(c) for c in configs],
            },
        )
        if pending:
            _run(pending, results_path, executor, max_workers, progress)
    records = read_records(results_path)
    return _frame([records[i] for i in (config_id(c) for c in configs) if i in records])


def _run(
    pending: list[dict[str, Any]],
    results_path: Path,
    executor: cf.Executor | None,
    max_workers: int | None,
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    own = executor is None
    if own:
        workers = _default_workers(max_workers, len(pending))
        in_flight = 2 * workers
        if workers == 1:
            executor = SequentialExecutor()
            in_flight = 1
        else:
            executor = cf.ProcessPoolExecutor(
                max_workers=workers, mp_context=_pool_context(), initializer=init_worker
            )
    else:
        in_flight = len(pending) if max_workers is None else max_workers
    assert executor is not None
    fd = os.open(results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    bar = tqdm(total=len(pending), desc="sweep", unit="config", disable=not progress)
    queue = list(reversed(pending))
    running: dict[cf.Future, dict[str, Any]] = {}
    try:
        while queue or running:
            while queue and len(running) < in_flight:
                config = queue.pop()
                running[executor.submit(run_config, config)] = config
            finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                config = running.pop(future)
                cid = config_id(config)
                try:
                    rows = future.result()
                except Exception as err:
                    raise RuntimeError(
                        f"Configuration {cid} ({_label(config)}) failed: "
                        f"{type(err).__name__}: {err}"
                    ) from err
                _append_line(fd, {"config_id": cid, "config": config, "rows": rows})
                bar.update()
    except BaseException:
        for future in running:
            future.cancel()
        raise
    finally:
        bar.close()
        os.close(fd)
        if own:
            executor.shutdown(wait=True, cancel_futures=True)


# Summaries --------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = [
    "param",
    "value",
    "site",
    "layer",
    "metric",
    "n_configs",
    "chance",
    "mean",
    "mean_excess",
    "excess_ci_low",
    "excess_ci_high",
    "frac_above",
    "frac_below",
    "above_chance",
    "verdict",
    "failing_range",
]
#: Columns never summarised as hyperparameters (seeds are replicates, pooled in every group).
_NOT_PARAMS = {"config_id", "device", "sites", "seed", "data_seed"}


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (2, value)
    return (3, str(value))


def _mean_ci(
    excess: np.ndarray, lows: np.ndarray, highs: np.ndarray, confidence: float
) -> tuple[float, float]:
    """CI of the mean excess over configurations (t-interval; one config: its own CI)."""
    if len(excess) == 1:
        return float(lows[0]), float(highs[0])
    from scipy import stats

    sem = float(np.std(excess, ddof=1)) / math.sqrt(len(excess))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(excess) - 1)) * sem
    mean = float(np.mean(excess))
    return mean - half, mean + half


def _display(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return "default" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def summarize(
    results: pd.DataFrame | str | os.PathLike[str],
    *,
    by: Sequence[str] = (),
    margin: float = 0.0,
    confidence: float = 0.95,
    layers: str = "each",
) -> pd.DataFrame:
    """Per hyperparameter value: is the pattern above chance, with confidence intervals?

    For every setting that takes more than one value in ``results`` (seeds excepted: they are
    replicates, pooled in every group) and every value of it, and for every
    ``(site, layer, metric)`` (and every combination of the ``by`` settings), over the
    configurations with that value:

    * ``frac_above`` / ``frac_below``: share of configurations whose own CI (the bootstrap over
      sequences of :func:`nopelens.analyze`) lies entirely above / below chance
      (``ci_low > chance + margin`` / ``ci_high < chance``);
    * ``mean_excess`` with ``excess_ci_low``, ``excess_ci_high``: mean of ``value - chance`` with
      a t-interval over configurations (a single configuration keeps its own CI), so settings
      that change the chance level (``seq_len`` for the adjacency probability) are comparable,
      and ``above_chance = excess_ci_low > margin``. Configurations share their token batch unless
      ``data_seed`` is swept, so this interval reflects weight variability only: a tiny,
      consistent excess can be "above chance" here while no single configuration is;
    * ``verdict``: ``"holds"`` (every configuration above chance), ``"mixed"`` (at least half)
      or ``"fails"`` (fewer than half);
    * ``failing_range``: for failing values, the contiguous run of failing values (in sorted
      order) they belong to, e.g. ``"seq_len >= 512"`` or ``"normalization_type = 'none'"``.

    A marginal over a setting that interacts with another (positional encoding x causal vs
    bidirectional) pools both; pass the other one in ``by`` to split it.

    Args:
        results: A :func:`sweep` / :func:`read_results` frame, or a sweep folder.
        by: Settings to stratify by: each of their value combinations is summarised separately
            (they become columns of the summary and are not summarised as parameters).
        margin: How far above chance a configuration's ``ci_low`` must be to count (e.g.
            ``0.1``: NC above 0.6); 0 tests "above chance" only.
        confidence: Level of the interval over configurations.
        layers: ``"each"`` keeps layer labels (``embed``, ``0``, ...); ``"last"`` relabels each
            configuration's last block as ``"last"`` and drops the other blocks.

    Returns:
        A DataFrame with columns ``param, value, *by, site, layer, metric, n_configs, chance,
        mean, mean_excess, excess_ci_low, excess_ci_high, frac_above, frac_below, above_chance,
        verdict, failing_range``.

    Raises:
        ValueError: For a frame without the score columns, or an unknown ``by`` column.

    Examples:
        >>> frame = pd.DataFrame({
        ...     "config_id": ["a", "b"], "seq_len": [16, 1024], "site": "resid_post",
        ...     "layer": "0", "metric": "neighborhood_concordance", "value": [0.9, 0.5],
        ...     "chance": 0.5, "ci_low": [0.85, 0.45], "ci_high": [0.95, 0.55]})
        >>> summarize(frame)[["value", "verdict", "failing_range"]].values.tolist()
        [[16, 'holds', ''], [1024, 'fails', 'seq_len >= 1024']]
    """
    from nopelens.validation import check_choice, check_float

    check_float(confidence, "confidence", "summarize", min=0.0, max=1.0, min_inclusive=False)
    check_choice(layers, "layers", ("each", "last"), "summarize")
    margin = check_float(margin, "margin", "summarize", min=0.0)
    by = [by] if isinstance(by, str) else list(by)
    frame = results if isinstance(results, pd.DataFrame) else read_results(results)
    needed = {"config_id", "site", "layer", "metric", "value", "chance", "ci_low", "ci_high"}
    missing = needed - set(frame.columns)
    if missing:
        raise InvalidParameterError(
            "The 'results' parameter of summarize must have the columns of read_results. "
            f"Missing: {sorted(missing)}."
        )
    unknown = [c for c in by if c not in frame.columns or c in needed]
    if unknown:
        raise InvalidParameterError(
            f"The 'by' parameter of summarize must name settings (columns) of the results. "
            f"Got {unknown!r} instead."
        )
    columns = [*_SUMMARY_COLUMNS[:2], *by, *_SUMMARY_COLUMNS[2:]]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.copy()
    frame["layer"] = frame["layer"].astype(str)
    if layers == "last":
        is_block = frame["layer"].str.fullmatch(r"\d+")
        blocks = frame[is_block]
        last = blocks["layer"].astype(int).groupby(blocks["config_id"]).max().astype(str)
        frame = frame[is_block & (frame["layer"] == frame["config_id"].map(last))]
        frame = frame.assign(layer="last")

    def keys(column: str) -> pd.Series:
        return frame[column].map(lambda v: json.dumps(to_jsonable(v)))

    score_columns = needed | {"n_seqs", "elapsed_s"}
    candidates = [
        c for c in frame.columns if c not in score_columns and c not in _NOT_PARAMS and c not in by
    ]
    per_config = frame.drop_duplicates("config_id")
    params = [
        c
        for c in candidates
        if per_config[c].map(lambda v: json.dumps(to_jsonable(v))).nunique() > 1
    ]
    if not params:
        frame = frame.assign(**{"(all)": "(all)"})
        params = ["(all)"]

    rows = []
    strata = [keys(c) for c in by]
    for param in params:
        groups = frame.groupby([keys(param), *strata, "site", "layer", "metric"], sort=False)
        for (key, *rest), group in groups:
            *by_keys, site, layer, metric = rest
            excess = (group["value"] - group["chance"]).to_numpy(dtype=float)
            lows = (group["ci_low"] - group["chance"]).to_numpy(dtype=float)
            highs = (group["ci_high"] - group["chance"]).to_numpy(dtype=float)
            ci_low, ci_high = _mean_ci(excess, lows, highs, confidence)
            frac_above = float(np.mean(lows > margin))
            verdict = "holds" if frac_above == 1.0 else "mixed" if frac_above >= 0.5 else "fails"
            rows.append(
                {
                    "param": param,
                    "value": json.loads(key),
                    **{c: json.loads(k) for c, k in zip(by, by_keys, strict=True)},
                    "site": site,
                    "layer": layer,
                    "metric": metric,
                    "n_configs": len(group),
                    "chance": float(group["chance"].mean()),
                    "mean": float(group["value"].mean()),
                    "mean_excess": float(np.mean(excess)),
                    "excess_ci_low": ci_low,
                    "excess_ci_high": ci_high,
                    "frac_above": frac_above,
                    "frac_below": float(np.mean(highs < 0)),
                    "above_chance": bool(ci_low > margin),
                    "verdict": verdict,
                    "failing_range": "",
                }
            )
    summary = pd.DataFrame(rows, columns=columns)
    _fill_ranges(summary, by)
    summary["value"] = summary["value"].map(_display)
    summary.attrs["margin"] = margin
    return summary


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fill_ranges(summary: pd.DataFrame, by: Sequence[str] = ()) -> None:
    """Name where each setting fails, in place.

    Numeric values: the contiguous runs of failing values in sorted order (``seq_len >= 512``,
    ``initializer_range in 0.2..1.0``). Other values (strings, booleans, ``default``): the set of
    failing values (``normalization_type in {'LNPre', 'none'}``).
    """
    if summary.empty:
        return
    for _, group in summary.groupby(
        ["param", *by, "site", "layer", "metric"], sort=False, dropna=False
    ):
        param = group["param"].iloc[0]
        items = sorted(
            ((_display(summary.at[i, "value"]), i) for i in group.index),
            key=lambda item: _sort_key(item[0]),
        )
        fails = {i: summary.at[i, "verdict"] == "fails" for _, i in items}
        numbers = [(v, i) for v, i in items if _is_number(v)]
        start = 0
        while start < len(numbers):
            if not fails[numbers[start][1]]:
                start += 1
                continue
            end = start
            while end + 1 < len(numbers) and fails[numbers[end + 1][1]]:
                end += 1
            low, high = numbers[start][0], numbers[end][0]
            at_bottom, at_top = start == 0, end == len(numbers) - 1
            if at_bottom and at_top:
                text = f"{param}: every value ({low!r}..{high!r})"
            elif at_top:
                text = f"{param} >= {low!r}"
            elif at_bottom:
                text = f"{param} <= {high!r}"
            elif start == end:
                text = f"{param} = {low!r}"
            else:
                text = f"{param} in {low!r}..{high!r}"
            for _, i in numbers[start : end + 1]:
                summary.at[i, "failing_range"] = text
            start = end + 1
        others = [(v, i) for v, i in items if not _is_number(v) and fails[i]]
        if others:
            text = (
                f"{param} = {others[0][0]!r}"
                if len(others) == 1
                else f"{param} in {{{', '.join(repr(v) for v, _ in others)}}}"
            )
            for _, i in others:
                summary.at[i, "failing_range"] = text


def failure_ranges(summary: pd.DataFrame) -> list[str]:
    """Sentences naming where the pattern is not above chance, from a :func:`summarize` frame.

    A ``(site, layer, metric)`` that fails for every value of every setting is reported once
    (e.g. the input embedding of a NoPE model); otherwise each failing range is listed, then
    the "mixed" values with their share of configurations above chance.

    Examples:
        >>> frame = pd.DataFrame({
        ...     "config_id": ["a", "b"], "seq_len": [16, 1024], "site": "resid_post",
        ...     "layer": "0", "metric": "NC", "value": [0.9, 0.5],
        ...     "chance": 0.5, "ci_low": [0.85, 0.45], "ci_high": [0.95, 0.55]})
        >>> failure_ranges(summarize(frame))
        ['NC at resid_post layer 0 is not above chance for seq_len >= 1024']
    """
    columns = list(summary.columns)
    by = columns[2 : columns.index("site")] if "site" in columns else []
    margin = summary.attrs.get("margin", 0.0)
    above = f"{margin:g} above chance" if margin else "above chance"
    out = []
    for keys, group in summary.groupby([*by, "site", "layer", "metric"], sort=False):
        *strata, site, layer, metric = keys
        where = f"{metric} at {site} layer {layer}"
        if by:
            where += " with " + ", ".join(f"{c}={v!r}" for c, v in zip(by, strata, strict=True))
        if (group["verdict"] == "fails").all():
            out.append(f"{where} is not {above} in any configuration group")
            continue
        ranges = list(dict.fromkeys(r for r in group["failing_range"] if r))
        mixed = group[group["verdict"] == "mixed"]
        parts = []
        if ranges:
            parts.append(f"not {above} for " + "; ".join(ranges))
        if len(mixed):
            parts.append(
                f"{above} in only some configurations for "
                + ", ".join(
                    f"{p} = {v!r} ({f:.0%})"
                    for p, v, f in zip(
                        mixed["param"], mixed["value"], mixed["frac_above"], strict=True
                    )
                )
            )
        if parts:
            out.append(f"{where} is " + "; ".join(parts))
    return out
