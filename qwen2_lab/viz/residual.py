"""The residual stream by layer: how large it grows, and how much attention and the MLP (or MoE block) add to it.

Each layer adds two contributions to the stream: resid_mid = resid_pre + attn.out, resid_post = resid_mid + mlp.out
(moe.out in MoE layers). Their L2 norms per token show which sublayers write strongly, and which positions carry
unusually large residuals (a first token used as an attention sink often does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from ..trace import block_out
from .style import (
    LEGEND_BELOW,
    MAX_TOKENS,
    as_trace,
    at,
    base_layout,
    layers_with,
    numpy,
    position_keys,
    subplots,
    token_axis,
    token_labels,
    window,
)

PARTS = (  # (label, colour), in the order of residual_sites
    ("residual entering (resid_pre)", "#7f7f7f"),
    ("attention adds (attn.out)", "#1f77b4"),
    ("MLP / MoE adds (mlp.out, moe.out)", "#ff7f0e"),
    ("residual leaving (resid_post)", "#111111"),
)


def residual_sites(arch, layer: int) -> list[str]:
    """The four sites of PARTS in `layer`: resid_pre, attn.out, mlp.out or moe.out, resid_post."""
    return [
        f"layers.{layer}.resid_pre",
        f"layers.{layer}.attn.out",
        block_out(arch, layer),
        f"layers.{layer}.resid_post",
    ]


def token_norms(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each token's vector, in float32. [S, H] -> [S]."""
    return torch.linalg.vector_norm(t.float(), dim=-1).cpu()


@dataclass(frozen=True)
class ResidualNorms:
    """What residual_norms draws, for each layer the trace kept."""

    layers: list[int]
    n_layers: int  # layers of the model (the figure says when fewer were kept)
    mean: np.ndarray  # [4, L]: mean over tokens of the L2 norm of each of PARTS
    post: np.ndarray  # [L, T]: L2 norm of each shown token's resid_post
    positions: list[int]  # token positions shown on the right
    labels: list[str]  # readable label of every token of the trace
    note: str  # which positions, when not all


def residual_norms_data(trace, *, positions=None, max_tokens: int = MAX_TOKENS) -> ResidualNorms:
    """The numbers of residual_norms (see there)."""
    view = "residual_norms"
    trace = as_trace(trace, view)
    arch = trace.arch
    hint = ["layers.*.resid_pre", "layers.*.resid_post", "layers.*.out"]
    layers = layers_with(trace, range(arch.n_layers), lambda i: residual_sites(arch, i), view, hint)
    norms = torch.stack(
        [torch.stack([token_norms(trace[s]) for s in residual_sites(arch, i)]) for i in layers]
    )  # (L, 4, S)
    pos, note = window(norms.shape[-1], positions, max_tokens)
    post = numpy(norms[:, 3, torch.tensor(pos)])  # (L, T)
    mean = numpy(norms.double().mean(-1).T)  # (4, L)
    return ResidualNorms(layers, arch.n_layers, mean, post, pos, token_labels(trace.tokens), note)


def draw_residual_norms(d: ResidualNorms) -> go.Figure:
    """Left: one line per part across layers (log scale); right: a heatmap of each token's residual norm."""
    fig = subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.12,
                   subplot_titles=["mean L2 norm over tokens", "L2 norm of the residual leaving each layer"])  # fmt: skip
    for (label, colour), mean in zip(PARTS, d.mean):
        fig.add_trace(
            go.Scatter(x=d.layers, y=mean, mode="lines+markers", name=label, line=dict(color=colour),
                       hovertemplate=f"layer %{{x}}<br>{label}<br>mean norm %{{y:.6g}}<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
    names = np.array([[at(d.labels, p) for p in d.positions]] * len(d.layers))
    fig.add_trace(
        go.Heatmap(
            z=d.post, x=position_keys(d.positions), y=d.layers, colorscale="Magma", customdata=names,
            colorbar=dict(title="norm"), hovertemplate="layer %{y}, token %{customdata}<br>norm %{z:.6g}<extra></extra>",
        ),
        row=1, col=2,
    )  # fmt: skip
    fig.update_xaxes(row=1, col=1, title_text="layer")
    fig.update_yaxes(row=1, col=1, type="log", dtick="D2", title_text="L2 norm (log scale)")  # 1, 2, 5, 10: apart
    fig.update_xaxes(row=1, col=2, title_text="token", **token_axis(d.labels, d.positions))
    fig.update_yaxes(row=1, col=2, title_text="layer", dtick=1 if len(d.layers) <= 30 else 8, autorange="reversed")
    fig.update_layout(legend=LEGEND_BELOW)
    kept = "" if len(d.layers) == d.n_layers else f"; {len(d.layers)} of {d.n_layers} layers kept"
    return base_layout(
        fig,
        "The residual stream grows layer by layer: how much each sublayer writes into it",
        "each layer: resid_post = resid_pre + attn.out + (mlp|moe).out" + kept,
        d.note,
        height=400,
        top=24,
    )


def residual_norms(trace, **options) -> go.Figure:
    """Left: mean over tokens of the L2 norm of resid_pre, attn.out, mlp.out/moe.out and resid_post, by layer.
    Right: the norm of each token's residual leaving each layer.

    Needs, for the layers to show, layers.{i}.resid_pre, .attn.out, .mlp.out (moe.out) and .resid_post.
    Options (residual_norms_data): positions= a window, max_tokens=.
    """
    return draw_residual_norms(residual_norms_data(trace, **options))
