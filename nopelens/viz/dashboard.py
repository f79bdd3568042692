"""One self-contained HTML page of figures, tables and notes that opens with no network.

:func:`write_dashboard` renders a list of ``(heading, content)`` sections into a single HTML file:
plotly.js is inlined exactly once in the page head, every figure is a ``<div>`` plus a small
inline script, and nothing is fetched from a CDN or any other URL, so the file can be mailed,
archived or opened on an air-gapped machine. The page has a table of contents with anchors, the
headline verdicts and the summary numbers (grouped by experiment), and an error banner that
lists any figure that failed to render (a JavaScript error would otherwise leave a silent blank
box).

plotly.js is inlined gzip-compressed (base64) and unpacked by the browser's own
``DecompressionStream`` when the page opens; figures are drawn once it is loaded. When every
figure uses only cartesian trace types (scatter, bar, heatmap, histogram, box, ...), the page
carries the partial ``plotly.js-cartesian`` bundle shipped in ``nopelens/viz/bundles`` (about
0.5 MB compressed, of the same plotly.js version as the installed plotly package), else the full
bundle of the plotly package (about 1.4 MB compressed). Scripts on the page can wait for the
figures with ``window.nopelensRendered.then(...)``.

Ready-made sections for an analysed model come from :mod:`nopelens.viz.sections`
(:func:`report_sections`, :func:`report_summary`, also importable from here); text sections are
rendered by :func:`nopelens.viz.markdown.markdown_to_html`.

Everything that comes from data is escaped: headings, the title, summary keys and values, table
cells and column names, and markdown text (whose links survive only to ``http(s)``, relative or
``#anchor`` targets, so a ``javascript:`` link built from a model path is shown as text). Figure
data is JSON-escaped by plotly. Raw HTML is taken only from a
:class:`~nopelens.viz.markdown.RawHtml` string, never from a plain one.

Examples:
    >>> import tempfile, pathlib, pandas as pd, plotly.graph_objects as go
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "dash.html"
    >>> fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    >>> path = write_dashboard(out, [("A line", fig), ("A table", pd.DataFrame({"x": [1]}))],
    ...                        title="Demo", summary={"adjacency_probability": 0.91})
    >>> html = path.read_text()
    >>> html.count('class="plotly-graph-div"'), 'href="#a-line"' in html
    (1, True)
"""

from __future__ import annotations

import base64
import functools
import gzip
import html as _html
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from nopelens.files import atomic_write_text
from nopelens.viz.markdown import RawHtml, markdown_to_html
from nopelens.viz.sections import (  # report_* importable from here too
    format_number,
    headline_html,
    report_sections,
    report_summary,
    summary_html,
)

__all__ = ["RawHtml", "write_dashboard", "render_dashboard", "report_sections", "report_summary"]

#: Trace types whose rendering fetches map tiles or topology from the network.
_NETWORK_TRACES = frozenset(
    {
        "scattergeo",
        "choropleth",
        "scattermapbox",
        "choroplethmapbox",
        "densitymapbox",
        "scattermap",
        "choroplethmap",
        "densitymap",
    }
)
#: Markup that would make the page load something: a script/iframe/img/... source, a stylesheet
#: link, a CSS import or url(). Applied to everything on the page except the inlined plotly.js.
_EXTERNAL = re.compile(
    r"""(?:\b(?:src|srcset|data|poster|background)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:<link\b[^>]*\bhref\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:@import\b)|(?:url\(\s*["']?\s*(?:https?:)?//)""",
    re.IGNORECASE,
)
_MAX_TABLE_ROWS = 500
#: Which plotly.js a page carries: the smallest that draws its figures, or always the full one.
PlotlyBundle = Literal["auto", "full"]
#: plotly.js version of the partial bundle in ``nopelens/viz/bundles``.
PARTIAL_BUNDLE_VERSION = "4.1.1"
#: Trace types that the partial (cartesian) bundle draws.
PARTIAL_BUNDLE_TRACES = frozenset(
    {
        "bar",
        "box",
        "contour",
        "heatmap",
        "histogram",
        "histogram2d",
        "histogram2dcontour",
        "image",
        "pie",
        "scatter",
        "scatterternary",
        "violin",
    }
)
_BUNDLE_FILE = (
    Path(__file__).resolve().parent
    / "bundles"
    / f"plotly-cartesian-{PARTIAL_BUNDLE_VERSION}.min.js.gz"
)

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --side: #f6f8fa;
        --accent: #0969da; }
