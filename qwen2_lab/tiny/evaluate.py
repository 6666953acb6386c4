"""Exact-match accuracy of a tiny checkpoint on the held-out problems, per task.

    python -m qwen2_lab.tiny.evaluate                 # both bundled checkpoints, 200 held-out problems per task
    python -m qwen2_lab.tiny.evaluate tiny -n 50      # one checkpoint, fewer problems
    python -m qwen2_lab.tiny.evaluate path/to/folder  # any checkpoint made by make.py

Greedy decoding, the chat template with its default system prompt (exactly what `lab.generate(messages)` feeds the
model), many prompts at once (padded on the left). A reply counts only if its final answer equals the one computed
from the problem (`Problem.is_correct`).
"""

from __future__ import annotations

import argparse
import time

import torch

from .curriculum import TASKS, Problem, held_out, reserved_problems


@torch.inference_mode()
def answer(model, tokenizer, problems: list[Problem], max_new_tokens: int = 64, batch_size: int = 100) -> list[str]:
    """Greedy replies to each problem's question, decoded without special tokens."""
    replies = []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i : i + batch_size]
        texts = [tokenizer.apply_chat_template(p.messages(), add_generation_prompt=True, tokenize=False) for p in chunk]
        tokenizer.padding_side = "left"
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)  # (B, S + new)
        replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return replies


def evaluate(model, tokenizer, n_per_task: int = 200) -> dict:
    """Accuracy per task on the first `n_per_task` held-out problems of each, and the replies to the seed's questions.

    Returns {"scores": {task: accuracy}, "n_per_task", "seconds", "wrong_examples": {task: up to 3},
    "seed_questions": [{"prompt", "expected", "reply", "right"}]}.
    """
    problems = held_out(n_per_task)
    start = time.time()
    replies = answer(model, tokenizer, problems)
    right = {t: 0 for t in TASKS}
    wrong_examples = {t: [] for t in TASKS}
    for p, r in zip(problems, replies):
        if p.is_correct(r):
            right[p.task] += 1
        elif len(wrong_examples[p.task]) < 3:
            wrong_examples[p.task].append({"prompt": p.prompt, "expected": p.answer, "reply": r})
    scores = {t: right[t] / n_per_task for t in TASKS}
    seed = reserved_problems()
    seed_replies = [{"prompt": p.prompt, "expected": p.answer, "reply": r, "right": p.is_correct(r)}
                    for p, r in zip(seed, answer(model, tokenizer, seed))]  # fmt: skip
    return {"scores": scores, "n_per_task": n_per_task, "seconds": round(time.time() - start, 1),
            "wrong_examples": wrong_examples, "seed_questions": seed_replies}  # fmt: skip


def table(results: dict[str, dict]) -> str:
    """A markdown table: one row per task, one column per checkpoint."""
    names = list(results)
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for t in TASKS:
        lines.append(f"| {t} | " + " | ".join(f"{100 * results[n]['scores'][t]:.1f}%" for n in names) + " |")
    n = {results[k]["n_per_task"] for k in names}
    lines.append(f"\n(exact match of the final answer, greedy, {'/'.join(map(str, n))} held-out problems per task)")
    return "\n".join(lines)


def main(argv=None):
    from .. import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=["tiny", "tiny-moe"], help="bundled names or checkpoint folders")
    ap.add_argument("-n", type=int, default=200, help="held-out problems per task (at most 1000)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.names:
        lab = load(name, device="cpu")
        results[name] = evaluate(lab.model, lab.tokenizer, args.n)
        print(f"{name}: {results[name]['seconds']} s")
        for q in results[name]["seed_questions"]:
            print(f"  {q['prompt']} -> {q['reply']} ({'right' if q['right'] else 'wrong'})")
    print(table(results))


if __name__ == "__main__":
    main()
