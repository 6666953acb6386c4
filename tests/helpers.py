"""Helpers the tests share: small random Qwen2 / Qwen2-MoE models built from configs (no downloads)."""

import torch

BASE = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
    vocab_size=256, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=512,
)  # fmt: skip
MOE = dict(
    num_experts=6, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64,
    norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
)  # fmt: skip


def random_model(moe: bool = False, dtype=torch.float32, seed: int = 0, **overrides):
    """A random-initialised HF Qwen2ForCausalLM (or Qwen2MoeForCausalLM) with BASE's shape plus `overrides`.

    Weights are drawn with a larger std than HF's 0.02 so that attention patterns and routing are far from uniform
    and a wrong formula shows up as a large difference.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2MoeConfig

    kw = {**BASE, **(MOE if moe else {}), **overrides}
    config = (Qwen2MoeConfig if moe else Qwen2Config)(**kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.15)
    return model.to(dtype).eval()


def random_lab(moe: bool = False, dtype=torch.float32, seed: int = 0, **overrides):
    from qwen2_lab import Lab

    return Lab(random_model(moe, dtype, seed, **overrides), None, name="random")


def wait_for(condition, seconds: float = 60, what: str = "a condition"):
    """Poll condition() until it returns something truthy, and return that; exceptions count as "not yet" (an element
    not on the page yet, a value being replaced), and the last one is named if time runs out."""
    import time

    deadline, error = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except Exception as e:
            error = e
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {error!r})" if error else ""))


def wait_until_still(read, seconds: float = 30, still: float = 0.5, what: str = "a value to settle"):
    """Poll read() until it has not changed for `still` seconds; return that value."""
    import time

    deadline, last, since = time.monotonic() + seconds, read(), time.monotonic()
    while time.monotonic() - since < still:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last