* { box-sizing: border-box; }
html { scroll-behavior: smooth; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
nav#toc { position: fixed; top: 0; left: 0; bottom: 0; width: 230px; overflow-y: auto;
          padding: 18px 14px; background: var(--side); border-right: 1px solid var(--line);
          font-size: 13.5px; }
nav#toc h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .05em;
             color: var(--muted); margin: 0 0 8px; }
nav#toc ol { margin: 0; padding-left: 20px; }
nav#toc li { margin: 3px 0; }
nav#toc a { color: var(--fg); text-decoration: none; }
nav#toc a:hover { color: var(--accent); text-decoration: underline; }
main { margin-left: 230px; padding: 16px 28px 60px; max-width: 1240px; }
header h1 { font-size: 24px; margin: 4px 0 2px; }
header p.meta { color: var(--muted); margin: 0 0 10px; font-size: 13px; }
section { margin: 0 0 26px; padding-top: 6px; border-top: 1px solid var(--line); }
section h2 { font-size: 19px; margin: 10px 0 8px; }
section h3 { font-size: 16px; margin: 10px 0 6px; }
.figure { width: 100%; margin: 6px 0 14px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; }
th { background: var(--side); }
td.key, th.key { text-align: left; font-family: ui-monospace, Menlo, Consolas, monospace; }
.table-wrap { max-height: 460px; overflow: auto; display: inline-block; max-width: 100%; }
table.summary { columns: 2; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 90%;
       background: var(--side); padding: 1px 4px; border-radius: 4px; }
