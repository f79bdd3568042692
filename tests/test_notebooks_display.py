"""Notebook figures: a PNG copy beside every figure (nopelens.viz.display), no warnings."""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def _chromium() -> bool:
    path = os.environ.get("NOPELENS_CHROMIUM")
    found = (path and Path(path).exists()) or any(
        shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
    )
    return bool(found) and importlib.util.find_spec("kaleido") is not None


def _figure():
    import plotly.graph_objects as go

    return go.Figure(go.Bar(y=[1, 3, 2]), layout={"title": {"text": "bars"}})


@pytest.fixture
def display_module(monkeypatch):
    from nopelens.viz import display

    monkeypatch.setattr(display, "_server", None)  # try kaleido afresh
    return display


@pytest.mark.skipif(not _chromium(), reason="needs kaleido and Chromium (pip install .[export])")
def test_static_image_is_a_png_of_the_requested_size(display_module):
    import struct

    png = display_module.static_image(_figure(), width=320, height=200)
    assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (320, 200)  # the IHDR chunk's width, height
    svg = display_module.static_image(_figure(), format="svg", width=320, height=200)
    assert svg is not None and b"<svg" in svg[:400]


def test_without_kaleido_there_is_no_image_and_no_warning(display_module, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kaleido", None)  # `import kaleido` raises ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert display_module.static_image(_figure()) is None


def test_bad_format_is_refused_before_rendering(display_module):
    with pytest.raises(ValueError, match="'format' parameter of static_image must be one of png"):
        display_module.static_image(_figure(), format="gif")
    assert display_module._server is None  # nothing was started


def _shown(display_module, monkeypatch, png, **kwargs):
    import IPython
    import IPython.display

    calls = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(display_module, "static_image", lambda fig, **k: png)
    display_module.show(_figure(), **kwargs)
    return calls


def test_show_puts_the_png_in_the_figure_output(display_module, monkeypatch):
    calls = _shown(display_module, monkeypatch, b"\x89PNG fake")
    assert len(calls) == 1
    (bundle,), options = calls[0]
    assert options == {"raw": True}
    assert base64.b64decode(bundle["image/png"]) == b"\x89PNG fake"
    assert bundle["application/vnd.plotly.v1+json"]["layout"]["title"]["text"] == "bars"


def test_show_beside_and_without_kaleido(display_module, monkeypatch):
    beside = _shown(display_module, monkeypatch, b"\x89PNG fake", beside=True)
    assert len(beside) == 2 and type(beside[1][0][0]).__name__ == "Image"
    alone = _shown(display_module, monkeypatch, None)
    assert len(alone) == 1 and type(alone[0][0][0]).__name__ == "Figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_figure_goes_through_show(path):
    """A cell ending in a bare `*_figure(...)` would be stored as plotly JSON only."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    bare = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        body = ast.parse("".join(cell["source"])).body
        last = body[-1] if body else None
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call):
            if ast.unparse(last.value.func).endswith("_figure"):
                bare.append(index)
    assert bare == [], f"{path.name}: cells {bare} end in a figure; wrap it in show(...)"


@pytest.mark.slow
@pytest.mark.skipif(not _chromium(), reason="needs kaleido and Chromium (pip install .[export])")
def test_quickstart_outputs_have_pngs_and_no_warnings(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("NOPELENS_SMALL", "1")
    path = next(p for p in NOTEBOOKS if p.stem == "quickstart")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    stderr = [o["text"] for o in outputs if o.get("name") == "stderr"]
    assert stderr == []
    figures = [o["data"] for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures and all("image/png" in data for data in figures)
