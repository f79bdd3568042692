"""Checkpoints are data: allowlisted spec, verified checksum, nothing fetched or executed."""

from __future__ import annotations

import json

import pytest
import torch

SMALL = dict(n_layers=1, d_model=16, n_heads=2, d_vocab=11, n_ctx=8)


def _evil_folder(tmp_path):
    """A local 'tokenizer' folder whose code writes a marker file if anything runs it."""
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "PWNED"
    (folder / "tokenization_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizer\n"
        "class EvilTokenizer(PreTrainedTokenizer):\n    pass\n"
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}})
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return folder, marker


def _resealed(path, mutate):
    """Load a checkpoint, change it, and write it back with a *valid* checksum (an attacker can)."""
    from nopelens.files import save_sealed

    payload = torch.load(path, weights_only=True)
    payload.pop("sha256")
    mutate(payload)
    save_sealed(payload, path)
    return path


@pytest.mark.parametrize("field", ["tokenizer_name", "trust_remote_code", "from_checkpoint"])
def test_a_spec_naming_code_or_the_hub_is_refused_and_nothing_runs(tmp_path, field):
    from nopelens import build_model, load_model, save_model

    folder, marker = _evil_folder(tmp_path)
    value = {"tokenizer_name": str(folder), "trust_remote_code": True, "from_checkpoint": True}
    path = save_model(build_model(**SMALL), tmp_path / "m.pt")

    def inject(payload):
        spec = json.loads(payload["spec_json"])
        spec["config"][field] = value[field]
        payload["spec_json"] = json.dumps(spec)

    _resealed(path, inject)
    with pytest.raises(ValueError, match=rf"unknown parameter '{field}'"):
        load_model(path)
    assert not marker.exists()


def test_a_format_1_file_is_rebuilt_from_its_validated_spec_only(tmp_path):
    """0.1 files carried a full TransformerLens config; it is never passed to TransformerLens."""
    from nopelens import build_model, load_model, model_spec

    folder, marker = _evil_folder(tmp_path)
    model = build_model(**SMALL)
    config = {"tokenizer_name": str(folder), "trust_remote_code": True, "d_model": 16}
    v1 = {
        "format": "nopelens-model",
        "format_version": 1,
        "config_json": json.dumps(config),
        "spec_json": json.dumps(model_spec(model)),
        "nope": True,
        "state_dict": model.state_dict(),
    }
    torch.save(v1, tmp_path / "v1.pt")
    loaded = load_model(tmp_path / "v1.pt")
    tokens = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(tokens), model(tokens))
    assert loaded.cfg.tokenizer_name is None and not marker.exists()
    v1["spec_json"] = json.dumps({**model_spec(model), "tokenizer_name": str(folder)})
    torch.save(v1, tmp_path / "v1_evil.pt")
    with pytest.raises(ValueError, match="'tokenizer_name' parameter of build_model cannot be"):
        load_model(tmp_path / "v1_evil.pt")
    assert not marker.exists()


def test_flipped_weight_bytes_are_caught_by_the_checksum(tmp_path):
    from nopelens import build_model, load_model, save_model

    path = save_model(build_model(**SMALL), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["blocks.0.attn.W_Q"].view(-1)[:16] += 727.0  # 64 bytes of float32
    torch.save(payload, path)  # the stored checksum is now stale
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_model(path)


def test_raw_byte_flips_never_load_silently(tmp_path):
    """Flip 64 bytes anywhere in the file: either unreadable or a checksum mismatch, never rc 0."""
    from nopelens import build_model, load_model, save_model

    path = save_model(build_model(**SMALL), tmp_path / "m.pt")
    data = bytearray(path.read_bytes())
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        start = int(torch.randint(0, len(data) - 64, (1,), generator=gen))
        flipped = bytearray(data)
        for i in range(start, start + 64):
            flipped[i] ^= 0xFF
        bad = tmp_path / f"flip{trial}.pt"
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError):
            load_model(bad)


def test_a_foreign_model_with_fields_outside_the_allowlist_is_not_stored(tmp_path):
    from nopelens import build_model, save_model

    model = build_model(**SMALL)
    model._nopelens_spec = None  # as if built by plain TransformerLens
    save_model(model, tmp_path / "plain.pt")  # describable: fine
    model.cfg.use_local_attn = True
    with pytest.raises(ValueError, match=r"use_local_attn=True are outside the allowlist"):
        save_model(model, tmp_path / "local.pt")
