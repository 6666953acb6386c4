"""Qwen2's forward pass, step by step, as a learner would write it.

The whole model: embeddings, then for each decoder layer RMSNorm -> attention (q/k/v with Qwen2's bias, RoPE,
grouped-query attention) -> residual -> RMSNorm -> SwiGLU MLP (or the MoE block with its shared expert) -> residual,
then the final norm and lm_head. It computes exactly what `transformers`' Qwen2ForCausalLM and Qwen2MoeForCausalLM
compute (tests/test_forward.py checks every site at 1e-5 in float32), but every stage is a few visible lines
instead of a fused kernel.

It holds no weights of its own: it is handed the HF model and calls its submodules (`self_attn.q_proj`,
`mlp.gate_proj`, ...) and reads their weights in place. So it runs at any size, on any device, and on models that
accelerate has spread over several GPUs or offloaded to disk (see `hooked` at the end).

`qwen2_forward` is a generator that reports every stage with `x = yield site, x` (site names: qwen2_lab/trace.py).
Whoever runs it sees each tensor and sends back the one the forward goes on with: the same tensor, or a changed one.
That line is the one place where edits enter (qwen2_lab/recorder.py applies them); `run` drives a forward with a function that does
the looking and the changing. The same code serves `lab.trace` (keep some sites), `lab.stages` (walk them one by one),
generation and the tests.

The other thing that enters in one place is the KV cache (`cache`, an HF `DynamicCache`): when generating, each new
token's keys and values are appended to it in `self_attention`, and the new queries attend over every cached key.

Shapes in the comments: B batch, S new tokens, T = cached + new tokens, H hidden, nH query heads, nKV KV heads,
hd head_dim, I intermediate, E experts, k experts per token, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

Stages = Generator[tuple[str, torch.Tensor], torch.Tensor, torch.Tensor]  # yields (site, x), is sent x back


def everything(site: str) -> bool:
    return True


def qwen2_forward(
    model, input_ids: torch.Tensor, wants: Callable[[str], bool] = everything, *, cache=None, all_logits: bool = True
) -> Stages:
    """Report every stage of the forward pass of `input_ids` (B, S); the last is the logits, also returned.

    `wants(site)` lets the forward skip work nobody asked for: attention is computed by hand (keeping the [S, T]
    pattern) only where a scores or pattern site is wanted, and with the fused kernel elsewhere.
    `cache`: an HF `DynamicCache` to generate with; positions continue from its length, and it grows by S tokens.
    `all_logits=False` computes the logits of the last position only (all that generation needs), as HF does.
    """
    m = model.model
    h = m.embed_tokens(input_ids)  # (B, S, H): one row per token, no scaling in Qwen2
    h = yield "embed", h
    start = 0 if cache is None else cache.get_seq_length()  # tokens already in the cache
    positions = torch.arange(start, start + input_ids.shape[1], device=h.device)[None]  # (1, S)
    cos, sin = m.rotary_emb(h, positions)  # (1, S, hd) each; YaRN's attention factor is already in them
    cos = yield "rope.cos", cos
    sin = yield "rope.sin", sin
    for i, layer in enumerate(m.layers):
        h = yield from decoder_layer(layer, f"layers.{i}.", h, cos, sin, wants, cache)  # (B, S, H)
    h = rms_norm(h, m.norm)  # (B, S, H)
    h = yield "final_norm", h
    logits = unembed(model, h if all_logits else h[:, -1:])  # (B, S or 1, V); tied to embed_tokens in 0.5B, 1.5B
    logits = yield "logits", logits
    return logits


def decoder_layer(layer, p: str, h, cos, sin, wants, cache=None) -> Stages:
    """One pre-norm decoder layer: h + attn(norm(h)), then h + mlp(norm(h)). h: (B, S, H)."""
    with hooked(layer, h, cos, sin) as (h, cos, sin):
        h = yield p + "resid_pre", h
        x = rms_norm(h, layer.input_layernorm)  # (B, S, H)
        x = yield p + "attn_norm", x
        h = h + (yield from self_attention(layer.self_attn, p + "attn.", x, cos, sin, wants, cache))  # (B, S, H)
        h = yield p + "resid_mid", h
        x = rms_norm(h, layer.post_attention_layernorm)  # (B, S, H)
        x = yield p + "mlp_norm", x
        block = moe_block if is_moe(layer.mlp) else swiglu_mlp
        h = h + (yield from block(layer.mlp, p, x))  # (B, S, H)
        h = yield p + "resid_post", h
    return h


def self_attention(attn, p: str, x, cos, sin, wants, cache=None) -> Stages:
    """Grouped-query attention with RoPE. x: (B, S, H) -> (B, S, H)."""
    B, S, _ = x.shape
    hd = attn.head_dim
    q = attn.q_proj(x).view(B, S, -1, hd).transpose(1, 2)  # (B, nH, S, hd); q_proj has a bias in Qwen2
    k = attn.k_proj(x).view(B, S, -1, hd).transpose(1, 2)  # (B, nKV, S, hd); so do k_proj and v_proj
    v = attn.v_proj(x).view(B, S, -1, hd).transpose(1, 2)  # (B, nKV, S, hd)
    q = yield p + "q", q
    k = yield p + "k", k
    v = yield p + "v", v
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # same shapes, each pair of dims rotated by position
    q = yield p + "q_rot", q
    k = yield p + "k_rot", k
    if cache is not None:  # generating: this step's keys and values join the cache, and the queries read them all
        k, v = cache.update(k, v, attn.layer_idx)  # (B, nKV, T, hd), T = cached + S
    k = repeat_kv(k, attn.num_key_value_groups)  # (B, nH, T, hd): each KV head serves a group of query heads
    v = repeat_kv(v, attn.num_key_value_groups)  # (B, nH, T, hd)
    if wants(p + "scores") or wants(p + "pattern"):
        scores = causal_scores(q, k, attn.scaling)  # (B, nH, S, T)
        scores = yield p + "scores", scores
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # (B, nH, S, T); rows sum to 1
        pattern = yield p + "pattern", pattern
        z = pattern @ v  # (B, nH, S, hd)
    else:  # the same maths in one fused kernel, as HF's default sdpa does: no [S, T] matrix is materialised
        z = fused_attention(q, k, v, attn.scaling)  # (B, nH, S, hd)
    z = yield p + "z", z
    out = attn.o_proj(z.transpose(1, 2).reshape(B, S, -1))  # (B, S, H); o_proj has no bias
    out = yield p + "out", out
    return out


def swiglu_mlp(mlp, p: str, x) -> Stages:
    """SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x)), no biases. x: (B, S, H) -> (B, S, H)."""
    gate = mlp.gate_proj(x)  # (B, S, I)
    up = mlp.up_proj(x)  # (B, S, I)
    gate = yield p + "mlp.gate", gate
    up = yield p + "mlp.up", up
    act = mlp.act_fn(gate) * up  # (B, S, I): SiLU opens or closes each channel of up
    act = yield p + "mlp.act", act
    out = mlp.down_proj(act)  # (B, S, H)
    out = yield p + "mlp.out", out
    return out


def moe_block(moe, p: str, x) -> Stages:
    """Qwen2-MoE: a router sends each token to top-k of E experts; a shared expert, gated, sees every token."""
    logits = router_logits(x, moe.gate)  # (B, S, E)
    logits = yield p + "moe.router_logits", logits
    probs = F.softmax(logits, dim=-1, dtype=torch.float32)  # (B, S, E): over ALL experts first, in float32
    probs = yield p + "moe.router_probs", probs
    experts = top_experts(probs, moe.gate.top_k)  # (B, S, k): then the k most probable, best first
    experts = yield p + "moe.topk_experts", experts
    weights = expert_weights(probs, experts, moe.gate.norm_topk_prob).to(logits.dtype)  # (B, S, k)
    weights = yield p + "moe.topk_weights", weights
    routed = run_experts(moe.experts, x, experts, weights)  # (B, S, H)
    routed = yield p + "moe.routed_out", routed
    shared = swiglu(moe.shared_expert, x)  # (B, S, H): an ordinary SwiGLU MLP, as wide as 8 experts in 57B-A14B
    shared = yield p + "moe.shared_out", shared
    gate = torch.sigmoid(moe.shared_expert_gate(x))[..., 0]  # (B, S): one number in (0, 1) per token
    gate = yield p + "moe.shared_gate", gate
    out = routed + gate[..., None] * shared  # (B, S, H)
    out = yield p + "moe.out", out
    return out


def run(stages: Stages, visit: Callable[[str, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Drive a forward to its end: `visit(site, x)` sees every stage and returns the tensor to go on with (x itself,
    or an edited one). Returns the logits."""
    site, x = next(stages)
    while True:
        try:
            site, x = stages.send(visit(site, x))
        except StopIteration as end:
            return end.value


