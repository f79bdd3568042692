"""The offline dashboard: self-contained HTML, table of contents, verdicts, summary, real renders.

The render tests open the page in headless Chromium (Debian package ``chromium``; CI installs it
with ``.ci/install-chromium.sh``), take a screenshot and dump the DOM, and assert that every
figure rendered, no JavaScript error happened and the plot area of the screenshot is not blank:
once with the partial (cartesian) plotly.js bundle the page normally carries, once with the full
bundle it falls back to for other trace types.
"""

from __future__ import annotations

import base64
import gzip
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

CHROMIUM = "/usr/bin/chromium"


def _figures():
    import plotly.graph_objects as go
    import torch

    from nopelens.viz import score_by_layer_figure, similarity_heatmap_figure

    i = torch.arange(12, dtype=torch.float32)
    band = torch.exp(-(i[:, None] - i[None, :]).abs() / 3.0)
    heat = similarity_heatmap_figure(
        {"resid_post": torch.stack([band, band**2]), "attn_out": torch.stack([band**3, band])},
        layer_labels=["embed", "0"],
        model_label="NoPE test",
    )
    scores = pd.DataFrame(
        {
            "site": "resid_post",
            "layer": ["embed", "0", "1"],
            "metric": "adjacency_probability",
            "value": [0.2, 0.8, 0.9],
            "chance": 2 / 12,
            "ci_low": [0.1, 0.7, 0.85],
            "ci_high": [0.3, 0.9, 0.95],
        }
    )
    line = go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 1, 3]))
    return heat, score_by_layer_figure(scores), line


# Once the figures are drawn, clicks the heatmap's site menu (second site), then the slider's
# first step, then the "colour: auto" button, in the browser, and records which heatmap is
# visible, the slider now shown and the colour range (read back with --dump-dom).
_INTERACTION_PROBE = """<script>
window.nopelensRendered.then(function () {
  var div = document.querySelector('.plotly-graph-div');
  var button = div.layout.updatemenus[0].buttons[1].args;
  return Plotly.update(div, button[0], button[1]).then(function () {
    var step = div.layout.sliders[0].steps[0].args;
    return Plotly.update(div, step[0], step[1]);
  }).then(function () {
    var fixed = div._fullLayout.coloraxis.cmin;
    return Plotly.relayout(div, div.layout.updatemenus[1].buttons[1].args[0]).then(function () {
      return fixed + '~' + div._fullLayout.coloraxis.cmin.toFixed(3);
    });
  }).then(function (range) {
    var visible = div.data.map(function (t) { return t.visible === true; });
    document.body.setAttribute('data-interaction', visible.indexOf(true) + '|'
      + div.layout.sliders[0].currentvalue.prefix + '|'
      + div.querySelectorAll('.slider-container').length + '|' + range);
  });
}).catch(function (e) { document.body.setAttribute('data-interaction', 'error: ' + e); });
</script>"""


