"""Direct logit attribution: who wrote the answer's logit, head by head, MLP by MLP, expert by expert.

    dla = logit_attribution(lab, text, answer=(right, wrong))
    dla.heads          # [layers, query heads]: each head's share of the logit difference
    dla.total, dla.logit   # the shares add up to the model's own logit difference

See `Attribution` for what is exact and what the final norm's scaling leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .forward import expert, head_outputs, hooked, is_moe, read_out
from .inputs import answer_ids
from .trace import Trace


@dataclass
class Attribution:
    """Who wrote the answer's logit (difference) at `position`, each component read straight through the final norm.

    The last residual is the sum of the embedding, every head's output (o_proj is linear, without bias) and every
    MLP's or expert's output. With the final norm's scale 1/rms(residual) held at its actual value, the logit is
    linear in that sum: the contributions below add up to the logit exactly. (Attribution ignores that each part
    also moves the rms: that is the final norm's scaling.)

    embed: the token embedding's share. heads: [L, nH]. mlps: [L] the MLP (dense layer) or the whole MoE block.
    experts: {layer: [E]} the routed experts' shares (0 for experts the token did not use). shared: {layer: the
    gated shared expert's share}. total: the sum of all shares; logit: the model's own value; scale: 1/rms.
    """

    position: int
    answer: tuple
    embed: float
    heads: torch.Tensor
    mlps: torch.Tensor
    experts: dict[int, torch.Tensor]
    shared: dict[int, float]
    total: float
    logit: float
    scale: float
    group_size: int = 1


@torch.no_grad()
def logit_attribution(lab, inputs, answer, *, position: int = -1) -> Attribution:
    """Direct logit attribution of `answer` (a token, or (right, wrong) for a difference) at `position`."""
    arch, model = lab.arch, lab.model
    ids = answer_ids(lab.tokenizer, answer, arch.vocab)
    trace = lab.trace(inputs, sites=attribution_sites(arch))
    pos = position % len(trace.tokens)
    final = trace[f"layers.{arch.n_layers - 1}.resid_post"][pos].float()  # (H,)
    scale = float(torch.rsqrt(final.pow(2).mean() + model.model.norm.variance_epsilon))

    def share(x):  # x: (..., H) -> (...): the read-out with the final norm's scale held, linear in x
        logits = read_out(model, x, ids, scale=scale).cpu()  # (..., 1 or 2)
        return logits[..., 0] - logits[..., 1] if len(ids) == 2 else logits[..., 0]

    heads, mlps, experts, shared = torch.zeros(arch.n_layers, arch.n_heads), torch.zeros(arch.n_layers), {}, {}
    for i, layer in enumerate(model.model.layers):
        z = trace[f"layers.{i}.attn.z"][:, pos].float()  # (nH, hd)
        heads[i] = share(head_outputs(layer.self_attn.o_proj, z))  # (nH,)
        if is_moe(layer.mlp):
            experts[i], shared[i] = expert_shares(layer.mlp, trace, i, pos, share, arch.n_experts)
            mlps[i] = experts[i].sum() + shared[i]
        else:
            mlps[i] = share(trace[f"layers.{i}.mlp.out"][pos])
    embed = float(share(trace["embed"][pos]))
    total = embed + float(heads.sum()) + float(mlps.sum())
    logits = trace.logits[pos].float()
    logit = float(logits[ids[0]] - logits[ids[1]]) if len(ids) == 2 else float(logits[ids[0]])
    return Attribution(pos, ids, embed, heads, mlps, experts, shared, total, logit, scale, arch.group_size)


def attribution_sites(arch) -> list[str]:
    """What an attribution traces: the embedding, every head's output, every block's output (the experts' and the
    shared expert's parts in MoE layers) and the last residual (for the final norm's scale)."""
    sites = ["embed", "layers.*.attn.z", f"layers.{arch.n_layers - 1}.resid_post"]
    if len(arch.moe_layers) < arch.n_layers:
        sites.append("layers.*.mlp.out")
    if arch.moe_layers:
        sites += ["layers.*.mlp_norm", "layers.*.moe.topk_*", "layers.*.moe.shared_*"]
    return sites


def expert_shares(moe, trace: Trace, i: int, pos: int, share, n_experts: int) -> tuple[torch.Tensor, float]:
    """Each routed expert's share (weight x its output) and the gated shared expert's, for one token."""
    x = trace[f"layers.{i}.mlp_norm"][pos : pos + 1]  # (1, H)
    out = torch.zeros(n_experts)
    chosen, weights = trace[f"layers.{i}.moe.topk_experts"][pos], trace[f"layers.{i}.moe.topk_weights"][pos]
    with hooked(moe.experts, x) as (x,):
        for e, w in zip(chosen.tolist(), weights):
            out[e] = share(expert(moe.experts, e, x)[0] * w.to(x.device))
    gated = trace[f"layers.{i}.moe.shared_gate"][pos] * trace[f"layers.{i}.moe.shared_out"][pos]
    return out, float(share(gated))
