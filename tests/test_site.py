"""The web site of the notebooks (site/build.py), the notebooks' Colab cells, and what makes a page readable with no
kernel: figures drawn by the site's one plotly.js, explorers as their first view. `make site` builds the real site
(and `make test` runs it after the notebooks); these tests check its parts in seconds, without executing a notebook."""

import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from qwen2_lab import notebook, viz
from tests.helpers import random_lab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def build():
    return module(ROOT / "site" / "build.py", "site_build")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_opens_with_its_colab_badge_and_install_cell(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    want = notebook.colab_cells(path.name)
    assert [(c.cell_type, c.source, c.metadata) for c in nb.cells[:2]] == [
        (c["cell_type"], c["source"], c["metadata"]) for c in want
    ], "run python -m qwen2_lab.notebook --colab"
    assert notebook.colab_url(path.name) in nb.cells[0].source and "Open in Colab" in nb.cells[0].source
    assert f"git+{notebook.REPOSITORY}@{notebook.release()}" in nb.cells[1].source
    assert nb.cells[2].cell_type == "markdown" and nb.cells[2].source.startswith(f"# {path.name[:2]} ·")
    shutil.copy(path, tmp_path / path.name)
    assert not notebook.write_colab_cells(tmp_path / path.name)  # up to date: nothing rewritten


def test_colab_cells_are_written_once_from_repository(tmp_path, monkeypatch):
    path = tmp_path / "00_welcome.ipynb"
    shutil.copy(NOTEBOOKS[0], path)
    monkeypatch.setattr(notebook, "REPOSITORY", "https://github.com/someone/fork")
    assert notebook.colab_url("00_welcome.ipynb") == (
        f"https://colab.research.google.com/github/someone/fork/blob/{notebook.release()}/notebooks/00_welcome.ipynb"
    )
    assert notebook.site_url() == "https://someone.github.io/fork/"
    before = len(nbformat.read(path, as_version=4).cells)
    assert notebook.write_colab_cells(path)
    nb = nbformat.read(path, as_version=4)
    assert len(nb.cells) == before and "someone/fork" in nb.cells[0].source and "someone/fork" in nb.cells[1].source


def test_the_readme_links_the_site_and_says_where_repository_is_set():
    readme = (ROOT / "README.md").read_text()
    assert notebook.site_url() in readme and "REPOSITORY" in readme and "make site" in readme
    assert "viz.save" in readme and "Trace.load" in readme and "Open in Colab" in readme


@pytest.mark.parametrize(
    "href, folder, site",
    [
        ("01_tokens_and_chat.ipynb", "notebooks", "01_tokens_and_chat.html"),
        ("01_tokens_and_chat.ipynb#2.-Chat", "notebooks", "01_tokens_and_chat.html#2.-Chat"),
        ("notebooks/09_experiments.ipynb", ".", "09_experiments.html"),
        ("../README.md", "notebooks", "index.html"),
        ("README.md", "notebooks", "notebooks.html"),
        ("notebooks/README.md", ".", "notebooks.html"),
        ("notebooks/", ".", "notebooks.html"),
        ("../CONTRIBUTING.md", "notebooks", f"{notebook.REPOSITORY}/blob/main/CONTRIBUTING.md"),
        ("qwen2_lab/trace.py", ".", f"{notebook.REPOSITORY}/blob/main/qwen2_lab/trace.py"),
        ("https://huggingface.co/Qwen", ".", "https://huggingface.co/Qwen"),
        ("#sites", ".", "#sites"),
        ("index.html", "notebooks", "index.html"),
    ],
)
def test_links_stay_in_the_site_or_go_to_the_repository(build, href, folder, site):
    assert build.site_href(href, folder) == site


def explorer_and_figure():
    from qwen2_lab.widgets import AttentionExplorer

    trace = random_lab().trace([3, 17, 42, 5, 99, 7], sites=["layers.*.attn.pattern"])
    return AttentionExplorer(trace, layer=1), viz.attention_heads(trace, 0)


def test_an_explorer_shows_live_in_jupyter_and_as_its_first_view_elsewhere():
    explorer, _ = explorer_and_figure()
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # Jupyter ranks the widget above HTML
    static = bundle["text/html"]
    assert "Plotly.newPlot" in static and "<script src" not in static
    assert json.dumps(explorer.figure.layout.title.text)[1:30] in static
    assert "Run this notebook" in static and "Open in Colab" in static


def synthetic_executed_notebook():
    """An executed notebook as nbval or nbconvert leaves it: a plotly figure, an explorer, links in markdown."""
    explorer, fig = explorer_and_figure()
    figure_out = nbformat.v4.new_output("display_data", data={"application/vnd.plotly.v1+json": fig.to_plotly_json(),
                                                               "text/plain": "Figure"})  # fmt: skip
    explorer_out = nbformat.v4.new_output("display_data", data=explorer._repr_mimebundle_())
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 99 · A test\n\nSee [notebook 00](00_welcome.ipynb) and [the README](../README.md)."),
        nbformat.v4.new_code_cell("viz.attention_heads(trace, 0)", outputs=[figure_out]),
        nbformat.v4.new_code_cell("AttentionExplorer(trace)", outputs=[explorer_out]),
    ], metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}})  # fmt: skip


