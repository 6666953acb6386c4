"""The notebooks' setup cell, in one place: which model, which device, which plotly renderer, which versions.

    from qwen2_lab.notebook import setup
    lab = setup()                      # $QWEN2_LAB_MODEL, else the bundled "tiny"
    lab = setup(moe=True)              # a Qwen2-MoE model: $QWEN2_LAB_MODEL if it is one, else "tiny-moe"
    check_exercise(answer, test)       # an exercise's check: "Not answered yet", a WrongAnswer hint, or "Correct."
    check_solution(solution, test)     # the hidden solution cell's: silent, raises if the solution fails the test

`python -m qwen2_lab.notebook` prints one line on what runs where (python, torch and its threads, CI,
HF_HUB_OFFLINE): `.ci/run` starts with it.

On a GPU machine, `QWEN2_LAB_MODEL=Qwen/Qwen2-7B-Instruct make lab` runs every notebook unchanged on the real
model. `QWEN2_LAB_DTYPE=bfloat16` loads the model in that dtype wherever it runs (a GPU's usual dtype, on the CPU too:
every comparison in the notebooks then uses that dtype's tolerance, `qwen2_lab.compare.tolerance`). `in_ci()` tells a notebook it runs under CI (nbval), where long cells are skipped by markers anyway.

`REPOSITORY` is where the code lives on GitHub: the notebooks' "Open in Colab" links, their install cell and the
web site's links to source files are made from it. A fork sets it here once, then runs
`python -m qwen2_lab.notebook --colab` to rewrite each notebook's first two cells (tests/test_site.py checks them).
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
from pathlib import Path

REPOSITORY = "https://github.com/qwen2-lab/qwen2-lab"  # set this once in a fork: github.com/<owner>/<name>
COLAB_TAG = "colab"  # the tag of the two cells that --colab writes: the badge, and the install cell


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def setup(default: str | None = None, *, moe: bool = False, quiet: bool = False, **load_kwargs):
    """Load the notebook's model and print what runs where. Returns the `Lab`."""
    import plotly.io as pio
    import torch
    import transformers

    from .loading import BUNDLED, load

    default = default or ("tiny-moe" if moe else "tiny")
    name = os.environ.get("QWEN2_LAB_MODEL") or default
    if moe and name != default and not _is_moe(name):
        print(f"{name} is not a Qwen2-MoE model; this notebook uses {default!r} for the MoE parts")
        name = default
    if os.environ.get("QWEN2_LAB_PLOTLY_RENDERER"):
        pio.renderers.default = os.environ["QWEN2_LAB_PLOTLY_RENDERER"]
    torch.set_grad_enabled(False)  # the notebooks look, they do not train: no autograd graph behind any tensor
    if os.environ.get("QWEN2_LAB_DTYPE") and "dtype" not in load_kwargs:
        load_kwargs["dtype"] = os.environ["QWEN2_LAB_DTYPE"]
    lab = load(name, **load_kwargs)
    if name in BUNDLED and lab.device.type == "cpu":
        # A toy model's matrices are too small to split between threads, and when other work shares the cores the
        # threads wait on each other: one thread generates many times faster on a loaded machine.
        torch.set_num_threads(1)
    if not quiet:
        threads = torch.get_num_threads()
        print(
            f"model {lab.name} on {lab.device} in {lab.dtype}, {threads} torch thread{'s' * (threads != 1)}; python"
            f" {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__};"
            f" plotly renderer {pio.renderers.default}"
        )
    return lab


def _is_moe(name: str) -> bool:
    from transformers import AutoConfig

    from .loading import locate

    source, local_only = locate(name)
    return AutoConfig.from_pretrained(source, local_files_only=local_only).model_type == "qwen2_moe"


