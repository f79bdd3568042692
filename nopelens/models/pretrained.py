"""Pretrained models: a local Hugging Face folder or a TransformerLens model name, offline.

:func:`load_pretrained` returns a TransformerLens ``HookedTransformer``, so every nopelens
analysis runs on it unchanged.

* **A local Hugging Face folder** (``config.json`` plus ``model.safetensors`` or sharded weights,
  and usually a tokenizer): loaded through TransformerLens' own conversion code
  (``loading_from_pretrained.convert_hf_model_config`` and ``get_pretrained_state_dict``) from a
  model that ``transformers`` reads locally. Any architecture TransformerLens 3.x converts works
  (GPT-2, GPT-Neo/J/NeoX, OPT, Llama, Mistral, Qwen 2/3, Phi, OLMo, ...). TransformerLens decides
  some architectures by the *name* of the folder (any path containing "llama" or "gemma"), so
  nopelens hands it a copy of ``config.json`` in a neutrally named temporary folder, and fills in
  ``n_ctx`` for GPT-2 configs (TransformerLens reads it; transformers 5 no longer writes it).
* **Gemma, Gemma 2 and Gemma 3 (text) folders**: TransformerLens 3.9 has their weight conversion
  (``convert_gemma_weights``) but builds their *config* only from the official Hub names (the
  sizes of ``google/gemma-2b`` & co. are written into its code), so a local or fine-tuned Gemma
  folder fails there with "GemmaForCausalLM is not currently supported". nopelens translates the
  folder's ``config.json`` into the same TransformerLens fields that TransformerLens writes for
  the official models (:func:`gemma_tl_config`: sizes, tanh-GELU, RMSNorm with the ``1 + w``
  weights, ``sqrt(query_pre_attn_scalar)`` attention scale, sliding-window layers, soft caps,
  Gemma 3's QK-norm and local/global RoPE bases), then converts the weights with
  TransformerLens' own ``get_pretrained_state_dict``. The tests check the logits against
  transformers on tiny random Gemma folders of each generation.
* **A TransformerLens model name** (``"gpt2"``, ``"pythia-70m"``, ``"meta-llama/Llama-3.2-1B"``,
  ...): ``HookedTransformer.from_pretrained``, reading the local Hugging Face cache.

Network: nothing is downloaded unless ``allow_download=True``. Every load runs with the Hub in
offline mode (``huggingface_hub``'s ``HF_HUB_OFFLINE`` switch, set for the duration of the call,
plus ``local_files_only=True``), so a name whose files are not in the cache fails at once with a
message that says so. ``HF_HUB_OFFLINE=1`` in the environment wins over ``allow_download``.

Code: nothing from a model folder or repository is ever run (``trust_remote_code`` is never
set; names that TransformerLens would load with remote code are refused).

Weights: raw by default (``process_weights=False``), so every hook holds what the Hugging Face
model computes (``blocks.L.hook_resid_post`` equals its ``hidden_states[L + 1]``, the logits
agree to float rounding). TransformerLens' ``from_pretrained`` default (``process_weights=True``
here) folds the layer norms and *centres the writing weights*, which removes each residual
vector's mean over ``d_model``: logits are unchanged but residual-stream cosine similarities are
not, so it is opt-in.

Memory: loading holds the ``transformers`` model and its converted state dict at once, about
twice the weights' size in ``dtype`` (a 1B-parameter model in bfloat16: ~4 GB), then frees the
former.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nopelens.models.build import device_problem, dtype_problem, torch_dtype
from nopelens.models.protocol import HookedModel
from nopelens.validation import InvalidParameterError, NopelensError, raise_all

logger = logging.getLogger(__name__)

#: Files whose presence means a folder ships a tokenizer.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
)
#: Folder files whose presence means Hugging Face weights.
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: Architectures whose TransformerLens config nopelens builds from ``config.json``
#: (:func:`gemma_tl_config`); TransformerLens converts their weights.
GEMMA_ARCHITECTURES: tuple[str, ...] = (
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
)


@contextlib.contextmanager
def hub_offline(enabled: bool = True) -> Iterator[None]:
    """Block every Hugging Face Hub request inside the block (when ``enabled``).

    Sets ``huggingface_hub.constants.HF_HUB_OFFLINE`` (read at each request by
    ``huggingface_hub`` and ``transformers``) and restores it afterwards, so cached files load
    and anything else raises at once instead of reaching the network.

    Examples:
        >>> from huggingface_hub import constants
        >>> with hub_offline():
        ...     constants.HF_HUB_OFFLINE
        True
    """
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Silence TransformerLens' prints and deprecation warnings and transformers' progress bars."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    out = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield out
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        for line in out.getvalue().splitlines():
            logger.info("%s", line)


def load_pretrained(
    name_or_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    allow_download: bool = False,
    process_weights: bool = False,
    n_ctx: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> HookedModel:
    """Load a pretrained model as a TransformerLens ``HookedTransformer``, offline by default.

    Args:
        name_or_dir: A local Hugging Face folder (with ``config.json``) or a TransformerLens
            model name (``"gpt2"``, ``"pythia-70m"``, ...). An existing path is always read as
            a folder, never as a name.
        device: Where to put the model (checked before anything is loaded).
        dtype: ``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"``; refused when the
            device cannot run it.
        allow_download: Let a model *name* fetch its files from the Hugging Face Hub when they
            are not cached. Off by default: nothing is fetched silently.
        process_weights: Apply TransformerLens' weight processing (fold layer norms, centre
            writing weights and unembedding, fold value biases). Off by default, so hidden
            states equal the original model's (module docstring).
        n_ctx: Override the context length (e.g. to cap a 128k-token model's attention mask).
        cache_dir: The Hugging Face cache to read names from (default: the standard cache).

    Returns:
        The model in eval mode on ``device``, with its tokenizer when the folder or name ships
        one (``model.tokenizer`` is ``None`` otherwise). ``model.cfg.model_name`` is the
        folder's or the model's name.

    Raises:
        InvalidParameterError: For a bad device or dtype, a path that is a file, a folder without
            ``config.json``, or a name that is neither a path nor a TransformerLens model.
        NopelensError: When a name's files are not cached and downloads are not allowed (or
            fail), when a model needs remote code, or when TransformerLens cannot convert the
            architecture.

    Examples:
        >>> load_pretrained("no-such-model-anywhere")
        Traceback (most recent call last):
        ...
        nopelens.validation.InvalidParameterError: The 'name_or_dir' parameter of ...
    """
    func = "load_pretrained"
    raise_all(
        [
            p
            for p in (
                device_problem(device, func),
                dtype_problem(dtype, device, func),
                _bool_problem(allow_download, "allow_download", func),
                _bool_problem(process_weights, "process_weights", func),
                _n_ctx_problem(n_ctx, func),
            )
            if p
        ],
        func,
    )
    name = str(dtype).removeprefix("torch.")
    path = Path(name_or_dir)
    if path.exists():
        folder = _check_folder(path, func)
        model = _load_folder(folder, device, name, process_weights, n_ctx)
    else:
        model = _load_name(
            str(name_or_dir), device, name, allow_download, process_weights, n_ctx, cache_dir
        )
    return model.to(torch.device(device), print_details=False).eval()


def _bool_problem(value: Any, name: str, func: str) -> str | None:
    if isinstance(value, bool):
        return None
    return f"The {name!r} parameter of {func} must be a bool. Got {value!r} instead."


def _n_ctx_problem(value: Any, func: str) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return f"The 'n_ctx' parameter of {func} must be None or an int >= 1. Got {value!r} instead."


def _check_folder(path: Path, func: str) -> Path:
    """A folder with a readable ``config.json`` naming an architecture, else a clear error."""
    if not path.is_dir():
        raise InvalidParameterError(
            f"The 'name_or_dir' parameter of {func} is the file {str(path)!r}; it needs a "
            f"Hugging Face folder (with config.json) or a TransformerLens model name. nopelens "
            f"checkpoints (.pt) load with nopelens.load_model."
        )
    config = path / "config.json"
    if not config.is_file():
        present = sorted(p.name for p in path.iterdir())[:8]
        raise InvalidParameterError(
            f"The folder {str(path)!r} has no config.json, so it is not a Hugging Face model "
            f"folder (it holds {present or 'nothing'}). Save one with "
            f"model.save_pretrained(folder) and tokenizer.save_pretrained(folder)."
        )
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidParameterError(f"{str(config)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict) or not data.get("architectures"):
        raise InvalidParameterError(
            f"{str(config)!r} names no architecture (an 'architectures' list such as "
            f"['GPT2LMHeadModel']); TransformerLens converts weights by architecture."
        )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in path.iterdir()):
        raise InvalidParameterError(
            f"The folder {str(path)!r} has a config.json but no weights (*.safetensors or *.bin)."
        )
    return path.resolve()


def _tl_config_folder(folder: Path, tmp: Path) -> Path:
    """A neutrally named folder holding a copy of ``config.json`` that TransformerLens can read.

    TransformerLens chooses some architectures by substrings of the path ("llama", "gemma") and
    reads ``n_ctx`` from GPT-2 configs, which transformers 5 no longer writes.
    """
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if data.get("model_type") == "gpt2" and "n_ctx" not in data:
        data["n_ctx"] = data.get("n_positions", 1024)
    out = tmp / "model"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(data), encoding="utf-8")
    return out


def _load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, or None when it ships none."""
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise NopelensError(f"The tokenizer in {str(folder)!r} does not load: {err}") from None