def test_a_page_draws_figures_and_explorers_with_the_sites_plotly_and_nothing_from_elsewhere(build, tmp_path):
    nav = build.navigation(["00_welcome", "99_test"])
    page = build.relink(build.notebook_page(synthetic_executed_notebook(), "99_test", nav), "notebooks")
    (tmp_path / "99_test.html").write_text(page)
    assert page.count("Plotly.newPlot") == 2 and '<script src="plotly.min.js"></script>' in page
    assert re.findall(r"<script[^>]+src=\"([^\"]+)\"", page) == ["plotly.min.js"]
    assert "cdnjs" not in page and "unpkg" not in page and "widget-state" not in page and "mathjax" not in page.lower()
    assert 'href="00_welcome.html"' in page and 'href="index.html"' in page and "qwen2-lab-nav" in page
    assert "Run this notebook" in page
    for name in ("index.html", "notebooks.html", "plotly.min.js"):
        (tmp_path / name).write_text("")
    assert build.check(tmp_path, ["99_test"]) == []
    (tmp_path / "bad.html").write_text('<script src="https://cdn.plot.ly/plotly-3.0.0.min.js"></script>')
    assert build.check(tmp_path, ["99_test", "98_gone"]) == [
        'bad.html loads <script src="https://cdn.plot.ly/plotly-3.0.0.min.js" from elsewhere',
        "98_gone.html is missing",
    ]


def test_the_front_pages_are_the_readmes(build, tmp_path):
    page = build.relink(build.markdown_page(ROOT / "notebooks" / "README.md", "The notebooks", ""), "notebooks")
    assert "<table>" in page and 'href="00_welcome.html"' in page and 'href="site.css"' in page


def test_the_nbval_run_saves_what_it_executed_for_the_site(build, tmp_path):
    conftest = module(ROOT / "notebooks" / "conftest.py", "notebooks_conftest")
    path = NOTEBOOKS[0]
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    stdout = lambda i: [nbformat.v4.new_output("stream", name="stdout", text=f"cell {i}\n")]  # noqa: E731
    ran = [(c.source, stdout(i)) for i, c in enumerate(code) if i != 2]  # cell 2 skipped, as NBVAL_SKIP does
    conftest.save_executed(path, ran, tmp_path)
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    texts = [c.outputs[0].text if c.outputs else None for c in nb.cells if c.cell_type == "code"]
    assert texts == [None if i == 2 else f"cell {i}\n" for i in range(len(code))]
    assert nb.metadata[build.STAMP] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert build.executed(path, tmp_path, timeout=1) == (nb, "reused")  # the site shows it, executes nothing


def test_the_install_cell_is_valid_ipython_and_installs_only_where_qwen2_lab_is_missing():
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(notebook.colab_cells("00_welcome.ipynb")[1]["source"])
    compile(python, "install cell", "exec")
    spec = f"qwen2-lab @ git+{notebook.REPOSITORY}@{notebook.release()}"
    calls = []
    namespace = {"get_ipython": lambda: type("IPython", (), {"run_line_magic": lambda _, *a: calls.append(a)})()}
    exec(python, namespace)  # qwen2_lab is importable here: nothing to install
    assert calls == []
    exec(python.replace('find_spec("qwen2_lab")', 'find_spec("no_such_package_here")'), namespace)
    assert calls == [("pip", f'install -q "{spec}"')]
