"""Qwen2-MoE routing shown whole: the router's softmax over all experts, the top-k it keeps with their weights, the
shared expert's sigmoid gate, and per layer the load on each expert, the routing entropy and the near-ties.

The block (forward.moe_block): probs = softmax(x @ gate.weight.T) over ALL E experts; the top-k experts get the
token with weights = their raw probabilities (norm_topk_prob false in Qwen2-57B-A14B, so they sum to less than 1);
a shared expert sees every token, scaled by sigmoid(shared_expert_gate(x)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from .style import (
    MAX_TOKENS,
    as_trace,
    at,
    base_layout,
    check_index,
    check_moe,
    layer_sites,
    layers_with,
    numpy,
    position_keys,
    ref_line,
    subplots,
    token_axis,
    token_labels,
    window,
)

SITES_HINT = ["layers.*.moe.*"]
ROUTING = ["moe.router_probs", "moe.topk_experts", "moe.topk_weights", "moe.shared_gate"]
TEXT_CELLS, TEXT_EXPERTS = 1_500, 12  # write weights into cells only while they are wide enough to read
CHOSEN = "#d62728"
GAP = 100  # px between stacked panels: the axis title above, the subplot title below


def routing_margin(probs: torch.Tensor, k: int) -> torch.Tensor:
    """How far the k-th choice is ahead of the (k+1)-th: near 0 means a small change would swap an expert.
    probs [S, E] -> [S]."""
    top = probs.float().topk(min(k + 1, probs.shape[-1]), dim=-1).values  # (S, k+1)
    return top[:, k - 1] - top[:, k] if top.shape[-1] > k else torch.ones(probs.shape[0], device=probs.device)


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


# ---- moe_routing ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoeRouting:
    """What moe_routing draws, for the shown positions."""

    layer: int
    positions: list[int]  # token positions shown
    labels: list[str]  # readable label of every token of the trace
    probs: np.ndarray  # [T, E]: router probability of every expert
    experts: np.ndarray  # [T, k]: the chosen experts, best first
    weights: np.ndarray  # [T, k]: their weights
    gate: np.ndarray  # [T]: the shared expert's gate
    norm_topk_prob: bool  # whether the weights were renormalised to sum to 1
    note: str  # which positions, when not all


def moe_routing_data(trace, layer: int, *, positions=None, max_tokens: int = MAX_TOKENS) -> MoeRouting:
    """The numbers of moe_routing (see there)."""
    trace, layer, (probs, experts, weights, gate) = layer_sites(trace, layer, ROUTING, "moe_routing", hint=SITES_HINT, moe=True)  # fmt: skip
    pos, note = window(probs.shape[0], positions, max_tokens)
    idx = torch.tensor(pos)
    return MoeRouting(
        layer, pos, token_labels(trace.tokens), numpy(probs[idx]), numpy(experts[idx]), numpy(weights[idx]),
        numpy(gate[idx]), trace.arch.norm_topk_prob, note,
    )  # fmt: skip


def draw_moe_routing(d: MoeRouting) -> go.Figure:
    """Token x expert probabilities in grey, the chosen cells outlined (with their weights while cells are wide
    enough), the shared gate as bars beside each token."""
    (T, E), k = d.probs.shape, d.experts.shape[-1]
    keys, names = position_keys(d.positions), [at(d.labels, p) for p in d.positions]
    write = T * E <= TEXT_CELLS and E <= TEXT_EXPERTS
    text = np.full((T, E), "", dtype=object)
    for t in range(T):
        text[t, d.experts[t]] = [f"{w:.2f}" for w in d.weights[t]]
    fig = subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.78, 0.22], horizontal_spacing=0.03,
                   subplot_titles=["router probability (softmax over all experts)", "shared expert gate"])  # fmt: skip
    fig.add_trace(
        go.Heatmap(
            z=d.probs, x=list(range(E)), y=keys, colorscale="Greys", zmin=0, customdata=[[n] * E for n in names],
            text=text if write else None, texttemplate="<b>%{text}</b>" if write else None, textfont=dict(size=11),
            colorbar=dict(title="router<br>probability"),
            hovertemplate="token %{customdata}<br>expert %{x}<br>router probability %{z:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    rank = np.broadcast_to(np.arange(1, k + 1), d.experts.shape)  # (T, k)
    fig.add_trace(
        go.Scatter(
            x=d.experts.flatten(), y=np.repeat(keys, k), mode="markers", name=f"top-{k} (weight)",
            marker=dict(symbol="square-open", size=22 if write else 8, color=CHOSEN, line=dict(width=2)),
            customdata=_columns(d.weights.flatten(), rank.flatten(), np.repeat(names, k)),
            hovertemplate="token %{customdata[2]}<br>choice %{customdata[1]}: expert %{x}<br>weight %{customdata[0]:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=d.gate, y=keys, orientation="h", marker_color="#2ca02c", name="shared expert gate", customdata=names,
               hovertemplate="token %{customdata}<br>sigmoid(shared_expert_gate(x)) %{x:.6f}<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    fig.update_yaxes(row=1, col=1, title_text="token", **token_axis(d.labels, d.positions, reverse=True))
    fig.update_xaxes(row=1, col=1, title_text="expert", dtick=1 if E <= 32 else 4, range=[-0.5, E - 0.5])
    fig.update_xaxes(row=1, col=2, range=[0, 1], title_text="gate (0..1)")
    fig.update_layout(showlegend=False)
    weighting = "renormalised to sum to 1" if d.norm_topk_prob else "raw probabilities, summing to less than 1"
    return base_layout(
        fig,
        f"Layer {d.layer} MoE: each token goes to its top-{k} of {E} experts; a gated shared expert sees every token",
        f"grey: router probability; red boxes: the top-{k} chosen"
        + (", with their weights" if write else " (hover for their weights)")
        + f" ({weighting})",
        d.note,
        height=max(260, 26 * T),
        top=24,
    )


def moe_routing(trace, layer: int, **options) -> go.Figure:
    """Token x expert router probabilities in an MoE `layer`, the top-k marked with their weights, and the shared
    expert's gate per token.

    Needs layers.{layer}.moe.router_probs [S, E], .topk_experts and .topk_weights [S, k], .shared_gate [S].
    Options (moe_routing_data): positions= a window, max_tokens=.
    """
    return draw_moe_routing(moe_routing_data(trace, layer, **options))


# ---- moe_token --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoeToken:
    """What moe_token draws: one token's routing decision."""

    layer: int
    token: int
    name: str  # the token as a title names it
    probs: np.ndarray  # [E]: router probability of every expert
    experts: list[int]  # the k chosen, best first
    weights: np.ndarray  # [k]: their weights
    gate: float  # the shared expert's gate
    margin: float  # routing_margin: choice k minus the first expert left out


