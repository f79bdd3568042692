"""Show a figure in a notebook with a static PNG of it, so it is seen everywhere.

A plotly figure in a notebook is stored as plotly JSON, which only a live Jupyter front end
draws: GitHub, nbviewer, an HTML export and the documentation site show nothing. :func:`show`
displays the figure with a PNG rendered by `kaleido <https://github.com/plotly/Kaleido>`_ (the
``[export]`` extra, ``pip install "nopelens[export]"``) in headless Chromium: JupyterLab and
VS Code draw the interactive figure, and everything else shows the PNG. Without kaleido or
Chromium, or if rendering fails, the figure is shown as usual, with no PNG and no warning.

:func:`static_image` returns the PNG (or SVG, PDF) bytes. To write a file, plotly's own
``fig.write_image("figure.png")`` uses the same kaleido and Chromium.

One Chromium process is started on first use and kept for the session (about 5 s, then about
half a second per figure); ``NOPELENS_CHROMIUM=/path/to/chrome`` selects the browser
(default: the first Chrome or Chromium found, e.g. ``/usr/bin/chromium``).

Importing this module also keeps ``tqdm``'s "IProgress not found" warning out of notebook
outputs: TransformerLens imports ``tqdm.auto``, which warns once in a Jupyter kernel without
ipywidgets before falling back to the plain text bar that it then uses anyway.
"""

from __future__ import annotations

import base64
import logging
import os
import warnings
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds kaleido may take for one image before it gives up.
RENDER_TIMEOUT = 60.0
#: Size (pixels) of a figure whose layout sets none (plotly's own default).
DEFAULT_SIZE = (700, 500)
_FORMATS = ("png", "svg", "pdf", "jpeg", "webp")
_PLOTLY_MIME = "application/vnd.plotly.v1+json"
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "svg": "image/svg+xml", "webp": "image/webp"}

#: None: not tried yet; True: the kaleido server runs; False: kaleido or Chromium is missing.
_server: bool | None = None

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401  (cached now, so TransformerLens' import does not warn)


def _start() -> bool:
    """Start kaleido's Chromium once per session; False when kaleido or Chromium is missing."""
    global _server
    if _server is None:
        try:
            import kaleido

            options: dict[str, Any] = {"timeout": RENDER_TIMEOUT, "mathjax": False}
            if os.environ.get("NOPELENS_CHROMIUM"):
                options["path"] = os.environ["NOPELENS_CHROMIUM"]
            kaleido.start_sync_server(silence_warnings=True, **options)
            _server = True
        except Exception as err:  # no kaleido, no Chromium, a browser that will not start
            logger.debug("no static figures: %s: %s", type(err).__name__, err)
            _server = False
    return _server


def static_image(
    fig: Any,
    *,
    format: str = "png",
    width: int | None = None,
    height: int | None = None,
    scale: float = 1.0,
) -> bytes | None:
    """The figure rendered as an image by kaleido, or None where it cannot be rendered.

    Args:
        fig: A plotly figure.
        format: ``"png"``, ``"svg"``, ``"pdf"``, ``"jpeg"`` or ``"webp"``.
        width: Width in pixels (default: the figure's own, else 700).
        height: Height in pixels (default: the figure's own, else 500).
        scale: Pixel density (2 for a sharper PNG at twice the size in bytes).

    Returns:
        The image bytes, or None without kaleido or Chromium, or if rendering failed (logged at
        DEBUG level).

    Raises:
        InvalidParameterError: For an unknown ``format``.

    Examples:
        >>> import plotly.graph_objects as go
        >>> fig = go.Figure(go.Bar(y=[1, 3, 2]))
        >>> try:
        ...     static_image(fig, format="gif")
        ... except ValueError as err:
        ...     print(err)  # doctest: +ELLIPSIS
        The 'format' parameter of static_image must be one of png, svg, pdf, jpeg, webp. ...

        ``static_image(fig)`` returns the PNG's bytes where kaleido and Chromium run.
    """
    from nopelens.validation import InvalidParameterError

    if format not in _FORMATS:
        raise InvalidParameterError(
            f"The 'format' parameter of static_image must be one of {', '.join(_FORMATS)}. "
            f"Got {format!r} instead."
        )
    if not _start():
        return None
    import kaleido

    layout = fig.layout
    options = {
        "format": format,
        "width": width or layout.width or DEFAULT_SIZE[0],
        "height": height or layout.height or DEFAULT_SIZE[1],
        "scale": scale,
    }
    try:
        image = kaleido.calc_fig_sync(fig.to_dict(), opts=options)
    except Exception as err:
        logger.debug("static image failed: %s: %s", type(err).__name__, err)
        return None
    return bytes(image)


def show(
    fig: Any,
    *,
    beside: bool = False,
    width: int | None = None,
    height: int | None = None,
    scale: float = 1.0,
) -> None:
    """Display ``fig`` in a notebook, with a PNG of it for viewers that cannot draw plotly.

    The PNG goes into the same output as the interactive figure (one output, two
    representations): JupyterLab and VS Code draw the figure; GitHub, nbviewer, HTML exports and
    the documentation site show the PNG. With ``beside=True`` the PNG is a second output below
    the figure, which every viewer shows. Without kaleido or Chromium only the figure is shown.

    Args:
        fig: A plotly figure.
        beside: Show the PNG as its own output after the interactive figure.
        width: PNG width in pixels (default: the figure's own, else 700).
        height: PNG height in pixels (default: the figure's own, else 500).
        scale: PNG pixel density.

    Outside IPython (a script, a doctest) it only displays the figure as IPython would.

    Examples:
        >>> import plotly.graph_objects as go
        >>> show(go.Figure(go.Bar(y=[1, 3, 2])))  # doctest: +ELLIPSIS
        Figure({...
    """
    from IPython import get_ipython
    from IPython.display import Image, display

    if get_ipython() is None:
        display(fig)
        return
    png = static_image(fig, width=width, height=height, scale=scale)
    if png is None or beside:
        display(fig)
        if png is not None:
            display(Image(data=png, format="png"))
        return
    bundle = dict(fig._repr_mimebundle_(include=None, exclude=None) or {})
    if _PLOTLY_MIME not in bundle:  # a renderer without the plotly MIME type (e.g. "notebook")
        import plotly.io as pio

        bundle.update(pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict()))
    bundle[_MIME["png"]] = base64.b64encode(png).decode("ascii")
    bundle.setdefault("text/plain", f"<plotly figure: {_title(fig)}>")
    display(bundle, raw=True)


def _title(fig: Any) -> str:
    title = fig.layout.title.text
    return str(title) if title else f"{len(fig.data)} traces"