def _load_folder(
    folder: Path, device: Any, dtype: str, process: bool, n_ctx: int | None
) -> HookedModel:
    """Load a local Hugging Face folder through TransformerLens' conversion code."""
    from transformers import AutoModelForCausalLM

    with hub_offline(), _quiet():
        import transformer_lens.loading_from_pretrained as loading

        try:
            hf_model = AutoModelForCausalLM.from_pretrained(
                folder,
                local_files_only=True,
                trust_remote_code=False,
                dtype=torch_dtype(dtype),
            )
        except (OSError, ValueError, KeyError) as err:
            raise NopelensError(
                f"transformers cannot load the model in {str(folder)!r} (without running code "
                f"from the folder): {str(err).splitlines()[0]}"
            ) from None
        tokenizer = _load_tokenizer(folder)
        with tempfile.TemporaryDirectory(prefix="nopelens-") as tmp:
            tl_folder = str(_tl_config_folder(folder, Path(tmp)))
            try:
                if set(hf_model.config.architectures or ()) & set(GEMMA_ARCHITECTURES):
                    cfg = _gemma_hooked_config(
                        hf_model.config.to_dict(), process, str(device), dtype, n_ctx
                    )
                else:
                    cfg = loading.get_pretrained_model_config(
                        tl_folder,
                        hf_cfg=hf_model.config.to_dict(),
                        fold_ln=process,
                        device=str(device),
                        dtype=torch_dtype(dtype),
                        n_ctx=n_ctx,
                        local_files_only=True,
                    )
                state_dict = loading.get_pretrained_state_dict(
                    tl_folder, cfg, hf_model, dtype=torch_dtype(dtype)
                )
            except (NotImplementedError, ValueError, AttributeError, KeyError) as err:
                raise NopelensError(
                    f"TransformerLens cannot convert {str(folder)!r} "
                    f"(architecture {hf_model.config.architectures}): {err}"
                ) from None
        del hf_model
        cfg.model_name = folder.name
        cfg.tokenizer_name = None  # the tokenizer is passed in; nothing is looked up by name
        return _hooked(cfg, tokenizer, state_dict, process)


