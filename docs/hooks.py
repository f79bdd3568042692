"""MkDocs hooks: keep the built site offline (no script or style from another host)."""

from __future__ import annotations

import re

# nbconvert's lab template imports mermaid from cdnjs on every notebook page; we use no mermaid.
_REMOTE_MODULE = re.compile(
    r"<script type=\"module\">(?:(?!</script>).)*?https://cdnjs\.cloudflare\.com(?:(?!</script>).)*?</script>",
    re.S,
)


_REMOTE_ASSET = re.compile(
    r"<script[^>]+src=\"(?:https?:)?//|<link[^>]+rel=\"stylesheet\"[^>]+href=\"(?:https?:)?//"
)


def on_post_page(output: str, page: object, **kwargs: object) -> str:
    """Drop remote module scripts from a rendered page; fail the build on any other one."""
    output = _REMOTE_MODULE.sub("", output)
    match = _REMOTE_ASSET.search(output)
    if match:
        raise RuntimeError(f"{page}: the page loads a remote script or style ({match.group(0)!r})")
    return output
