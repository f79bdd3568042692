"""Saved and pretrained models, and the inputs they read: shared by ``nopelens analyze`` and sweeps.

A *model source* is what ``nopelens analyze --model`` and the sweep setting ``model`` accept, in
this order: a nopelens checkpoint file (:func:`nopelens.save_model`), a ``nopelens train`` folder
(its ``final.pt``), a local Hugging Face folder (``config.json``), or a TransformerLens model name
(``gpt2``, ``pythia-70m``, ...) read from the local Hugging Face cache (:func:`load_source`).

Its *inputs*, by default, are what the model was made for (:func:`model_inputs`): a ``nopelens
train`` model reads test examples of its own task, a model with a tokenizer real text (the
Python standard library's source), any other model uniformly random tokens. A *text* (a UTF-8
file, a folder of text files, or ``"stdlib"``) is cut into windows with the model's tokenizer
(:func:`nopelens.measure.text_windows`, BOS prepended).

The command line and the sweep call the same functions here, so ``nopelens analyze --model X
--text Y`` and the sweep configuration ``{"model": X, "text": Y, "data_seed": 0}`` give the same
scores. For sweeps this module also checks the settings before any work
(:func:`source_value_problem`, :func:`source_config_problems`: paths that exist, names in the local
cache, no architecture setting beside a saved model) and fingerprints the files a configuration read
(:func:`source_fingerprint`), so that a resumed sweep refuses results of a file that has changed
since (:func:`stale_problems`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nopelens.validation import InvalidParameterError

#: ``text`` value that selects the Python standard library's own source.
STDLIB = "stdlib"
#: Files of a text folder that are read (top level, sorted).
TEXT_SUFFIXES: tuple[str, ...] = (".txt", ".md", ".rst", ".py")
#: Sequence length of the default inputs (capped by the model's ``n_ctx``).
DEFAULT_SEQ_LEN = 32
#: Training-run files (``nopelens.training``): the trained model and what describes the run.
_FINAL, _INITIAL, _METRICS, _CHECKPOINT = "final.pt", "initial.pt", "metrics.json", "checkpoint.pt"
#: Files up to this size are fingerprinted by content (SHA-256), larger ones by size and mtime.
_HASH_LIMIT = 1 << 20


# Loading a model ----------------------------------------------------------------------------------


def is_training_run(folder: Path) -> bool:
    """Whether ``folder`` holds a ``nopelens train`` run (a final, initial or resume file)."""
    return any((folder / name).is_file() for name in (_FINAL, _INITIAL, _CHECKPOINT))


def load_source(
    source: str, *, device: str = "cpu", dtype: str = "float32", allow_download: bool = False
) -> Any:
    """Load a model source: a checkpoint, a training folder, a Hugging Face folder or a name.

    Args:
        source: A path or a TransformerLens model name (module docstring).
        device: Where to put the model.
        dtype: Floating-point type to run it in.
        allow_download: Let a model name fetch files that are not cached (default: never).

    Returns:
        A ``HookedTransformer`` in eval mode.

    Raises:
        InvalidParameterError: For a folder that is none of these, a name that is neither a
            path nor a TransformerLens model, or an unfinished training run.

    Examples:
        >>> import pathlib, tempfile, nopelens
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.pt"
        >>> _ = nopelens.save_model(nopelens.build_model(n_layers=1, d_model=8, n_heads=2,
        ...                                              d_vocab=5, n_ctx=4), path)
        >>> load_source(str(path)).cfg.n_layers
        1
    """
    from nopelens.models import load_model, load_pretrained

    path = Path(source)
    if path.is_file():
        model = load_model(path, device=device)
    elif path.is_dir() and not (path / "config.json").exists() and is_training_run(path):
        if not (path / _FINAL).is_file():
            raise InvalidParameterError(
                f"{str(path)!r} holds a nopelens training run that has not finished (no "
                f"{_FINAL}): resume it with `nopelens train`, or pass {str(path / _INITIAL)!r} "
                f"for the untrained model."
            )
        model = load_model(path / _FINAL, device=device)
    else:
        return load_pretrained(source, device=device, dtype=dtype, allow_download=allow_download)
    if dtype != "float32":
        import torch

        model = model.to(getattr(torch, dtype), print_details=False)
    return model


def source_task(source: str | None) -> Any:
    """The task of a model made by ``nopelens train`` (its folder or a file in it), or None.

    Read from the run's ``metrics.json`` (plain JSON), else from its ``checkpoint.pt``.

    Examples:
        >>> source_task(None) is None, source_task("gpt2") is None
        (True, True)
    """
    from nopelens.training import load_checkpoint, task_from_spec

    if not source:
        return None
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    if not path.exists() or (folder / "config.json").exists():
        return None
    metrics, checkpoint = folder / _METRICS, folder / _CHECKPOINT
    spec = None
    if metrics.is_file():
        try:
            spec = json.loads(metrics.read_text(encoding="utf-8")).get("task")
        except (ValueError, AttributeError):
            spec = None
    if spec is None and checkpoint.is_file():
        spec = load_checkpoint(checkpoint)["task"]
    return task_from_spec(spec) if isinstance(spec, dict) else None


def tokenizer_for(model: Any, task: Any) -> tuple[Any, int | None]:
    """The model's tokenizer (and BOS id), or the character encoding of a stdlib_chars model."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer, None
    if task is not None and task.name == "stdlib_chars":
        from nopelens.training import BOS, encode_chars

        return encode_chars, BOS
    return None, None


