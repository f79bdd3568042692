"""The README/docs figures are regenerated when the code that draws them changes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _make_assets():
    spec = importlib.util.spec_from_file_location("make_assets", ROOT / "assets" / "make_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_asset_has_a_png_and_a_manifest_entry():
    make_assets = _make_assets()
    manifest = json.loads((ROOT / "assets" / "manifest.json").read_text())
    assert set(manifest) == set(make_assets.FIGURES)
    for name in make_assets.FIGURES:
        assert (ROOT / "assets" / f"{name}.png").is_file(), name


@pytest.mark.parametrize("name", sorted(_make_assets().FIGURES))
def test_asset_is_not_stale(name):
    make_assets = _make_assets()
    manifest = json.loads((ROOT / "assets" / "manifest.json").read_text())
    assert manifest[name]["code_sha256"] == make_assets.code_hash(name), (
        f"assets/{name}.png is stale: the code that draws it changed. Run `make assets`."
    )
