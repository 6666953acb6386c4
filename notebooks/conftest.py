"""nbval: compare only stable text outputs; never rich figure or widget payloads (as TransformerLens's demos do).

With $QWEN2_LAB_EXECUTED set to a folder (`make test` sets build/executed), each notebook that passed whole is also
saved there with the outputs nbval's run produced, stamped with a hash of the notebook it ran, so that `make site`
shows them instead of executing every notebook a second time (site/build.py executes any notebook it finds no
matching copy of, so nothing breaks when this saves nothing).
"""

import hashlib
import os
from pathlib import Path

import pytest

EXECUTED = os.environ.get("QWEN2_LAB_EXECUTED")
STAMP = "qwen2_lab_source_sha256"  # site/build.py reads it
runs: dict[str, dict] = {}  # notebook path -> {"cells": [(source, outputs)], "failed": bool}


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += (
            "text/html",
            "application/javascript",
            "image/png",
            "image/svg+xml",
            "application/vnd.plotly.v1+json",
            "application/vnd.jupyter.widget-view+json",
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each notebook cell's source and the outputs nbval read for it (its item's `cell` and `test_outputs`)."""
    report = (yield).get_result()
    if not (EXECUTED and str(item.fspath).endswith(".ipynb")):
        return
    run = runs.setdefault(str(item.fspath), {"cells": [], "failed": False})
    run["failed"] |= report.failed
    outputs = getattr(item, "test_outputs", None)
    if call.when == "call" and outputs is not None and hasattr(item, "cell"):
        run["cells"].append((item.cell.source, outputs))


def pytest_sessionfinish(session, exitstatus):
    for path, run in runs.items():
        if not run["failed"] and run["cells"]:
            save_executed(Path(path), run["cells"], Path(EXECUTED))


def save_executed(path: Path, cells: list, folder: Path) -> None:
    """The notebook with the outputs of the cells that ran, in order (cells nbval skipped keep none)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    ran = iter(cells)
    source, outputs = next(ran, (None, None))
    for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.outputs, cell.execution_count = [], None
        if cell.source == source:
            cell.outputs, cell.execution_count = outputs, n + 1
            for out in outputs:
                if out.output_type == "execute_result":
                    out.execution_count = n + 1
            source, outputs = next(ran, (None, None))
    nb.metadata[STAMP] = hashlib.sha256(path.read_bytes()).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / path.name)