# Choosing its inputs ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The token batch an analysis reads, and where it came from.

    Attributes:
        tokens: ``[batch, pos]`` token ids on the model's device.
        kind: ``"text"``, ``"task"`` or ``"random"``.
        description: One line for the printed header and the dashboard.
        settings: JSON-able details (source, seed, BOS, ...) for summaries.
    """

    tokens: Any
    kind: str
    description: str
    settings: dict[str, Any]


def _names(cli: bool) -> dict[str, str]:
    """How messages name the inputs' options: CLI flags, or sweep settings."""
    if cli:
        return {"text": "--text", "seq_len": "--seq-len", "random": "--random-tokens"}
    return {"text": "the 'text' setting", "seq_len": "seq_len", "random": "text=None"}


def text_documents(text: str, seed: int, *, cli: bool = False) -> tuple[list[Any], str]:
    """The documents of a text value (files, or the standard library's) and a description."""
    from nopelens.measure import stdlib_sources

    option = "'--text' option" if cli else "'text' setting"
    if text == STDLIB:
        return list(stdlib_sources(seed=seed)), "the Python standard library's source"
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise InvalidParameterError(
                f"The {option} names the folder {text!r}, which holds no "
                f"{', '.join(TEXT_SUFFIXES)} files."
            )
        return list(files), f"{len(files)} files in {text}"
    if not path.is_file():
        raise InvalidParameterError(
            f"The {option} must be a text file, a folder or 'stdlib'. {text!r} does not exist"
            f"{'' if cli else f' on host {socket.gethostname()}'}."
        )
    return [path], text


