"""Exact-match accuracy of a tiny checkpoint on the held-out problems, per task and per slice.

    python -m qwen2_lab.tiny.evaluate                 # both bundled checkpoints, 300 held-out problems per task
    python -m qwen2_lab.tiny.evaluate tiny -n 50      # one checkpoint, fewer problems
    python -m qwen2_lab.tiny.evaluate path/to/folder  # any checkpoint made by make.py
    python -m qwen2_lab.tiny.evaluate --validation 200 DIR1 DIR2  # compare training runs without the held-out

Greedy decoding, the chat template with its default system prompt (exactly what `lab.generate(messages)` feeds the
model), many prompts at once (padded on the left). A reply counts only if its final answer equals the one computed
from the problem (`Problem.is_correct`). The slices (`curriculum.slices`): the three held-out splits (new numbers in
trained phrasings, unseen phrasings, range corners), one-digit against multi-digit numbers, negatives, language.
"""

from __future__ import annotations

import argparse
import re
import time

import torch

from .curriculum import (
    SLICE_LABELS,
    SLICES,
    TASKS,
    Problem,
    any_element_problems,
    beyond,
    final,
    fmt_list,
    fmt_set,
    held_out,
    reserved_problems,
    slices,
    validation,
)
from .shipped import score_range, shipped_scores  # noqa: F401  (what the notebooks and docs read from here)

DEFAULT_N = 300
DEFAULT_BEYOND = 50


@torch.inference_mode()
def answer(model, tokenizer, problems: list[Problem], max_new_tokens: int = 128, batch_size: int = 64) -> list[str]:
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


MARKS = {
    "intersection": re.compile(r"(-?\d+)(∈|∉)B"),
    "gaokao_filter": re.compile(r"(-?\d+):[^,]*?(✓|✗)"),
    "search_range": re.compile(r"(\d+):-?\d+([<=>])"),
    "arithmetic": re.compile(r"=(\d)"),
}


def walk_answer(task: str, reply: str) -> str | None:
    """The final answer the reply's own work implies (its marks, its equal indices, its columns), as `final` reads a
    last line; None when the reply shows no work to read."""
    lines = reply.strip().splitlines()
    work = lines[:-1]
    if not work:
        return None
    if task in ("intersection", "gaokao_filter"):
        marks = MARKS[task].findall(work[0])
        return fmt_set([int(v) for v, m in marks if m in "∈✓"]) if marks else None
    if task == "search_range":
        hits = [int(i) for i, rel in MARKS[task].findall(work[0]) if rel == "="]
        return fmt_list([hits[0], hits[-1]] if hits else [-1, -1])
    digits = MARKS[task].findall(work[-1].split(":", 1)[-1])
    if not digits:
        return None
    value = int("".join(reversed(digits)))
    return str(-value if work[-1].startswith("-(") else value)


def agrees_with_walk(p: Problem, reply: str) -> bool:
    """Whether the reply's final answer is the one its own work implies (right or wrong)."""
    implied = walk_answer(p.task, reply)
    return implied is not None and implied == final(reply)


def score(problems: list[Problem], replies: list[str]) -> dict:
    """{task: {slice: [right, asked]}} over the problems and their replies."""
    counts = {t: {s: [0, 0] for s in SLICES} for t in TASKS}
    for p, r in zip(problems, replies):
        for s in slices(p):
            counts[p.task][s][0] += p.is_correct(r)
            counts[p.task][s][1] += 1
    return counts


def evaluate(model, tokenizer, n_per_task: int = DEFAULT_N, n_beyond: int = 0) -> dict:
    """Accuracy per task and slice on the first `n_per_task` held-out problems of each, the replies to the reserved
    questions (the launch's gaokao question, the README's examples), and, if `n_beyond`, the accuracy on that many
    problems per task just outside the trained ranges (`curriculum.beyond`).

    Returns {"scores": {task: accuracy}, "slices": {task: {slice: [right, asked]}}, "n_per_task", "seconds",
    "wrong_examples": {task: up to 3}, "reserved": [{"prompt", "expected", "reply", "right"}], "beyond": {task:
    [right, asked]} (empty without n_beyond), "agrees_with_walk": {task: [agreeing, asked]} (the final answer is the
    one the reply's own work implies), "any_element": how the model spreads its choice (`any_element`)}.
    """
    problems = held_out(n_per_task)
    start = time.time()
    replies = answer(model, tokenizer, problems)
    counts = score(problems, replies)
    wrong_examples = {t: [] for t in TASKS}
    for p, r in zip(problems, replies):
        if not p.is_correct(r) and len(wrong_examples[p.task]) < 3:
            wrong_examples[p.task].append({"prompt": p.prompt, "expected": p.answer, "reply": r, "split": p.split})
    reserved = reserved_problems()
    asked = [{"prompt": p.prompt, "expected": p.answer, "reply": r, "right": p.is_correct(r)}
             for p, r in zip(reserved, answer(model, tokenizer, reserved))]  # fmt: skip
    outside = beyond(n_beyond) if n_beyond else []
    outside_counts = {t: [0, 0] for t in TASKS} if n_beyond else {}
    for p, r in zip(outside, answer(model, tokenizer, outside)):
        outside_counts[p.task][0] += p.is_correct(r)
        outside_counts[p.task][1] += 1
    agree = {t: [0, 0] for t in TASKS}
    for p, r in zip(problems, replies):
        agree[p.task][0] += agrees_with_walk(p, r)
        agree[p.task][1] += 1
    return {"scores": {t: counts[t]["all"][0] / counts[t]["all"][1] for t in TASKS}, "slices": counts,
            "agrees_with_walk": agree, "any_element": any_element(model, tokenizer),
            "n_per_task": n_per_task, "seconds": round(time.time() - start, 1), "wrong_examples": wrong_examples,
            "reserved": asked, "beyond": outside_counts}  # fmt: skip