class WrongAnswer(AssertionError):
    """An exercise's answer is not right yet; the message is the hint.

    In a notebook it shows as that hint alone: a traceback through the check's internals would bury it (IPython lets
    an exception render itself with `_render_traceback_`)."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[1;31m{self}\x1b[0m", "Change the answer and run the cell again."]


def check_exercise(answer, test) -> bool:
    """An exercise's check. `answer` None (or ...) means not answered yet: say so and return False. Otherwise run
    `test(answer)`, which asserts what a right answer satisfies, with a hint as each assert's message: a failed
    assert becomes `WrongAnswer(hint)`, and so does any other error the test meets on an answer of the wrong kind.
    Says "Correct." and returns True when every assert holds.

    The notebooks' exercise cell leaves `answer = None  # your code here`, defines `test` and calls this; a hidden
    solution cell below it checks its own answer with `check_solution`, so CI runs the test on a right answer.
    """
    if answer is None or answer is Ellipsis:
        print("Not answered yet: fill in the blank and run the cell again (a solution is in the hidden cell below).")
        return False
    try:
        test(answer)
    except AssertionError as e:
        raise WrongAnswer(f"Not yet: {e}" if str(e) else "Not yet: that is not it, try again.") from None
    except Exception as e:
        raise WrongAnswer(f"Not yet: checking {answer!r:.80} failed with {type(e).__name__}: {e}") from e
    print("Correct.")
    return True


def check_solution(solution, test) -> None:
    """The hidden solution cell's check: run `test` on the solution and say nothing; raise if the solution fails it.

    Silent because Run All runs the hidden cell too, right under the blank the learner has not filled: a "Correct."
    there would read as their answer's verdict, and what a test prints (a value, a report) gives the answer away.
    Raising keeps CI (which runs every cell) checking that the solution and the test agree.
    """
    if solution is None or solution is Ellipsis:
        raise ValueError("check_solution: the solution cell gives no solution")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            test(solution)
        except Exception as e:
            raise AssertionError(f"the hidden solution fails the exercise's test: {type(e).__name__}: {e}") from e


def environment() -> str:
    """One line saying what runs where: python, torch and its threads, the cores, transformers, and the variables
    that change what the notebooks and tests do (CI, HF_HUB_OFFLINE, QWEN2_LAB_MODEL)."""
    import torch
    import transformers

    env = " ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ("CI", "HF_HUB_OFFLINE", "QWEN2_LAB_MODEL"))
    return (
        f"python {platform.python_version()} ({platform.system()} {platform.machine()}), torch {torch.__version__}"
        f" with {torch.get_num_threads()} threads on {os.cpu_count()} cores, transformers {transformers.__version__};"
        f" {env}; in_ci() {in_ci()}"
    )


def release() -> str:
    """The git tag of this version, which the notebooks' Colab links open and their install cell installs."""
    from . import __version__

    return f"v{__version__}"


def site_url() -> str:
    """Where GitHub Pages publishes the site of REPOSITORY (https://<owner>.github.io/<name>/)."""
    owner, name = REPOSITORY.rstrip("/").split("/")[-2:]
    return f"https://{owner}.github.io/{name}/"


def colab_url(notebook: str) -> str:
    """Colab's page for a notebook of this release, opened straight from GitHub."""
    path = REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{release()}/notebooks/{notebook}"


def colab_cells(notebook: str) -> list[dict]:
    """The first two cells of a notebook: its "Open in Colab" badge, and a cell that installs this version of the
    package where it is missing (Colab). The notebook's own setup cell follows and picks the GPU when there is one."""
    badge = f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"
    install = [
        "# NBVAL_IGNORE_OUTPUT",
        "# Where qwen2_lab is not installed (Colab), install this notebook's version; setup() below then runs on the",
        "# GPU if there is one. For a real model there, first: %env QWEN2_LAB_MODEL=Qwen/Qwen2-1.5B-Instruct",
        "import importlib.util",
        "",
        'if importlib.util.find_spec("qwen2_lab") is None:',
        f'    %pip install -q "qwen2-lab @ git+{REPOSITORY}@{release()}"',
    ]
    meta = {"tags": [COLAB_TAG]}
    return [
        {"cell_type": "markdown", "id": "colab-badge", "metadata": meta, "source": badge},
        {
            "cell_type": "code",
            "id": "colab-install",
            "metadata": meta,
            "source": "\n".join(install),
            "execution_count": None,
            "outputs": [],
        },  # fmt: skip
    ]


def write_colab_cells(path: Path) -> bool:
    """Put colab_cells at the top of the notebook at `path` (replacing those already there); True if it changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [nbformat.from_dict(c) for c in colab_cells(path.name)]
    if [(c.cell_type, c.source, c.metadata) for c in nb.cells[: len(cells)]] == [
        (c.cell_type, c.source, c.metadata) for c in cells
    ]:
        return False
    nb.cells = cells + [c for c in nb.cells if COLAB_TAG not in c.metadata.get("tags", [])]
    nbformat.write(nb, path)
    return True


if __name__ == "__main__":  # `python -m qwen2_lab.notebook`: what .ci/run prints before the tests
    if sys.argv[1:] == ["--colab"]:  # rewrite every notebook's Colab cells from REPOSITORY and the version
        for nb in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.ipynb")):
            print(f"{nb.name}: {'rewritten' if write_colab_cells(nb) else 'up to date'}")
    else:
        print(environment())
