"""Every viz figure drawn by plotly.js in a real browser (headless chromium), read back from the rendered DOM: in a
1280 px and an 800 px wide container the figure fills its container and no more, its title, legend, colour bars and
subplot titles lie inside it, the title covers no plot, the legend covers no plot, tick label or axis title, and no
two tick labels of an axis overlap. Then once in a real JupyterLab, in a 1400 px window with the file browser open.

Set QWEN2_LAB_SCREENSHOT=dir to keep a screenshot of each figure at each width (dir/NAME-WIDTH.png) and of
JupyterLab (dir/jupyterlab.png).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import plotly
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch
from nbformat.sign import NotebookNotary

from qwen2_lab import edits, viz
from qwen2_lab.arch import YARN_128K
from qwen2_lab.attribution import logit_attribution
from qwen2_lab.experiments import compare_runs
from qwen2_lab.patching import patch_sweep
from qwen2_lab.viz.style import notes_in_title
from tests.helpers import synthetic_trace, wait_for

TEXT = "A={3,5,7,9}, B={1,3,4,9}. What is A∩B? The answer is {3,9}.\n"  # 41 tokens
WIDTHS = (1280, 800)
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
SHOTS = os.environ.get("QWEN2_LAB_SCREENSHOT")

# Everything the checks need, read from plotly's SVG: boxes as [left, top, right, bottom] in page pixels.
MEASURE = """
const div = arguments[0], within = arguments[1] || div.parentElement;  // the plot, the container it should fill
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && e.textContent.trim(); };
const all = (css, root) => Array.from((root || div).querySelectorAll(css));
const corners = e => {  // a label's own box, turned as it is drawn: its 4 corners on the page
  const b = e.getBBox(), m = e.getScreenCTM(), p = e.ownerSVGElement.createSVGPoint();
  return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]].map(
    ([x, y]) => { p.x = x; p.y = y; const q = p.matrixTransform(m); return [q.x, q.y]; });
};
return {
  container: box(within),
  figure: box(div.querySelector('.main-svg')),
  title: all('.g-gtitle text').filter(shown).map(box),
  legend: all('.infolayer .legend').map(box),
  colorbars: all('.colorbar').map(box),
  annotations: all('.annotation').filter(shown).map(e => [e.textContent, box(e)]),
  axis_titles: all('.infolayer g[class^="g-x"] text, .infolayer g[class^="g-y"] text').filter(shown).map(box),
  plots: all('.nsewdrag').map(box),
  ticks: all('.xaxislayer-above, .yaxislayer-above').map(
    layer => all('text', layer).filter(shown).map(e => [e.textContent, corners(e)])),
};
"""
DRAW = """
const [fig, width, done] = arguments;
const holder = document.getElementById('holder');
holder.style.width = width + 'px';
holder.innerHTML = '';
const div = document.createElement('div');
holder.appendChild(div);
Plotly.newPlot(div, fig.data, fig.layout, {responsive: true}).then(() => done(div.getBoundingClientRect().height));
"""


@pytest.fixture(scope="module")
def figures(tiny, tiny_moe):
    """Every view on the bundled models (41 tokens), and the widest ones at 72B / 57B-A14B shapes."""
    trace, moe = tiny.trace(TEXT, lens=5), tiny_moe.trace(TEXT, lens=5)
    torch.manual_seed(0)
    pattern = torch.randn(64, 64, 64).tril().softmax(-1)
    big = synthetic_trace("Qwen/Qwen2-72B-Instruct", 64, {"layers.0.attn.pattern": pattern},
                    lens_ids=torch.randint(0, 1000, (80, 64, 5)), lens_probs=torch.rand(80, 64, 5))  # fmt: skip
    probs = torch.randn(40, 64).softmax(-1)
    weights, experts = probs.topk(8, -1)
    routing = {"router_probs": probs, "topk_experts": experts, "topk_weights": weights, "shared_gate": torch.rand(40)}
    big_moe = synthetic_trace("Qwen/Qwen2-57B-A14B-Instruct", 40, {f"layers.0.moe.{k}": v for k, v in routing.items()})
    chat = [{"role": "user", "content": TEXT}]
    gen = tiny.generate_steps(chat, max_new_tokens=12, do_sample=True, temperature=0.9, seed=0,
                              sites=["layers.1.attn.pattern"])  # fmt: skip
    ask = lambda b: [{"role": "user", "content": f"A={{3,5,7,9}}, B={b}. What is A∩B?"},  # noqa: E731
                     {"role": "assistant", "content": "A∩B={"}]  # fmt: skip
    sweep = patch_sweep(tiny, ask("{1,3,4,8}"), ask("{1,5,4,8}"), answer=("3", "5"))
    clean = tiny.trace(ask("{1,3,4,8}"))
    diff = compare_runs(clean, tiny.trace(ask("{1,3,4,8}"), edits=edits.zero_heads(3, [0, 1])), answer=(17, 19))
    return {
        "token_confidence": viz.token_confidence(gen),
        "candidates": viz.candidates(gen, 2),
        "kv_cache_growth": viz.kv_cache_growth(gen),
        "generated_attention": viz.generated_attention(gen, 1),
        "patching_heatmap": viz.patching_heatmap(sweep),
        "head_grid": viz.head_grid(logit_attribution(tiny_moe, ask("{1,3,4,8}"), answer=("3", "5"))),
        "edit_effect": viz.edit_effect(diff, tiny.tokens),
        "attention_heads": viz.attention_heads(trace, 1),
        "attention_heads one head": viz.attention_heads(trace, 1, heads=[viz.most_structured_head(trace, 1)]),
        "attention_heads 72B last 24": viz.attention_heads(big, 0, positions=slice(-24, None)),
        "gqa_group_similarity": viz.gqa_group_similarity(trace, 1),
        "kv_cache_memory": viz.kv_cache_memory(),
        "rope_frequencies": viz.rope_frequencies(tiny.arch, YARN_128K),
        "rope_rotation": viz.rope_rotation(trace, 1, 0, 5),
        "rope_distance_decay": viz.rope_distance_decay(tiny.arch),
        "moe_routing": viz.moe_routing(moe, 1),
        "moe_routing 57B": viz.moe_routing(big_moe, 0),
        "moe_token": viz.moe_token(moe, 1, 4),
        "moe_expert_load": viz.moe_expert_load(moe),
        "logit_lens": viz.logit_lens(trace, tokenizer=tiny.tokenizer),
        "logit_lens 72B": viz.logit_lens(big),
        "lens_position": viz.lens_position(trace, 5, tokenizer=tiny.tokenizer),
        "residual_norms": viz.residual_norms(trace),
    }


def overlap(a, b, tol: float = 1.0) -> bool:
    """Whether two boxes [left, top, right, bottom] overlap by more than tol px both ways."""
    return min(a[2], b[2]) - max(a[0], b[0]) > tol and min(a[3], b[3]) - max(a[1], b[1]) > tol


def labels_overlap(a, b, tol: float = 1.0) -> bool:
    """Whether two tick labels, each given by the 4 corners of its box as drawn (turned alike: one axis), overlap by
    more than tol px along the text and across it."""
    a, b = np.asarray(a), np.asarray(b)  # (4, 2) each
    for edge in (a[1] - a[0], a[3] - a[0]):  # the two directions of the turned boxes
        u = edge / (np.linalg.norm(edge) or 1)
        pa, pb = a @ u, b @ u
        if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= tol:
            return False
    return True


def bounds(corners) -> list[float]:
    """The upright box around a turned one."""
    c = np.asarray(corners)
    return [*c.min(0), *c.max(0)]


def inside(a, outer, tol: float = 1.0) -> bool:
    return a[0] >= outer[0] - tol and a[1] >= outer[1] - tol and a[2] <= outer[2] + tol and a[3] <= outer[3] + tol


def problems(m: dict) -> list[str]:
    """What is wrong with one rendered figure, in words (empty: it fits)."""
    out, fig, box = [], m["figure"], m["container"]
    if abs((fig[2] - fig[0]) - (box[2] - box[0])) > 2:
        out.append(f"figure {fig[2] - fig[0]:.0f} px wide in a {box[2] - box[0]:.0f} px container")
    if not m["title"]:
        out.append("no title")
    named = [("title", b) for b in m["title"]] + [("legend", b) for b in m["legend"]]
    named += [("colour bar", b) for b in m["colorbars"]] + [(f"annotation {t!r}", b) for t, b in m["annotations"]]
    out += [f"{what} sticks out of the figure: {b} not in {fig}" for what, b in named if not inside(b, fig)]
    ticks = [bounds(c) for axis in m["ticks"] for _, c in axis]
    for title in m["title"]:
        out += [f"title covers a plot {p}" for p in m["plots"] if overlap(title, p)]
        out += [f"title covers a tick label {b}" for b in ticks if overlap(title, b)]
        out += [f"title covers annotation {t!r}" for t, b in m["annotations"] if overlap(title, b)]
    for legend in m["legend"]:
        covered = [("a plot", b) for b in m["plots"]] + [("a tick label", b) for b in ticks]
        covered += [("an axis title", b) for b in m["axis_titles"]]
        out += [f"legend covers {what}" for what, b in covered if overlap(legend, b)]
    notes = m["annotations"]
    out += [f"annotations {a!r} and {b!r} overlap" for i, (a, p) in enumerate(notes) for b, q in notes[i + 1 :] if overlap(p, q)]  # fmt: skip
    out += [f"axis title overlaps annotation {t!r}" for a in m["axis_titles"] for t, b in notes if overlap(a, b)]
    for axis in m["ticks"]:
        out += [f"tick labels {a!r} and {b!r} overlap" for i, (a, p) in enumerate(axis) for b, q in axis[i + 1 :] if labels_overlap(p, q)]  # fmt: skip
    return out


def test_every_figure_fits_1280_and_800_px(chromium, figures, tmp_path):
    page = tmp_path / "figures.html"
    page.write_text(
        f"<html><head><meta charset='utf-8'><script src='{PLOTLY_JS.as_uri()}'></script></head>"
        "<body style='margin:0'><div id='holder'></div></body></html>"
    )
    chromium.get(page.as_uri())
    found = []
    try:
        for width in WIDTHS:
            chromium.set_window_size(width + 40, 1400)
            for name, fig in figures.items():
                height = chromium.execute_async_script(DRAW, json.loads(fig.to_json()), width)
                measured = chromium.execute_script(MEASURE, chromium.find_element("css selector", "#holder > div"))
                found += [f"{name} at {width} px: {p}" for p in problems(measured)]
                if SHOTS:
                    chromium.set_window_size(width + 40, int(height) + 140)
                    chromium.save_screenshot(str(Path(SHOTS) / f"{name.replace(' ', '_')}-{width}.png"))
    finally:
        chromium.set_window_size(1280, 1400)
    assert not found, "\n".join(found)


# As plotly's FigureWidget view draws (anywidget renders it before the page holds the element): newPlot on a detached
# div, then attach it. Returns each line of the title in drawing order and the mode bar, as boxes, as first drawn.
DRAW_AS_A_WIDGET = """
const [fig, width, done] = arguments;
const holder = document.getElementById('holder');
holder.style.width = width + 'px';
holder.innerHTML = '';
const div = document.createElement('div');
Plotly.newPlot(div, fig.data, fig.layout, {responsive: true}).then(() => {
  holder.appendChild(div);
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const texts = Array.from(div.querySelectorAll('.g-gtitle text')).filter(e => e.textContent.trim());
  const lines = texts.flatMap(t => { const l = Array.from(t.querySelectorAll('tspan.line')); return l.length ? l : [t]; });
  const first = {lines: lines.map(e => [e.textContent, box(e)]), modebar: box(div.querySelector('.modebar-container'))};
  Plotly.Plots.resize(div).then(() => done(first));  // then fit the container, as the widget does when shown
});
"""


def title_problems(m: dict) -> list[str]:
    """A title drawn as a widget: its lines (title, then notes) top to bottom without overlapping, below the mode bar."""
    out, lines = [], m["lines"]
    for (a, p), (b, q) in zip(lines, lines[1:]):
        if q[1] < p[3] - 1:
            out.append(f"{b!r} is drawn over or above {a!r}: {q} against {p}")
    out += [f"{t!r} is under the mode bar {m['modebar']}" for t, b in lines if b[1] < m["modebar"][3] - 1]
    return out


def test_explorer_titles_keep_their_notes_below_them_on_first_render(chromium, figures, tmp_path):
    """Explorers (widgets.refresh) write the notes into the title's text: drawn before it is attached, as a
    FigureWidget is, a figure keeps its notes under its title and below the mode bar, at 1280 and 800 px, and still
    fits as every figure must (problems). Plotly's own subtitle, so drawn, lands over them (the last assert)."""
    page = tmp_path / "widgets.html"
    page.write_text(
        f"<html><head><meta charset='utf-8'><script src='{PLOTLY_JS.as_uri()}'></script></head>"
        "<body style='margin:0'><div id='holder'></div></body></html>"
    )
    chromium.get(page.as_uri())
    found, plain = [], []
    for width in WIDTHS:
        for name, fig in figures.items():
            as_widget = notes_in_title(go.Figure(fig))
            drawn = chromium.execute_async_script(DRAW_AS_A_WIDGET, json.loads(as_widget.to_json()), width)
            measured = chromium.execute_script(MEASURE, chromium.find_element("css selector", "#holder > div"))
            found += [f"{name} at {width} px: {p}" for p in title_problems(drawn) + problems(measured)]
            if name == "candidates":  # a figure with notes, drawn with plotly's subtitle
                plain = title_problems(
                    chromium.execute_async_script(DRAW_AS_A_WIDGET, json.loads(fig.to_json()), width)
                )
            if name == "token_confidence":
                found += [f"{name} at {width} px: {p}" for p in cell_text_problems(chromium)]
    assert not found, "\n".join(found)
    assert plain, "plotly's subtitle drawn before attaching should sit over the title: the check would miss the bug"


