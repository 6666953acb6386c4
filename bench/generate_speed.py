"""Does seeing every token cost speed? Generation through the lab against plain `model.generate`, tokens per second.

    python bench/generate_speed.py                                # a random model with Qwen2-0.5B's shape, CPU
    python bench/generate_speed.py --models tiny 0.5B --threads 1 --rounds 7
    python bench/generate_speed.py --models 7B --device cuda --dtype bfloat16

Rows, all greedy on the same chat prompt (the Qwen2 launch's LeetCode 34 prompt) and the same model:
  generate        HF `model.generate(input_ids)` (the reference)
  lab steps       `lab.generate_steps`: the lab's forward with HF's DynamicCache, recording each token, its
                  probability before and after the processors, the entropy and the top-5 candidates of both
  lab + logits    the same, also keeping each step's [V] logits (the default of generate_steps)
  lab + attention the same, also keeping one middle layer's attention pattern of every new token
  lab stream      `lab.stream`, the text pieces the web demo shows
Every reply is exactly --new-tokens long (min_new_tokens = max_new_tokens), and the lab's tokens are asserted equal
to generate's. Each round runs every row once, in a shuffled order, after one warm-up of each: the ratio to generate is
taken within each round (paired), and the table shows the median ratio over rounds, so that drift in a shared machine's
load hits all rows alike. The aim: lab steps / generate >= 0.9 in tokens per second.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from common import build, machine_options, use_threads  # noqa: E402


def rows(lab, new_tokens: int) -> dict:
    import torch

    from qwen2_lab.checks import PROBLEMS

    messages = [{"role": "user", "content": PROBLEMS["leetcode-34"].prompt_zh}]
    ids = lab.encode(messages)[None]  # (1, S)
    lab.model.generation_config.min_new_tokens = new_tokens  # every row makes exactly new_tokens tokens
    greedy = dict(max_new_tokens=new_tokens, do_sample=False, repetition_penalty=1.0)
    middle = f"layers.{lab.arch.n_layers // 2}.attn.pattern"

    def sync(result):
        if lab.device.type == "cuda":
            torch.cuda.synchronize()
        return result

    def generate():
        with torch.inference_mode():
            out = lab.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **greedy)
        return sync(out[0, ids.shape[1] :].tolist())

    return {
        "generate": generate,
        "lab steps": lambda: sync(lab.generate_steps(messages, keep_logits=False, **greedy).token_ids),
        "lab + logits": lambda: sync(lab.generate_steps(messages, **greedy).token_ids),
        "lab + attention": lambda: sync(
            lab.generate_steps(messages, keep_logits=False, sites=[middle], **greedy).token_ids
        ),
        "lab stream": lambda: sync("".join(lab.stream(messages, **greedy))),
    }


def measure(lab, new_tokens: int, rounds: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per reply of each row in each round, after one warm-up of each (which also checks the tokens)."""
    fns = rows(lab, new_tokens)
    reference = fns["generate"]()
    for name, fn in fns.items():
        out = fn()
        if isinstance(out, list):
            assert out == reference, f"{name} made other tokens than generate"
    times = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(seed)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["0.5B"], help="tiny, tiny-moe, 0.5B, 1.5B, 7B, a hub id")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    machine_options(p)
    args = p.parse_args(argv)
    threads = use_threads(args.threads)
    print(f"{args.new_tokens} new tokens, greedy, device {args.device}, torch threads {threads};"
          f" {args.rounds} paired rounds after a warm-up; x = median over rounds of generate's time / the row's")  # fmt: skip
    header = f"{'model':<20} {'path':<16} {'tokens/s':>9} {'x':>7}"
    lines = [header, "-" * len(header)]
    for model in args.models:
        lab = build(model, args.device, args.dtype)
        times = measure(lab, args.new_tokens, args.rounds)
        for name, ts in times.items():
            ratio = statistics.median(g / t for g, t in zip(times["generate"], ts))
            lines.append(f"{lab.name:<20} {name:<16} {args.new_tokens / statistics.median(ts):>9.1f} {ratio:>6.3f}x")
        del lab
    print("\n".join(lines))


if __name__ == "__main__":
    main()