def moe_token_data(trace, layer: int, token: int) -> MoeToken:
    """The numbers of moe_token (see there)."""
    trace, layer, (probs, experts, weights, gate) = layer_sites(trace, layer, ROUTING, "moe_token", hint=SITES_HINT, moe=True)  # fmt: skip
    token = check_index(token, probs.shape[0], "token", "moe_token")
    k = experts.shape[-1]
    return MoeToken(
        layer, token, at(token_labels(trace.tokens), token), numpy(probs[token]), experts[token].cpu().tolist(),
        numpy(weights[token]), float(gate[token]), float(routing_margin(probs[token : token + 1], k)[0]),
    )  # fmt: skip


def draw_moe_token(d: MoeToken) -> go.Figure:
    """The router's bar for every expert (the chosen in red, labelled), and what is added: routed and shared."""
    E, k = len(d.probs), len(d.experts)
    colour = np.array(["#bbbbbb"] * E, dtype=object)
    colour[d.experts] = CHOSEN
    fig = subplots(rows=1, cols=2, column_widths=[0.75, 0.25], horizontal_spacing=0.1,
                   subplot_titles=["router probability per expert", "added to the residual"])  # fmt: skip
    fig.add_trace(
        go.Bar(x=list(range(E)), y=d.probs, marker_color=list(colour), name="router probability",
               hovertemplate="expert %{x}<br>router probability %{y:.6f}<extra></extra>"),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=d.experts, y=d.weights, mode="text", text=[f"#{i + 1}: {w:.3f}" for i, w in enumerate(d.weights)],
                   textposition="top center", name="weights", hoverinfo="skip", showlegend=False),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=["routed<br>(Σ weights)", "shared<br>(gate)"], y=[float(d.weights.sum()), d.gate],
               marker_color=[CHOSEN, "#2ca02c"], name="mix", hovertemplate="%{x}<br>%{y:.6f}<extra></extra>"),
        row=1, col=2,
    )  # fmt: skip
    fig.update_xaxes(row=1, col=1, title_text="expert", dtick=1 if E <= 32 else 4)
    fig.update_yaxes(row=1, col=1, title_text="probability", range=[0, 1.15 * float(d.probs.max())])
    fig.update_yaxes(row=1, col=2, range=[0, 1.05])
    fig.update_layout(showlegend=False)
    return base_layout(
        fig,
        f"Layer {d.layer}: how the router sends {d.name} (red: its top-{k} of {E}, labelled with their weights)",
        f"margin between choice {k} and the first expert left out: {d.margin:.4f}"
        + (" (a near-tie)" if d.margin < 0.01 else "")
        + f"; shared expert gate {d.gate:.4f}",
        height=340,
        top=24,
    )