def _rope_theta(hf: dict[str, Any], kind: str | None = None) -> float:
    """``rope_theta`` of a transformers 4 (top level) or 5 (``rope_parameters``) config."""
    params = hf.get("rope_parameters") or {}
    if kind is not None and isinstance(params.get(kind), dict):
        params = params[kind]
    for source in (params, hf.get("rope_scaling") or {}):
        kind_of = source.get("rope_type", source.get("type", "default"))
        if kind_of not in ("default", None):
            raise NopelensError(
                f"This Gemma config uses {kind_of!r} RoPE scaling, which nopelens does not "
                f"translate for TransformerLens (only unscaled RoPE)."
            )
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def gemma_tl_config(hf: dict[str, Any]) -> dict[str, Any]:
    """The TransformerLens config fields of a Gemma / Gemma 2 / Gemma 3 (text) ``config.json``.

    The same fields TransformerLens 3.9 writes for the official ``google/gemma-*`` names, read
    from the config instead of hard-coded sizes.

    Args:
        hf: The Hugging Face config as a dict (``config.json`` or ``model.config.to_dict()``).

    Returns:
        ``HookedTransformerConfig`` keyword arguments.

    Raises:
        NopelensError: For another architecture or a RoPE scaling it does not translate.

    Examples:
        >>> cfg = gemma_tl_config({"architectures": ["Gemma2ForCausalLM"], "hidden_size": 32,
        ...     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        ...     "intermediate_size": 64, "num_hidden_layers": 2, "vocab_size": 300,
        ...     "max_position_embeddings": 64, "query_pre_attn_scalar": 16, "sliding_window": 8,
        ...     "layer_types": ["sliding_attention", "full_attention"],
        ...     "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0})
        >>> cfg["attn_types"], cfg["attn_scale"], cfg["use_normalization_before_and_after"]
        (['local', 'global'], 4.0, True)
    """
    arch = (hf.get("architectures") or [None])[0]
    if arch not in GEMMA_ARCHITECTURES:
        raise NopelensError(
            f"gemma_tl_config translates {', '.join(GEMMA_ARCHITECTURES)} configs. Got {arch!r}."
        )
    d_model, n_heads, n_layers = (
        hf["hidden_size"],
        hf["num_attention_heads"],
        hf["num_hidden_layers"],
    )
    d_head = hf.get("head_dim") or d_model // n_heads
    cfg: dict[str, Any] = {
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "d_mlp": hf["intermediate_size"],
        "n_layers": n_layers,
        "n_ctx": hf.get("max_position_embeddings", 8192),
        "eps": hf.get("rms_norm_eps", 1e-6),
        "d_vocab": hf["vocab_size"],
        "act_fn": hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh",
        "initializer_range": hf.get("initializer_range", 0.02),
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "use_attn_scale": True,
        "n_key_value_heads": hf.get("num_key_value_heads") or n_heads,
        "gated_mlp": True,
        "final_rms": True,
        "original_architecture": arch,
    }
    if arch == "GemmaForCausalLM":
        cfg["rotary_base"] = _rope_theta(hf)
        return cfg
    cfg["attn_scale"] = float(hf.get("query_pre_attn_scalar") or d_head) ** 0.5
    cfg["use_normalization_before_and_after"] = True
    layer_types = hf.get("layer_types")
    if hf.get("sliding_window") and layer_types:
        cfg["window_size"] = hf["sliding_window"]
        cfg["use_local_attn"] = True
        cfg["attn_types"] = [
            "local" if kind == "sliding_attention" else "global" for kind in layer_types
        ]
    for ours, theirs in (
        ("attn_scores_soft_cap", "attn_logit_softcapping"),
        ("output_logits_soft_cap", "final_logit_softcapping"),
    ):
        if hf.get(theirs) is not None:
            cfg[ours] = float(hf[theirs])
    if arch == "Gemma2ForCausalLM":
        cfg["rotary_base"] = _rope_theta(hf)
        return cfg
    cfg["use_qk_norm"] = True
    cfg["rotary_base"] = _rope_theta(hf, "full_attention")
    cfg["rotary_base_local"] = _rope_theta(hf, "sliding_attention")
    return cfg


