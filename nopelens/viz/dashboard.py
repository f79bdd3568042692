"""One self-contained HTML page of figures, tables and notes that opens with no network.

:func:`write_dashboard` renders a list of ``(heading, content)`` sections into a single HTML file:
plotly.js is inlined exactly once in the page head (about 4.8 MB), every figure is a ``<div>``
plus a small inline script, and nothing is fetched from a CDN or any other URL, so the file can be
mailed, archived or opened on an air-gapped machine. The page has a table of contents with
anchors, a table of summary numbers, and an error banner that lists any figure that failed to
render (a JavaScript error would otherwise leave a silent blank box).

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

import functools
import html as _html
import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from nopelens.files import atomic_write_text
from nopelens.viz.markdown import RawHtml, markdown_to_html
from nopelens.viz.sections import report_sections, report_summary  # importable from here too

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
_ERROR_REPORT = """
(function () {
  var errors = window.__nopelensErrors || [];
  if (typeof Plotly === 'undefined') { errors.push('plotly.js did not load'); }
  var figures = document.querySelectorAll('.plotly-graph-div');
  var rendered = 0;
  figures.forEach(function (div) {
    if (div.querySelector('.main-svg')) { rendered += 1; }
    else { errors.push('figure ' + div.id + ' did not render'); }
  });
  document.body.setAttribute('data-figures', String(figures.length));
  document.body.setAttribute('data-rendered', String(rendered));
  document.body.setAttribute('data-errors', String(errors.length));
  if (errors.length) {
    var box = document.getElementById('nl-errors');
    box.textContent = 'Rendering problems:\\n' + errors.join('\\n');
    box.style.display = 'block';
  }
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
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def _flatten(summary: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{name}."))
        else:
            if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
                value = value.item()
            rows.append((name, value))
    return rows


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = []
    for key, value in _flatten(summary):
        if isinstance(value, (list, tuple)):
            text = ", ".join(_format_number(v) for v in value)
        else:
            text = _format_number(value)
        rows.append(
            f'<tr><td class="key">{_html.escape(key)}</td><td>{_html.escape(text)}</td></tr>'
        )
    return (
        '<div class="table-wrap"><table class="summary"><thead><tr><th class="key">quantity</th>'
        f"<th>value</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


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


def _figure_html(figure: Any, div_id: str) -> str:
    height = figure.layout.height or 480
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=div_id,
        default_width="100%",
        default_height=f"{int(height)}px",
        validate=False,
        config={"displaylogo": False, "responsive": True},
    )


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
    checked: list[tuple[str, Any]], summary: Mapping[str, Any] | None
) -> tuple[list[str], str]:
    """The table-of-contents entries and the page body: the summary table, then each section."""
    used: set[str] = {"summary", "toc", "nl-errors"}
    toc, body = [], []
    if summary:
        toc.append('<li><a href="#summary">Summary numbers</a></li>')
        body.append(
            '<section id="summary"><h2>Summary numbers</h2>'
            + _summary_table(summary)
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


def _page(title: str, toc: list[str], description_html: str, page_body: str) -> str:
    """The whole HTML document, with plotly.js inlined once in its head."""
    from plotly.offline import get_plotlyjs

    from nopelens import __version__

    plotly_js = get_plotlyjs()
    if "</script" in plotly_js.lower():  # pragma: no cover - guards the inlining below
        raise RuntimeError("the bundled plotly.js contains '</script' and cannot be inlined")
    meta = (
        f"Generated by nopelens {__version__} with plotly {_plotly_version()}; "
        "self-contained, opens without network."
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
            f'<script type="text/javascript" id="plotlyjs">{plotly_js}</script>',
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
    toc, page_body = _sections_html(checked, summary)
    description_html = markdown_to_html(description) if description else ""
    _check_offline(page_body, description_html, title)
    return _page(title, toc, description_html, page_body)


def write_dashboard(
    path: str | os.PathLike[str],
    sections: Sequence[Any],
    *,
    title: str = "nopelens dashboard",
    summary: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> Path:
    """Write one self-contained, offline HTML dashboard of figures, tables and text.

    Each section is a ``(heading, content)`` pair; ``content`` is a plotly figure (e.g. from
    :mod:`nopelens.viz`), a pandas DataFrame (rendered as a table, first 500 rows), a markdown
    string (paragraphs, ``-`` lists, ``###`` headings, inline code, bold, italics, links to
    ``http(s)``, relative or ``#anchor`` targets; everything else escaped) or trusted HTML
    written by code (:class:`~nopelens.viz.markdown.RawHtml`), or a list of these. The page
    starts with a table of contents linking to every section and, when ``summary`` is given, a
    table of the summary numbers (nested dicts are flattened to dotted keys). plotly.js is
    inlined once in the page head, so the file opens in a browser with no network; content that
    would load anything from a URL (external scripts, stylesheets, images, map traces) is
    refused. The write is atomic.

    Args:
        path: Output file (``.html``); parent folders are created.
        sections: The ``(heading, content)`` pairs, in page order.
        title: Page title and top heading.
        summary: Headline numbers shown in a table at the top (JSON-like, may be nested).
        description: Markdown shown under the title.

    Returns:
        The path written.

    Raises:
        ValueError: If ``sections`` is malformed, a content type is not supported, or the content
            would load something from the network.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "notes.html"
        >>> write_dashboard(out, [("Notes", "Only text.")], title="Notes").name
        'notes.html'
    """
    page = render_dashboard(sections, title=title, summary=summary, description=description)
    return atomic_write_text(path, page)
