"""Qwen2-MoE routing shown whole: the router's softmax over all experts, the top-k it keeps with their weights, the
shared expert's sigmoid gate, and per layer the load on each expert, the routing entropy and the near-ties.

The block (forward.moe_block): probs = softmax(x @ gate.weight.T) over ALL E experts; the top-k experts get the
token with weights = their raw probabilities (norm_topk_prob false in Qwen2-57B-A14B, so they sum to less than 1);
a shared expert sees every token, scaled by sigmoid(shared_expert_gate(x)).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ._style import (
    MAX_TOKENS,
    at,
    base_layout,
    check_index,
    check_layer,
    check_trace,
    numpy,
    ref_line,
    require,
    token_axis,
    token_labels,
    window,
)

SITES_HINT = ["layers.*.moe.*"]
TEXT_CELLS = 1_500  # write the weight into chosen cells only while the grid is small enough to read


def check_moe_layer(trace, layer: int, view: str) -> int:
    """A layer index that is an MoE layer of this model, or an error saying which layers are."""
    layer = check_layer(trace, layer, view)
    arch = trace.arch
    if not arch.is_moe:
        raise ValueError(
            f"{view}: {arch.name} is a dense Qwen2 (no experts): load a Qwen2-MoE, e.g. qwen2_lab.load('tiny-moe')"
        )
    if layer not in arch.moe_layers:
        raise ValueError(f"{view}: layer {layer} is a dense layer; the MoE layers are {list(arch.moe_layers)}")
    return layer


def routing_margin(probs: torch.Tensor, k: int) -> torch.Tensor:
    """How far the k-th choice is ahead of the (k+1)-th: near 0 means a small change would swap an expert.
    probs [S, E] -> [S]."""
    top = probs.float().topk(min(k + 1, probs.shape[-1]), dim=-1).values  # (S, k+1)
    return top[:, k - 1] - top[:, k] if top.shape[-1] > k else torch.ones(probs.shape[0])


def routing_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each token's router distribution, in nats (ln E = perfectly undecided). [S, E] -> [S]."""
    p = probs.double()
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def expert_load(experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Share of all top-k assignments that went to each expert (the aux loss's f_e). [S, k] -> [E], sums to 1."""
    counts = torch.bincount(experts.flatten().long().cpu(), minlength=n_experts).double()  # (E,)
    return counts / counts.sum()


def _columns(*cols) -> np.ndarray:
    """Hover data of mixed types, one column each: (n, len(cols)) object array (numbers stay numbers)."""
    out = np.empty((len(cols[0]), len(cols)), dtype=object)
    for i, c in enumerate(cols):
        out[:, i] = list(c)
    return out


def moe_routing(trace, layer: int, *, positions=None, max_tokens: int = MAX_TOKENS) -> go.Figure:
    """Token x expert router probabilities in an MoE `layer`, the top-k marked with their weights, and the shared
    expert's gate per token.

    Needs layers.{layer}.moe.router_probs [S, E], .topk_experts and .topk_weights [S, k], .shared_gate [S].
    """
    view = "moe_routing"
    trace = check_trace(trace, view)
    layer = check_moe_layer(trace, layer, view)
    p = f"layers.{layer}.moe."
    require(trace, [p + s for s in ("router_probs", "topk_experts", "topk_weights", "shared_gate")], view, SITES_HINT)
    arch, probs = trace.arch, trace[p + "router_probs"]  # (S, E)
    pos, note = window(probs.shape[0], positions, max_tokens)
    idx = torch.tensor(pos)
    E, k = probs.shape[-1], trace[p + "topk_experts"].shape[-1]
    experts = trace[p + "topk_experts"][idx].cpu()  # (T, k)
    weights = numpy(trace[p + "topk_weights"][idx])  # (T, k)
    gate = numpy(trace[p + "shared_gate"][idx])  # (T,)
    labels = token_labels(trace.tokens)
    names = [at(labels, x) for x in pos]

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.8, 0.2], horizontal_spacing=0.03,
                        subplot_titles=["router probability (softmax over all experts)", "shared expert gate"])  # fmt: skip
    fig.add_trace(
        go.Heatmap(
            z=numpy(probs[idx]), x=list(range(E)), y=pos, colorscale="Greys", zmin=0, text=[[n] * E for n in names],
            colorbar=dict(title="router<br>probability", x=1.02),
            hovertemplate="token %{text}<br>expert %{x}<br>router probability %{z:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    rank = np.broadcast_to(np.arange(1, k + 1), experts.shape)  # (T, k)
    fig.add_trace(
        go.Scatter(
            x=experts.flatten().numpy(), y=np.repeat(pos, k), mode="text" if len(pos) * E <= TEXT_CELLS else "markers",
            text=[f"<b>{w:.2f}</b>" for w in weights.flatten()], textfont=dict(color="#d62728", size=10),
            marker=dict(symbol="square-open", size=8, color="#d62728", line=dict(width=2)),
            customdata=_columns(weights.flatten(), rank.flatten(), np.repeat(names, k)),
            name=f"top-{k} (weight)",
            hovertemplate="token %{customdata[2]}<br>choice %{customdata[1]}: expert %{x}<br>weight %{customdata[0]:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=gate, y=pos, orientation="h", marker_color="#2ca02c", name="shared expert gate", text=names,
               textposition="none", hovertemplate="token %{text}<br>sigmoid(shared_expert_gate(x)) %{x:.6f}<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    fig.update_yaxes(row=1, col=1, autorange="reversed", title_text="token", **token_axis(labels, pos, y=True))
    fig.update_xaxes(row=1, col=1, title_text="expert", dtick=1 if E <= 32 else 4)
    fig.update_xaxes(row=1, col=2, range=[0, 1], title_text="gate (0..1)")
    fig.update_layout(showlegend=False)
    weighting = "renormalised to sum to 1" if arch.norm_topk_prob else "raw probabilities, summing to less than 1"
    return base_layout(
        fig,
        f"Layer {layer} MoE: each token goes to its top-{k} of {E} experts; a gated shared expert sees every token",
        f"grey: router probability; red: the top-{k} chosen, with their weights ({weighting})",
        note,
        height=max(360, 150 + 18 * len(pos)),
        width=max(900, 360 + 26 * E),
    )


def moe_token(trace, layer: int, token: int) -> go.Figure:
    """One token's whole routing decision in an MoE `layer`: the router's probability for every expert, the top-k
    kept with their weights, the margin to the first expert left out, and the shared expert's gate.

    Needs the same sites as moe_routing.
    """
    view = "moe_token"
    trace = check_trace(trace, view)
    layer = check_moe_layer(trace, layer, view)
    p = f"layers.{layer}.moe."
    require(trace, [p + s for s in ("router_probs", "topk_experts", "topk_weights", "shared_gate")], view, SITES_HINT)
    probs = trace[p + "router_probs"]  # (S, E)
    token = check_index(token, probs.shape[0], "token", view)
    E, k = probs.shape[-1], trace[p + "topk_experts"].shape[-1]
    prob = numpy(probs[token])  # (E,)
    chosen = trace[p + "topk_experts"][token].cpu().tolist()  # k experts, best first
    weights = numpy(trace[p + "topk_weights"][token])  # (k,)
    gate = float(trace[p + "shared_gate"][token])
    margin = float(routing_margin(probs[token : token + 1], k)[0])
    name = at(token_labels(trace.tokens), token)

    colour = np.array(["#bbbbbb"] * E, dtype=object)
    colour[chosen] = "#d62728"
    fig = make_subplots(rows=1, cols=2, column_widths=[0.78, 0.22], horizontal_spacing=0.08,
                        subplot_titles=["router probability per expert", "what is added to the residual"])  # fmt: skip
    fig.add_trace(
        go.Bar(x=list(range(E)), y=prob, marker_color=list(colour), name="router probability",
               hovertemplate="expert %{x}<br>router probability %{y:.6f}<extra></extra>"),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=chosen, y=weights, mode="text", text=[f"#{i + 1}: {w:.3f}" for i, w in enumerate(weights)],
                   textposition="top center", name="weights", hoverinfo="skip", showlegend=False),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=["routed (Σ weights)", "shared (gate)"], y=[float(weights.sum()), gate],
               marker_color=["#d62728", "#2ca02c"], name="mix",
               hovertemplate="%{x}<br>%{y:.6f}<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    fig.update_xaxes(row=1, col=1, title_text="expert", dtick=1 if E <= 32 else 4)
    fig.update_yaxes(row=1, col=1, title_text="probability", rangemode="tozero")
    fig.update_yaxes(row=1, col=2, range=[0, 1.05])
    fig.update_layout(showlegend=False)
    return base_layout(
        fig,
        f"Layer {layer}: how the router sends {name} (red: its top-{k} of {E}, labelled with their weights)",
        f"margin between choice {k} and the first expert left out: {margin:.4f}"
        + (" (a near-tie)" if margin < 0.01 else ""),
        f"shared expert gate {gate:.4f}",
        height=440,
        width=max(700, 300 + 18 * E),
    )


def moe_expert_load(trace, *, positions=None, max_tokens: int = MAX_TOKENS) -> go.Figure:
    """Per MoE layer: the share of top-k picks each expert got, the routing entropy, and the margin between the k-th
    and (k+1)-th expert for each token (small = a near-tie that a small change would flip).

    Needs layers.{i}.moe.router_probs and .topk_experts for the MoE layers to show (those the trace kept).
    """
    view = "moe_expert_load"
    trace = check_trace(trace, view)
    arch = trace.arch
    if not arch.is_moe:
        raise ValueError(
            f"{view}: {arch.name} is a dense Qwen2 (no experts): load a Qwen2-MoE, e.g. qwen2_lab.load('tiny-moe')"
        )
    layers = [
        i
        for i in arch.moe_layers
        if f"layers.{i}.moe.router_probs" in trace and f"layers.{i}.moe.topk_experts" in trace
    ]
    if not layers:
        first = arch.moe_layers[0]
        require(trace, [f"layers.{first}.moe.router_probs", f"layers.{first}.moe.topk_experts"], view, SITES_HINT)
    E, k = arch.n_experts, arch.top_k
    probs = [trace[f"layers.{i}.moe.router_probs"] for i in layers]  # L x (S, E)
    load = torch.stack([expert_load(trace[f"layers.{i}.moe.topk_experts"], E) for i in layers]).numpy()  # (L, E)
    mean_prob = torch.stack([pr.double().mean(0).cpu() for pr in probs]).numpy()  # (L, E): the aux loss's P_e
    aux = E * (load * mean_prob).sum(-1)  # (L,): 1 when perfectly balanced
    entropy = torch.stack([routing_entropy(pr).mean().cpu() for pr in probs]).numpy()  # (L,)
    S = probs[0].shape[0]
    pos, note = window(S, positions, max_tokens)
    margin = torch.stack([routing_margin(pr[torch.tensor(pos)], k).cpu() for pr in probs]).numpy()  # (L, T)
    labels = token_labels(trace.tokens)

    fig = make_subplots(
        rows=2, cols=2, column_widths=[0.7, 0.3], row_heights=[0.55, 0.45], vertical_spacing=0.16, horizontal_spacing=0.16,
        specs=[[{}, {}], [{"colspan": 2}, None]],
        subplot_titles=["share of top-k picks per expert", "routing entropy (nats)", f"margin: choice {k} minus choice {k + 1}, per token"],
    )  # fmt: skip
    fig.add_trace(
        go.Heatmap(
            z=load, x=list(range(E)), y=layers, colorscale="Oranges", zmin=0, customdata=mean_prob,
            colorbar=dict(title="share of<br>picks", x=0.61, y=0.78, len=0.45),
            hovertemplate=f"layer %{{y}}, expert %{{x}}<br>share of picks %{{z:.6f}} (balanced: {1 / E:.4f})"
            "<br>mean router probability %{customdata:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=entropy, y=layers, mode="lines+markers", customdata=aux, name="entropy",
            hovertemplate=f"layer %{{y}}<br>mean routing entropy %{{x:.6f}} nats (max ln {E} = {np.log(E):.4f})"
            "<br>aux balance E·Σ f·P %{customdata:.6f} (1 = balanced)<extra></extra>",
        ),
        row=1, col=2,
    )  # fmt: skip
    ref_line(fig, x=float(np.log(E)), text=f"ln {E}: undecided ", row=1, col=2, color="#777777", dash="dot")
    fig.add_trace(
        go.Heatmap(
            z=margin, x=pos, y=layers, colorscale="Viridis", zmin=0, customdata=np.array([[at(labels, x) for x in pos]] * len(layers)),
            colorbar=dict(title="margin", x=1.0, y=0.22, len=0.42),
            hovertemplate="layer %{y}, token %{customdata}<br>margin %{z:.6f}<extra></extra>",
        ),
        row=2, col=1,
    )  # fmt: skip
    fig.update_xaxes(row=1, col=1, title_text="expert", dtick=1 if E <= 32 else 8)
    fig.update_xaxes(row=1, col=2, title_text="nats", rangemode="tozero")
    fig.update_xaxes(row=2, col=1, title_text="token", **token_axis(labels, pos))
    for r, c in ((1, 1), (1, 2), (2, 1)):
        fig.update_yaxes(
            row=r,
            col=c,
            title_text="layer" if c == 1 else None,
            autorange="reversed",
            dtick=1 if len(layers) <= 30 else 8,
        )
    fig.update_layout(showlegend=False)
    return base_layout(
        fig,
        f"Expert load across {len(layers)} MoE layers: is routing balanced, decided, or near a tie? ({E} experts, top-{k})",
        "dark margins: tokens whose last chosen expert barely beat the first one left out",
        note,
        height=max(620, 320 + 14 * len(layers) * 2),
        width=1050,
    )
