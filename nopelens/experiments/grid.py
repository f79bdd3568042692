"""Sweep grids: settings and defaults, grid files, expansion into validated configurations.

A *grid* maps each setting to a list of values; its Cartesian product is a list of
*configurations*. A configuration is a complete, canonical dict of settings (every key of
:data:`DEFAULTS`) with a stable id: the first 12 hex digits of the SHA-256 of its canonical JSON
(sorted keys, no whitespace), so the same settings get the same id whatever the key order, grid
shape or run. A grid may also be a list of such dicts, whose expansions are concatenated (a
factorial core plus one-factor-at-a-time arms, as in the ``paper`` preset of
:mod:`nopelens.experiments.presets`).

Values are checked against :data:`nopelens.spec.CONSTRAINTS`, the one table of bounds and option
lists that ``build_model`` and the command line also read; combinations of settings against
:func:`nopelens.spec.spec_problems` plus the sweep's own rules (sites, sequence length, ablation,
task).

**Token batches.** Every configuration draws its own token batch by default: ``data_seed=None``
(the default) means "derived from the configuration", namely :func:`data_seed_of`, an integer
read off the configuration id, so two configurations that differ in anything (weights seed
included) see different, reproducible batches. An explicit ``data_seed`` value (``"data_seed":
[0]``, or several values to sweep it) means *shared*: every configuration with that value sees the
same batch of its size, which pairs the comparison (same tokens, different models).

**Trained-model sweeps.** ``task`` turns a configuration into a trained one: the model (its size,
positional encoding and weight seed from the grid; ``d_vocab`` and ``seq_len`` from the task) is
first trained on that task of :data:`nopelens.training.TASKS` for ``train_steps`` steps (None: the
task's recommended recipe, :data:`nopelens.training.RECOMMENDED`), then analysed on ``n_seqs``
held-out test examples of the task. A grid such as ``{"task": ["parity", "reverse"],
"positional": ["none", "learned"], "seed": [0, 1], "d_model": [64, 128]}`` is a task x positional
x seed x size sweep; ``task=None`` (the default) is a random-init model on random tokens.

**Saved models and texts.** ``model`` (a checkpoint, a ``nopelens train`` folder, a local Hugging
Face folder or a cached TransformerLens name) loads that model instead of building one, and
``text`` (a file, a folder or ``"stdlib"``) chooses what it reads: exactly what ``nopelens
analyze --model --text`` does (:mod:`nopelens.experiments.sources`, which also validates them).
Settings added after ids were first published (:data:`ID_OPTIONAL`) are left out of the id while
they hold their default, so older results files keep their ids.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nopelens.files import to_jsonable
from nopelens.spec import CONSTRAINTS, HIDDEN_SITES, MLP_SITES, spec_problems
from nopelens.validation import InvalidParameterError

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
    "nope_layers": [],  # rotary models only: blocks without the rotation (hybrid RoPE/NoPE)
    # data and analysis
    "seq_len": 32,  # with a task: the task's example length
    "n_seqs": 32,
    "data_seed": None,  # None: each configuration its own batch (data_seed_of); an int: shared
    "sites": ["resid_post"],
    "centered": False,
    "exclude_first": False,
    "n_bootstrap": 1000,
    "ablation": "none",
    # saved or pretrained models (nopelens.experiments.sources)
    "model": None,  # None: build_model from the settings above; else a checkpoint/folder/name
    "text": None,  # None: the model's default inputs; else a text file, folder or "stdlib"
    # training (trained-model sweeps)
    "task": None,  # None: random init; a task name: train on it first, analyse its test inputs
    "train_steps": None,  # None: the task's recommended number of steps
    # execution (not part of the configuration id)
    "device": "cpu",
}
#: The settings that describe the model (the ``build_model`` arguments).
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
    "nope_layers",
)
#: Settings that change how a configuration runs but not what it computes; left out of its id.
EXECUTION_KEYS: tuple[str, ...] = ("device",)
#: Settings added after configuration ids were first published: left out of the id while they
#: hold this value, so that the ids of older results files still match.
ID_OPTIONAL: dict[str, Any] = {
    "task": None,
    "train_steps": None,
    "nope_layers": [],
    "model": None,
    "text": None,
}
#: Accepted spellings -> canonical key.
ALIASES: dict[str, str] = {
    "init_range": "initializer_range",
    "normalization": "normalization_type",
    "activation": "act_fn",
}
#: Block sites a sweep can analyse (hidden states, one vector per position); the input
#: embedding is always reported as layer ``"embed"``.
SWEEP_SITES: tuple[str, ...] = HIDDEN_SITES


# Reading grids ------------------------------------------------------------------------------------


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


def _where(index: int, n_grids: int) -> str:
    """How problems name a sub-grid: ``grid`` alone, or ``grid[i]`` in a list of grids."""
    return f"grid[{index}]" if n_grids > 1 else "grid"


def _value_list(canonical: str, values: Any, where: str) -> list[Any]:
    """The values of one setting as a list (``sites``: one value, the list of sites)."""
    if canonical == "sites":
        values = [values] if isinstance(values, str) else list(values)
        if len(values) == 1 and isinstance(values[0], (list, tuple)):
            values = list(values[0])  # already normalised
        if not values or any(not isinstance(v, str) for v in values):
            raise InvalidParameterError(
                f"{where}['sites'] must be a list of site names (every configuration "
                f"analyses all of them; sites are not a swept axis). Got {values!r}."
            )
        return [values]
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if canonical in ("model", "text"):  # existing paths as absolute paths
        from nopelens.experiments.sources import canonical_source

        values = [canonical_source(v) for v in values]
    return values


def _normalize_entry(entry: Any, where: str) -> dict[str, list[Any]]:
    """One sub-grid with canonical keys and every value list a list."""
    if not isinstance(entry, Mapping):
        raise InvalidParameterError(
            f"{where} must be a dict of setting -> list of values. Got {entry!r:.80} instead."
        )
    normalized: dict[str, list[Any]] = {}
    for key, values in entry.items():
        canonical = _canonical_key(key, where, list(DEFAULTS))
        if canonical in normalized:
            raise InvalidParameterError(f"{where} sets {canonical!r} twice (via {key!r}).")
        values = _value_list(canonical, values, where)
        if not values:
            hint = (
                " 'nope_layers' is a list-valued setting: each value is a list of blocks, so "
                "[[]] is one configuration with no NoPE block and [[], [0, 4]] two; a "
                "configuration from expand_grid is not a grid (wrap each value in a list)."
                if canonical == "nope_layers"
                else ""
            )
            raise InvalidParameterError(f"{where}[{canonical!r}] has no values.{hint}")
        normalized[canonical] = values
    return normalized


def normalize_grids(grid: Any) -> list[dict[str, list[Any]]]:
    """Check the shape of a grid (dict or list of dicts) and promote scalars to one-value lists.

    Examples:
        >>> normalize_grids({"seed": 1, "activation": ["relu"]})
        [{'seed': [1], 'act_fn': ['relu']}]
    """
    if isinstance(grid, Mapping) and set(grid) == {"grids"}:
        grid = grid["grids"]
    grids = [grid] if isinstance(grid, Mapping) else grid
    if isinstance(grids, (str, bytes)) or not isinstance(grids, Sequence) or not grids:
        raise InvalidParameterError(
            "The 'grid' parameter of sweep must be a dict of setting -> list of values, or a "
            f"non-empty list of such dicts. Got {type(grid).__name__} {grid!r:.80} instead."
        )
    return [_normalize_entry(entry, _where(i, len(grids))) for i, entry in enumerate(grids)]


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
    return normalize_grids(data)


def override_grid(grid: Any, overrides: Mapping[str, Any]) -> list[dict[str, list[Any]]]:
    """Set some keys of every sub-grid (e.g. fewer sequences for a quick run).

    Examples:
        >>> override_grid({"d_model": [32, 64]}, {"seed": [0, 1]})
        [{'d_model': [32, 64], 'seed': [0, 1]}]
    """
    grids = copy.deepcopy(normalize_grids(grid))
    extra = normalize_grids(dict(overrides))[0] if overrides else {}
    return [{**g, **extra} for g in grids]


# Configurations -----------------------------------------------------------------------------------


def complete_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration with every :data:`DEFAULTS` key, aliases resolved and values canonical.

    Examples:
        >>> config = complete_config({"normalization": None, "init_range": 1})
        >>> config["normalization_type"], config["initializer_range"], config["d_model"]
        ('none', 1.0, 64)
    """
    config = dict(DEFAULTS)  # values are scalars except sites (a list, copied below)
    config.update(
        {
            ALIASES.get(k, k): (copy.deepcopy(v) if isinstance(v, (list, dict)) else v)
            for k, v in values.items()
        }
    )
    if config["normalization_type"] is None:
        config["normalization_type"] = "none"
    if isinstance(config["initializer_range"], int) and not isinstance(
        config["initializer_range"], bool
    ):
        config["initializer_range"] = float(config["initializer_range"])
    if isinstance(config["nope_layers"], (list, tuple)):
        layers = config["nope_layers"]
        if all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            config["nope_layers"] = sorted(set(layers))  # canonical: one id per set of blocks
    if isinstance(config["sites"], str):
        config["sites"] = [config["sites"]]
    elif isinstance(config["sites"], (list, tuple)):
        config["sites"] = list(config["sites"])  # never the list of DEFAULTS itself
    given = {ALIASES.get(k, k) for k in values}
    sizes = _task_sizes(config["task"])
    if sizes is not None:  # the task fixes the vocabulary and the example length
        for key in ("d_vocab", "seq_len"):
            if key not in given:
                config[key] = sizes[key]
    return config