def _headline():
    return pd.DataFrame(
        {
            "claim": ["NoPE shows <the> pattern", "Bidirectional removes it", "Dilutes"],
            "source": ["Zuo et al. 2025", "Zuo et al. 2025", "Dawes et al."],
            "measure": ["NC at the last block", "NC, bidirectional", "NC(16) - NC(512)"],
            "value": [0.746, 0.498, 0.01],
            "ci_low": [0.735, 0.49, -0.02],
            "ci_high": [0.758, 0.505, 0.04],
            "reference": [0.5, 0.5, 0.0],
            "reference_kind": ["chance", "chance", "no change"],
            "verdict": ["supported", "supported", "inconclusive"],
            "rule": ["CI above chance 0.5: supported", "CI contains chance 0.5", "CI above 0"],
        }
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from nopelens.viz import write_dashboard
    from nopelens.viz.markdown import RawHtml

    heat, scores, line = _figures()
    path = tmp_path_factory.mktemp("dash") / "sub" / "dashboard.html"
    sections = [
        ("Self-similarity", heat),
        ("Scores & chance", ["Text with **bold**, `code` and a [link](#scores-chance).", scores]),
        ("Scores & chance", pd.DataFrame({"metric": ["ap", "nc"], "value": [0.91234567, 0.5]})),
        ("Notes", RawHtml("<p class='raw'>raw <b>HTML</b></p>" + _INTERACTION_PROBE)),
        ("A line", line),
    ]
    summary = {"model": "NoPE test", "scores": {"ap": 0.912345, "nc": float("nan")}, "n": 12345}
    written = write_dashboard(
        path,
        sections,
        title="Test <dashboard>",
        summary=summary,
        description="A *test* page.",
        headline=_headline(),
        summary_titles={"scores": "Scores of <the> model"},
    )
    return written, sections, summary


_BUNDLE = re.compile(
    r'<script type="application/octet-stream" id="plotlyjs"([^>]*)>(.*?)</script>', re.S
)


def _bundle(html: str) -> tuple[str, str]:
    """The inlined plotly.js (unpacked) and its ``data-bundle`` name."""
    (found,) = _BUNDLE.findall(html)  # inlined exactly once
    name = re.search(r'data-bundle="([a-z]+)"', found[0]).group(1)
    return gzip.decompress(base64.b64decode(found[1])).decode("utf-8"), name


def _strip_plotly(html: str) -> str:
    (found,) = _BUNDLE.findall(html)
    return html.replace(found[1], "")


def test_dashboard_is_self_contained_with_plotly_inlined_once(page):
    from plotly.offline import get_plotlyjs_version

    path, _, _ = page
    assert path.name == "dashboard.html" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["dashboard.html"]  # atomic: no temp left
    html = path.read_text(encoding="utf-8")
    # the partial bundle (heatmap + scatter only), of the plotly.js version plotly.py expects
    bundle, name = _bundle(html)
    assert name == "cartesian"
    assert bundle.startswith(f"/**\n* plotly.js (cartesian - minified) v{get_plotlyjs_version()}")
    assert "</script" not in bundle.lower()
    rest = _strip_plotly(html)
    # no script / stylesheet / resource loaded from a URL, anywhere in the file
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?\s*(https?:)?//", rest, re.I)
    # every src=/href= attribute outside plotly.js is local (an in-page anchor)
    attributes = re.findall(r"\b(src|href)\s*=\s*[\"']?([^\"'\s>]*)", rest, re.I)
    assert attributes, "expected the table of contents links"
    assert all(value.startswith("#") for _, value in attributes), attributes
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", rest, re.I)
    assert "cdn.plot.ly" not in rest and "mathjax" not in rest.lower()
    # the figure scripts never load plotly themselves
    assert rest.count("Plotly.newPlot(") == 3
    assert rest.count("window.nopelensFigure(function () {") == 3  # drawn once plotly.js is in
    assert html.count('id="plotlyjs"') == 1
    assert len(html.encode()) < 1_000_000  # the full bundle alone is 4.8 MB uncompressed


def test_dashboard_has_toc_anchors_summary_and_sections(page):
    path, sections, _ = page
    html = path.read_text(encoding="utf-8")
    toc = re.search(r'<nav id="toc">(.*?)</nav>', html, re.S).group(1)
    anchors = re.findall(r'href="#([^"]+)"', toc)
    assert anchors == [
        "headline",
        "summary",
        "self-similarity",
        "scores-chance",
        "scores-chance-2",
        "notes",
        "a-line",
    ]
    for anchor in anchors:
        assert html.count(f'id="{anchor}"') == 1
    assert [h for h, _ in sections][1] in html.replace("&amp;", "&")
    assert "<title>Test &lt;dashboard&gt;</title>" in html
    # headline verdicts first: claim, value [CI], reference, verdict badge with its rule
    headline = re.search(r'<section id="headline">(.*?)</section>', html, re.S).group(1)
    assert html.index('id="headline"') < html.index('id="summary"') < html.index('id="notes"')
    rows = re.findall(r"<tr>(.*?)</tr>", headline, re.S)[1:]
    assert len(rows) == 3
    assert "NoPE shows &lt;the&gt; pattern" in rows[0] and "0.746 [0.735, 0.758]" in rows[0]
    assert '<span class="verdict yes">supported</span>' in rows[0]
    assert '<span class="verdict maybe">inconclusive</span>' in rows[2] and "no change" in rows[2]
    # summary numbers: top-level numbers in one table, each group collapsible, no dotted keys
    summary = re.search(r'<section id="summary">(.*?)</section>', html, re.S).group(1)
    assert '<td class="key">n</td><td>12,345</td>' in summary
    assert '<td class="key">model</td><td>NoPE test</td>' in summary
    group = re.search(
        r'<details class="group" open><summary>(.*?)</summary>(.*?)</details>', summary
    )
    assert group.group(1).startswith("Scores of &lt;the&gt; model")
    assert '<td class="key">ap</td><td>0.9123</td>' in group.group(2)
    assert '<td class="key">nc</td><td>nan</td>' in group.group(2)
    assert "scores.ap" not in summary
    # text, tables and trusted raw HTML
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<em>test</em>" in html and "<p class='raw'>raw <b>HTML</b></p><script>" in html
    assert "<td>0.9123</td>" in html
    assert html.count('class="plotly-graph-div"') == 3


def test_dashboard_output_is_deterministic():
    from nopelens.viz import render_dashboard

    heat, scores, _ = _figures()
    sections = [("Heat", heat), ("Scores", scores)]
    assert render_dashboard(sections, title="x") == render_dashboard(sections, title="x")


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ("not sections", "'sections' parameter of write_dashboard"),
        ([("only a heading",)], "'sections' parameter of write_dashboard"),
        ([("Numbers", 3.0)], "must be a plotly Figure, a pandas DataFrame"),
        (
            [("Remote", ("raw", "<script src='https://cdn.example/x.js'></script>"))],
            "loads from the network",
        ),
        (
            [("Style", ("raw", "<link rel='stylesheet' href='//cdn.example/x.css'>"))],
            "loads from the network",
        ),
        ([("Image", ("raw", '<img src="http://example.com/a.png">'))], "loads from the network"),
    ],
)
def test_write_dashboard_rejects_bad_or_online_content(tmp_path, sections, match):
    from nopelens.viz import write_dashboard
    from nopelens.viz.markdown import RawHtml

    if isinstance(sections, list) and len(sections[0]) == 2 and isinstance(sections[0][1], tuple):
        sections = [(heading, RawHtml(html)) for heading, (_, html) in sections]  # trusted HTML
    with pytest.raises(ValueError, match=match):
        write_dashboard(tmp_path / "x.html", sections)
    assert not list(tmp_path.iterdir())