def moe_token(trace, layer: int, token: int) -> go.Figure:
    """One token's whole routing decision in an MoE `layer`: the router's probability for every expert, the top-k
    kept with their weights, the margin to the first expert left out, and the shared expert's gate.

    Needs the same sites as moe_routing.
    """
    return draw_moe_token(moe_token_data(trace, layer, token))


# ---- moe_expert_load --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertLoad:
    """What moe_expert_load draws, for each MoE layer the trace kept."""

    layers: list[int]
    load: np.ndarray  # [L, E]: share of the top-k picks each expert got
    mean_prob: np.ndarray  # [L, E]: mean router probability (the aux loss's P_e)
    aux: np.ndarray  # [L]: E * sum_e f_e * P_e, 1 when perfectly balanced
    entropy: np.ndarray  # [L]: mean routing entropy, nats
    positions: list[int]  # token positions of the margin rows
    labels: list[str]  # readable label of every token of the trace
    margin: np.ndarray  # [L, T]: routing_margin per token
    top_k: int
    note: str  # which positions, when not all


def moe_expert_load_data(trace, *, positions=None, max_tokens: int = MAX_TOKENS) -> ExpertLoad:
    """The numbers of moe_expert_load (see there)."""
    view = "moe_expert_load"
    trace = as_trace(trace, view)
    arch = trace.arch
    check_moe(arch, view)
    layers = layers_with(trace, arch.moe_layers, lambda i: [f"layers.{i}.{s}" for s in ROUTING[:2]], view, SITES_HINT)
    E, k = arch.n_experts, arch.top_k
    probs = [trace[f"layers.{i}.moe.router_probs"] for i in layers]  # L x (S, E)
    load = torch.stack([expert_load(trace[f"layers.{i}.moe.topk_experts"], E) for i in layers]).numpy()  # (L, E)
    mean_prob = torch.stack([pr.double().mean(0).cpu() for pr in probs]).numpy()  # (L, E)
    entropy = torch.stack([routing_entropy(pr).mean().cpu() for pr in probs]).numpy()  # (L,)
    pos, note = window(probs[0].shape[0], positions, max_tokens)
    margin = torch.stack([routing_margin(pr[torch.tensor(pos)], k).cpu() for pr in probs]).numpy()  # (L, T)
    aux = E * (load * mean_prob).sum(-1)
    return ExpertLoad(layers, load, mean_prob, aux, entropy, pos, token_labels(trace.tokens), margin, k, note)


