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


SUBPACKAGES = (
    "models",
    "measure",
    "analyzer",
    "theory",
    "probes",
    "training",
    "experiments",
    "viz",
)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_stub_name_resolves_and_is_documented(package):
    """Each subpackage's __init__.pyi (what IDEs and type checkers read) matches the runtime."""
    import ast
    import importlib
    from pathlib import Path

    module = importlib.import_module(f"nopelens.{package}")
    stub = Path(module.__file__).with_suffix(".pyi")
    listed = {
        alias.name
        for node in ast.walk(ast.parse(stub.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert listed == set(module.__all__)
    for name in sorted(listed):
        obj = getattr(module, name)
        assert obj is not None, name
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"nopelens.{package}.{name} has no docstring"


def test_top_level_stub_matches_all():
    import ast
    from pathlib import Path

    import nopelens

    stub = Path(nopelens.__file__).with_suffix(".pyi")
    listed = {
        alias.name
        for node in ast.walk(ast.parse(stub.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert listed | {"__version__"} == set(nopelens.__all__)


def test_no_module_shares_a_name_with_a_public_name_of_its_package():
    """lazy_loader would shadow one with the other (a function and a module called the same)."""
    import importlib
    from pathlib import Path

    for package in SUBPACKAGES:
        module = importlib.import_module(f"nopelens.{package}")
        modules = {p.stem for p in Path(module.__file__).parent.glob("*.py")}
        assert not modules & set(module.__all__), package


def test_cli_help_imports_no_torch():
    """`nopelens --help` builds every parser from the torch-free spec (its time: benchmarks)."""
    code = (
        "import sys; from nopelens.cli.app import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'transformer_lens', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
