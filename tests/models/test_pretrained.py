"""load_pretrained: local Hugging Face folders through TransformerLens' own loading code, offline.

The folders are real `save_pretrained` output (weights, config, a BPE tokenizer trained locally);
the reference is the same folder loaded by `transformers` itself. No part of TransformerLens is
mocked.
"""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch


def _hf(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()


def _ids(model, text="def f(x):\n    return x + 1\n"):
    tok = model.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([[tok.bos_token_id, *ids]])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_local_folder_computes_what_transformers_computes(hf_folders, hf_models, arch):
    model, hf = hf_models[arch], _hf(hf_folders[arch])
    ids = _ids(model)
    with torch.no_grad():
        ours = model(ids)
        out = hf(ids, output_hidden_states=True)
        _, cache = model.run_with_cache(ids)
    torch.testing.assert_close(ours, out.logits, atol=2e-6, rtol=0)
    # Raw weights: every block's residual stream is the Hugging Face hidden state (the last
    # hidden state of transformers is after the final norm, so it is left out).
    for layer in range(model.cfg.n_layers - 1):
        torch.testing.assert_close(
            cache[f"blocks.{layer}.hook_resid_post"],
            out.hidden_states[layer + 1],
            atol=1e-6,
            rtol=0,
        )
    expected = {"gpt2": "standard", "llama": "rotary"}[arch]
    assert model.cfg.positional_embedding_type == expected
    assert model.cfg.model_name == f"{arch}-tiny"
    assert model.tokenizer is not None and model.cfg.d_vocab == len(model.tokenizer)


def test_a_transformers_5_gpt2_config_without_n_ctx_loads(hf_folders):
    config = json.loads((hf_folders["gpt2"] / "config.json").read_text())
    assert "n_ctx" not in config  # what transformers 5 writes; TransformerLens needs it
    from nopelens.models import load_pretrained

    assert load_pretrained(hf_folders["gpt2"]).cfg.n_ctx == config["n_positions"]


def test_a_folder_whose_path_says_llama_is_read_by_its_config(hf_folders, tmp_path):
    """TransformerLens picks Llama by substring of the path; the loader must not be fooled."""
    from nopelens.models import load_pretrained

    folder = shutil.copytree(hf_folders["gpt2"], tmp_path / "my-llama-finetune")
    model = load_pretrained(folder)
    assert model.cfg.original_architecture == "GPT2LMHeadModel"
    assert model.cfg.model_name == "my-llama-finetune"


def test_processing_keeps_the_distribution_but_changes_the_residual_stream(hf_folders, hf_models):
    from nopelens.models import load_pretrained

    raw = hf_models["gpt2"]
    processed = load_pretrained(hf_folders["gpt2"], process_weights=True)
    ids = _ids(raw)
    with torch.no_grad():
        a, cache_a = raw.run_with_cache(ids)
        b, cache_b = processed.run_with_cache(ids)
    torch.testing.assert_close(a.log_softmax(-1), b.log_softmax(-1), atol=1e-5, rtol=0)
    resid_a, resid_b = cache_a["blocks.0.hook_resid_post"], cache_b["blocks.0.hook_resid_post"]
    # Centring the writing weights removes each residual vector's mean over d_model ...
    torch.testing.assert_close(resid_b, resid_a - resid_a.mean(-1, keepdim=True), atol=1e-5, rtol=0)
    assert (resid_a - resid_b).abs().max() > 1e-4  # ... which is why it is not the default


def test_loading_a_folder_never_opens_a_socket(hf_folders, monkeypatch):
    from nopelens.models import load_pretrained

    def refuse(*args, **kwargs):
        raise AssertionError("load_pretrained tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model = load_pretrained(hf_folders["llama"])
    assert model.cfg.n_layers == 2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_and_stays_close(hf_folders, hf_models, dtype):
    from nopelens.models import load_pretrained

    half = load_pretrained(hf_folders["llama"], dtype=dtype)
    assert half.W_E.dtype == getattr(torch, dtype) and half.cfg.dtype == getattr(torch, dtype)
    ids = _ids(half)
    with torch.no_grad():
        full = hf_models["llama"](ids)
        out = half(ids)
    assert out.dtype == getattr(torch, dtype)
    assert (out.float() - full).abs().max() < 0.05


def test_analyze_runs_on_text_with_a_loaded_model(hf_models):
    from nopelens.analyzer import analyze
    from nopelens.measure import stdlib_sources, text_windows

    model = hf_models["llama"]
    tokens = text_windows(model, stdlib_sources(seed=0), seq_len=24, max_windows=12)
    assert tokens.shape == (12, 24) and bool((tokens[:, 0] == model.tokenizer.bos_token_id).all())
    report = analyze(model, tokens, sites=("resid_post", "attn_out"), n_bootstrap=50)
    assert report.layer_labels == ("embed", "0", "1")
    assert report.scores["n_seqs"].eq(12).all() and report.scores["value"].between(0, 1).all()
    assert report.model_label.startswith("llama-tiny: RoPE")


# --- Gemma: TransformerLens converts its weights, nopelens translates its config -------------

GEMMAS = {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}


@pytest.fixture(scope="module")
def gemma_folders(tmp_path_factory):
    """Tiny random Gemma folders of each generation (Gemma 3 with 6 layers: 5 local, 1 global)."""
    from nopelens.models import write_tiny_hf_model

    root = tmp_path_factory.mktemp("gemma")
    return {
        arch: write_tiny_hf_model(
            root / f"{arch}-tiny",
            architecture=arch,
            n_layers=6 if arch == "gemma3" else 2,
            n_ctx=64,
            seed=1,
        )
        for arch in GEMMAS
    }


@pytest.mark.parametrize("arch", list(GEMMAS))
def test_a_local_gemma_folder_computes_what_transformers_computes(gemma_folders, arch):
    from nopelens.models import load_pretrained

    model, hf = load_pretrained(gemma_folders[arch]), _hf(gemma_folders[arch])
    assert model.cfg.original_architecture == GEMMAS[arch]
    # 40 tokens: longer than the sliding window (n_ctx // 4 = 16) of Gemma 2 and 3's local layers
    ids = torch.randint(3, model.cfg.d_vocab, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        ours, cache = model.run_with_cache(ids)
    torch.testing.assert_close(ours, out.logits, atol=2e-6, rtol=0)
    for layer in range(model.cfg.n_layers - 1):
        torch.testing.assert_close(
            cache[f"blocks.{layer}.hook_resid_post"],
            out.hidden_states[layer + 1],
            atol=2e-5,
            rtol=1e-5,
        )
    if arch != "gemma":
        assert model.cfg.use_local_attn and model.cfg.window_size == 16
        assert "local" in model.cfg.attn_types and "global" in model.cfg.attn_types


def test_transformerlens_alone_cannot_read_a_local_gemma_config(gemma_folders):
    """Why nopelens translates Gemma configs: TransformerLens 3.9 builds them by official name."""
    import transformer_lens.loading_from_pretrained as loading

    with pytest.raises(NotImplementedError, match="GemmaForCausalLM is not currently supported"):
        loading.convert_hf_model_config(str(gemma_folders["gemma"]))


def test_a_gemma_config_with_scaled_rope_is_refused_clearly():
    from nopelens.models.pretrained import gemma_tl_config
    from nopelens.validation import NopelensError

    config = {
        "architectures": ["GemmaForCausalLM"],
        "hidden_size": 16,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "intermediate_size": 32,
        "vocab_size": 300,
        "rope_parameters": {"rope_type": "linear", "factor": 8.0, "rope_theta": 10000.0},
    }
    with pytest.raises(NopelensError, match="'linear' RoPE scaling"):
        gemma_tl_config(config)
    with pytest.raises(NopelensError, match="translates GemmaForCausalLM"):
        gemma_tl_config({**config, "architectures": ["LlamaForCausalLM"]})


# --- bad input ------------------------------------------------------------------------------


def test_a_folder_without_config_json_is_named(tmp_path):
    from nopelens.models import load_pretrained

    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"has no config\.json.*\['weights\.bin'\]"):
        load_pretrained(tmp_path)


def test_a_config_without_architecture_or_weights_is_refused(hf_folders, tmp_path):
    from nopelens.models import load_pretrained

    folder = shutil.copytree(hf_folders["gpt2"], tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no weights \(\*\.safetensors or \*\.bin\)"):
        load_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names no architecture"):
        load_pretrained(folder)


def test_a_file_is_not_a_folder(tmp_path):
    from nopelens.models import load_pretrained

    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"is the file .*nopelens\.load_model"):
        load_pretrained(path)


def test_an_unknown_name_is_refused_with_suggestions():
    from nopelens.models import load_pretrained

    with pytest.raises(ValueError, match=r"'pythia-70': no such file or folder.*'pythia-70m'"):
        load_pretrained("pythia-70")


def test_an_uncached_name_says_it_needs_the_network_and_fetches_nothing(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from nopelens.models import load_pretrained
    from nopelens.validation import NopelensError

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    before = constants.HF_HUB_OFFLINE
    with pytest.raises(NopelensError, match=r"'gpt2' is a TransformerLens model name.*not in the "
                       r"local Hugging Face cache.*--allow-download"):  # fmt: skip
        load_pretrained("gpt2", cache_dir=tmp_path)
    assert constants.HF_HUB_OFFLINE == before  # the offline switch is restored


def test_names_that_need_remote_code_are_refused():
    from nopelens.models import load_pretrained
    from nopelens.validation import NopelensError

    with pytest.raises(NopelensError, match="never runs downloaded code"):
        load_pretrained("Qwen/Qwen3-0.6B")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "int8"}, r"'dtype' parameter of load_pretrained must be one of 'float32'"),
        ({"device": "gpu:x"}, r"'device' parameter of load_pretrained must be a torch device"),
        ({"n_ctx": 0}, r"'n_ctx' parameter .* None or an int >= 1"),
    ],
)
def test_bad_arguments_are_refused_before_loading(kwargs, match):
    from nopelens.models import load_pretrained

    with pytest.raises(ValueError, match=match):
        load_pretrained("gpt2", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_absent_is_refused():
    from nopelens.models import dtype_problem, load_pretrained

    with pytest.raises(ValueError, match="CUDA is not available"):
        load_pretrained("gpt2", device="cuda", dtype="bfloat16")
    assert dtype_problem("bfloat16", "cuda", "f") is None  # the device problem is reported once


def test_hub_offline_blocks_requests_and_restores_the_switch():
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_session

    from nopelens.models import hub_offline

    before = constants.HF_HUB_OFFLINE
    with hub_offline(), pytest.raises(OfflineModeIsEnabled):
        get_session().get("https://huggingface.co/api/models/gpt2")
    assert constants.HF_HUB_OFFLINE == before
