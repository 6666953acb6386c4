"""What the benchmark scripts share: the model to measure, bundled or random weights in a real Qwen2 shape."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # qwen2_lab from a clone

SHAPES = {"0.5B": "Qwen/Qwen2-0.5B-Instruct", "1.5B": "Qwen/Qwen2-1.5B-Instruct", "7B": "Qwen/Qwen2-7B-Instruct"}


def build(model: str, device: str = "cpu", dtype: str = "auto", *, tokenizer: bool = True):
    """A Lab: a bundled model or hub id by name, or random weights (torch seed 0) in one of SHAPES, with the real
    Qwen2 tokenizer when `tokenizer`. The speed of a forward pass does not depend on the weights' values."""
    import torch
    from transformers import AutoModelForCausalLM

    import qwen2_lab
    from qwen2_lab.arch import family_config
    from qwen2_lab.loading import pick_device

    if model not in SHAPES:
        return qwen2_lab.load(model, device=device, dtype=dtype)
    torch.manual_seed(0)
    dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
    hf = AutoModelForCausalLM.from_config(family_config(SHAPES[model]), dtype=dtype).to(pick_device(device)).eval()
    return qwen2_lab.Lab(hf, qwen2_lab.qwen2_tokenizer() if tokenizer else None, name=f"random {model} shape")


def machine_options(parser, *, dtype: str = "auto", threads: int | None = None) -> None:
    """The options every script takes for where it runs: --device, --dtype, --threads."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=dtype)
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads (1 on a busy machine)")


def use_threads(threads: int | None) -> int:
    """Set torch's CPU threads when asked; the number it will use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
