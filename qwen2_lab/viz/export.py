"""Figures out of the notebook: a standalone page, or a picture for a slide, a paper or a bug report.

    viz.save(viz.attention_heads(trace, 1), "heads.html")   # opens offline in any browser: plotly.js is inside
    viz.save(fig, "heads.png")                              # 1000 px wide, the figure's own height
    viz.save(fig, "heads.svg", width=800)                   # vector, for a paper

`.html` is plotly's own `write_html` with plotly.js inlined (no CDN), the figure filling the page as it fills a
notebook cell. `.png` and `.svg` go through plotly's own exporter, kaleido 1.x, which draws the figure in a headless
Chrome or Chromium it finds on the machine: the `BROWSER_PATH` environment variable when set, else Debian's
`chromium` (what `make browser` installs), else whatever kaleido itself finds (`plotly_get_chrome` downloads one).
Files are written under a temporary name beside the target and renamed once whole.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

WIDTH = 1000  # px of a picture when neither width= nor the figure sets one (figures fill their container)
HEIGHT = 500  # px when the figure sets no height either (plotly's own default is 450)
FORMATS = (".html", ".png", ".svg")
NO_BROWSER = (
    "viz.save needs Chrome or Chromium to write .png or .svg, and none was found: install Debian's chromium"
    " (sudo make browser, or apt-get install chromium), or run plotly_get_chrome, or set BROWSER_PATH to one;"
    " .html needs none"
)


def save(fig: go.Figure, path, *, width: int | None = None, height: int | None = None, scale: float = 1) -> Path:
    """Write `fig` to `path` by its suffix: .html (standalone, offline), .png or .svg (width x height px, times
    `scale` for a PNG's pixels). Returns the path. Refused before any drawing: another suffix, a folder that does not
    exist or cannot be written, no browser for a picture."""
    if not isinstance(fig, go.Figure):
        raise TypeError(f"viz.save takes a plotly Figure (what every viz function returns), got {type(fig).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"viz.save writes {', '.join(FORMATS)}; {path.name!r} has none of these suffixes")
    check_writable(path)
    if suffix == ".html":
        with replacing(path) as tmp:
            fig.write_html(tmp, include_plotlyjs=True, full_html=True, config={"responsive": True})
        return path
    size = picture_size(fig, width, height)
    with chromium(), replacing(path) as tmp:
        fig.write_image(tmp, format=suffix[1:], width=size[0], height=size[1], scale=scale)
    return path


def figure_html(fig, note: str = "") -> str:
    """A figure (a Figure, or plotly's JSON of one) as an HTML fragment for a page that loads plotly.js once itself
    (the web site's pages, an explorer's static first view), with an optional note below it."""
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, validate=False, config={"responsive": True})
    return div + (f'<p class="qwen2-lab-note"><em>{html.escape(note)}</em></p>' if note else "")


def picture_size(fig: go.Figure, width: int | None, height: int | None) -> tuple[int, int]:
    """(width, height) in px: the caller's, else the figure's own, else WIDTH x HEIGHT."""
    return int(width or fig.layout.width or WIDTH), int(height or fig.layout.height or HEIGHT)


def check_writable(path: Path) -> None:
    """An error naming the problem when `path` cannot be written, before anything is drawn."""
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"cannot save to {path}: it is a folder; give a file name such as {path / 'fig.html'}")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot save to {path}: the folder {folder} is not writable")


@contextmanager
def replacing(path: Path):
    """A temporary file name beside `path`, renamed to `path` when the block succeeds and removed when it fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot save to {path}: {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_browser() -> str | None:
    """The browser kaleido should use: $BROWSER_PATH, Debian's chromium, or the one kaleido's own search finds."""
    found = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    try:
        from choreographer.browsers.chromium import Chromium  # kaleido's browser finder (its dependency)
    except ImportError:
        return None
    return Chromium.find_browser(skip_local=False)


@contextmanager
def chromium():
    """kaleido pointed at the browser find_browser picks (through BROWSER_PATH, the variable kaleido reads)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ImportError("viz.save needs kaleido for .png and .svg: pip install 'kaleido>=1'") from None
    browser = find_browser()
    if not browser:
        raise RuntimeError(NO_BROWSER)
    before = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = browser
    try:
        yield browser
    finally:
        if before is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = before