def cell_text_problems(driver) -> list[str]:
    """token_confidence's cell labels, as drawn: at 11 px or more, no two overlapping."""
    labels = driver.execute_script(
        "return Array.from(document.querySelectorAll('#holder .heatmap-label text')).map(e => {"
        " const r = e.getBoundingClientRect(); return [e.textContent, parseFloat(getComputedStyle(e).fontSize),"
        " [r.left, r.top, r.right, r.bottom]]; });"
    )
    out = [f"label {t!r} at {px} px" for t, px, _ in labels if px < 11]
    out += [f"labels {a!r} and {b!r} overlap" for i, (a, _, p) in enumerate(labels) for b, _, q in labels[i + 1 :] if overlap(p, q)]  # fmt: skip
    return out + ([] if labels else ["no cell labels drawn"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_with(figures: dict, path: Path, data_dir: Path) -> None:
    """A notebook whose one cell drew `figures` (its outputs are what the kernel would have sent), signed as trusted
    with the notary key in data_dir, as a notebook run by its user is (JupyterLab draws no plotly output otherwise)."""
    code = "from qwen2_lab import viz\n" + "\n".join(f"viz.{name}(...)" for name in figures)
    outputs = [
        nbformat.v4.new_output("display_data", data=pio.renderers["plotly_mimetype"].to_mimebundle(fig))
        for fig in figures.values()
    ]
    cell = nbformat.v4.new_code_cell(code, execution_count=1, outputs=outputs)
    nb = nbformat.v4.new_notebook(
        cells=[cell], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    NotebookNotary(data_dir=str(data_dir)).sign(nb)
    nbformat.write(nb, path)


@pytest.fixture
def jupyterlab(tmp_path):
    """A real `jupyter lab` on a free loopback port, rooted in tmp_path, with its own config, settings and workspace;
    yields (url, token, root)."""
    port, token = free_port(), "qwen2-lab-test"
    env = {
        **os.environ,
        **{f"JUPYTER_{kind.upper()}_DIR": str(tmp_path / kind) for kind in ("config", "data", "runtime")},
    }
    args = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    quiet = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    quiet.parent.mkdir(parents=True)
    quiet.write_text('{"fetchNews": "false"}')  # no "get notified about Jupyter news?" toast over the page
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: server.poll() is not None or socket.create_connection(("127.0.0.1", port), 1).close() or True,
                 60, "jupyter lab to listen")  # fmt: skip
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited: {server.stderr.read().decode()[-2000:]}")
        yield url, token, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)


PLOT_IN_LAB = """
const area = document.querySelectorAll('.jp-OutputArea-output')[arguments[0]];
area.scrollIntoView();
const svg = area.querySelector('.main-svg'), panel = area.closest('.jp-NotebookPanel');
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
return svg && [area, box(panel), box(svg)];
"""


def settled(driver, i: int, what: str) -> list:
    """PLOT_IN_LAB for output i once plotly has drawn it and two reads a moment apart agree (layout done)."""
    seen = [None]

    def same_twice():
        previous, seen[0] = seen[0], driver.execute_script(PLOT_IN_LAB, i)
        return previous and seen[0] and previous[1:] == seen[0][1:]

    wait_for(same_twice, 60, what)
    return seen[0]


def test_figures_fit_jupyterlab_with_the_file_browser_open(chromium, figures, jupyterlab):
    url, token, root = jupyterlab
    chosen = {name: figures[name] for name in ("kv_cache_memory", "moe_expert_load", "attention_heads one head")}
    notebook_with(chosen, root / "figures.ipynb", root / "data")
    chromium.set_window_size(1400, 1000)
    try:
        chromium.get(f"{url}/lab/tree/figures.ipynb?token={token}")
        browser = wait_for(
            lambda: chromium.find_element("css selector", "#filebrowser"), 60, "JupyterLab's file browser"
        )
        if not browser.is_displayed():
            chromium.find_element("css selector", '[data-id="filebrowser"]').click()
        assert wait_for(browser.is_displayed, 10, "the file browser to open") and browser.rect["width"] > 100
        found = []
        for i, name in enumerate(chosen):  # plotly draws an output once it is scrolled into view
            div, panel, svg = settled(chromium, i, f"{name} drawn in JupyterLab")
            if SHOTS:
                chromium.save_screenshot(str(Path(SHOTS) / f"jupyterlab-{i}.png"))
            if not (panel[0] <= svg[0] and svg[2] <= panel[2]):
                found.append(f"{name}: figure {svg} sticks out of the notebook {panel}")
            found += [f"{name}: {p}" for p in problems(chromium.execute_script(MEASURE, div, div))]
        assert not found, "\n".join(found)
    finally:
        chromium.set_window_size(1280, 1400)