def model_inputs(
    model: Any,
    *,
    task: Any = None,
    text: str | None = None,
    n_seqs: int = 32,
    seq_len: int | None = None,
    seed: int = 0,
    distinct: bool = False,
    prepend_bos: bool = True,
    random: bool = False,
    cli: bool = False,
) -> Inputs:
    """The token batch to analyse: ``text`` windows, task inputs, or random tokens.

    Without ``text`` (and not ``random``): the task's test examples when ``task`` is given, the
    standard library's source for a model with a tokenizer, random tokens otherwise.

    Args:
        model: The model (its tokenizer, ``n_ctx``, ``d_vocab`` and device are read).
        task: The model's task (:func:`source_task`), or None.
        text: A UTF-8 file, a folder of text files, ``"stdlib"``, or None (the default inputs).
        n_seqs: Sequences (windows, examples) wanted.
        seq_len: Tokens per sequence, BOS included. None: the task's length for task inputs,
            else 32 capped by the model's ``n_ctx``. Task inputs have the task's length, so
            another value is refused.
        seed: Seed of random tokens, task examples and the order of the standard-library files.
        distinct: Random tokens without repeats within a sequence.
        prepend_bos: Start each text window with the BOS token.
        random: Random tokens whatever the model (excludes ``text``).
        cli: Name command-line flags (``--text``) in error messages instead of settings.

    Returns:
        :class:`Inputs` with the tokens on the model's device.

    Examples:
        >>> import nopelens
        >>> model = nopelens.build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=7, n_ctx=6)
        >>> inputs = model_inputs(model, n_seqs=3)
        >>> inputs.kind, tuple(inputs.tokens.shape)
        ('random', (3, 6))
    """
    from nopelens.measure import random_tokens

    names = _names(cli)
    if text and random:
        raise InvalidParameterError(f"{names['text']} and {names['random']} exclude each other.")
    tokenizer, bos_id = tokenizer_for(model, task)
    defaulted = text is None and not random and task is None and tokenizer is not None
    if defaulted:
        text = STDLIB  # a language model reads language by default
    task_len = task.seq_len if task is not None and text is None and not random else None
    if task_len is not None and seq_len not in (None, task_len):
        raise InvalidParameterError(
            f"The '{names['seq_len']}' option ({seq_len}) does not fit the inputs of task "
            f"{task.name!r} ({task_len} tokens). Leave --seq-len out, or pass --random-tokens."
            if cli
            else f"seq_len={seq_len} does not fit the inputs of task {task.name!r} "
            f"({task_len} tokens). Leave seq_len out."
        )
    n_ctx = model.cfg.n_ctx
    if seq_len is None:
        seq_len = task_len if task_len is not None else min(DEFAULT_SEQ_LEN, n_ctx)
    device = model.cfg.device
    if text is not None:
        return _text_inputs(
            model, text, tokenizer, bos_id, n_seqs, seq_len, seed, prepend_bos, defaulted, cli
        )
    if task is not None and not random:
        tokens = task.sample(n_seqs, split="test", generator=seed).tokens
        description = (
            f"{n_seqs} test examples of task {task.name!r} ({tokens.shape[1]} tokens each, seed "
            f"{seed}; --random-tokens for random tokens)"
        )
        return Inputs(tokens.to(device), "task", description, {"task": task.spec(), "seed": seed})
    if seq_len > n_ctx:
        raise InvalidParameterError(
            f"The --seq-len option ({seq_len}) is longer than the model's n_ctx ({n_ctx})."
            if cli
            else f"seq_len={seq_len} is longer than the model's n_ctx ({n_ctx})."
        )
    tokens = random_tokens(n_seqs, seq_len, model.cfg.d_vocab, seed=seed, distinct=distinct)
    description = (
        f"{n_seqs} random sequences x {seq_len} tokens (seed {seed}"
        + (", distinct tokens" if distinct else "")
        + ")"
    )
    settings = {"seed": seed, "distinct": distinct}
    return Inputs(tokens.to(device), "random", description, settings)


def _text_inputs(
    model: Any,
    text: str,
    tokenizer: Any,
    bos_id: int | None,
    n_seqs: int,
    seq_len: int,
    seed: int,
    prepend_bos: bool,
    defaulted: bool,
    cli: bool,
) -> Inputs:
    """Windows of ``text`` cut with the model's tokenizer (see :func:`model_inputs`)."""
    from nopelens.measure import text_windows

    docs, source = text_documents(text, seed, cli=cli)
    if tokenizer is None:
        raise InvalidParameterError(
            ("--text" if cli else f"text={text!r}") + " needs a model with a tokenizer (a "
            "Hugging Face folder, a TransformerLens name or a stdlib_chars task model); this "
            "model reads token ids only. Leave "
            + ("--text" if cli else "text")
            + " out to analyse random tokens."
        )
    tokens = text_windows(
        model,
        docs,
        seq_len=seq_len,
        prepend_bos=prepend_bos,
        tokenizer=tokenizer,
        bos_id=bos_id,
        max_windows=n_seqs,
        max_per_document=math.ceil(n_seqs / 16) if text == STDLIB else None,
    )
    short = f" (the text holds only {len(tokens)})" if len(tokens) < n_seqs else ""
    description = (
        f"{len(tokens)} windows of {seq_len} tokens from {source}{short}, "
        f"{'BOS prepended' if prepend_bos else 'no BOS'}"
        + (
            " (the default for a model with a tokenizer; --text FILE or --random-tokens to "
            "change it)"
            if defaulted
            else ""
        )
    )
    settings = {"source": str(text), "prepend_bos": prepend_bos, "seed": seed}
    return Inputs(tokens.to(model.cfg.device), "text", description, settings)


# Sweep settings: validation -----------------------------------------------------------------------


def canonical_source(value: Any) -> Any:
    """An existing path as an absolute path (``~`` expanded); anything else unchanged.

    Sweep configurations store absolute paths, so that a configuration means the same file in
    every working directory (and on every node of a cluster that mounts it at the same place).

    Examples:
        >>> canonical_source("stdlib"), canonical_source(None), canonical_source("gpt2")
        ('stdlib', None, 'gpt2')
        >>> canonical_source(".") == os.getcwd()
        True
    """
    if not isinstance(value, str) or not value or value == STDLIB:
        return value
    path = os.path.expanduser(value)
    return os.path.abspath(path) if os.path.exists(path) else value