def _gemma_hooked_config(
    hf: dict[str, Any], process: bool, device: str, dtype: str, n_ctx: int | None
) -> Any:
    """A ``HookedTransformerConfig`` for a Gemma folder.

    Set up as TransformerLens' own ``get_pretrained_model_config`` sets up the configs it
    converts (no weight init, dtype, device, BOS default, folded norms when ``process``).
    """
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    cfg = gemma_tl_config(hf)
    if process and cfg["original_architecture"] not in POST_NORM_ARCHITECTURES:
        cfg["normalization_type"] = "RMSPre"
    if n_ctx is not None:
        cfg["n_ctx"] = n_ctx
    cfg.update(
        init_weights=False,
        device=device,
        dtype=torch_dtype(dtype),
        n_devices=1,
        default_prepend_bos=True,
        from_checkpoint=False,
        tokenizer_name=None,
    )
    return HookedTransformerConfig(**cfg)


def _hooked(cfg: Any, tokenizer: Any, state_dict: dict[str, Any], process: bool) -> HookedModel:
    from transformer_lens import HookedTransformer

    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=process,
        center_writing_weights=process,
        center_unembed=process,
        fold_value_biases=process,
    )
    return model


def known_model_names() -> list[str]:
    """Every model name and alias ``HookedTransformer.from_pretrained`` accepts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import transformer_lens.loading_from_pretrained as loading

        return sorted(loading.make_model_alias_map())


def _official_name(name: str) -> str:
    import transformer_lens.loading_from_pretrained as loading

    try:
        return str(loading.get_official_model_name(name))
    except ValueError:
        pass
    close = difflib.get_close_matches(name.lower(), known_model_names(), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise InvalidParameterError(
        f"The 'name_or_dir' parameter of load_pretrained is {name!r}: no such file or folder, "
        f"and not a TransformerLens model name.{hint} Pass a nopelens checkpoint (.pt), a local "
        f"Hugging Face folder (with config.json) or a name from "
        f"transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES."
    )


def _load_name(
    name: str,
    device: Any,
    dtype: str,
    allow_download: bool,
    process: bool,
    n_ctx: int | None,
    cache_dir: Any,
) -> HookedModel:
    """``HookedTransformer.from_pretrained(name)`` from the cache (or the Hub, when allowed)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import transformer_lens.loading_from_pretrained as loading
        from transformer_lens import HookedTransformer
    official = _official_name(name)
    if official.startswith(loading.NEED_REMOTE_CODE_MODELS):
        raise NopelensError(
            f"TransformerLens loads {official!r} with trust_remote_code=True (it runs Python code "
            f"from the model repository); nopelens never runs downloaded code. Download the model "
            f"yourself and pass its local folder instead."
        )
    hub_kwargs: dict[str, Any] = {"local_files_only": not allow_download}
    if cache_dir is not None:
        hub_kwargs["cache_dir"] = str(cache_dir)
    try:
        with hub_offline(not allow_download), _quiet():
            cfg = loading.get_pretrained_model_config(official, **hub_kwargs)
            tokenizer = _hub_tokenizer(cfg.tokenizer_name, hub_kwargs)
            return HookedTransformer.from_pretrained(
                official,
                fold_ln=process,
                center_writing_weights=process,
                center_unembed=process,
                fold_value_biases=process,
                device=str(device),
                dtype=torch_dtype(dtype),
                tokenizer=tokenizer,
                n_ctx=n_ctx,
                **hub_kwargs,
            )
    except (OSError, ConnectionError) as err:
        raise NopelensError(_hub_failure(name, official, allow_download, cache_dir, err)) from None