def test_write_dashboard_rejects_figures_that_need_the_network(tmp_path):
    import plotly.graph_objects as go

    from nopelens.viz import write_dashboard

    geo = go.Figure(go.Scattergeo(lon=[0], lat=[0]))
    with pytest.raises(ValueError, match="'scattergeo' trace"):
        write_dashboard(tmp_path / "x.html", [("Map", geo)])
    logo = go.Figure(layout={"images": [{"source": "https://example.com/logo.png"}]})
    with pytest.raises(ValueError, match="data: URI"):
        write_dashboard(tmp_path / "x.html", [("Logo", logo)])


def test_dashboard_command_writes_a_page_for_one_model(tmp_path, capsys):
    from nopelens.cli.app import main

    out = tmp_path / "one.html"
    argv = [
        "dashboard",
        "--out",
        str(out),
        "--n-layers",
        "1",
        "--d-model",
        "32",
        "--n-heads",
        "2",
        "--d-vocab",
        "40",
        "--n-ctx",
        "16",
        "--n-seqs",
        "4",
        "--seq-len",
        "10",
        "--distinct",
    ]
    assert main(argv) == 0
    assert f"dashboard: {out}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    _strip_plotly(html)
    for heading in (
        "Self-similarity by layer",
        "Scores by layer",
        "Distance profiles",
        "Layer-0 theory vs observation",
        "Variance by position",
    ):
        assert f">{heading}</h2>" in html
    assert "NoPE causal L1 d32 h2" in html
    assert main(["dashboard", "--out", str(tmp_path / "bad.html"), "--seq-len", "0"]) == 2


