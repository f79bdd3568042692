"""The MLP probe: decodes what a linear probe cannot, is seeded, keeps its best epoch."""

from __future__ import annotations

import pytest
import torch


def _radius_code(n_seq=160, pos=6, seed=0):
    """2-D hidden states: a random direction times radius 1 + position (linearly invisible)."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n_seq, pos, generator=g) * 2 * torch.pi
    radius = 1.0 + torch.arange(pos, dtype=torch.float32)
    return torch.stack([angle.cos(), angle.sin()], dim=-1) * radius[:, None]


def test_mlp_decodes_a_radius_code_that_a_linear_probe_cannot(row):
    """E[h | p] = 0 at every position, so linear logits are at chance; the norm gives p away."""
    from nopelens.probes import probe_positions

    report = probe_positions(
        {"0": _radius_code()},
        features="hidden",
        probes=("logistic", "mlp"),
        equal_dim=None,
        control_task=False,
        seeds=(0, 1),
        mlp_max_epochs=40,
    )
    df = report.results
    mlp = row(df, probe="mlp", target="position", metric="accuracy")
    linear = row(df, probe="logistic", target="position", metric="accuracy")
    assert mlp["value"] > 0.9 and mlp["chance"] == pytest.approx(1 / 6)
    assert abs(linear["value"] - 1 / 6) < 0.06
    assert row(df, probe="mlp", target="position", metric="mad")["value"] < 0.1
    shuffled = row(df, probe="mlp", target="shuffled", metric="accuracy")
    assert abs(shuffled["value"] - shuffled["chance"]) < 0.05
    epochs = report.per_seed.query("probe == 'mlp'")["reg"]
    assert ((epochs >= 1) & (epochs <= 40) & (epochs == epochs.round())).all()


def test_mlp_is_seeded_and_keeps_the_weights_of_its_best_epoch():
    from nopelens.probes import mlp_predict, standardize

    hidden = _radius_code(n_seq=60, pos=4).reshape(-1, 2)
    labels = torch.arange(4).repeat(60)[:, None]
    labels = torch.cat([labels, (labels + labels.roll(1, dims=0)) % 4], dim=1)  # a harder one
    xf, xv, xt = standardize(hidden[:120], hidden[120:180], hidden[180:])
    yf, yv = labels[:120], labels[120:180]
    state = torch.random.get_rng_state()
    kwargs = dict(hidden=16, lr=0.02, patience=3, max_epochs=60)
    pred, epochs = mlp_predict(xf, yf, xv, yv, xt, 4, seed=3, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state), "global RNG touched"
    again, epochs_again = mlp_predict(xf, yf, xv, yv, xt, 4, seed=3, **kwargs)
    assert torch.equal(pred, again) and epochs == epochs_again
    assert pred.shape == (xt.shape[0], 2) and all(1 <= e <= 60 for e in epochs)
    # the first `best` epochs of a run do not depend on how long it may go on, so a run cut at
    # the best epoch ends with the same weights, hence the same predictions
    for target, best in enumerate(epochs):
        cut, _ = mlp_predict(
            xf, yf, xv, yv, xt, 4, seed=3, **{**kwargs, "max_epochs": int(best), "patience": 99}
        )
        assert torch.equal(cut[:, target], pred[:, target]), (target, best)
    # each target is its own network: fitted alone it gets the same predictions and epoch
    alone, (epoch,) = mlp_predict(
        xf, yf[:, 1:], xv, yv[:, 1:], xt, 4, seed=3, target_ids=[1], **kwargs
    )
    assert torch.equal(alone[:, 0], pred[:, 1]) and epoch == epochs[1]
    other, _ = mlp_predict(xf, yf, xv, yv, xt, 4, seed=4, **{**kwargs, "max_epochs": 1})
    first, _ = mlp_predict(xf, yf, xv, yv, xt, 4, seed=3, **{**kwargs, "max_epochs": 1})
    assert not torch.equal(other, first), "the seed sets the initial weights"


def test_mlp_settings_are_validated():
    from nopelens.probes import ProbeConfig

    with pytest.raises(ValueError, match="received 3 invalid arguments") as info:
        ProbeConfig(mlp_hidden=0, mlp_lr=0.0, mlp_patience=0)
    for name in ("mlp_hidden", "mlp_lr", "mlp_patience"):
        assert f"The '{name}' parameter of ProbeConfig" in str(info.value)
    with pytest.raises(ValueError, match="'mlp_weight_decay' parameter of ProbeConfig"):
        ProbeConfig(mlp_weight_decay=-1.0)
    assert "mlp" not in ProbeConfig().probes and ProbeConfig(probes="mlp").probes == ("mlp",)