p.note { color: var(--muted); font-size: 12.5px; }
table.headline td { vertical-align: top; text-align: left; }
table.headline th { text-align: left; font-family: inherit; }
table.headline td.key { max-width: 420px; font-family: inherit; }
table.headline .num { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.headline .sub { color: var(--muted); font-size: 11.5px; font-family: inherit;
                      text-align: left; max-width: 360px; }
.verdict { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
           font-size: 12.5px; white-space: nowrap; }
.verdict.yes { background: #dafbe1; color: #116329; }
.verdict.no { background: #ffebe9; color: #a40e26; }
.verdict.maybe { background: #fff8c5; color: #7d4e00; }
details.group { margin: 4px 0; }
.groups.open { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
details.group > summary { cursor: pointer; font-weight: 600; padding: 3px 0; }
details.group .count { color: var(--muted); font-weight: 400; font-size: 12.5px; }
details.group h4, details.group h5, details.group h6 { margin: 8px 0 4px; }
#nl-errors { display: none; background: #ffebe9; border: 1px solid #cf222e; color: #82071e;
             padding: 8px 12px; margin: 8px 0; white-space: pre-wrap; font-size: 13px; }
@media (max-width: 900px) { nav#toc { position: static; width: auto; border-right: 0; }
                            main { margin-left: 0; } }
"""

# Collects page errors before anything else runs; the banner and data attributes make them
# visible to readers and to tests (``--dump-dom``).
_ERROR_HOOK = """
window.__nopelensErrors = [];
window.addEventListener('error', function (e) {
  window.__nopelensErrors.push(String(e.message || e));
});
window.addEventListener('unhandledrejection', function (e) {
  window.__nopelensErrors.push('unhandled rejection: ' + String(e.reason));
});
"""
# Unpacks the inlined, gzip-compressed plotly.js (base64 in the script element #plotlyjs) with
# the browser's DecompressionStream and runs it; figures queue their drawing code until then.
_LOADER = """
window.__nopelensFigures = [];
window.nopelensFigure = function (draw) { window.__nopelensFigures.push(draw); };
window.nopelensRendered = new Promise(function (resolve) { window.__nopelensDone = resolve; });
window.__nopelensPlotly = (function () {
  try {
    var text = atob(document.getElementById('plotlyjs').textContent.trim());
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i += 1) { bytes[i] = text.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Response(stream).text().then(function (code) {
      var script = document.createElement('script');
      script.textContent = code;
      document.head.appendChild(script);
      if (typeof Plotly === 'undefined') { throw new Error('Plotly is not defined'); }
    });
  } catch (e) { return Promise.reject(e); }
})();
"""
_ERROR_REPORT = """
(function () {
  var errors = window.__nopelensErrors;
  function report() {
    var figures = document.querySelectorAll('.plotly-graph-div');
    var rendered = 0;
    figures.forEach(function (div) {
      if (div.querySelector('.main-svg')) { rendered += 1; }
      else { errors.push('figure ' + div.id + ' did not render'); }
      (div._fullData || []).forEach(function (trace) {  // an unknown type is drawn as nothing
        var given = (div.data || [])[trace.index];
        if (given && given.type && given.type !== trace.type) {
          errors.push('figure ' + div.id + ': this plotly.js cannot draw ' + given.type);
        }
      });
    });
    document.body.setAttribute('data-figures', String(figures.length));
    document.body.setAttribute('data-rendered', String(rendered));
    document.body.setAttribute('data-errors', String(errors.length));
    if (errors.length) {
      var box = document.getElementById('nl-errors');
      box.textContent = 'Rendering problems:\\n' + errors.join('\\n');
      box.style.display = 'block';
    }
    window.__nopelensDone(errors.length);
  }
  window.__nopelensPlotly.then(function () {
    return Promise.all(window.__nopelensFigures.map(function (draw) {
      return new Promise(function (resolve) { resolve(draw()); }).catch(function (e) {
        errors.push('figure error: ' + String(e && e.message || e));
      });
    }));
  }, function (e) {
    errors.push('plotly.js did not load: ' + String(e && e.message || e));
  }).then(report);
})();
"""


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def _format_number(value: Any) -> str:
    return format_number(value)


def _frame_html(frame: pd.DataFrame) -> str:
    shown = frame.head(_MAX_TABLE_ROWS)
    table = shown.to_html(
        index=False,
        border=0,
        escape=True,
        float_format=lambda v: _format_number(float(v)),
        classes="frame",
        na_rep="",
    )
    note = ""
    if len(frame) > len(shown):
        note = (
            f'<p class="note">First {len(shown)} of {len(frame)} rows; the full table is in the '
            "run's CSV files.</p>"
        )
    return f'<div class="table-wrap">{table}</div>{note}'


def _check_figure(figure: Any, heading: str) -> None:
    for trace in figure.data:
        if trace.type in _NETWORK_TRACES:
            raise ValueError(
                f"The section {heading!r} passed to write_dashboard has a {trace.type!r} trace, "
                "which fetches map data from the network; the dashboard must open offline."
            )
    for image in figure.layout.images or ():
        source = str(image.source or "")
        if re.match(r"\s*(https?:)?//", source):
            raise ValueError(
                f"The section {heading!r} passed to write_dashboard has a layout image loaded "
                f"from {source!r}; embed it as a data: URI so that the dashboard opens offline."
            )


_FIGURE_SCRIPT = re.compile(r"(<script[^>]*>)(.*?)(</script>)", re.S)


def _figure_html(figure: Any, div_id: str) -> str:
    """The figure's ``<div>`` and its drawing code, queued until plotly.js is unpacked."""
    height = figure.layout.height or 480
    html = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=div_id,
        default_width="100%",
        default_height=f"{int(height)}px",
        validate=False,
        config={"displaylogo": False, "responsive": True},
    )
    scripts = _FIGURE_SCRIPT.findall(html)
    if len(scripts) != 1 or "Plotly.newPlot(" not in scripts[0][1]:  # pragma: no cover
        raise RuntimeError("plotly's to_html output changed: expected one Plotly.newPlot script")
    opening, body, closing = scripts[0]
    body = body.replace("Plotly.newPlot(", "return Plotly.newPlot(", 1)
    queued = f"{opening}window.nopelensFigure(function () {{{body}}});{closing}"
    return html.replace(opening + scripts[0][1] + closing, queued, 1)


def _is_figure(content: Any) -> bool:
    return hasattr(content, "to_html") and hasattr(content, "layout") and hasattr(content, "data")


def _content_html(content: Any, heading: str, new_id: Callable[[], str]) -> str:
    if isinstance(content, (list, tuple)):
        return "\n".join(_content_html(item, heading, new_id) for item in content)
    if _is_figure(content):
        _check_figure(content, heading)
        return f'<div class="figure">{_figure_html(content, new_id())}</div>'
    if isinstance(content, pd.DataFrame):
        return _frame_html(content)
    if isinstance(content, pd.Series):
        return _frame_html(content.reset_index())
    if isinstance(content, str):
        return markdown_to_html(content)
    raise ValueError(
        f"The content of section {heading!r} passed to write_dashboard must be a plotly "
        "Figure, a pandas DataFrame, markdown text, RawHtml, or a list of these. "
        f"Got {type(content).__name__} instead."
    )


def _check_sections(sections: Any) -> list[tuple[str, Any]]:
    message = (
        "The 'sections' parameter of write_dashboard must be a sequence of (heading, content) "
        "pairs. Got {} instead."
    )
    if isinstance(sections, (str, bytes, Mapping)) or not isinstance(sections, Iterable):
        raise ValueError(message.format(type(sections).__name__))
    checked = []
    for item in sections:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(message.format(f"an item {item!r:.80}"))
        checked.append((item[0], item[1]))
    return checked


def _plotly_version() -> str:
    import plotly

    return plotly.__version__


def _sections_html(
    checked: list[tuple[str, Any]],
    summary: Mapping[str, Any] | None,
    headline: pd.DataFrame | None = None,
    summary_titles: Mapping[str, str] | None = None,
) -> tuple[list[str], str]:
    """The table-of-contents entries and the page body: verdicts, summary, then each section."""
    used: set[str] = {"headline", "summary", "toc", "nl-errors"}
    toc, body = [], []
    if headline is not None:
        toc.append('<li><a href="#headline">Headline verdicts</a></li>')
        body.append(
            '<section id="headline"><h2>Headline verdicts</h2>'
            + headline_html(headline)
            + "</section>"
        )
    if summary:
        toc.append('<li><a href="#summary">Summary numbers</a></li>')
        body.append(
            '<section id="summary"><h2>Summary numbers</h2>'
            + summary_html(summary, summary_titles)
            + "</section>"
        )
    counter = itertools.count()
    for heading, content in checked:
        slug = _slug(heading, used)
        inner = _content_html(content, heading, functools.partial(_figure_id, slug, counter))
        toc.append(f'<li><a href="#{slug}">{_html.escape(heading)}</a></li>')
        body.append(f'<section id="{slug}"><h2>{_html.escape(heading)}</h2>\n{inner}\n</section>')
    return toc, "\n".join(body)


def _check_offline(page_body: str, description_html: str, title: str) -> None:
    """Refuse markup that would load anything from the network (see ``_EXTERNAL``)."""
    match = _EXTERNAL.search(page_body + description_html + title)
    if match:
        start = max(match.start() - 60, 0)
        raise ValueError(
            "write_dashboard cannot embed content that loads from the network (the dashboard "
            f"must open offline): found {match.group(0)!r} in "
            f"...{page_body[start : match.end() + 60]!r}..."
        )


@functools.lru_cache(maxsize=2)
def _compressed_bundle(name: str) -> bytes:
    """The gzip bytes of plotly.js: ``"cartesian"`` (the shipped partial bundle) or ``"full"``."""
    if name == "cartesian":
        return _BUNDLE_FILE.read_bytes()
    from plotly.offline import get_plotlyjs

    return gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)


def choose_bundle(trace_types: Iterable[str], choice: str = "auto") -> str:
    """Which plotly.js a page with these trace types carries: ``"cartesian"`` or ``"full"``.

    The partial cartesian bundle is used when every trace type is one it draws
    (:data:`PARTIAL_BUNDLE_TRACES`), its version is the one bundled with the installed plotly
    package, and its file is installed; otherwise (or with ``choice="full"``) the full bundle.

    Examples:
        >>> choose_bundle(["heatmap", "scatter"]), choose_bundle(["scatter3d"])
        ('cartesian', 'full')
        >>> choose_bundle(["scatter"], "full")
        'full'
    """
    from plotly.offline import get_plotlyjs_version

    if choice not in ("auto", "full"):
        raise ValueError(
            "The 'plotly_bundle' parameter of write_dashboard must be one of 'auto', 'full'. "
            f"Got {choice!r} instead."
        )
    partial = (
        choice == "auto"
        and set(trace_types) <= PARTIAL_BUNDLE_TRACES
        and get_plotlyjs_version() == PARTIAL_BUNDLE_VERSION
        and _BUNDLE_FILE.is_file()
    )
    return "cartesian" if partial else "full"


def _trace_types(content: Any) -> set[str]:
    """The trace types of every figure in a section's content (recursively)."""
    if isinstance(content, (list, tuple)):
        return set().union(*(_trace_types(item) for item in content)) if content else set()
    if _is_figure(content):
        return {str(trace.type or "scatter") for trace in content.data}
    return set()


def _page(
    title: str, toc: list[str], description_html: str, page_body: str, bundle: str = "full"
) -> str:
    """The whole HTML document, with plotly.js inlined once in its head (gzip, base64)."""
    from plotly.offline import get_plotlyjs_version

    from nopelens import __version__

    packed = base64.b64encode(_compressed_bundle(bundle)).decode("ascii")
    meta = (
        f"Generated by nopelens {__version__} with plotly {_plotly_version()} (plotly.js "
        f"{get_plotlyjs_version()}, {bundle} bundle); self-contained, opens without network."
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="nopelens">',
            f"<title>{_html.escape(title)}</title>",
            f"<style>{_CSS}</style>",
            f"<script>{_ERROR_HOOK}</script>",
            f'<script type="application/octet-stream" id="plotlyjs" '
            f'data-bundle="{bundle}" data-encoding="gzip+base64">{packed}</script>',
            f"<script>{_LOADER}</script>",
            "</head>",
            "<body>",
            '<nav id="toc"><h2>Contents</h2><ol>' + "".join(toc) + "</ol></nav>",
            "<main>",
            f"<header><h1>{_html.escape(title)}</h1>"
            f'<p class="meta">{_html.escape(meta)}</p>{description_html}</header>',
            '<div id="nl-errors" role="alert"></div>',
            page_body,
            "</main>",
            f"<script>{_ERROR_REPORT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _figure_id(slug: str, counter: Iterator[int]) -> str:
    return f"fig-{slug}-{next(counter)}"


def render_dashboard(
    sections: Sequence[Any],
    *,
    title: str = "nopelens dashboard",
    summary: Mapping[str, Any] | None = None,
    description: str | None = None,
    headline: pd.DataFrame | None = None,
    summary_titles: Mapping[str, str] | None = None,
    plotly_bundle: PlotlyBundle = "auto",
) -> str:
    """The dashboard page as an HTML string (see :func:`write_dashboard`).

    Raises:
        ValueError: If a section is malformed or would load something from the network.

    Examples:
        >>> page = render_dashboard([("Notes", "Nothing *here*.")], title="Empty")
        >>> page.count("<script") >= 3, "<em>here</em>" in page
        (True, True)
    """
    checked = _check_sections(sections)
    if summary is not None and not isinstance(summary, Mapping):
        raise ValueError(
            "The 'summary' parameter of write_dashboard must be a dict or None. "
            f"Got {type(summary).__name__} instead."
        )
    if summary_titles is not None and not isinstance(summary_titles, Mapping):
        raise ValueError(
            "The 'summary_titles' parameter of write_dashboard must be a dict or None. "
            f"Got {type(summary_titles).__name__} instead."
        )
    bundle = choose_bundle(_trace_types([content for _, content in checked]), plotly_bundle)
    toc, page_body = _sections_html(checked, summary, headline, summary_titles)
    description_html = markdown_to_html(description) if description else ""
    _check_offline(page_body, description_html, title)
    return _page(title, toc, description_html, page_body, bundle)


def write_dashboard(
    path: str | os.PathLike[str],
    sections: Sequence[Any],
    *,
    title: str = "nopelens dashboard",
    summary: Mapping[str, Any] | None = None,
    description: str | None = None,
    headline: pd.DataFrame | None = None,
    summary_titles: Mapping[str, str] | None = None,
    plotly_bundle: PlotlyBundle = "auto",
) -> Path:
    """Write one self-contained, offline HTML dashboard of figures, tables and text.

    Each section is a ``(heading, content)`` pair; ``content`` is a plotly figure (e.g. from
    :mod:`nopelens.viz`), a pandas DataFrame (rendered as a table, first 500 rows), a markdown
    string (paragraphs, ``-`` lists, ``###`` headings, inline code, bold, italics, links to
    ``http(s)``, relative or ``#anchor`` targets; everything else escaped) or trusted HTML
    written by code (:class:`~nopelens.viz.markdown.RawHtml`), or a list of these. The page
    starts with a table of contents linking to every section, then the headline verdicts (when
    ``headline`` is given: claim, measured value with its interval, chance, verdict and rule)
    and the summary numbers (when ``summary`` is given: one collapsible group per top-level key,
    e.g. per experiment, as small tables). plotly.js is inlined once in the page head
    (compressed; the cartesian partial bundle when it draws every figure, see
    :func:`choose_bundle`), so the file opens in a browser with no network; content that would
    load anything from a URL (external scripts, stylesheets, images, map traces) is refused.
    Trusted scripts in :class:`RawHtml` sections that use the figures should wait for
    ``window.nopelensRendered``. The write is atomic.

    Args:
        path: Output file (``.html``); parent folders are created.
        sections: The ``(heading, content)`` pairs, in page order.
        title: Page title and top heading.
        summary: Numbers shown near the top (JSON-like, may be nested): top-level numbers in one
            table, each nested mapping as a group of its own.
        description: Markdown shown under the title.
        headline: The verdict table leading the page, a DataFrame with the columns ``claim,
            value, ci_low, ci_high, reference, verdict`` and optionally ``source, measure,
            reference_kind, rule`` (:func:`nopelens.experiments.headline_verdicts`).
        summary_titles: Titles of the summary groups by key (default: the key in words).
        plotly_bundle: ``"auto"`` (the smallest plotly.js that draws every figure) or ``"full"``.

    Returns:
        The path written.

    Raises:
        ValueError: If ``sections`` is malformed, a content type is not supported, the content
            would load something from the network, or ``headline`` lacks a column.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "notes.html"
        >>> write_dashboard(out, [("Notes", "Only text.")], title="Notes").name
        'notes.html'
    """
    page = render_dashboard(
        sections,
        title=title,
        summary=summary,
        description=description,
        headline=headline,
        summary_titles=summary_titles,
        plotly_bundle=plotly_bundle,
    )
    return atomic_write_text(path, page)