# ---------------------------------------------------------------------------------------------
# headless Chromium
# ---------------------------------------------------------------------------------------------


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG to ``[height, width, channels]`` uint8."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=start + 1)
        if kind == 0:
            row = line.copy()
        elif kind == 1:  # Sub: running sum along the row, per channel (mod 256)
            row = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:  # Up
            row = line + prev
        else:  # Average or Paeth: sequential along the row
            cur = bytearray(line.tobytes())
            up = prev.tobytes()
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                if kind == 3:
                    cur[i] = (cur[i] + ((left + up[i]) >> 1)) & 0xFF
                else:
                    corner = up[i - bpp] if i >= bpp else 0
                    cur[i] = (cur[i] + _paeth(left, up[i], corner)) & 0xFF
            row = np.frombuffer(bytes(cur), dtype=np.uint8)
        out[y] = row
        prev = row
    return out.reshape(height, width, bpp)


def test_read_png_decodes_every_filter():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    rows = []
    flat = image.reshape(5, -1).astype(np.int64)
    for y, kind in enumerate((0, 1, 2, 3, 4)):
        cur, up = flat[y], flat[y - 1] if y else np.zeros_like(flat[0])
        left = np.concatenate([np.zeros(3, np.int64), cur[:-3]])
        corner = np.concatenate([np.zeros(3, np.int64), up[:-3]])
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:
            pred = np.array([_paeth(a, b, c) for a, b, c in zip(left, up, corner, strict=True)])
        rows.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 5, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    path = Path(__import__("tempfile").mkdtemp()) / "t.png"
    path.write_bytes(png)
    np.testing.assert_array_equal(read_png(path), image)


def _chromium() -> str:
    candidates = [
        os.environ.get("NOPELENS_CHROMIUM"),
        CHROMIUM,
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ]
    for path in candidates:
        if path and Path(path).is_file():
            return path
    if os.environ.get("NOPELENS_REQUIRE_CHROMIUM"):  # set by .ci/run: CI must render the page
        pytest.fail("Chromium is not installed but NOPELENS_REQUIRE_CHROMIUM is set")
    pytest.skip("Chromium is not installed (CI installs it: .ci/install-chromium.sh)")


def test_dashboard_renders_in_headless_chromium(page, tmp_path):
    chromium = _chromium()
    path, _, _ = page
    assert _bundle(path.read_text(encoding="utf-8"))[1] == "cartesian"  # the partial bundle
    shot = tmp_path / "shot.png"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}", "--window-size=1200,1800", "--virtual-time-budget=10000",
        "--enable-logging=stderr", "--v=0", "--dump-dom", path.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    dom = done.stdout
    # every figure rendered its SVG, the page's error hook caught nothing
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body))
    assert attrs.get("figures") == "3", body
    assert attrs.get("rendered") == "3", body
    assert attrs.get("errors") == "0", re.search(r'id="nl-errors"[^>]*>(.*?)</div>', dom, re.S)
    assert dom.count('class="main-svg"') >= 3
    # the site menu swapped in the attn_out slider, whose first step shows (attn_out, embed)
    interaction = attrs.get("interaction", "")
    assert interaction.startswith("2|attn_out · layer: |1|-1~"), interaction
    assert float(interaction.split("~")[1]) > -0.5, interaction  # auto: the data's minimum
    # no console errors (Chromium logs console messages as "...:CONSOLE...")
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    bad = [line for line in console if re.search(r"error|uncaught|failed|refused", line, re.I)]
    assert not bad, bad
    # the screenshot is not blank where the first figure (the heatmap) is drawn
    image = read_png(shot)[..., :3].astype(np.int16)
    assert image.shape[:2] == (1800, 1200)
    main = image[:, 240:]  # right of the table of contents
    saturation = main.max(axis=-1) - main.min(axis=-1)
    coloured = (saturation > 60).mean()
    assert coloured > 0.05, f"only {coloured:.1%} of the plot area is coloured"
    distinct = np.unique(main.reshape(-1, 3), axis=0).shape[0]
    assert distinct > 100, f"only {distinct} distinct colours: blank or unstyled page"


