r"""The small markdown subset of dashboard text: paragraphs, ``-`` lists, headings, inline markup.

Text is HTML-escaped first, so only the markup below produces tags: inline code in backticks,
``**bold**``, ``*italic*`` and ``[links](url)``; blank-line separated paragraphs, ``-``/``*`` bullet
lists and ``#``-``####`` headings (rendered two levels down, under the page's section titles).
Text that starts with ``<`` is taken as HTML and passed through unchanged.

Examples:
    >>> print(markdown_to_html("### Notes\nSee `cos`, *twice*."))
    <h5>Notes</h5>
    <p>See <code>cos</code>, <em>twice</em>.</p>
"""

from __future__ import annotations

import html as _html
import re

__all__ = ["markdown_to_html"]

_BULLET = re.compile(r"^\s*[-*] ")


def _inline_markdown(text: str) -> str:
    """Escape ``text`` and render ``code``, **bold**, *italic* and [links](url)."""
    out = _html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?!\w)", r"<em>\1</em>", out)

    def link(match: re.Match[str]) -> str:
        url = match.group(2).replace('"', "%22")
        return f'<a href="{url}" rel="noopener noreferrer">{match.group(1)}</a>'

    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, out)


def markdown_to_html(text: str) -> str:
    r"""A small markdown subset: paragraphs, ``-`` lists, ``###`` headings and inline markup.

    Text that starts with ``<`` is taken as HTML and returned unchanged.

    Examples:
        >>> markdown_to_html("Hello **world**\n\n- a `b`\n- c")
        '<p>Hello <strong>world</strong></p>\n<ul><li>a <code>b</code></li><li>c</li></ul>'
    """
    if text.lstrip().startswith("<"):
        return text
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
