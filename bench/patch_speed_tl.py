"""TransformerLens's patching sweep on the same model and prompts as bench/patch_speed.py, for comparison.

    pip install transformer_lens          # 4.x; in an environment of its own if you prefer (it works with transformers 5)
    python bench/patch_speed_tl.py --threads 2

TransformerLens 4 wraps the HF model in a `TransformerBridge` (with eager attention); `patching.get_act_patch_resid_pre`
runs `generic_activation_patch`: one full forward of the corrupted prompt per (layer, position), a hook putting the
clean cache's residual in. This script builds the same random Qwen2-0.5B-shaped model (torch seed 0), the same two
32-token prompts and the same answer tokens as bench/patch_speed.py, times the whole sweep, and prints a few of its
values, to be compared with that script's (they are the same quantity: logit[right] - logit[wrong] at the last
position).
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)

    import torch
    from transformer_lens import patching
    from transformer_lens.model_bridge.sources import build_bridge_from_module  # public: in its __all__
    from transformers import AutoModelForCausalLM, Qwen2Config

    if args.threads:
        torch.set_num_threads(args.threads)
    config = Qwen2Config(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
    )  # Qwen2-0.5B-Instruct's config.json (the lab's qwen2_lab.arch.family_config gives the same)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    vocab = min(config.vocab_size, 150_000)
    clean = torch.randint(0, vocab, (args.tokens,), generator=gen)
    corrupted = clean.clone()
    corrupted[args.tokens // 3] = (clean[args.tokens // 3] + 1) % vocab
    right, wrong = int(clean[1]), int(clean[2])

    bridge = build_bridge_from_module(hf, "Qwen2ForCausalLM", hf_config=hf.config)
    metric = lambda logits: logits[0, -1, right] - logits[0, -1, wrong]  # noqa: E731
    with torch.no_grad():
        _, cache = bridge.run_with_cache(clean[None])
        start = time.perf_counter()
        result = patching.get_act_patch_resid_pre(bridge, corrupted[None], cache, metric)
        seconds = time.perf_counter() - start
    n = result.numel()
    from importlib.metadata import version

    print(f"TransformerLens {version('transformer_lens')} get_act_patch_resid_pre: {n} patches"
          f" ({result.shape[0]} layers x {result.shape[1]} positions), {seconds:.1f} s, torch threads"
          f" {torch.get_num_threads()}")  # fmt: skip
    cells = ((0, args.tokens // 3), (12, args.tokens - 1), (23, args.tokens - 1))
    print(f"values at {cells}:", [round(float(result[L, q]), 4) for L, q in cells])


if __name__ == "__main__":
    main()