def _missing(value: str) -> str:
    return f"{value!r} does not exist on host {socket.gethostname()}"


def source_value_problem(key: str, value: Any) -> str | None:
    """What a ``model`` or ``text`` setting must be (None when it is fine); reads no weights.

    ``model``: None, an existing checkpoint file, a training or Hugging Face folder, or a
    TransformerLens model name whose files are in the local Hugging Face cache. ``text``: None,
    ``"stdlib"``, an existing file or a folder with text files.

    Examples:
        >>> source_value_problem("text", "stdlib") is None
        True
        >>> source_value_problem("text", "/no/such/file.txt")[:43]
        "None, 'stdlib', a UTF-8 file or a folder of"
    """
    if value is None:
        return None
    if key == "text":
        need = f"None, 'stdlib', a UTF-8 file or a folder of {', '.join(TEXT_SUFFIXES)} files"
        if not isinstance(value, str) or not value:
            return need
        if value == STDLIB or Path(value).is_file():
            return None
        path = Path(value)
        if path.is_dir():
            if any(p.is_file() and p.suffix in TEXT_SUFFIXES for p in path.iterdir()):
                return None
            return f"{need}; the folder {value!r} holds none"
        return f"{need}; {_missing(value)}"
    need = (
        "None (a random-init model), a nopelens checkpoint (.pt), a `nopelens train` folder, "
        "a local Hugging Face folder (config.json) or a TransformerLens model name in the local "
        "Hugging Face cache"
    )
    if not isinstance(value, str) or not value:
        return need
    path = Path(value)
    if path.is_file():
        return None
    if path.is_dir():
        if (path / "config.json").is_file() or is_training_run(path):
            return None
        return f"{need}; the folder {value!r} is none of these"
    if os.path.isabs(value) or value.startswith((".", "~")) or value.endswith(".pt"):
        return f"{need}; {_missing(value)}"
    return _name_problem(value, need)


