"""The public surface: every exported name imports and is documented; the CLI is wired up."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _exports():
    import nopelens

    return [name for name in nopelens.__all__ if name != "__version__"]


def test_every_public_name_imports_and_has_a_docstring():
    import nopelens

    missing_doc = []
    for name in _exports():
        obj = getattr(nopelens, name)
        if not isinstance(obj, (float, int, str, dict, tuple)) and not (obj.__doc__ or "").strip():
            missing_doc.append(name)
    assert not missing_doc, f"public names without a docstring: {missing_doc}"


def test_unknown_attribute_raises_attribute_error():
    import nopelens

    with pytest.raises(AttributeError, match="nope"):
        nopelens.nope  # noqa: B018


def test_design_surface_is_exported():
    import nopelens

    for name in (
        "build_model",
        "is_nope",
        "save_model",
        "load_model",
        "collect_activations",
        "self_similarity",
        "adjacency_probability",
        "neighborhood_concordance",
        "analyze",
        "first_layer_theory",
        "position_variance",
        "probe_positions",
    ):
        assert name in nopelens.__all__


def test_cli_lists_every_command():
    from nopelens.cli.app import COMMANDS, build_parser

    help_text = build_parser().format_help()
    for command in COMMANDS:
        assert command in help_text


def test_import_is_light_and_version_flag_works():
    code = (
        "import sys, nopelens; assert 'transformer_lens' not in sys.modules, 'eager import'; "
        "print(nopelens.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    version = subprocess.run(
        [sys.executable, "-m", "nopelens", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.stdout.strip() == f"nopelens {out.stdout.strip()}"
