"""How fast is a patching sweep? `patch_sweep` against the naive loop of one full forward per patch.

    python bench/patch_speed.py                          # random Qwen2-0.5B-shaped model, 32 tokens, resid_pre
    python bench/patch_speed.py --threads 1 --naive-sample 48
    python bench/patch_speed.py --model 7B --device cuda --dtype bfloat16

The sweep: every layer x every position at resid_pre (24 x 32 = 768 patches for 0.5B), clean activations put into the
corrupted run one at a time, the answer's logit difference read at the last position.
  naive loop   one full HF forward of the corrupted prompt per patch, with a forward pre-hook on the patched layer
               that puts the clean residual in (what TransformerLens's `generic_activation_patch` does: the whole model
               once per index). Its time per patch is measured on --naive-sample patches spread over the grid and
               multiplied by the number of patches (each is the same full forward), stated as such.
  lab sweep    `qwen2_lab.patching.patch_sweep`: each patch re-runs only its layers onward and its positions
               onward, reading the corrupted run's keys and values for the positions before it, batched.
The sweep's values are checked against the naive loop's on the sampled patches. Aim: lab sweep <= 0.25x naive.
"""

from __future__ import annotations

import argparse
import random
import time

from common import build, machine_options, use_threads  # noqa: E402


def naive_patch(model, ids, clean_hidden, layer: int, pos: int, answer) -> float:
    """One full forward of the corrupted prompt with the clean residual put in at (layer, pos): a pre-hook."""
    import torch

    def pre(mod, args):
        h = args[0].clone()
        h[0, pos] = clean_hidden[layer][0, pos]
        return (h, *args[1:])

    handle = model.model.layers[layer].register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
    finally:
        handle.remove()
    return float(logits[answer[0]] - logits[answer[1]])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="0.5B")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--naive-sample", type=int, default=32, help="patches timed in the naive loop")
    p.add_argument("--batch", type=int, default=32, help="rows per batch in the lab sweep")
    machine_options(p)
    args = p.parse_args(argv)

    import torch

    from qwen2_lab.patching import patch_sweep

    use_threads(args.threads)
    lab = build(args.model, args.device, args.dtype, tokenizer=False)
    gen = torch.Generator().manual_seed(0)
    vocab = min(lab.arch.vocab, 150_000)
    clean = torch.randint(0, vocab, (args.tokens,), generator=gen)
    corrupted = clean.clone()
    corrupted[args.tokens // 3] = (clean[args.tokens // 3] + 1) % vocab  # one token differs
    answer = (int(clean[1]), int(clean[2]))
    n_layers, S = lab.arch.n_layers, args.tokens
    sync = torch.cuda.synchronize if lab.device.type == "cuda" else (lambda: None)

    bad = corrupted[None].to(lab.device)
    with torch.no_grad():
        clean_hidden = lab.model(clean[None].to(lab.device), output_hidden_states=True).hidden_states
        lab.model(bad)  # warm-up
    patch_sweep(lab, clean, corrupted, answer, layers=[n_layers - 1], positions=[0], batch=args.batch)  # warm-up

    sync()
    start = time.perf_counter()
    sweep = patch_sweep(lab, clean, corrupted, answer, site="resid_pre", batch=args.batch)
    sync()
    lab_s = time.perf_counter() - start

    grid = [(L, q) for L in range(n_layers) for q in range(S)]
    sample = random.Random(0).sample(grid, min(args.naive_sample, len(grid)))
    worst = 0.0
    start = time.perf_counter()
    for L, q in sample:
        value = naive_patch(lab.model, bad, clean_hidden, L, q, answer)
        worst = max(worst, abs(value - float(sweep.logit_diff[L, q])) / max(1.0, abs(value)))
    sync()
    per_patch = (time.perf_counter() - start) / len(sample)
    naive_s = per_patch * len(grid)

    print(f"{lab.name}, {S} tokens, {n_layers} layers x {S} positions = {len(grid)} patches at resid_pre;"
          f" {args.device}, {lab.dtype}, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"  naive loop (one full forward per patch): {naive_s:8.1f} s  ({per_patch * 1000:.0f} ms per patch x"
          f" {len(grid)}, timed on {len(sample)} patches)")  # fmt: skip
    print(f"  lab patch_sweep:                         {lab_s:8.1f} s  = {lab_s / naive_s:.3f}x the naive loop")
    print(f"  largest difference from the naive loop on the sampled patches: {worst:.2e} (relative)")
    cells = ((0, S // 3), (12, S - 1), (23, S - 1)) if n_layers > 23 else ((0, S // 3), (n_layers - 1, S - 1))
    print(f"  values at {cells}:", [round(float(sweep.logit_diff[L, q]), 4) for L, q in cells])


if __name__ == "__main__":
    main()
