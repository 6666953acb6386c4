"""The tutorials as a static web site: `make site` writes build/site/, readable with no kernel and no network.

    python site/build.py                     # build/site/index.html, one page per notebook
    python site/build.py --out /tmp/site     # elsewhere

Each notebook is executed once (nbconvert's ExecutePreprocessor, the notebook's folder as its working directory),
unless `make test`'s nbval run has just executed it: notebooks/conftest.py then saved an executed copy under
build/executed/, stamped with a hash of the notebook it ran, and a copy whose stamp matches the notebook is used as
it is. Outputs are never committed. Each page is nbconvert's HTML (JupyterLab's look) with plotly figures drawn
interactively by one plotly.js served from the site itself (no CDN, no require.js, no MathJax: the notebooks have
no formulas), and ipywidgets explorers as their first view, a static figure with a note on how to run them live.
README.md is the front page (index.html) and notebooks/README.md the tutorials' (notebooks.html); links between
them and the notebooks stay inside the site, links to other files go to the repository (qwen2_lab.notebook.REPOSITORY).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
sys.path.insert(0, str(ROOT))  # this checkout's qwen2_lab, also when another one is installed

from qwen2_lab.notebook import REPOSITORY  # noqa: E402
from qwen2_lab.viz.export import figure_html  # noqa: E402

PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
STAMP = "qwen2_lab_source_sha256"  # notebook metadata: the hash of the notebook an executed copy ran


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def executed(path: Path, folder: Path, timeout: int):
    """The notebook at `path` with its outputs: the copy in `folder` when it ran this very notebook, else executed
    now (and saved there). Returns (notebook, 'reused' or 'executed')."""
    import nbformat

    copy = folder / path.name
    if copy.is_file():
        nb = nbformat.read(copy, as_version=4)
        if nb.metadata.get(STAMP) == source_hash(path):
            return nb, "reused"
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    run = ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=False)
    run.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    nb.metadata[STAMP] = source_hash(path)
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, copy)
    return nb, "executed"


def static_outputs(nb):
    """Outputs a page can show without a kernel: a plotly figure becomes HTML that draws it with the page's
    plotly.js; a widget's live view is dropped, leaving the static first view its bundle carries as text/html."""
    nb.metadata.pop("widgets", None)  # the widgets' state: no widget manager loads it here
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY in data:
                data["text/html"] = figure_html(data.pop(PLOTLY))
            data.pop(WIDGET, None)
    return nb


def notebook_page(nb, name: str, nav: str) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file=str(SITE / "page.html.j2"))
    body, _ = exporter.from_notebook_node(static_outputs(nb), resources={"metadata": {"name": name}, "nav": nav})
    return body


def markdown_page(path: Path, title: str, nav: str) -> str:
    from nbconvert.filters import markdown2html

    template = (SITE / "front.html").read_text(encoding="utf-8")
    return template.format(title=html.escape(title), nav=nav, body=markdown2html(path.read_text(encoding="utf-8")))


def site_href(href: str, page_dir: str) -> str:
    """Where a link of a page whose source sits in `page_dir` (repository-relative) points on the site: the README,
    notebooks/README.md and the notebooks are pages of the site; any other file of the repository is on GitHub."""
    if not href or re.match(r"^([a-z]+:|#|//)", href) or re.fullmatch(r"[\w.-]+\.(html|css)", href):
        return href  # elsewhere, on this page, or a page of the site itself (the navigation's links)
    target, _, anchor = href.partition("#")
    parts = [p for p in f"{page_dir}/{target}".split("/") if p not in ("", ".")]
    resolved = []
    for p in parts:
        if p == "..":
            resolved = resolved[:-1]
        else:
            resolved.append(p)
    path = "/".join(resolved)
    pages = {"README.md": "index.html", "notebooks/README.md": "notebooks.html", "notebooks": "notebooks.html"}
    if path in pages:
        page = pages[path]
    elif re.fullmatch(r"notebooks/\d\d_\w+\.ipynb", path):
        page = path.removeprefix("notebooks/").removesuffix(".ipynb") + ".html"
    else:
        return f"{REPOSITORY}/blob/main/{path}" + (f"#{anchor}" if anchor else "")
    return page + (f"#{anchor}" if anchor else "")


def relink(page: str, page_dir: str) -> str:
    return re.sub(r'href="([^"]*)"', lambda m: f'href="{html.escape(site_href(html.unescape(m[1]), page_dir))}"', page)


def navigation(names: list[str]) -> str:
    links = ['<a href="index.html">Qwen2 Lab</a>', '<a href="notebooks.html">The notebooks</a>']
    links += [f'<a href="{n}.html">{n[:2]}</a>' for n in names]
    return f'<nav class="qwen2-lab-nav">{" · ".join(links)} · <a href="{REPOSITORY}">GitHub</a></nav>'


def build(out: Path, executed_dir: Path, timeout: int = 1200) -> dict[str, str]:
    """Write the site into `out` (emptied first); returns how each notebook's outputs were had."""
    from plotly.offline import get_plotlyjs

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    shutil.copy(SITE / "site.css", out / "site.css")
    paths = notebooks()
    nav = navigation([p.stem for p in paths])
    how = {}
    for path in paths:
        nb, how[path.stem] = executed(path, executed_dir, timeout)
        page = notebook_page(nb, path.stem, nav)
        (out / f"{path.stem}.html").write_text(relink(page, "notebooks"), encoding="utf-8")
    front = [(ROOT / "README.md", "Qwen2 Lab", "index.html", "."),
             (ROOT / "notebooks" / "README.md", "The notebooks", "notebooks.html", "notebooks")]  # fmt: skip
    for source, title, name, folder in front:
        (out / name).write_text(relink(markdown_page(source, title, nav), folder), encoding="utf-8")
    return how


def check(out: Path, names: list[str]) -> list[str]:
    """What is wrong with a built site (nothing, when empty): a page missing, a script or stylesheet from
    elsewhere than the site, a plotly figure without plotly.js."""
    problems = [f"{n} is missing" for n in ["index.html", "notebooks.html", "plotly.min.js"] if not (out / n).is_file()]
    for page in sorted(out.glob("*.html")):
        text = page.read_text(encoding="utf-8")
        outside = re.findall(r'<script[^>]+src="(?!plotly\.min\.js")[^"]*"|<link[^>]+href="https?:[^"]*"', text)
        problems += [f"{page.name} loads {tag} from elsewhere" for tag in outside]
        if "Plotly.newPlot" in text and '<script src="plotly.min.js">' not in text:
            problems.append(f"{page.name} draws plotly figures but does not load plotly.min.js")
    return problems + [f"{n}.html is missing" for n in names if not (out / f"{n}.html").is_file()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "build" / "site")
    p.add_argument("--executed", type=Path, default=ROOT / "build" / "executed", help="executed notebooks, reused")
    p.add_argument("--timeout", type=int, default=1200, help="seconds one cell may run")
    a = p.parse_args()
    start = time.monotonic()
    how = build(a.out, a.executed, a.timeout)
    problems = check(a.out, list(how))
    if problems:
        sys.exit("site: " + "; ".join(problems))
    size = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    counts = {k: list(how.values()).count(k) for k in ("reused", "executed")}
    print(f"site: {a.out}/index.html, {len(how) + 2} pages, {size / 2**20:.1f} MiB, {time.monotonic() - start:.0f} s"
          f" ({counts['executed']} notebooks executed, {counts['reused']} reused from the nbval run)")  # fmt: skip


if __name__ == "__main__":
    main()
