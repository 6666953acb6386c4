"""The notebooks' setup cell, in one place: which model, which device, which plotly renderer, which versions.

    from qwen2_lab.notebook import setup
    lab = setup()                      # $QWEN2_LAB_MODEL, else the bundled "tiny"
    lab = setup(moe=True)              # a Qwen2-MoE model: $QWEN2_LAB_MODEL if it is one, else "tiny-moe"

On a GPU machine, `QWEN2_LAB_MODEL=Qwen/Qwen2-7B-Instruct jupyter lab` runs every notebook unchanged on the real
model. `in_ci()` tells a notebook it runs under CI (nbval), where long cells are skipped by markers anyway.
"""

from __future__ import annotations

import os
import platform


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

    from .loading import load

    default = default or ("tiny-moe" if moe else "tiny")
    name = os.environ.get("QWEN2_LAB_MODEL") or default
    if moe and name != default and not _is_moe(name):
        print(f"{name} is not a Qwen2-MoE model; this notebook uses {default!r} for the MoE parts")
        name = default
    if os.environ.get("QWEN2_LAB_PLOTLY_RENDERER"):
        pio.renderers.default = os.environ["QWEN2_LAB_PLOTLY_RENDERER"]
    torch.set_grad_enabled(False)  # the notebooks look, they do not train: no autograd graph behind any tensor
    lab = load(name, **load_kwargs)
    if not quiet:
        print(
            f"model {lab.name} on {lab.device} in {lab.dtype}; python {platform.python_version()}, torch"
            f" {torch.__version__}, transformers {transformers.__version__}; plotly renderer {pio.renderers.default}"
        )
    return lab


def _is_moe(name: str) -> bool:
    from transformers import AutoConfig

    from .loading import locate

    source, local_only = locate(name)
    return AutoConfig.from_pretrained(source, local_files_only=local_only).model_type == "qwen2_moe"


def check_exercise(answer, test) -> bool:
    """An exercise's check. `answer` None (or ...) means not answered yet: say so and return False. Otherwise run
    `test(answer)`, which raises AssertionError with a hint when the answer is wrong, and say it is right.

    The notebooks' exercise cell leaves `answer = None` for the learner to fill and calls this; a hidden solution
    cell below it sets the answer and calls it again, so CI checks that the check itself holds.
    """
    if answer is None or answer is Ellipsis:
        print(
            "Not answered yet: fill in the blank above and run the cell again (a solution is in the hidden cell below)."
        )
        return False
    test(answer)
    print("Correct.")
    return True