def draw_moe_expert_load(d: ExpertLoad) -> go.Figure:
    """Three panels stacked, layers down each: the load heatmap, the entropy line, the margin heatmap."""
    (L, E), k = d.load.shape, d.top_k
    height = 3 * max(120, 24 * L) + 2 * GAP
    fig = subplots(rows=3, cols=1, vertical_spacing=GAP / height, subplot_titles=[
        "share of top-k picks per expert", "mean routing entropy (nats)", f"margin: choice {k} minus choice {k + 1}, per token",
    ])  # fmt: skip
    fig.add_trace(
        go.Heatmap(
            z=d.load, x=list(range(E)), y=d.layers, colorscale="Oranges", zmin=0, customdata=d.mean_prob,
            colorbar=colorbar_beside(fig, 1, "share of<br>picks"),
            hovertemplate=f"layer %{{y}}, expert %{{x}}<br>share of picks %{{z:.6f}} (balanced: {1 / E:.4f})"
            "<br>mean router probability %{customdata:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=d.entropy, y=d.layers, mode="lines+markers", customdata=d.aux, name="entropy",
            hovertemplate=f"layer %{{y}}<br>mean routing entropy %{{x:.6f}} nats (max ln {E} = {np.log(E):.4f})"
            "<br>aux balance E·Σ f·P %{customdata:.6f} (1 = balanced)<extra></extra>",
        ),
        row=2, col=1,
    )  # fmt: skip
    ref_line(fig, x=float(np.log(E)), text=f"ln {E}: undecided ", row=2, col=1, color="#777777", dash="dot")
    names = np.array([[at(d.labels, p) for p in d.positions]] * L)
    fig.add_trace(
        go.Heatmap(
            z=d.margin, x=position_keys(d.positions), y=d.layers, colorscale="Viridis", zmin=0, customdata=names,
            colorbar=colorbar_beside(fig, 3, "margin"),
            hovertemplate="layer %{y}, token %{customdata}<br>margin %{z:.6f}<extra></extra>",
        ),
        row=3, col=1,
    )  # fmt: skip
    fig.update_xaxes(row=1, col=1, title_text="expert", dtick=1 if E <= 32 else 8)
    fig.update_xaxes(row=2, col=1, title_text="nats", range=[0, 1.05 * float(np.log(E))])
    fig.update_xaxes(row=3, col=1, title_text="token", **token_axis(d.labels, d.positions))
    for r in (1, 2, 3):
        fig.update_yaxes(row=r, col=1, title_text="layer", autorange="reversed", dtick=1 if L <= 30 else 8)
    fig.update_layout(showlegend=False)
    return base_layout(
        fig,
        f"Expert load across {L} MoE layers: is routing balanced, decided, or near a tie? ({E} experts, top-{k})",
        "dark margins: tokens whose last chosen expert barely beat the first one left out",
        d.note,
        height=height,
        top=24,
    )


def colorbar_beside(fig, row: int, title: str) -> dict:
    """A colour bar at the right, as tall as subplot row `row` (of a one-column figure), level with it."""
    low, high = fig.get_subplot(row, 1).yaxis.domain
    return dict(title=title, y=(low + high) / 2, len=high - low, yanchor="middle")


def moe_expert_load(trace, **options) -> go.Figure:
    """Per MoE layer: the share of top-k picks each expert got, the routing entropy, and the margin between the k-th
    and (k+1)-th expert for each token (small = a near-tie that a small change would flip).

    Needs layers.{i}.moe.router_probs and .topk_experts for the MoE layers to show (those the trace kept).
    Options (moe_expert_load_data): positions= a window of tokens for the margins, max_tokens=.
    """
    return draw_moe_expert_load(moe_expert_load_data(trace, **options))
