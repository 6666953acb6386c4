"""Qwen2's forward pass, step by step, as a learner would write it.

This is the whole model in about 150 lines: embeddings, then for each decoder layer RMSNorm -> attention (q/k/v with
Qwen2's bias, RoPE, grouped-query attention) -> residual -> RMSNorm -> SwiGLU MLP (or the MoE block with its shared
expert) -> residual, then the final norm and lm_head. It computes exactly what `transformers`' Qwen2ForCausalLM and
Qwen2MoeForCausalLM compute (tests/test_equivalence.py checks every site at 1e-5 in float32), but every stage is a
few visible lines instead of a fused kernel.

It holds no weights of its own: it is handed the HF model and calls its submodules (`self_attn.q_proj`,
`mlp.gate_proj`, ...) and reads their weights in place. So it runs at any size, on any device, and on models that
accelerate has spread over several GPUs or offloaded to disk (see `hooked` at the end).

`qwen2_forward` is a generator: it yields `(site, tensor)` at every stage (site names: qwen2_lab/trace.py), so the
same code serves `lab.trace` (keep some), `lab.step` (walk all, one by one) and the tests. Shapes in the comments:
B batch (always 1 here), S tokens, H hidden, nH query heads, nKV KV heads, hd head_dim, I intermediate, E experts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

Stages = Iterator[tuple[str, torch.Tensor]]


def everything(site: str) -> bool:
    return True


def qwen2_forward(model, input_ids: torch.Tensor, wants: Callable[[str], bool] = everything) -> Stages:
    """Yield (site, tensor) for every stage of the forward pass of one sequence `input_ids` [S]; the last is logits.

    `wants(site)` lets the forward skip work nobody asked for: attention is computed by hand (keeping the [S, S]
    pattern) only where a scores or pattern site is wanted, and with the fused kernel elsewhere.
    """
    m = model.model
    ids = input_ids[None]  # (B=1, S)
    h = m.embed_tokens(ids)  # (B, S, H): one row per token, no scaling in Qwen2
    yield "embed", h
    positions = torch.arange(ids.shape[1], device=h.device)[None]  # (B, S)
    cos, sin = m.rotary_emb(h, positions)  # (B, S, hd) each; YaRN's attention factor is already in them
    for i, layer in enumerate(m.layers):
        h = yield from decoder_layer(layer, f"layers.{i}.", h, cos, sin, wants)  # (B, S, H)
    h = rms_norm(h, m.norm)  # (B, S, H)
    yield "final_norm", h
    logits = model.lm_head(h)  # (B, S, V); tied to embed_tokens in 0.5B and 1.5B
    yield "logits", logits


def decoder_layer(layer, p: str, h, cos, sin, wants) -> Stages:
    """One pre-norm decoder layer: h + attn(norm(h)), then h + mlp(norm(h)). h: (B, S, H)."""
    with hooked(layer, h, cos, sin) as (h, cos, sin):
        yield p + "resid_pre", h
        x = rms_norm(h, layer.input_layernorm)  # (B, S, H)
        yield p + "attn_norm", x
        h = h + (yield from self_attention(layer.self_attn, p + "attn.", x, cos, sin, wants))  # (B, S, H)
        yield p + "resid_mid", h
        x = rms_norm(h, layer.post_attention_layernorm)  # (B, S, H)
        yield p + "mlp_norm", x
        block = moe_block if is_moe(layer.mlp) else swiglu_mlp
        h = h + (yield from block(layer.mlp, p, x))  # (B, S, H)
        yield p + "resid_post", h
    return h


def self_attention(attn, p: str, x, cos, sin, wants) -> Stages:
    """Grouped-query attention with RoPE. x: (B, S, H) -> (B, S, H)."""
    B, S, _ = x.shape
    hd = attn.head_dim
    q = attn.q_proj(x).view(B, S, -1, hd).transpose(1, 2)  # (B, nH, S, hd); q_proj has a bias in Qwen2
    k = attn.k_proj(x).view(B, S, -1, hd).transpose(1, 2)  # (B, nKV, S, hd); so do k_proj and v_proj
    v = attn.v_proj(x).view(B, S, -1, hd).transpose(1, 2)  # (B, nKV, S, hd)
    yield p + "q", q
    yield p + "k", k
    yield p + "v", v
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # same shapes, each pair of dims rotated by position
    yield p + "q_rot", q
    yield p + "k_rot", k
    k = repeat_kv(k, attn.num_key_value_groups)  # (B, nH, S, hd): each KV head serves a group of query heads
    v = repeat_kv(v, attn.num_key_value_groups)  # (B, nH, S, hd)
    if wants(p + "scores") or wants(p + "pattern"):
        scores = causal_scores(q, k, attn.scaling)  # (B, nH, S, S)
        yield p + "scores", scores
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, nH, S, S); rows sum to 1
        yield p + "pattern", pattern
        z = pattern @ v  # (B, nH, S, hd)
    else:  # the same maths in one fused kernel, as HF's default sdpa does: no [S, S] matrix is materialised
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)  # (B, nH, S, hd)
    yield p + "z", z
    out = attn.o_proj(z.transpose(1, 2).reshape(B, S, -1))  # (B, S, H); o_proj has no bias
    yield p + "out", out
    return out


def swiglu_mlp(mlp, p: str, x) -> Stages:
    """SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x)), no biases. x: (B, S, H) -> (B, S, H)."""
    gate = mlp.gate_proj(x)  # (B, S, I)
    up = mlp.up_proj(x)  # (B, S, I)
    yield p + "mlp.gate", gate
    yield p + "mlp.up", up
    act = mlp.act_fn(gate) * up  # (B, S, I): SiLU opens or closes each channel of up
    yield p + "mlp.act", act
    out = mlp.down_proj(act)  # (B, S, H)
    yield p + "mlp.out", out
    return out


def moe_block(moe, p: str, x) -> Stages:
    """Qwen2-MoE: a router sends each token to top-k of E experts; a shared expert, gated, sees every token."""
    B, S, H = x.shape
    x = x.reshape(B * S, H)  # (T, H): the block works on T = B*S tokens; sites are reported per sequence

    def seq(t):  # (T, ...) -> (B, S, ...)
        return t.view(B, S, *t.shape[1:])

    logits = router_logits(x, moe.gate)  # (T, E)
    probs, weights, experts = route(logits, moe.gate.top_k, moe.gate.norm_topk_prob)  # (T, E), (T, k), (T, k)
    yield p + "moe.router_logits", seq(logits)
    yield p + "moe.router_probs", seq(probs)
    yield p + "moe.topk_experts", seq(experts)
    yield p + "moe.topk_weights", seq(weights)
    routed = run_experts(moe.experts, x, experts, weights)  # (T, H)
    yield p + "moe.routed_out", seq(routed)
    shared = swiglu(moe.shared_expert, x)  # (T, H): an ordinary SwiGLU MLP, as wide as 8 experts in 57B-A14B
    yield p + "moe.shared_out", seq(shared)
    gate = torch.sigmoid(moe.shared_expert_gate(x))  # (T, 1): one number in (0, 1) per token
    yield p + "moe.shared_gate", seq(gate[:, 0])
    out = seq(routed + gate * shared)  # (B, S, H)
    yield p + "moe.out", out
    return out


# ---- the ideas, as small pure functions -------------------------------------------------------------------------


def rms_norm(x, norm):
    """Qwen2RMSNorm: x / sqrt(mean(x^2) + eps) computed in float32, cast back, then times the learned weight.

    x: (..., H); norm: the HF module, whose `weight` (H,) and `variance_epsilon` are used in place.
    """
    with hooked(norm, x) as (x,):
        x32 = x.float()  # (..., H)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * x32.to(x.dtype)  # cast back *before* the weight, as HF does


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: RoPE's 90-degree turn in the NeoX layout."""
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """Rotate dims (j, j + hd/2) of x by angle position * inv_freq[j]. x: (B, n, S, hd); cos, sin: (B, S, hd)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def repeat_kv(x, n_rep: int):
    """(B, nKV, S, hd) -> (B, nKV * n_rep, S, hd): KV head j serves query heads j*n_rep ... j*n_rep + n_rep - 1."""
    B, n_kv, S, hd = x.shape
    return x[:, :, None].expand(B, n_kv, n_rep, S, hd).reshape(B, n_kv * n_rep, S, hd)


def causal_scores(q, k, scale: float):
    """q.k * scale, with every key in the query's future set to -inf. q, k: (B, nH, S, hd) -> (B, nH, S, S)."""
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, nH, S, S)
    S = q.shape[-2]
    future = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)  # (S, S): True above the diagonal
    return scores.masked_fill(future, float("-inf"))


