"""What the running model can be asked, what the banner says about it, and the verdict on a reply to an example.

A bundled model ships its examples with their answers in its folder (`examples.json`, `qwen2_lab.tiny.shipped`):
the launch's gaokao set question, held-out problems of the four kinds it was trained on, in Chinese and English, and
a question with many right answers (any element of a set: the verdict accepts any).
A real model gets the Qwen2 launch's three problems in both languages (their answers known to `qwen2_lab.checks`)
and a few more. Every example whose answer can be checked is checked as soon as its reply is complete.
"""

from __future__ import annotations

from qwen2_lab.arch import count
from qwen2_lab.inputs import normalize_messages
from qwen2_lab.loading import BUNDLED
from qwen2_lab.tiny import shipped

from . import check

MORE_EXAMPLES = [
    {"label": "Arithmetic", "prompt": "What is 17 × 24? Show the steps."},
    {"label": "GQA (中文)", "prompt": "用三句话解释什么是分组查询注意力（GQA）。"},
    {"label": "Fast Fibonacci", "prompt": "Write a Python function that returns the n-th Fibonacci number in O(log n) time."},
]  # fmt: skip


def is_bundled(lab) -> bool:
    return lab.name in BUNDLED


def examples(lab) -> list[dict]:
    """The chat's examples as {"label", "prompt"} and, where a reply can be checked, "answer" (a bundled model's
    worked answer) or "problem" (a launch problem's id)."""
    if is_bundled(lab):
        return shipped.read(BUNDLED[lab.name])
    launch = [
        {"label": f"{pid} ({'中文' if lang == 'zh' else 'English'})", "prompt": prompt, "problem": pid}
        for pid, by_lang in check.problem_prompts().items()
        for lang, prompt in by_lang.items()
    ]
    return launch + MORE_EXAMPLES


def scores(lab) -> dict[str, float]:
    """{task: exact-match accuracy on held-out problems} that a bundled checkpoint ships; {} for another model."""
    return shipped.shipped_scores(lab.name) if is_bundled(lab) else {}


def banner(lab) -> str:
    """The line above everything: which model runs, which examples the chat offers and why."""
    if is_bundled(lab):
        return (
            f"**The bundled model `{lab.name}` runs here** ({count(lab.arch.total_params)} parameters, on the CPU in"
            " seconds): a small Qwen2 trained on four kinds of problems (set intersection, LeetCode 34 on short"
            " lists, addition and subtraction, and the gaokao set filter) in Chinese and English, and to name any"
            " element of a set (many right answers: sample it to see the choice). On held-out"
            f" problems of those kinds it answers {shipped.score_range(lab.name)} right, depending on the kind (its model card"
            " has the table). The examples are problems of those kinds it never saw in training, and the Qwen2"
            " launch's gaokao set question; other questions are beyond it. To talk to a real Qwen2, start the demo"
            " with `python demo/app.py --model Qwen/Qwen2-0.5B-Instruct` (or any Qwen2 hub id or local folder), or"
            " set `QWEN2_LAB_MODEL`."
        )
    return (
        f"**`{lab.name}` runs here.** The examples are the three problems Qwen2 was launched with (two 2024 gaokao"
        " math questions and LeetCode 34, in Chinese and English), whose answers the demo checks, and a few more."
    )


def answered(lab, history) -> tuple[dict | None, str | None]:
    """(the example the chat's last reply answers, that reply), or None for either when there is none."""
    messages = normalize_messages(history or [])
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        return None, None
    asked = messages[-2]["content"].strip()
    example = next((e for e in examples(lab) if e["prompt"].strip() == asked), None)
    return example, messages[-1]["content"]


def verdict(lab, history) -> str:
    """The verdict shown under the chat on a reply to an example ('' for other replies): right or wrong against
    the known answer, or, for the launch's code problem, where to check it."""
    example, reply = answered(lab, history)
    if example is None:
        return ""
    if "answer" in example:
        right = shipped.is_right(reply, example)
        expected = " or ".join(example.get("any_of", [])) or example["answer"].strip().splitlines()[-1]
        return f"{'✅ **Right**' if right else '❌ **Wrong**'}: the known answer is `{expected}` ({example['label']})."
    if "problem" not in example:
        return ""
    if check.is_code(example["problem"]):
        return f"**{example['problem']}** is a code problem: *Check the code* below runs its tests."
    result = check.check(reply, example["problem"])
    return (
        f"{'✅ **Right**' if result.passed else '❌ **Wrong**'} ({example['problem']}): {result.report.splitlines()[0]}"
    )