# ---------------------------------------------------------------------------------------------
# user-controlled text: escaped everywhere, only safe links survive
# ---------------------------------------------------------------------------------------------

#: Would mark the page if it ever ran (every injected script and handler below calls it).
_PWN = "document.body.setAttribute('data-pwned','1')"
#: Link targets that must never become links, in the spellings browsers still execute.
UNSAFE_TARGETS = [
    f"javascript:{_PWN}",
    f"JavaScript:{_PWN}",
    f"java\tscript:{_PWN}",
    f"\x01javascript:{_PWN}",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "file:///etc/passwd",
    "//evil.example/x",
    "\\\\evil.example/x",
    f"javascript&#58;{_PWN}",
    f"&#106;avascript:{_PWN}",
]
SAFE_TARGETS = ["https://arxiv.org/abs/2305.13571", "http://example.org/a?b=1&c=2", "parts/x.csv"]


def _hostile_sections():
    """Sections whose every user-controllable string tries to inject markup or a link."""
    import plotly.graph_objects as go

    from nopelens.viz.markdown import RawHtml

    inject = f'<script>{_PWN}</script><img src=x onerror="{_PWN}">'
    links = "\n".join(f"- [bad {i}]({url})" for i, url in enumerate(UNSAFE_TARGETS))
    links += "\n" + "\n".join(f"- [good {i}]({url})" for i, url in enumerate(SAFE_TARGETS))
    figure = go.Figure(go.Scatter(x=[0, 1], y=[1, 0], name=inject), layout={"title": inject})
    frame = pd.DataFrame({inject: [inject, "x"], "value": [1.0, 2.0]})
    # Clicks every link whose target is not http(s) or a local file (a javascript: link would
    # run), then reports what it saw: this part is trusted markup written by the test.
    probe = RawHtml(
        """<script>
window.addEventListener('load', function () {
  var anchors = Array.prototype.slice.call(document.querySelectorAll('a[href]'));
  var clicked = 0;
  anchors.forEach(function (a) {  // http(s) and file (#anchors, relative paths) are inert here
    if (!/^(https?|file):$/.test(a.protocol)) { a.click(); clicked += 1; }
  });
  setTimeout(function () {
    document.body.setAttribute('data-anchors', String(anchors.length));
    document.body.setAttribute('data-clicked', String(clicked));
    document.body.setAttribute('data-protocols',
      anchors.map(function (a) { return a.protocol; }).join(' '));
  }, 200);
});
</script>"""
    )
    return (
        [
            (f"Heading {inject}", [f"Model `{inject}` loaded from *{inject}*", figure]),
            ("Links", links),
            ("Table", frame),
            ("Probe", probe),
        ],
        {f"key {inject}": inject},
        f"Title {inject}",
        f"Description [x](javascript:{_PWN}) {inject}",
    )


