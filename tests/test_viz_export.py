"""viz.save: a standalone offline page, pictures through plotly's own exporter, and clear errors before any drawing."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from qwen2_lab import viz
from qwen2_lab.viz import export
from tests.helpers import CHROME_FLAGS, random_lab

NEEDS_BROWSER = pytest.mark.skipif(
    export.find_browser() is None, reason="no Chrome or Chromium here: install Debian's chromium (sudo make browser)"
)


@pytest.fixture(scope="module")
def fig():
    trace = random_lab().trace([3, 17, 42, 5, 99, 7], sites=["layers.1.attn.pattern"])
    return viz.attention_heads(trace, 1)


def test_html_is_one_offline_page_holding_the_figure(fig, tmp_path):
    path = viz.save(fig, tmp_path / "heads.html")
    html = path.read_text()
    assert not re.search(r"<script[^>]+src=", html), "no external script: plotly.js is inlined"
    assert "Plotly.newPlot" in html and len(html) > 3_000_000  # plotly.js itself is inside (about 4.6 MB)
    assert fig.layout.title.text.split("<br>")[0][:40] in html
    assert [p.name for p in tmp_path.iterdir()] == ["heads.html"]


@NEEDS_BROWSER
def test_html_draws_the_figure_in_a_browser_with_no_network(fig, tmp_path):
    path = viz.save(fig, tmp_path / "heads.html")
    browser = export.find_browser()
    flags = [f for f in CHROME_FLAGS if not f.startswith("--window-size")]
    dom = subprocess.run(
        [browser, *flags, f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9",
         "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert 'class="main-svg"' in dom and "heatmaplayer" in dom, "plotly.js ran and drew the heatmaps"


def png_pixels(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@NEEDS_BROWSER
def test_png_has_the_figures_size_and_is_not_blank(fig, tmp_path):
    png = png_pixels(viz.save(fig, tmp_path / "heads.png"))
    assert png.shape[:2] == (fig.layout.height, export.WIDTH)
    assert len(np.unique(png.reshape(-1, 3), axis=0)) > 20, "many colours: the heatmap was drawn"
    assert (png < 100).all(-1).mean() > 0.001, "dark pixels: text was drawn"
    small = png_pixels(viz.save(fig, tmp_path / "small.png", width=700, height=400, scale=2))
    assert small.shape[:2] == (800, 1400)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.png", "small.png"]


@NEEDS_BROWSER
def test_svg_is_a_vector_picture_of_the_figure(fig, tmp_path):
    svg = viz.save(fig, tmp_path / "heads.svg", width=800).read_text()
    assert svg.startswith("<svg") and f'width="800" height="{fig.layout.height}"' in svg
    assert "heatmaplayer" in svg or "<image" in svg


def test_clear_errors_before_any_drawing(fig, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"writes \.html, \.png, \.svg"):
        viz.save(fig, tmp_path / "heads.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        viz.save(fig, tmp_path / "no" / "heads.png")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        viz.save(fig, tmp_path / "a_file" / "heads.html")
    with pytest.raises(TypeError, match="plotly Figure"):
        viz.save(fig.to_dict(), tmp_path / "heads.html")
    monkeypatch.setattr(export.os, "access", lambda *a: False)
    with pytest.raises(PermissionError, match="not writable"):
        viz.save(fig, tmp_path / "heads.html")
    monkeypatch.undo()
    monkeypatch.setattr(export, "find_browser", lambda: None)
    with pytest.raises(RuntimeError, match="install Debian's chromium.*BROWSER_PATH"):
        viz.save(fig, tmp_path / "heads.png")
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_the_browser_found_is_the_one_named_in_browser_path(monkeypatch, tmp_path):
    monkeypatch.setenv("BROWSER_PATH", "/opt/my/chrome")
    assert export.find_browser() == "/opt/my/chrome"
    monkeypatch.delenv("BROWSER_PATH")
    if shutil.which("chromium"):
        assert export.find_browser() == shutil.which("chromium")
