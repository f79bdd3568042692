r"""The small markdown subset of dashboard text: paragraphs, ``-`` lists, headings, inline markup.

Text is HTML-escaped first, so only the markup below produces tags: inline code in single or
double backticks (its content is shown literally, never interpreted), ``**bold**``, ``*italic*`` and
``[links](url)``; blank-line separated paragraphs, ``-``/``*`` bullet lists and ``#``-``####``
headings (rendered two levels down, under the page's section titles).

Dashboard text often carries user-controlled strings (model paths, labels, settings), so a link
survives only if its target is safe to click: an ``http(s)://`` URL, a relative path or an
in-page ``#anchor``. Any other target (``javascript:``, ``data:``, ``vbscript:``, ``file:``, a
protocol-relative ``//host``, ...) is rendered as the plain text it was written as. Raw HTML is
never taken from a plain string: wrap trusted markup written by code in :class:`RawHtml`.

Examples:
    >>> print(markdown_to_html("### Notes\nSee `cos`, *twice*."))
    <h5>Notes</h5>
    <p>See <code>cos</code>, <em>twice</em>.</p>
    >>> print(markdown_to_html("``remove_residual:0`` and `` `x` ``"))
    <p><code>remove_residual:0</code> and <code>`x`</code></p>
    >>> markdown_to_html("[ok](https://arxiv.org) [bad](javascript:alert(1))")
    '<p><a href="https://arxiv.org" rel="noopener noreferrer">ok</a> [bad](javascript:alert(1))</p>'
"""

from __future__ import annotations

import html as _html
import re

__all__ = ["RawHtml", "markdown_to_html", "safe_link_target"]

_BULLET = re.compile(r"^\s*[-*] ")
#: A code span: a run of backticks, then text, then a run of the same length (CommonMark), so
#: ``double`` backticks (as in reST-style docstrings) and a literal ` inside work.
_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
#: Characters that browsers drop from anywhere in a URL before parsing it (WHATWG URL spec).
_URL_STRIPPED = re.compile(r"[\t\n\r]")
#: Link schemes that may be clicked.
SAFE_SCHEMES = ("http", "https")
_SLOT = "\x00{}\x00"


class RawHtml(str):
    """Trusted HTML for a dashboard section, passed through unchanged.

    Only for markup written by code, never for text that contains user input: a plain ``str`` is
    always rendered as escaped markdown.

    Examples:
        >>> markdown_to_html(RawHtml("<b>bold</b>")), markdown_to_html("<b>bold</b>")
        ('<b>bold</b>', '<p>&lt;b&gt;bold&lt;/b&gt;</p>')
    """


def safe_link_target(url: str) -> bool:
    r"""Whether a link to ``url`` is safe to click: ``http(s)``, relative or an ``#anchor``.

    The check reads the URL as a browser does (tabs and newlines removed, surrounding spaces and
    control characters stripped, letters case-folded in the scheme).

    Examples:
        >>> [safe_link_target(u) for u in ("#top", "parts/x.csv", "HTTPS://a.org", "//a.org")]
        [True, True, True, False]
        >>> [safe_link_target(u) for u in ("javascript:alert(1)", "java\tscript:x", "data:,x")]
        [False, False, False]
        >>> [safe_link_target(u) for u in ("&#106;avascript:x", "a/b:c", "x?y=1#z")]
        [False, True, True]
    """
    cleaned = _URL_STRIPPED.sub("", url).strip("".join(map(chr, range(33))))
    if not cleaned or any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        return False
    if cleaned.startswith("#"):
        return True
    scheme = _SCHEME.match(cleaned)
    if scheme is not None:
        return scheme.group(1).lower() in SAFE_SCHEMES
    # relative: a path, never a protocol-relative //host (a backslash counts as a slash), no
    # colon in its first segment (RFC 3986 4.2: it would read as a scheme) and no spelled-out
    # character reference (``&#58;``: text is shown literally, such a target is not a path)
    first = re.split(r"[/?#]", cleaned, maxsplit=1)[0]
    return not (
        cleaned.replace("\\", "/").startswith("//") or ":" in first or "&#" in cleaned.lower()
    )


def _code_text(text: str) -> str:
    """A code span's content: one space stripped from each end when both have one (CommonMark)."""
    if len(text) > 2 and text.startswith(" ") and text.endswith(" ") and text.strip():
        return text[1:-1]
    return text


def _inline_markdown(text: str) -> str:
    """Escape ``text`` and render ``code``, **bold**, *italic* and [links](url)."""
    out = _html.escape(text.replace("\x00", "\ufffd"), quote=False)
    slots: list[str] = []  # finished markup, kept out of reach of the later substitutions

    def slot(markup: str) -> str:
        slots.append(markup)
        return _SLOT.format(len(slots) - 1)

    def link(match: re.Match[str]) -> str:
        url = _html.unescape(match.group(2))
        if not safe_link_target(url):
            return match.group(0)  # shown as the text it was written as
        tag = f'<a href="{_html.escape(url, quote=True)}" rel="noopener noreferrer">'
        return f"{slot(tag)}{match.group(1)}</a>"

    out = _CODE.sub(lambda m: slot(f"<code>{_code_text(m.group(2))}</code>"), out)  # literal
    out = _LINK.sub(link, out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"<em>\1</em>", out)
    while "\x00" in out:  # a link label may hold a code span: restore until none is left
        out = re.sub("\x00(\\d+)\x00", lambda m: slots[int(m.group(1))], out)
    return out


def markdown_to_html(text: str) -> str:
    r"""A small markdown subset: paragraphs, ``-`` lists, ``###`` headings and inline markup.

    Everything is escaped; links survive only to safe targets (:func:`safe_link_target`). A
    :class:`RawHtml` string is returned unchanged.

    Examples:
        >>> markdown_to_html("Hello **world**\n\n- a `b`\n- c")
        '<p>Hello <strong>world</strong></p>\n<ul><li>a <code>b</code></li><li>c</li></ul>'
        >>> markdown_to_html("<script>alert(1)</script>")
        '<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>'
    """
    if isinstance(text, RawHtml):
        return str(text)
    blocks = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.rstrip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        if all(re.match(r"\s*[-*] ", line) for line in lines):
            items = "".join(f"<li>{_inline_markdown(_BULLET.sub('', line))}</li>" for line in lines)
            blocks.append(f"<ul>{items}</ul>")
        elif heading := re.match(r"(#{1,4})\s+(.*)", lines[0]):
            level = min(len(heading.group(1)) + 2, 6)
            blocks.append(f"<h{level}>{_inline_markdown(heading.group(2))}</h{level}>")
            if lines[1:]:
                blocks.append(f"<p>{_inline_markdown(' '.join(lines[1:]))}</p>")
        else:
            blocks.append(f"<p>{_inline_markdown(' '.join(lines))}</p>")
    return "\n".join(blocks)
