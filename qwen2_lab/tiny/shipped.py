"""What a bundled checkpoint ships besides its weights, for the web demo and the docs to read (nothing is regenerated
or re-measured at start-up): the demo's examples with their answers (`examples.json`) and the scores measured when
it was made (`training.json`, as its model card says).

    python -m qwen2_lab.tiny.shipped        # (re)write examples.json in both bundled folders

Each example is {"label", "prompt", "answer"}: the launch's gaokao set question, then one held-out problem of each
task in Chinese and in English (never trained on), with the worked answer computed from the problem, then a question
with many right answers (any element of a set: "any_of" lists them), where sampling has a real choice. The demo reads
the file (`read`) and checks a reply against an example's answer (`is_right`: the final answers match, as the
model card's scores count them); nothing is regenerated at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path

from .curriculum import ANY_ELEMENT_EXAMPLE, ANY_ELEMENT_LABEL, TASK_LABELS, TASKS, final, held_out, reserved_problems

FILE = "examples.json"


def make() -> list[dict]:
    """The examples as {"label", "prompt", "answer"}: the launch's set question, then per task one held-out problem
    (new numbers in a trained phrasing) in Chinese and one in English."""
    chosen = [(p, "Gaokao 2024 set question (中文)") for p in reserved_problems() if p.task == "gaokao_filter"]
    held = held_out(50)
    for task in TASKS:
        for lang in ("zh", "en"):
            p = next(p for p in held if p.task == task and p.lang == lang and p.split == "numbers")
            chosen.append((p, f"{TASK_LABELS[task]} ({'中文' if lang == 'zh' else 'English'})"))
    any_of = [str(v) for v in ANY_ELEMENT_EXAMPLE.key[1]]
    return [{"label": label, "prompt": p.prompt, "answer": p.answer} for p, label in chosen] + [
        {"label": ANY_ELEMENT_LABEL, "prompt": ANY_ELEMENT_EXAMPLE.prompt, "answer": any_of[0], "any_of": any_of}
    ]


def write(folder: Path) -> Path:
    path = Path(folder) / FILE
    path.write_text(json.dumps(make(), ensure_ascii=False, indent=1) + "\n")
    return path


def shipped_scores(name: str) -> dict[str, float]:
    """{task: accuracy} measured when bundled checkpoint `name` was made (its training.json, as its model card says)."""
    from ..loading import bundled_path

    return json.loads((bundled_path(name) / "training.json").read_text())["eval"]["scores"]


def score_range(name: str) -> str:
    """'85-92%': the lowest and highest per-task accuracy measured for bundled model `name`."""
    scores = sorted(shipped_scores(name).values())
    return f"{100 * scores[0]:.0f}-{100 * scores[-1]:.0f}%"


def read(folder: Path) -> list[dict]:
    """The examples a checkpoint folder ships ([] when it ships none)."""
    path = Path(folder) / FILE
    return json.loads(path.read_text()) if path.exists() else []


def is_right(reply: str, example: dict) -> bool:
    """Whether `reply`'s final answer (its last line, as the model card's scores read it) is the example's (or, for a
    question with many right answers, one of its `any_of`)."""
    return final(reply) in example.get("any_of", [final(example["answer"])])


if __name__ == "__main__":
    from ..loading import BUNDLED

    for folder in BUNDLED.values():
        print(write(folder))