def _hub_tokenizer(tokenizer_name: str | None, hub_kwargs: dict[str, Any]) -> Any:
    if tokenizer_name is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_name, trust_remote_code=False, **hub_kwargs)


def _hub_failure(
    name: str, official: str, allow_download: bool, cache_dir: Any, err: BaseException
) -> str:
    from huggingface_hub import constants

    detail = f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
    if not allow_download:
        listed = (
            " TransformerLens lists the files of this repository online at every load, so it "
            "needs the network even when cached."
            if official.startswith(("NeelNanda", "ArthurConmy", "Baidicoot"))
            else ""
        )
        return (
            f"{name!r} is a TransformerLens model name (Hugging Face repo {official!r}), but its "
            f"files are not in the local Hugging Face cache ({cache_dir or constants.HF_HUB_CACHE})"
            f" and nopelens does not download anything unless asked. Fetch it once with network "
            f"access (`hf download {official}`, or allow_download=True / --allow-download), or "
            f"pass a local Hugging Face folder.{listed} {detail}"
        )
    if constants.HF_HUB_OFFLINE:
        return (
            f"{name!r} needs files from the Hugging Face Hub, but HF_HUB_OFFLINE is set in the "
            f"environment, so nothing is downloaded. Unset it to download {official!r}. {detail}"
        )
    return (
        f"Downloading {official!r} from the Hugging Face Hub failed (no network, or the repo "
        f"needs a token in HF_TOKEN). {detail}"
    )
