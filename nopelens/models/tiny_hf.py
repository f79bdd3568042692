"""A tiny Hugging Face model folder, built offline, for trying the pretrained-model path.

:func:`write_tiny_hf_model` writes what ``model.save_pretrained`` and
``tokenizer.save_pretrained`` write for a real model, but for a random-init GPT-2, Llama or Gemma
(1, 2 or 3) of a few thousand parameters and a byte-level BPE tokenizer trained on a few
standard-library files of the running interpreter. Nothing is downloaded. The tests, the "your
own model" notebook and users checking their set-up offline load it with
:func:`~nopelens.models.load_pretrained` exactly as they would a real checkpoint.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from nopelens.models.build import seeded_global_rng
from nopelens.models.pretrained import _quiet
from nopelens.validation import InvalidParameterError, check_choice, check_int

#: Architectures :func:`write_tiny_hf_model` can write.
TINY_ARCHITECTURES: tuple[str, ...] = ("gpt2", "llama", "gemma", "gemma2", "gemma3")
#: Standard-library files the tokenizer is trained on (whichever exist).
_CORPUS_FILES = ("textwrap.py", "string.py", "heapq.py", "bisect.py", "fnmatch.py")
_FALLBACK = "the quick brown fox jumps over the lazy dog\ndef f(x):\n    return x + 1\n" * 20
_SPECIAL = ("<bos>", "<eos>", "<unk>")


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = Path(sysconfig.get_paths()["stdlib"])
    texts = [
        (root / name).read_text(encoding="utf-8", errors="replace")
        for name in _CORPUS_FILES
        if (root / name).is_file()
    ] or [_FALLBACK]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def _gemma_model(
    architecture: str, vocab: int, n_layers: int, d_model: int, n_heads: int, n_ctx: int
) -> Any:
    """A Gemma of generation 1, 2 or 3 (text), with grouped-query attention.

    From Gemma 2 on: sliding-window layers (a window of ``n_ctx // 4``) alternating with global
    ones (every sixth layer and the last global in Gemma 3, as in the released models), soft caps
    (Gemma 2), QK-norm and separate local/global RoPE bases (Gemma 3).
    """
    import transformers

    d_head = d_model // n_heads
    common: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_heads // 2 if n_heads % 2 == 0 else n_heads,
        "head_dim": d_head,
        "max_position_embeddings": n_ctx,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    if architecture == "gemma":
        return transformers.GemmaForCausalLM(transformers.GemmaConfig(**common))
    common.update(sliding_window=max(2, n_ctx // 4), query_pre_attn_scalar=d_head)
    if architecture == "gemma2":
        layers = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
        return transformers.Gemma2ForCausalLM(
            transformers.Gemma2Config(**common, layer_types=layers)
        )
    layers = [
        "full_attention" if i % 6 == 5 or i == n_layers - 1 else "sliding_attention"
        for i in range(n_layers)
    ]
    text = transformers.Gemma3TextConfig(**common, layer_types=layers)
    return transformers.Gemma3ForCausalLM(text)


def _hf_model(architecture: str, vocab: int, n_layers: int, d_model: int, n_heads: int, n_ctx: int):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if architecture.startswith("gemma"):
        return _gemma_model(architecture, vocab, n_layers, d_model, n_heads, n_ctx)
    if architecture == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=vocab,
            n_positions=n_ctx,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            bos_token_id=0,
            eos_token_id=1,
        )
        # No n_ctx, as transformers 5 writes it: load_pretrained fills it in for TransformerLens.
        return GPT2LMHeadModel(gpt2)
    llama = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads // 2 if n_heads % 2 == 0 else n_heads,
        max_position_embeddings=n_ctx,
        bos_token_id=0,
        eos_token_id=1,
    )
    return LlamaForCausalLM(llama)


def write_tiny_hf_model(
    path: str | os.PathLike[str],
    *,
    architecture: str = "llama",
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    n_ctx: int = 64,
    vocab_size: int = 512,
    seed: int = 0,
) -> Path:
    """Write a random-init Hugging Face model and its tokenizer to the folder ``path``, offline.

    Args:
        path: A folder that does not exist yet (or is empty); it is written atomically.
        architecture: ``"gpt2"`` (learned positions, LayerNorm, GELU), ``"llama"`` (RoPE,
            RMSNorm, gated SiLU MLP, grouped-query attention with ``n_heads // 2`` key/value
            heads), or ``"gemma"``, ``"gemma2"``, ``"gemma3"`` (Gemma's RoPE, ``1 + w`` RMSNorm,
            scaled embedding and tanh-GELU gated MLP; from Gemma 2 on, sliding-window layers
            with a window of ``n_ctx // 4`` and extra norms, soft caps in Gemma 2, QK-norm and
            two RoPE bases in Gemma 3). Gemma loads through
            :func:`~nopelens.models.pretrained.gemma_tl_config`.
        n_layers: Blocks.
        d_model: Residual width (a multiple of ``n_heads``).
        n_heads: Attention heads.
        n_ctx: Maximum positions.
        vocab_size: Size of the byte-level BPE vocabulary (>= 259: 256 bytes and BOS, EOS, UNK;
            ids 0, 1, 2).
        seed: Seed of the weights; the caller's random state is untouched.

    Returns:
        The folder.

    Raises:
        InvalidParameterError: For a bad argument, or a ``path`` that holds files.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = write_tiny_hf_model(pathlib.Path(tempfile.mkdtemp()) / "tiny")
        >>> sorted(p.name for p in folder.iterdir())[:3]
        ['config.json', 'generation_config.json', 'model.safetensors']
    """
    func = "write_tiny_hf_model"
    check_choice(architecture, "architecture", TINY_ARCHITECTURES, func)
    for name, value, low in (
        ("n_layers", n_layers, 1),
        ("d_model", d_model, 2),
        ("n_heads", n_heads, 1),
        ("n_ctx", n_ctx, 2),
        ("vocab_size", vocab_size, 259),
        ("seed", seed, 0),
    ):
        check_int(value, name, func, min=low)
    if d_model % n_heads:
        raise InvalidParameterError(
            f"The 'n_heads' parameter of {func} must divide d_model={d_model}. Got {n_heads}."
        )
    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidParameterError(
            f"The 'path' parameter of {func} must be a new or empty folder. {str(target)!r} "
            f"already holds files."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        tokenizer = _train_tokenizer(vocab_size)
        with seeded_global_rng(seed):
            model = _hf_model(
                architecture, len(tokenizer), n_layers, d_model, n_heads, n_ctx
            ).eval()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
