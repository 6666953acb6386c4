"""Exactness the user can see: HF's own forward beside the lab's trace, site by site.

`compare_with_hf(lab, inputs)` runs the unmodified transformers model once, with eager attention so that it returns
its attention weights, `output_hidden_states`, `output_router_logits`, and forward hooks on its modules (the
outputs of q_proj, gate_proj, the router, the experts, ...). Each HF value is matched to the site it equals and
compared with what `lab.trace` computes. The report lists the largest difference per site and the first site, in
forward order, where the two disagree beyond the dtype's tolerance: a layer-by-layer mismatch finder.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .forward import everything, is_moe, qwen2_forward, run
from .trace import SiteFilter, split_site

TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (1e-3, 1e-3)}  # rtol, atol


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) within which two correct computations in `dtype` agree: 1e-5 in float32; in bfloat16, a GPU's
    usual dtype, with 8 bits of mantissa, 1.6e-2 and 1e-2 (1e-3 for any other dtype). Every comparison in the lab,
    its notebooks and bench/gpu_check.py reads it here."""
    return TOLERANCE.get(dtype, (1e-3, 1e-3))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, *, at_least: float = 0.0) -> None:
    """Assert that two computations of one value agree as closely as two correct ones in `dtype` do: element by
    element at tolerance(dtype) (and at least `at_least`) in float32; in a 16-bit dtype also within rtol of the
    tensor's largest value, since a sum of rounded terms is off by the rounding of the sum's size, not of its own."""
    rtol, atol = (max(t, at_least) for t in tolerance(dtype))
    finite = expected[expected.isfinite()]  # a masked score is -inf in both
    if dtype.itemsize < 4 and finite.numel():
        atol = max(atol, rtol * float(finite.abs().max()))
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol)


@dataclass
class Row:
    site: str
    source: str  # where HF's value came from
    max_abs_diff: float
    ok: bool


@dataclass
class Comparison:
    """The result of `compare_with_hf`: one row per compared site, in forward order."""

    rows: list[Row] = field(default_factory=list)
    rtol: float = 1e-5
    atol: float = 1e-5

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.rows if r.source != "router.indices"), default=0.0)

    @property
    def first_mismatch(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)

    def __str__(self) -> str:
        head = f"{len(self.rows)} sites compared with transformers (rtol {self.rtol:g}, atol {self.atol:g}): "
        bad = self.first_mismatch
        head += "all equal" if bad is None else f"FIRST MISMATCH at {bad.site} (layer {split_site(bad.site)[0]})"
        head += f"; largest difference {self.max_abs_diff:.3g}"
        worst = {}
        for r in self.rows:  # the largest difference per kind of site, over all layers
            kind = split_site(r.site)[1]
            if kind not in worst or r.max_abs_diff > worst[kind].max_abs_diff:
                worst[kind] = r
        lines = [
            f"  {k:<22} {r.max_abs_diff:10.3g}  {'ok' if r.ok else 'MISMATCH'}  (HF: {r.source})"
            for k, r in worst.items()
        ]
        return head + "\n" + "\n".join(lines)

    _repr_pretty_ = lambda self, p, cycle: p.text(str(self))  # noqa: E731


@torch.no_grad()
def compare_with_hf(lab, inputs, *, layers=None, rtol: float | None = None, atol: float | None = None) -> Comparison:
    """Run HF's forward and the lab's on `inputs`; compare every site HF exposes. `layers` limits the work."""
    model = lab.model
    ids = lab.encode(inputs)
    keep = SiteFilter(None, layers)
    keep.check(lab.arch)
    default_rtol, default_atol = tolerance(model.dtype)
    result = Comparison(rtol=rtol or default_rtol, atol=atol or default_atol)

    hf: dict = {}
    handles = _hook_hf(model, hf, keep)
    try:
        with attention_implementation(model, "eager"):  # sdpa returns no attention weights
            out = model(
                input_ids=ids[None], output_hidden_states=True, output_attentions=True, output_router_logits=True
            )
    finally:
        for h in handles:
            h.remove()

    n = lab.arch.n_layers
    for i, hs in enumerate(out.hidden_states):  # embeddings, each layer's input, and (last) the final norm
        hf.setdefault("final_norm" if i == n else f"layers.{i}.resid_pre", ("hidden_states", hs))
    for i, a in enumerate(out.attentions):
        hf[f"layers.{i}.attn.pattern"] = ("attentions", a)
    for i, r in zip(lab.arch.moe_layers, getattr(out, "router_logits", None) or ()):
        hf[f"layers.{i}.moe.router_logits"] = ("router_logits", r)
    hf["logits"] = ("logits", out.logits)

    def check(site, ours):
        if site in hf and keep.wants(site):
            source, theirs = hf.pop(site)
            result.rows.append(_row(site, source, ours[0], _per_sequence(theirs, ours[0]), result))
        return ours

    run(qwen2_forward(model, ids[None], everything), check)
    return result


