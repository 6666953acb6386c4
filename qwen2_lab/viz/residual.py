"""The residual stream by layer: how large it grows, and how much attention and the MLP (or MoE block) add to it.

Each layer adds two contributions to the stream: resid_mid = resid_pre + attn.out, resid_post = resid_mid + mlp.out
(moe.out in MoE layers). Their L2 norms per token show which sublayers write strongly, and which positions carry
unusually large residuals (a first token used as an attention sink often does).
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ._style import MAX_TOKENS, at, base_layout, check_trace, numpy, require, token_axis, token_labels, window

PARTS = (  # (label, site suffix, colour)
    ("residual entering (resid_pre)", "resid_pre", "#7f7f7f"),
    ("attention adds (attn.out)", "attn.out", "#1f77b4"),
    ("MLP / MoE adds (mlp.out, moe.out)", None, "#ff7f0e"),
    ("residual leaving (resid_post)", "resid_post", "#111111"),
)


def block_site(arch, layer: int) -> str:
    """The site of what the MLP or MoE block adds in this layer."""
    return f"layers.{layer}.{'moe' if arch.layer_kind(layer) == 'moe' else 'mlp'}.out"


def token_norms(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each token's vector, in float32. [S, H] -> [S]."""
    return torch.linalg.vector_norm(t.float(), dim=-1).cpu()


def residual_norms(trace, *, positions=None, max_tokens: int = MAX_TOKENS) -> go.Figure:
    """Left: mean over tokens of the L2 norm of resid_pre, attn.out, mlp.out/moe.out and resid_post, by layer.
    Right: the norm of each token's residual leaving each layer.

    Needs, for the layers to show, layers.{i}.resid_pre, .attn.out, .mlp.out (moe.out) and .resid_post.
    """
    view = "residual_norms"
    trace = check_trace(trace, view)
    arch = trace.arch

    def sites(i):
        return [f"layers.{i}.resid_pre", f"layers.{i}.attn.out", block_site(arch, i), f"layers.{i}.resid_post"]

    layers = [i for i in range(arch.n_layers) if all(s in trace for s in sites(i))]
    if not layers:
        require(trace, sites(0), view, ["layers.*.resid_pre", "layers.*.resid_post", "layers.*.out"])
    norms = {
        part: [token_norms(trace[sites(i)[n]]) for i in layers] for n, part in enumerate(PARTS)
    }  # part -> L x (S,)
    S = trace[sites(layers[0])[0]].shape[0]
    pos, note = window(S, positions, max_tokens)
    labels = token_labels(trace.tokens)

    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1,
                        subplot_titles=["mean L2 norm over tokens", "L2 norm of the residual leaving each layer"])  # fmt: skip
    for part in PARTS:
        label, _, colour = part
        mean = torch.stack([n.mean() for n in norms[part]]).numpy()  # (L,)
        fig.add_trace(
            go.Scatter(x=layers, y=mean, mode="lines+markers", name=label, line=dict(color=colour),
                       hovertemplate=f"layer %{{x}}<br>{label}<br>mean norm %{{y:.6g}}<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
    post = torch.stack(norms[PARTS[-1]])[:, torch.tensor(pos)]  # (L, T)
    fig.add_trace(
        go.Heatmap(
            z=numpy(post), x=pos, y=layers, colorscale="Magma", customdata=[[at(labels, p) for p in pos]] * len(layers),
            colorbar=dict(title="norm"), hovertemplate="layer %{y}, token %{customdata}<br>norm %{z:.6g}<extra></extra>",
        ),
        row=1, col=2,
    )  # fmt: skip
    fig.update_xaxes(row=1, col=1, title_text="layer")
    fig.update_yaxes(row=1, col=1, type="log", title_text="L2 norm (log scale)")
    fig.update_xaxes(row=1, col=2, title_text="token", **token_axis(labels, pos))
    fig.update_yaxes(row=1, col=2, title_text="layer", dtick=1 if len(layers) <= 30 else 8)
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return base_layout(
        fig,
        "The residual stream grows layer by layer: how much each sublayer writes into it",
        "each layer: resid_post = resid_pre + attn.out + (mlp|moe).out"
        + ("" if len(layers) == arch.n_layers else f"; {len(layers)} of {arch.n_layers} layers kept"),
        note,
        height=520,
        width=1100,
    )