def validate(model, tokenizer, n_per_task: int = 200) -> dict[str, float]:
    """Accuracy per task on `n_per_task` validation problems (`curriculum.validation`: trained phrasings, fresh
    numbers), for choosing between training runs; the held-out problems stay for the model card."""
    problems = validation(n_per_task)
    right = [p.is_correct(r) for p, r in zip(problems, answer(model, tokenizer, problems))]
    return {t: sum(ok for p, ok in zip(problems, right) if p.task == t) / n_per_task for t in TASKS}


@torch.inference_mode()
def any_element(model, tokenizer, n: int = 100, share: float = 0.05) -> dict:
    """How the model spreads its choice on questions with many right answers (`Name any element of A={3,5,9}.`): the
    share of greedy replies that name an element, and at the answer's first token, the entropy of the distribution
    (bits, at temperature 1) and how many candidates get more than `share` of it, averaged over `n` questions."""
    problems = any_element_problems(n)
    right = sum(p.is_correct(r) for p, r in zip(problems, answer(model, tokenizer, problems, max_new_tokens=8)))
    entropy = above = 0.0
    for p in problems:
        text = tokenizer.apply_chat_template(p.messages(), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
        probs = model(ids).logits[0, -1].float().softmax(-1)  # (V,)
        entropy += -(probs * probs.clamp_min(1e-30).log2()).sum().item()
        above += (probs > share).sum().item()
    return {"n": n, "greedy_valid": right / n, "entropy_bits": round(entropy / n, 3),
            "candidates_over": share, "candidates": round(above / n, 2)}  # fmt: skip


def cell(right: int, asked: int) -> str:
    return f"{100 * right / asked:.1f}% ({asked})" if asked else "-"


def table(results: dict[str, dict]) -> str:
    """A markdown table: one row per task, one column per checkpoint (all held-out problems)."""
    names = list(results)
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for t in TASKS:
        lines.append(f"| {t} | " + " | ".join(f"{100 * results[n]['scores'][t]:.1f}%" for n in names) + " |")
    n = {results[k]["n_per_task"] for k in names}
    lines.append(f"\n(exact match of the final answer, greedy, {'/'.join(map(str, n))} held-out problems per task)")
    return "\n".join(lines)


BEYOND_LABEL = "just beyond the trained ranges (not a goal)"


def slice_table(result: dict) -> str:
    """A markdown table for one checkpoint: one row per slice, one column per task; each cell `accuracy (asked)`.
    A last row for the problems beyond the trained ranges, if they were asked."""
    lines = ["| slice | " + " | ".join(TASKS) + " |", "|---|" + "---:|" * len(TASKS)]
    for s in SLICES:
        lines.append(f"| {SLICE_LABELS[s]} | " + " | ".join(cell(*result["slices"][t][s]) for t in TASKS) + " |")
    if result.get("beyond"):
        lines.append(f"| {BEYOND_LABEL} | " + " | ".join(cell(*result["beyond"][t]) for t in TASKS) + " |")
    return "\n".join(lines)


def main(argv=None):
    from .. import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=["tiny", "tiny-moe"], help="bundled names or checkpoint folders")
    ap.add_argument("-n", type=int, default=DEFAULT_N, help="held-out problems per task (at most 1000)")
    ap.add_argument("--beyond", type=int, default=DEFAULT_BEYOND, help="problems per task beyond the trained ranges")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (one is fastest on a shared CPU)")
    ap.add_argument("--validation", type=int, metavar="N", help="only score N validation problems per task")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.validation:
        for name in args.names:
            lab = load(name, device="cpu")
            scores = validate(lab.model, lab.tokenizer, args.validation)
            print(f"{name}: validation {100 * sum(scores.values()) / len(scores):.1f}% (" +
                  ", ".join(f"{t} {100 * s:.1f}%" for t, s in scores.items()) + ")")  # fmt: skip
        return
    results = {}
    for name in args.names:
        lab = load(name, device="cpu")
        results[name] = evaluate(lab.model, lab.tokenizer, args.n, args.beyond)
        print(f"\n## {name} ({results[name]['seconds']} s)\n")
        print(slice_table(results[name]))
        agree = results[name]["agrees_with_walk"]
        print("\nFinal answer agrees with the reply's own work: "
              + ", ".join(f"{t} {100 * a / n:.1f}%" for t, (a, n) in agree.items()))  # fmt: skip
        spread = results[name]["any_element"]
        print(f"Any element ({spread['n']} questions): {100 * spread['greedy_valid']:.0f}% name one greedily; first "
              f"token {spread['entropy_bits']:.2f} bits, {spread['candidates']:.1f} candidates over 5%")  # fmt: skip
        print("\nReserved questions (never trained on):")
        for q in results[name]["reserved"]:
            print(f"  {q['prompt']} -> {q['reply'].splitlines()[-1] if q['reply'] else ''} "
                  f"({'right' if q['right'] else 'wrong'})")  # fmt: skip
    print("\n" + table(results))


if __name__ == "__main__":
    main()