def _row(site, source, ours, theirs, result) -> Row:
    ours, theirs = ours.detach(), theirs.detach().to(ours.device)
    if ours.shape != theirs.shape:  # a layout bug: reported as a mismatch, never reshaped to fit
        return Row(site, f"{source} (shape {tuple(theirs.shape)}, ours {tuple(ours.shape)})", float("inf"), False)
    if source == "router.indices":  # which experts: an exact match or not
        wrong = float((ours != theirs).sum())
        return Row(site, source, wrong, wrong == 0)
    ours, theirs = ours.float(), theirs.float()
    diff = float((ours - theirs).abs().max()) if ours.numel() else 0.0
    return Row(site, source, diff, bool(torch.allclose(ours, theirs, rtol=result.rtol, atol=result.atol)))


def _per_sequence(theirs: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """HF's value for our one sequence: its batch dimension dropped. Layouts are converted by each hook's `pick`,
    so a shape that still differs is a mismatch, never silently reshaped."""
    if theirs.dim() == like.dim() + 1 and theirs.shape[0] == 1:
        theirs = theirs[0]
    return theirs


def _heads(t: torch.Tensor, hd: int) -> torch.Tensor:
    """(1, S, n*hd) -> (n, S, hd)."""
    return t[0].view(t.shape[1], -1, hd).transpose(0, 1)


def _hook_hf(model, hf: dict, keep: SiteFilter) -> list:
    """Forward hooks on HF's modules, storing each output under the site it equals."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    handles, rope = [], {}

    def on(module, site, source, pick=lambda args, out: out):
        def hook(mod, args, out):
            if keep.wants(site):
                hf[site] = (source, pick(args, out))

        handles.append(module.register_forward_hook(hook))

    m = model.model
    on(m.embed_tokens, "embed", "embed_tokens")

    def rotary(mod, args, out):
        rope.update(cos=out[0], sin=out[1])
        hf["rope.cos"], hf["rope.sin"] = ("rotary_emb", out[0]), ("rotary_emb", out[1])

    handles.append(m.rotary_emb.register_forward_hook(rotary))
    for i, layer in enumerate(m.layers):
        p, attn, hd = f"layers.{i}.", layer.self_attn, layer.self_attn.head_dim
        on(layer.input_layernorm, p + "attn_norm", "input_layernorm")
        for name in "qkv":
            on(getattr(attn, f"{name}_proj"), p + f"attn.{name}", f"{name}_proj", lambda a, o, hd=hd: _heads(o, hd))

        def rotated(mod, args, out, p=p):  # HF's own apply_rotary_pos_emb on HF's own q and k
            if keep.wants(p + "attn.q_rot"):
                q, k = hf[p + "attn.q"][1][None], hf[p + "attn.k"][1][None]  # (1, n, S, hd)
                q_rot, k_rot = apply_rotary_pos_emb(q, k, rope["cos"], rope["sin"])
                hf[p + "attn.q_rot"] = ("apply_rotary_pos_emb", q_rot)
                hf[p + "attn.k_rot"] = ("apply_rotary_pos_emb", k_rot)

        handles.append(attn.v_proj.register_forward_hook(rotated))
        on(attn.o_proj, p + "attn.z", "o_proj input", lambda a, o, hd=hd: _heads(a[0], hd))
        on(attn.o_proj, p + "attn.out", "o_proj")
        on(layer.post_attention_layernorm, p + "mlp_norm", "post_attention_layernorm")
        mlp = layer.mlp
        if is_moe(mlp):
            on(mlp.gate, p + "moe.topk_weights", "router.scores", lambda a, o: o[1])
            on(mlp.gate, p + "moe.topk_experts", "router.indices", lambda a, o: o[2])
            on(mlp.experts, p + "moe.routed_out", "experts")
            on(mlp.shared_expert, p + "moe.shared_out", "shared_expert")
            on(
                mlp.shared_expert_gate,
                p + "moe.shared_gate",
                "sigmoid(shared_expert_gate)",
                lambda a, o: o.sigmoid()[:, 0],
            )
            on(mlp, p + "moe.out", "mlp (sparse MoE block)")
        else:
            on(mlp.gate_proj, p + "mlp.gate", "gate_proj")
            on(mlp.up_proj, p + "mlp.up", "up_proj")
            on(mlp.down_proj, p + "mlp.act", "down_proj input", lambda a, o: a[0])
            on(mlp.down_proj, p + "mlp.out", "down_proj")
        on(layer, p + "resid_post", "decoder layer")
    on(m.norm, "final_norm", "norm")
    return handles


@contextmanager
def attention_implementation(model, name: str):
    """Run `model` with HF attention implementation `name` (public `set_attn_implementation`), then restore the one it
    had. transformers has no public getter for the current one, so it is read from `config._attn_implementation`:
    the only private attribute read here, in this one place."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)
