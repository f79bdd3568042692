"""Training checkpoints carry a SHA-256: flipped bytes are refused, never trained on."""

from __future__ import annotations

import zipfile

import pytest


def _flip_tensor_bytes(path, n=64):
    """Flip ``n`` bytes in the middle of the largest tensor record of a torch zip archive."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        records = [i for i in archive.infolist() if "/data/" in i.filename]
        info = max(records, key=lambda i: i.file_size)
    offset = info.header_offset
    name_len = int.from_bytes(data[offset + 26 : offset + 28], "little")
    extra_len = int.from_bytes(data[offset + 28 : offset + 30], "little")
    start = offset + 30 + name_len + extra_len + info.file_size // 2
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_flipped_bytes_is_refused(tmp_path):
    import torch

    from nopelens.training import TrainConfig, build_task_model, get_task, load_checkpoint, train

    task = get_task("parity", length=4)
    config = TrainConfig(steps=4, batch_size=8, eval_every=4, eval_batches=1, checkpoint_every=2)
    model = build_task_model(task, n_layers=1, d_model=16, n_heads=2)
    train(model, task, config, checkpoint_dir=tmp_path, progress=False, max_steps_this_run=2)
    path = tmp_path / "checkpoint.pt"
    assert load_checkpoint(path)["step"] == 2
    _flip_tensor_bytes(path)
    # torch alone reads the damaged archive without complaint: only the checksum tells
    payload = torch.load(path, weights_only=True)
    assert isinstance(payload["model_state"], dict)
    with pytest.raises(ValueError, match="does not match its checksum") as info:
        load_checkpoint(path)
    assert "Delete it to restart training from scratch" in str(info.value)
    fresh = build_task_model(task, n_layers=1, d_model=16, n_heads=2)
    with pytest.raises(ValueError, match="does not match its checksum"):
        train(fresh, task, config, checkpoint_dir=tmp_path, progress=False)
