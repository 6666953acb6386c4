"""The Model card tab: which model runs, where, in what precision, its shape (the same `Arch` summary the notebooks
print) and, for a bundled model, the scores its checkpoint ships (the table the banner points to)."""

from __future__ import annotations

import gradio as gr

from qwen2_lab.arch import count

from .examples import is_bundled, scores


def table(header: tuple[str, str], rows: list[tuple[str, str]], align: str = "---") -> str:
    """A two-column markdown table with a header that says what each column holds."""
    lines = [f"| {header[0]} | {header[1]} |", f"|---|{align}|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])


def model_card(lab) -> str:
    a = lab.arch
    rows = [
        ("model", f"`{lab.name}`" + (" (bundled toy model)" if is_bundled(lab) else "")),
        ("device", f"`{lab.device}`"),
        ("dtype", f"`{str(lab.dtype).removeprefix('torch.')}`"),
        ("parameters", f"{count(a.total_params)} ({count(a.non_embedding_params)} non-embedding)"),
        ("context window", f"{a.max_position:,} tokens"),
    ]
    if a.is_moe:
        rows.append(("active per token", f"{count(a.active_params)} (top-{a.top_k} of {a.n_experts} experts)"))
    card = table(("field", "value"), rows) + f"\n\n```text\n{a}\n```"
    if scores(lab):
        measured = [(task, f"{100 * share:.1f}%") for task, share in scores(lab).items()]
        card += (
            "\n\n### Scores on held-out problems\n\nGreedy decoding, the final answer compared with the one computed"
            " from the problem (the checkpoint's `training.json`, as its model card says):\n\n"
            + table(("task", "exact match"), measured, align="---:")
        )
    return card


def build(lab, page) -> None:
    gr.Markdown(model_card(lab), elem_id="model-card")