def _task_sizes(task: Any) -> dict[str, int] | None:
    """``d_vocab`` and ``seq_len`` of a task given by name (None for no task or a bad name)."""
    if task is None or not isinstance(task, str):
        return None
    from nopelens.training import TASKS, get_task

    if task not in TASKS:
        return None
    instance = get_task(task)
    return {"d_vocab": instance.d_vocab, "seq_len": instance.seq_len}


def data_seed_of(config: Mapping[str, Any]) -> int:
    """The seed of a configuration's token batch: ``data_seed``, or one derived from its id.

    ``data_seed=None`` (the default) gives every configuration its own batch: the integer value
    of its 12-hex-digit id (:func:`config_id`, which leaves the device out), so the batch is the
    same on every machine and run. An explicit ``data_seed`` is shared by every configuration
    that sets it.

    Examples:
        >>> data_seed_of({"data_seed": 3})
        3
        >>> data_seed_of({"seed": 1}) == int(config_id({"seed": 1}), 16)
        True
        >>> data_seed_of({"seed": 1}) != data_seed_of({"seed": 2})
        True
    """
    seed = complete_config(config)["data_seed"]
    return int(config_id(config), 16) if seed is None else int(seed)


def config_id(config: Mapping[str, Any]) -> str:
    """The stable id of a configuration: 12 hex digits of the SHA-256 of its canonical JSON.

    Missing settings take their :data:`DEFAULTS` first, and execution settings (``device``) are
    left out, so ``{"d_model": 64}`` and the full default configuration share an id. So are the
    settings of :data:`ID_OPTIONAL` while they hold their default (``task=None``).

    Examples:
        >>> config_id({"d_model": 64}) == config_id({})
        True
        >>> config_id({"task": None}) == config_id({}) != config_id({"task": "parity"})
        True
        >>> len(config_id({"seed": 1}))
        12
    """
    full = complete_config(config)
    payload = {
        k: v
        for k, v in full.items()
        if k not in EXECUTION_KEYS and not (k in ID_OPTIONAL and v == ID_OPTIONAL[k])
    }
    text = json.dumps(to_jsonable(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def context_length(config: Mapping[str, Any]) -> int:
    """The model's ``n_ctx``: the setting, or ``seq_len`` when it is unset."""
    return config["n_ctx"] if config["n_ctx"] is not None else config["seq_len"]


def model_extra(config: Mapping[str, Any]) -> dict[str, Any]:
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
    if config.get("nope_layers"):
        extra["nope_layers"] = list(config["nope_layers"])
    return extra


def config_label(config: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """``k=v`` for ``keys`` (default: the settings that differ from :data:`DEFAULTS`).

    Examples:
        >>> config_label(complete_config({"d_model": 32, "seed": 1}))
        'd_model=32, seed=1'
    """
    if keys is None:
        keys = [k for k in config if k in DEFAULTS and config[k] != DEFAULTS[k]]
    shown = [k for k in keys if k in config] or ["seed"]
    return ", ".join(f"{k}={config[k]!r}" for k in shown)


# Validation ---------------------------------------------------------------------------------------


def value_problem(key: str, value: Any) -> str | None:
    """What ``value`` must be for ``key`` (None when it is fine), without looking at other keys.

    The bounds and option lists are :data:`nopelens.spec.CONSTRAINTS`, shared with build_model
    and the CLI.

    Examples:
        >>> value_problem("d_model", 64) is None
        True
        >>> value_problem("attn_only", "yes")
        'a bool'
    """
    if key in ("n_ctx", "data_seed", "train_steps") and value is None:
        return None
    if key == "task":
        return _task_problem(value)
    if key in ("model", "text"):
        from nopelens.experiments import sources

        return sources.source_value_problem(key, value)
    if key == "train_steps":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "an int >= 1 or None (the task's recommended number of steps)"
    if key in CONSTRAINTS:
        constraint = CONSTRAINTS[key]
        return None if constraint.accepts(value) else constraint.describe()
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


def _task_problem(value: Any) -> str | None:
    """What a ``task`` value must be (None when it is fine)."""
    if value is None:
        return None
    from nopelens.training import TASKS

    if isinstance(value, str) and value in TASKS:
        return None
    return f"None (random init) or a task name: one of {', '.join(repr(t) for t in TASKS)}"


def _task_config_problems(config: Mapping[str, Any]) -> list[str]:
    """Settings that contradict the configuration's task (sizes, train_steps without a task)."""
    if config["task"] is None:
        if config["train_steps"] is not None:
            return [
                f"train_steps={config['train_steps']} needs a task (task=None is a random-init "
                "model, which is not trained)."
            ]
        return []
    sizes = _task_sizes(config["task"])
    if sizes is None:
        return []  # a bad task name is reported by value_problem
    problems = []
    for key, value in sizes.items():
        if config[key] != value:
            problems.append(
                f"task={config['task']!r} fixes {key}={value}; got {key}={config[key]}. "
                f"Leave {key} out of a trained-model grid."
            )
    return problems


def _site_problems(config: Mapping[str, Any]) -> list[str]:
    """Sites that the configuration's model does not have."""
    problems = []
    for site in config["sites"]:
        if config["attn_only"] and site in MLP_SITES:
            problems.append(
                f"site {site!r} does not exist in attention-only models (attn_only=True)."
            )
        if config["normalization_type"] == "none" and "normalized" in site:
            problems.append(f"site {site!r} does not exist with normalization_type='none'.")
    return problems


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems of a complete configuration that involve several settings."""
    from nopelens.measure import check_ablation

    if config.get("model") is not None or config.get("text") is not None:
        from nopelens.experiments import sources

        return sources.source_config_problems(config)  # the architecture is the source's
    values = {**{k: config[k] for k in MODEL_KEYS}, "n_ctx": context_length(config)}
    problems = spec_problems(values, "build_model")
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
    problems += _site_problems(config)
    problems += _task_config_problems(config)
    problems += check_ablation(
        config["ablation"],
        n_layers=config["n_layers"],
        seq_len=config["seq_len"],
        attn_only=config["attn_only"],
    )
    return problems


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`~nopelens.validation.InvalidParameterError` listing every problem."""
    if not problems:
        return
    if len(problems) == 1:
        raise InvalidParameterError(problems[0])
    shown = problems[:25]
    more = f"\n- ... and {len(problems) - 25} more" if len(problems) > 25 else ""
    raise InvalidParameterError(
        f"The grid has {len(problems)} problems (nothing was run):\n- " + "\n- ".join(shown) + more
    )


def _grid_value_problems(grids: list[dict[str, list[Any]]]) -> list[str]:
    """Every bad value of every sub-grid, and a grid that expands to too many configurations."""
    problems: list[str] = []
    for index, entry in enumerate(grids):
        where = _where(index, len(grids))
        for key, values in entry.items():
            for value in values:
                need = value_problem(key, value)
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
    return problems


def _expand_checked(
    grids: list[dict[str, list[Any]]],
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The configurations (id -> config, first of each id) and their combination problems.

    A problem shared by several configurations is named once, with the first configuration
    that has it and how many more do.
    """
    configs: dict[str, dict[str, Any]] = {}
    combo: dict[str, tuple[str, int]] = {}
    for index, entry in enumerate(grids):
        where = _where(index, len(grids))
        keys = list(entry)
        for values in itertools.product(*entry.values()):
            config = complete_config(dict(zip(keys, values, strict=True)))
            for problem in config_problems(config):
                label = f"{where} configuration ({config_label(config, keys)})"
                first, count = combo.get(problem, (label, 0))
                combo[problem] = (first, count + 1)
            configs.setdefault(config_id(config), config)
    problems = [
        f"{label}: {problem}" + (f" (and {count - 1} more configurations)" if count > 1 else "")
        for problem, (label, count) in combo.items()
    ]
    return configs, problems


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
    grids = normalize_grids(grid)
    raise_problems(_grid_value_problems(grids))
    configs, problems = _expand_checked(grids)
    raise_problems(problems)
    return list(configs.values())