def unchanged(site: str, x: torch.Tensor) -> torch.Tensor:
    """The `visit` of a plain forward: look at nothing, change nothing."""
    return x


# ---- reading the residual out: the forward's last steps, for any residual -----------------------------------------


def unembed(model, x, rows=None):
    """lm_head: a score per vocabulary entry, or only for the token ids `rows` (two rows of a [V, H] matrix instead
    of all of them). x: (..., H) -> (..., V) or (..., len(rows)). Both run under accelerate's hook, so the weight may
    live on another GPU or on disk."""
    if rows is None:
        return model.lm_head(x)  # the module itself: its hook brings the weight in
    with hooked(model.lm_head, x) as (x,):
        return F.linear(x, model.lm_head.weight[list(rows)].to(x.dtype))


def read_out(model, h, rows=None, *, scale=None):
    """What the model would predict if residual h (..., H) were the last layer's: the final norm, then lm_head (only
    the rows `rows` when given). The logit lens, patching and attribution all read residuals here.

    scale: hold the final norm's 1/rms at this value instead of computing it from h (then the read is linear in h,
    in float32: what direct logit attribution splits into shares)."""
    norm = model.model.norm
    if scale is None:
        return unembed(model, rms_norm(h, norm), rows)
    with hooked(norm, h) as (h,):
        x = norm.weight.float() * h.float() * scale  # (..., H)
    return unembed(model, x, rows)