def test_user_text_is_escaped_and_only_safe_links_survive(tmp_path):
    from nopelens.viz import write_dashboard

    sections, summary, title, description = _hostile_sections()
    inject = sections[2][1].columns[0]
    headline = _headline().assign(claim=inject, source=inject, measure=inject, rule=inject)
    path = write_dashboard(
        tmp_path / "hostile.html",
        sections,
        title=title,
        summary=summary,
        description=description,
        headline=headline.assign(reference_kind=inject),
        summary_titles={"x": inject},
    )
    rest = _strip_plotly(path.read_text(encoding="utf-8"))
    # the only elements are the page's own: no <img>, no handler attribute, six scripts (error
    # hook, plotly.js, its loader, the figure, the test's probe, the error report)
    assert not re.search(r"<img|<[a-z][^>]*\son[a-z]+\s*=", rest, re.I)
    assert len(re.findall(r"<script\b", rest)) == 6
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", rest, re.S)
    figure = next(s for s in scripts if "Plotly.newPlot" in s)
    assert "<script" not in figure and "\\u003cscript\\u003e" in figure  # JSON-escaped by plotly
    # text keeps the injected markup visible as text
    assert "&lt;script&gt;" in rest and "<title>Title &lt;script&gt;" in rest
    hrefs = re.findall(r'<a href="([^"]*)"', rest)
    toc = [h for h in hrefs if h.startswith("#")]
    assert [h for h in hrefs if not h.startswith("#")] == [
        "https://arxiv.org/abs/2305.13571",
        "http://example.org/a?b=1&amp;c=2",
        "parts/x.csv",
    ]
    assert len(toc) == 6  # headline + summary + four sections
    for i in range(len(UNSAFE_TARGETS)):  # shown as the text they were written as
        assert f"[bad {i}](" in rest
    for fragment in ("javascript:", "vbscript:", "data:text/html", "file:", "//evil"):
        assert not re.search(rf"href=[\"']?\s*{re.escape(fragment)}", rest, re.I), fragment


def test_markdown_code_spans_are_literal():
    from nopelens.viz.markdown import markdown_to_html

    html = markdown_to_html("`[a](https://x.org)` and `**b**` then [c](#top)")
    assert html == (
        "<p><code>[a](https://x.org)</code> and <code>**b**</code> then "
        '<a href="#top" rel="noopener noreferrer">c</a></p>'
    )


def test_no_injected_script_runs_and_no_unsafe_link_in_headless_chromium(tmp_path):
    chromium = _chromium()
    from nopelens.viz import write_dashboard

    sections, summary, title, description = _hostile_sections()
    path = write_dashboard(
        tmp_path / "hostile.html", sections, title=title, summary=summary, description=description
    )
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    body = re.search(r"<body([^>]*)>", done.stdout).group(1)
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body))
    assert "pwned" not in attrs, "an injected script or link ran"
    assert attrs.get("figures") == attrs.get("rendered") == "1", body
    # the probe ran: it saw the table of contents, the three safe links and nothing else
    protocols = attrs.get("protocols", "").split()
    assert attrs.get("anchors") == str(5 + len(SAFE_TARGETS)), body
    assert sorted(set(protocols)) == ["file:", "http:", "https:"], protocols  # file: = #anchors
    # no javascript:, data:, vbscript: ... link exists to click (a vulnerable page gives
    # protocols "javascript: vbscript: data:" and clicked=6 here)
    assert attrs.get("clicked") == "0", body


def test_summary_groups_make_tables_of_records_and_collapse_when_long():
    from nopelens.viz.sections import summary_html

    layers = {f"layer {i}": {"AP": 0.1 * i, "NC": 0.5, "ci": [0.4, 0.6]} for i in range(20)}
    html = summary_html({"random_init": {"model": "NoPE", **layers, "deep": {"x": {"y": 1}}}})
    # the records (same keys) are one table with a row each and a column per key
    tables = re.findall(r"<table.*?</table>", html, re.S)
    assert len(tables) == 3  # model | the 20 layers | deep > x
    assert re.findall(r"<th>(.*?)</th>", tables[1]) == ["AP", "NC", "ci"]
    assert tables[1].count("<tr>") == 21 and "<td>[0.4, 0.6]</td>" in tables[1]
    assert "<h4>deep</h4>" in html and "random_init" in html
    assert '<details class="group">' in html  # 63 numbers: collapsed