def swiglu(mlp, x):
    """An HF SwiGLU MLP module applied to x, without reporting stages (the MoE's shared expert)."""
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def router_logits(x, gate):
    """The router is one matrix, no bias: a score per expert. x: (T, H), gate.weight: (E, H) -> (T, E)."""
    with hooked(gate, x) as (x,):
        return F.linear(x, gate.weight)


def route(logits, k: int, norm_topk_prob: bool):
    """Qwen2-MoE routing: softmax over ALL experts (float32) first, then keep the top k.

    Returns probs (T, E) float32, weights (T, k) in the logits' dtype, experts (T, k). With norm_topk_prob false
    (Qwen2-57B-A14B) the weights are the raw probabilities and sum to less than 1. Qwen3-MoE differs.
    """
    probs = F.softmax(logits, dim=-1, dtype=torch.float32)  # (T, E)
    weights, experts = torch.topk(probs, k, dim=-1)  # (T, k) each, best first
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return probs, weights.to(logits.dtype), experts


def run_experts(experts, x, idx, weights):
    """Each token through its k experts (each a SwiGLU of width moe_intermediate_size), weighted and summed.

    experts: HF's fused module, gate_up_proj (E, 2I, H) with the gate rows first, down_proj (E, H, I).
    x: (T, H); idx, weights: (T, k) -> (T, H). Experts no token chose do no work.
    """
    out = torch.zeros_like(x)  # (T, H)
    with hooked(experts, x) as (x,):
        for e in idx.unique().tolist():
            token, slot = torch.where(idx == e)  # the n tokens routed to e, and in which of their k slots
            gate, up = F.linear(x[token], experts.gate_up_proj[e]).chunk(2, dim=-1)  # (n, I) each
            y = F.linear(experts.act_fn(gate) * up, experts.down_proj[e])  # (n, H)
            out.index_add_(0, token, y * weights[token, slot, None])
    return out


def is_moe(mlp) -> bool:
    """Qwen2-MoE configs may mix dense and MoE layers (decoder_sparse_step, mlp_only_layers)."""
    return hasattr(mlp, "experts") and hasattr(mlp, "gate")


@contextmanager
def hooked(module, *tensors):
    """Run accelerate's hook around code that uses `module`'s weights directly instead of calling it.

    On a model dispatched by accelerate (device_map="auto", offloading) a module's weights may live on another GPU,
    on the CPU or on disk until its forward runs. This enters the module's hook as its forward would: weights are
    brought in and `tensors` moved to its device; on exit they go back. Without a hook it changes nothing.
    """
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        yield tensors
        return
    tensors, _ = hook.pre_forward(module, *tensors)
    try:
        yield tensors
    finally:
        hook.post_forward(module, None)