def _name_problem(name: str, need: str) -> str | None:
    """None when ``name`` is a TransformerLens model whose config is in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    from nopelens.models.pretrained import _official_name

    try:
        official = _official_name(name)
    except InvalidParameterError:
        return f"{need}; {name!r} is no file or folder here and no TransformerLens model name"
    if isinstance(try_to_load_from_cache(official, "config.json"), str):
        return None
    return (
        f"{need}; the TransformerLens model {name!r} ({official}) is not in the local Hugging "
        "Face cache (sweeps never download: load it once with `nopelens analyze --model "
        f"{name} --allow-download`)"
    )


def source_config_problems(config: Mapping[str, Any]) -> list[str]:
    """Settings that contradict a configuration's ``model`` or ``text`` (none without them).

    A saved or pretrained model fixes its architecture and training: every model setting but
    ``nope_layers`` (the blocks whose RoPE is removed), and ``task``/``train_steps``, must keep
    its default. ``text`` needs a ``model`` (a random-init model has no tokenizer).

    Examples:
        >>> from nopelens.experiments.grid import complete_config
        >>> source_config_problems(complete_config({"text": "stdlib"}))[0][:37]
        "text='stdlib' needs a model (model=No"
        >>> source_config_problems(complete_config({"model": "gpt2", "d_model": 32}))[0][:48]
        "model='gpt2' fixes the architecture and training"
    """
    from nopelens.experiments.grid import DEFAULTS, MODEL_KEYS

    model, text = config.get("model"), config.get("text")
    if model is None:
        if text is None:
            return []
        return [
            f"text={text!r} needs a model (model=None is a random-init model, which has no "
            "tokenizer); set model to a saved or pretrained model."
        ]
    problems = []
    fixed = [k for k in MODEL_KEYS if k != "nope_layers" and config[k] != DEFAULTS[k]]
    fixed += [k for k in ("task", "train_steps") if config[k] != DEFAULTS[k]]
    if fixed:
        shown = ", ".join(f"{k}={config[k]!r}" for k in fixed)
        problems.append(
            f"model={model!r} fixes the architecture and training of the model; leave "
            f"{', '.join(fixed)} out of the grid (got {shown})."
        )
    if config["ablation"] != "none":
        problems.append(
            f"ablation={config['ablation']!r} is not supported with model={model!r} yet (it is "
            "checked against the grid's n_layers); use ablation='none'."
        )
    if config["exclude_first"] and config["seq_len"] < 4:
        problems.append(
            f"seq_len={config['seq_len']} leaves fewer than 3 positions with exclude_first=True; "
            "use seq_len >= 4."
        )
    return problems


# Running a configuration --------------------------------------------------------------------------


def config_model_inputs(config: Mapping[str, Any], seed: int) -> tuple[Any, Inputs]:
    """The model and the inputs of a sweep configuration with a ``model`` setting.

    The worker that runs the configuration reads the files itself (nothing large crosses the
    wire), so on a cluster every node must see the path. ``nope_layers`` strips RoPE from those
    blocks. ``seq_len`` at its default (32) means the inputs that ``nopelens analyze`` chooses
    (32 capped by ``n_ctx``, or the task's example length); another value is used as given.

    Raises:
        InvalidParameterError: A path that this machine (node) cannot see, naming both.
    """
    from nopelens.experiments.grid import DEFAULTS

    source = config["model"]
    problem = source_value_problem("model", source)
    if problem is not None:
        raise InvalidParameterError(f"The 'model' setting must be {problem}.")
    model = load_source(source, device=config["device"])
    if config["nope_layers"]:
        from nopelens.models import strip_positional

        model = strip_positional(model, layers=list(config["nope_layers"]), inplace=True)
    seq_len = None if config["seq_len"] == DEFAULTS["seq_len"] else int(config["seq_len"])
    inputs = model_inputs(
        model,
        task=source_task(source),
        text=config["text"],
        n_seqs=int(config["n_seqs"]),
        seq_len=seq_len,
        seed=seed,
    )
    return model, inputs


# Staleness ----------------------------------------------------------------------------------------


def _files_read(value: str, key: str) -> list[Path]:
    """The files a ``model`` or ``text`` value reads (empty for a name or ``stdlib``)."""
    path = Path(value)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    if key == "text":
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not (path / "config.json").exists() and is_training_run(path):
        return [p for p in (path / _FINAL, path / _METRICS) if p.is_file()]
    return sorted(p for p in path.iterdir() if p.is_file())


def _file_print(path: Path) -> list[Any]:
    stat = path.stat()
    if stat.st_size <= _HASH_LIMIT:
        return [path.name, stat.st_size, hashlib.sha256(path.read_bytes()).hexdigest()]
    return [path.name, stat.st_size, stat.st_mtime_ns]


def source_fingerprint(
    config: Mapping[str, Any], *, cache: dict[tuple[str, str], list[Any]] | None = None
) -> str | None:
    """A cheap fingerprint of the files a configuration's ``model`` and ``text`` read.

    Per file: its name, size, and the SHA-256 of its content (files up to 1 MiB) or its
    modification time in ns (larger files: weights are not read). None for a configuration
    without a local source (random-init models, model names from the cache, ``stdlib`` text).
    ``cache`` keeps each model's and text's file prints across calls made at one moment (one
    model read with many texts is read once).

    Examples:
        >>> source_fingerprint({"model": None, "text": None}) is None
        True
    """
    cache = {} if cache is None else cache
    parts = {}
    for key in ("model", "text"):
        value = config.get(key)
        if isinstance(value, str):
            if (key, value) not in cache:
                cache[key, value] = [_file_print(p) for p in _files_read(value, key)]
            if cache[key, value]:
                parts[key] = cache[key, value]
    if not parts:
        return None
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stale_problems(
    configs: Iterable[Mapping[str, Any]], done: Mapping[str, Mapping[str, Any]], where: str
) -> list[str]:
    """Finished configurations whose source files have changed since they ran.

    Args:
        configs: Complete configurations (``config_id`` is computed here).
        done: The finished records (config id -> record) of ``where``.
        where: The results file, named in the message.
    """
    from nopelens.experiments.grid import config_id

    problems = []
    prints: dict[tuple[str, str], list[Any]] = {}
    for config in configs:
        record = done.get(config_id(config))
        if record is None or config.get("model") is None or "fingerprint" not in record:
            continue
        if record["fingerprint"] != source_fingerprint(config, cache=prints):
            paths = " / ".join(repr(config[k]) for k in ("model", "text") if config.get(k))
            problems.append(
                f"{paths} changed since configuration {config_id(config)} was run into {where} "
                "(the files differ in size or content). Its results would not describe the "
                f"files now: use a new out_dir (--out), or delete {where} to run them again."
            )
    return problems