def lens_top(model, resid, k: int):
    """The logit lens: the k most probable next tokens read out of residuals (..., H): (probs, ids), (..., k) each."""
    return torch.softmax(read_out(model, resid).float(), dim=-1).topk(k, dim=-1)


def head_outputs(o_proj, z):
    """What each query head writes into the residual: o_proj applied to one head's output at a time.
    z: (nH, ..., hd) -> (nH, ..., H); the heads' outputs add up to o_proj of all of them (it has no bias)."""
    with hooked(o_proj, z) as (z,):
        w = o_proj.weight.to(z.dtype)  # (H, nH * hd)
        w = w.view(w.shape[0], z.shape[0], z.shape[-1])  # (H, nH, hd)
        return torch.einsum("n...d,hnd->n...h", z, w)


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
    """(B, nKV, T, hd) -> (B, nKV * n_rep, T, hd): KV head j serves query heads j*n_rep ... j*n_rep + n_rep - 1."""
    B, n_kv, T, hd = x.shape
    return x[:, :, None].expand(B, n_kv, n_rep, T, hd).reshape(B, n_kv * n_rep, T, hd)


def future_mask(S: int, T: int, device=None):
    """(S, T) True where key j lies in query i's future. The S queries are the last S of the T positions."""
    return torch.ones(S, T, dtype=torch.bool, device=device).triu(T - S + 1)