def test_markdown_double_backtick_code_spans_leave_no_stray_backticks():
    from nopelens.viz.markdown import markdown_to_html

    html = markdown_to_html("(``remove_residual:0`` means block 0) and `` `x` `` and `y`")
    assert "`" not in html.replace("<code>`x`</code>", "")
    assert html.count("<code>") == 3 and "<code>remove_residual:0</code>" in html


def test_bundle_is_the_smallest_that_draws_every_figure(tmp_path):
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    from nopelens.viz.dashboard import PARTIAL_BUNDLE_TRACES, choose_bundle, render_dashboard

    assert choose_bundle({"heatmap", "scatter", "bar"}) == "cartesian"
    assert choose_bundle({"heatmap", "scatterpolar"}) == "full"
    assert choose_bundle({"scatter"}, "full") == "full"
    with pytest.raises(ValueError, match="'plotly_bundle' parameter of write_dashboard"):
        choose_bundle({"scatter"}, "partial")
    # every trace type the shipped bundle registers is one it is chosen for, and vice versa
    cartesian, _ = _bundle(render_dashboard([("L", go.Figure(go.Scatter()))]))
    registered = set(re.findall(r'moduleType:"trace",name:"([a-z0-9]+)"', cartesian))
    assert registered == PARTIAL_BUNDLE_TRACES
    polar = render_dashboard([("Polar", go.Figure(go.Scatterpolar(r=[1, 2], theta=[0, 90])))])
    full, name = _bundle(polar)
    assert name == "full" and full == get_plotlyjs()


def _render(chromium: str, path: Path, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """Open ``path`` in headless Chromium: the body's data attributes and bad console lines."""
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom",
        path.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    body = re.search(r"<body([^>]*)>", done.stdout).group(1)
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    bad = [line for line in console if re.search(r"error|uncaught|failed|refused", line, re.I)]
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', body)), bad


def test_full_bundle_fallback_renders_in_headless_chromium(tmp_path):
    chromium = _chromium()
    import plotly.graph_objects as go

    from nopelens.viz import write_dashboard

    heat, scores, _ = _figures()
    polar = go.Figure(go.Scatterpolar(r=[1, 2, 3], theta=[0, 90, 180]))  # not in the partial one
    path = write_dashboard(tmp_path / "full.html", [("Heat", heat), ("Polar", polar)])
    assert _bundle(path.read_text(encoding="utf-8"))[1] == "full"
    attrs, bad = _render(chromium, path, tmp_path)
    assert attrs.get("figures") == attrs.get("rendered") == "2", attrs
    assert attrs.get("errors") == "0" and not bad, bad


def test_a_figure_the_partial_bundle_cannot_draw_is_reported_not_silent(tmp_path):
    chromium = _chromium()
    import plotly.graph_objects as go

    from nopelens.viz.dashboard import render_dashboard

    # force the partial bundle on a polar figure (as if the trace table were wrong): the page
    # must say so in its error banner instead of leaving a blank box
    page = render_dashboard([("Line", go.Figure(go.Scatter(x=[0, 1], y=[1, 0])))])
    polar = render_dashboard([("Polar", go.Figure(go.Scatterpolar(r=[1, 2], theta=[0, 90])))])
    figure = re.search(r'<div class="figure">.*?</script>\s*</div>\s*</div>', polar, re.S).group(0)
    page = re.sub(r'<div class="figure">.*?</script>\s*</div>\s*</div>', lambda _: figure, page,
                  count=1, flags=re.S)  # fmt: skip
    path = tmp_path / "broken.html"
    path.write_text(page, encoding="utf-8")
    attrs, _ = _render(chromium, path, tmp_path)
    assert attrs.get("figures") == "1" and attrs.get("errors") != "0", attrs
