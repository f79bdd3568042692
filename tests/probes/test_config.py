"""ProbeConfig: keywords and a config object are the same call; validation; round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_config_object_and_keywords_give_the_same_report(linear_features):
    from nopelens.probes import ProbeConfig, probe_positions

    hidden = linear_features(n_seq=12, pos=6)
    kwargs = dict(features=("hidden", "variance"), seeds=(0, 1), control_task=False, max_iter=5)
    by_keywords = probe_positions({"0": hidden}, **kwargs)
    config = ProbeConfig(**kwargs)
    by_config = probe_positions({"0": hidden}, config=config)
    overridden = probe_positions({"0": hidden}, config=config.replace(seeds=(5,)), seeds=(0, 1))
    for other, label in ((by_config, "config="), (overridden, "config= plus overrides")):
        np.testing.assert_array_equal(
            by_keywords.per_seed["value"], other.per_seed["value"], err_msg=f"keywords vs {label}"
        )
        assert other.config == by_keywords.config


def test_config_normalises_validates_and_round_trips():
    import json

    from nopelens.probes import ProbeConfig, SequenceSplit, probe_positions

    config = ProbeConfig(
        sites="resid_post",
        layers=[0, 1],
        features=["variance", "variance", "cosine"],
        seeds=3,
        splits=SequenceSplit(train=[0, 1], val=[2], test=[3]),
        init_seeds=4,
        extrapolate_from=6,
        probes=["ridge", "mlp", "ridge"],
    )
    assert config.init_seeds == (4,) and config.probes == ("ridge", "mlp")
    assert config.sites == ("resid_post",) and config.layers == (0, 1)
    assert config.features == ("variance", "cosine") and config.seeds == (3,)
    assert config == ProbeConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert hash(config) == hash(ProbeConfig.from_dict(config.to_dict()))

    with pytest.raises(ValueError, match=r"ProbeConfig received 3 invalid arguments") as info:
        ProbeConfig(features="x", test_fraction=1.0, max_iter=0)
    message = str(info.value)
    for name in ("features", "test_fraction", "max_iter"):
        assert f"The '{name}' parameter of ProbeConfig" in message
    with pytest.raises(ValueError, match="'splits' parameter of ProbeConfig must have one"):
        ProbeConfig(seeds=(0, 1), splits=[SequenceSplit(train=[0, 1], val=[2], test=[3])])
    with pytest.raises(ValueError, match="'batch_size' parameter of ProbeConfig"):
        ProbeConfig(batch_size=0)
    with pytest.raises(TypeError, match="unknown setting.*'bogus'.*settings of ProbeConfig"):
        ProbeConfig.from_dict({"bogus": 1})
    with pytest.raises(TypeError, match="probe_positions got unknown setting.*'n_seeds'"):
        probe_positions({"0": torch.zeros(4, 4, 2)}, n_seeds=3)
    with pytest.raises(TypeError, match="config"):  # our message, or beartype's under the plugin
        probe_positions({"0": torch.zeros(4, 4, 2)}, config={"seeds": (0,)})