def causal_scores(q, k, scale: float):
    """q.k * scale, with every key in the query's future set to -inf. q: (B, nH, S, hd), k: (B, nH, T, hd) ->
    (B, nH, S, T)."""
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, nH, S, T)
    return scores.masked_fill(future_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))


def fused_attention(q, k, v, scale: float):
    """softmax(causal_scores(q, k)) @ v in one kernel (torch's scaled_dot_product_attention), as HF's sdpa runs it.
    q: (B, nH, S, hd), k, v: (B, nH, T, hd) -> (B, nH, S, hd)."""
    S, T = q.shape[-2], k.shape[-2]
    if S == T:  # no cache: the usual causal triangle
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    mask = None if S == 1 else ~future_mask(S, T, q.device)  # one new token may read every cached key
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def swiglu(mlp, x):
    """An HF SwiGLU MLP module applied to x, without reporting stages (the MoE's shared expert)."""
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def router_logits(x, gate):
    """The router is one matrix, no bias: a score per expert. x: (..., H), gate.weight: (E, H) -> (..., E)."""
    with hooked(gate, x) as (x,):
        return F.linear(x, gate.weight)


def top_experts(probs, k: int):
    """The k most probable experts of each token, best first. probs: (..., E) -> (..., k)."""
    return torch.topk(probs, k, dim=-1).indices


def expert_weights(probs, experts, norm_topk_prob: bool):
    """The chosen experts' weights: their router probabilities, renormalised to sum to 1 only if norm_topk_prob.

    probs: (..., E), experts: (..., k) -> (..., k). With norm_topk_prob false (Qwen2-57B-A14B) the weights are the
    raw probabilities and sum to less than 1.
    """
    weights = probs.gather(-1, experts)
    return weights / weights.sum(dim=-1, keepdim=True) if norm_topk_prob else weights


def route(logits, k: int, norm_topk_prob: bool):
    """Qwen2-MoE routing: softmax over ALL experts (float32) first, then keep the top k. Qwen3-MoE differs.

    Returns probs (T, E) float32, weights (T, k) in the logits' dtype, experts (T, k).
    """
    probs = F.softmax(logits, dim=-1, dtype=torch.float32)  # (T, E)
    experts = top_experts(probs, k)  # (T, k)
    return probs, expert_weights(probs, experts, norm_topk_prob).to(logits.dtype), experts


def expert(experts, e: int, x):
    """Expert e of HF's fused module, a SwiGLU of width moe_intermediate_size, on tokens x: (n, H) -> (n, H).

    experts.gate_up_proj: (E, 2I, H) with the gate rows first; experts.down_proj: (E, H, I).
    """
    gate, up = F.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)  # (n, I) each
    return F.linear(experts.act_fn(gate) * up, experts.down_proj[e])  # (n, H)


def run_experts(experts, x, idx, weights):
    """Each token through its k experts, weighted and summed. x: (..., H); idx, weights: (..., k) -> (..., H).

    Experts no token chose do no work.
    """
    shape, k = x.shape, idx.shape[-1]
    x, idx, weights = x.reshape(-1, shape[-1]), idx.reshape(-1, k), weights.reshape(-1, k)  # (T, H), (T, k), (T, k)
    out = torch.zeros_like(x)  # (T, H) for the T tokens of the batch
    with hooked(experts, x) as (x,):
        for e in idx.unique().tolist():
            token, slot = torch.where(idx == e)  # the n tokens routed to e, and in which of their k slots
            out.index_add_(0, token, expert(experts, e, x[token]) * weights[token, slot, None])
    return out.view(shape)


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
    # accelerate's add_hook_to_module stores the hook as `_hf_hook` and offers no public getter; its own code and
    # transformers read it the same way. The one private attribute this file touches.
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        yield tensors
        return
    tensors, _ = hook.pre_forward(module, *tensors)
    try:
        yield tensors
    finally:
        hook.post_forward(module, None)
