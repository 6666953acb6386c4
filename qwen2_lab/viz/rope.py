"""RoPE and YaRN: how fast each pair of dimensions turns, a real query turning through positions, and what the
turning does to attention scores over distance. The numbers come from `qwen2_lab.rope` (transformers' own rotary
module); see its docstring for the ideas."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .. import rope as R
from ._style import (
    at,
    base_layout,
    check_index,
    check_layer,
    check_trace,
    numpy,
    ref_line,
    require,
    token_labels,
    window,
)

REGIME_COLOURS = {"kept": "#d62728", "ramp": "#ff7f0e", "interpolated": "#1f77b4"}
BAND_COLOURS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def rope_frequencies(arch, scaling=None, *, theta: float | None = None) -> go.Figure:
    """Each frequency pair's wavelength (tokens per full turn) against the context window, and with YaRN which pairs
    are kept, ramped or interpolated, and the attention factor.

    arch: an Arch, Lab or Trace. scaling: None = the arch's own (plain RoPE for most); a YaRN factor or dict such as
    `qwen2_lab.arch.YARN_128K` to compare; False = plain. theta: another RoPE base, to see what it would change.
    """
    arch = R._arch(arch)
    plain = R.rope_parameters(arch, theta=theta, scaling=False)
    scaled = R.rope_parameters(arch, theta=theta, scaling=scaling)
    pairs = np.arange(plain.n_pairs)
    h = plain.n_pairs
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.06)

    def add(rope, name, mask, colour, symbol, dash=None):
        lam = R.wavelengths(rope.inv_freq).numpy()  # (hd/2,)
        spins = R.turns(rope.inv_freq, plain.original_context).numpy()  # (hd/2,)
        ramp = R.yarn_ramp(rope, plain).numpy()
        custom = np.stack([pairs + h, rope.inv_freq.double().numpy(), spins, ramp], axis=-1)[mask]
        hover = (
            f"{name}<br>pair %{{x}} (dims %{{x}} & %{{customdata[0]}})<br>inv_freq %{{customdata[1]:.6g}} rad/token"
            f"<br>wavelength %{{y:,.6g}} tokens<br>turns in {plain.original_context:,} tokens %{{customdata[2]:,.4g}}"
            + ("<br>YaRN ramp %{customdata[3]:.4f} (0 kept, 1 interpolated)" if rope.scaling else "")
            + "<extra></extra>"
        )
        style = dict(mode="markers+lines" if dash else "markers", marker=dict(color=colour, symbol=symbol, size=7))
        if dash:
            style["line"] = dict(color=colour, dash=dash, width=1)
        for row, y in ((1, lam), (2, spins)):
            fig.add_trace(
                go.Scatter(x=pairs[mask], y=y[mask], name=name, customdata=custom, hovertemplate=hover,
                           legendgroup=name, showlegend=row == 1, **style),
                row=row, col=1,
            )  # fmt: skip

    add(plain, plain.label, np.ones(h, bool), "#7f7f7f", "circle-open", dash="dot")
    notes = []
    if scaled.scaling:
        regimes = np.array(R.yarn_regimes(scaled, plain))
        for regime, colour in REGIME_COLOURS.items():
            if (regimes == regime).any():
                add(scaled, f"{scaled.label}: {regime}", regimes == regime, colour, "circle")
        af = scaled.attention_factor
        notes.append(f"attention factor {af:.4f} multiplies cos and sin, so every q·k by {af**2:.4f}")
        ref_line(
            fig, y=scaled.context, text=f"scaled window {scaled.context:,}", log=True, row=1, col=1, color="#1f77b4"
        )
    ref_line(fig, y=plain.original_context, text=f"trained window {plain.original_context:,}", log=True, row=1, col=1)
    for t, text in (
        (32, "32 turns: faster pairs kept (beta_fast)"),
        (1, "1 turn: slower pairs interpolated (beta_slow)"),
    ):
        ref_line(fig, y=t, text=text, log=True, row=2, col=1, color="#777777", dash="dot")
    fig.update_yaxes(type="log", title_text="wavelength (tokens per turn)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(
        type="log", title_text=f"turns in {plain.original_context:,} tokens", exponentformat="power", row=2, col=1
    )
    fig.update_xaxes(
        title_text=f"frequency pair j (dims j and j+{h}): fast on the left, slow on the right", row=2, col=1
    )
    fig.update_layout(legend=dict(orientation="h", y=-0.15))
    return base_layout(
        fig,
        f"RoPE in {arch.name}: pair j turns by position × theta^(-2j/{arch.head_dim}); slow pairs barely turn in the window",
        "each dot one pair of q/k dimensions; hover for its exact inv_freq",
        *notes,
        height=640,
        width=900,
    )


def _own_rope(arch, theta, scaling) -> bool:
    """Whether theta/scaling are the model's own, so the trace's q_rot was computed with them."""
    return (theta is None or float(theta) == arch.rope_theta) and R.resolve_scaling(arch, scaling) == R.resolve_scaling(
        arch
    )


def rope_rotation(
    trace,
    layer: int,
    head: int,
    token: int,
    *,
    pairs=None,
    positions=None,
    theta=None,
    scaling=None,
    max_points: int = 512,
) -> go.Figure:
    """One head's real query (the token's q before RoPE) turning through positions, in a few frequency planes, with
    the keys of its KV head at their own positions.

    Needs layers.{layer}.attn.q and .attn.k (and attn.q_rot to mark the model's own rotated query). pairs: the
    frequency pairs to draw (default 4 from fast to slow); positions: where to place the query (default every
    position of the trace); theta / scaling: a RoPE other than the model's, to see what it would change.
    """
    view = "rope_rotation"
    trace = check_trace(trace, view)
    layer = check_layer(trace, layer, view)
    arch = trace.arch
    p = f"layers.{layer}."
    require(trace, [p + "attn.q", p + "attn.k"], view, ["layers.*.attn.q*", "layers.*.attn.k*"])
    head = check_index(head, arch.n_heads, "head", view)
    S = trace[p + "attn.q"].shape[1]
    token = check_index(token, S, "token", view)
    rope = R.rope_parameters(arch, theta=theta, scaling=scaling)
    h = rope.n_pairs
    pairs = (
        sorted({0, h // 4, h // 2, h - 1})
        if pairs is None
        else [check_index(j, h, "pair", view) for j in np.atleast_1d(pairs).tolist()]
    )
    if len(pairs) > 8:
        raise ValueError(f"{view}: {len(pairs)} pairs asked for; draw at most 8 planes at once")
    traj_pos = list(range(S)) if positions is None else [int(x) for x in positions]
    if len(traj_pos) > max_points:
        traj_pos = traj_pos[:: -(-len(traj_pos) // max_points)]
    kv = head // arch.group_size
    q = trace[p + "attn.q"][head, token].float().cpu()  # (hd,): this token's query before RoPE
    traj = R.rotate(q.expand(len(traj_pos), -1), traj_pos, rope)  # (P, hd): the same query placed at each position
    own = _own_rope(arch, theta, scaling) and p + "attn.q_rot" in trace
    q_here = trace[p + "attn.q_rot"][head, token].float().cpu() if own else R.rotate(q[None], [token], rope)[0]  # (hd,)
    key_pos, _ = window(S, None, max_points)
    k = trace[p + "attn.k"][kv][key_pos].float().cpu()  # (K, hd): the KV head's keys before RoPE
    k_rot = (
        trace[p + "attn.k_rot"][kv][key_pos].float().cpu()
        if own and p + "attn.k_rot" in trace
        else R.rotate(k, key_pos, rope)
    )

    labels = token_labels(trace.tokens)
    lam = R.wavelengths(rope.inv_freq).numpy()
    fig = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.06,
                        subplot_titles=[f"pair {j} (dims {j} & {j + h})<br>one turn per {lam[j]:,.4g} tokens" for j in pairs])  # fmt: skip
    pos_names = [f"pos {x}" + (f" {at(labels, x)}" if x < S else "") for x in traj_pos]
    for c, j in enumerate(pairs):
        dims = [j, j + h]
        first = c == 0
        fig.add_trace(
            go.Scatter(
                x=numpy(traj[:, j]), y=numpy(traj[:, j + h]), mode="lines+markers", name="query placed at each position",
                legendgroup="traj", showlegend=first, text=pos_names, line=dict(color="#cccccc", width=1),
                marker=dict(size=5, color=traj_pos, colorscale="Viridis", showscale=first,
                            colorbar=dict(title="position", x=1.02)),
                hovertemplate="query at %{text}<br>(%{x:.6f}, %{y:.6f})<extra></extra>",
            ),
            row=1, col=c + 1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=numpy(k_rot[:, j]), y=numpy(k_rot[:, j + h]), mode="markers", name=f"keys of KV head {kv} at their positions",
                legendgroup="keys", showlegend=first, text=[at(labels, x) for x in key_pos],
                marker=dict(size=6, symbol="x-thin", line=dict(width=1, color="#d62728"), color="#d62728"),
                hovertemplate="key %{text}<br>(%{x:.6f}, %{y:.6f})<extra></extra>",
            ),
            row=1, col=c + 1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[float(q_here[j])], y=[float(q_here[j + h])], mode="markers",
                name=("the model's q_rot" if own else "the query") + f" at {at(labels, token)}", legendgroup="q",
                showlegend=first, marker=dict(size=15, symbol="star", color="#111111"),
                hovertemplate=f"query of head {head} at {at(labels, token)}<br>(%{{x:.6f}}, %{{y:.6f}})<extra></extra>",
            ),
            row=1, col=c + 1,
        )  # fmt: skip
        fig.update_xaxes(row=1, col=c + 1, title_text=f"dim {dims[0]}", zeroline=True)
        fig.update_yaxes(
            row=1,
            col=c + 1,
            title_text=f"dim {dims[1]}",
            zeroline=True,
            scaleanchor=f"x{c + 1 if c else ''}",
            scaleratio=1,
        )
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return base_layout(
        fig,
        f"Layer {layer}, head {head}: RoPE turns each plane of the query of {at(labels, token)} by position × inv_freq",
        f"{rope.label}: fast pairs spin, slow pairs barely move; the angle between query and key is all that depends on position",
        height=460,
        width=max(700, 330 * len(pairs)),
        top=44,
    )


def rope_distance_decay(
    source, layer: int | None = None, head: int | None = None, *, scaling=4.0, theta=None, bands: int = 4,
    max_distance: int | None = None, n_points: int = 200,
) -> go.Figure:  # fmt: skip
    """q·k / sqrt(hd) for the same query and key placed d tokens apart, split into frequency bands, plain RoPE
    against YaRN. Each point is the exact mean over a bin of distances (log-spaced, n_points bins up to
    max_distance): at one distance a fast pair's share is + or - at random, the mean shows what survives.

    source: an Arch or Lab (then q = k = all ones, RoFormer's long-range bound), or a Trace with layer and head (then
    the head's own mean query and its KV head's mean key, before RoPE: by bilinearity, the average score over every
    query/key pair of the trace moved d tokens apart). scaling: the YaRN (factor or dict) to compare with plain RoPE
    (default x4 on the model's trained window; None = the arch's own, False = plain only).
    """
    view = "rope_distance_decay"
    arch = R._arch(source)
    if layer is None:
        q = k = torch.ones(arch.head_dim, dtype=torch.float64)
        what = "a query and a key equal in every dimension (all ones)"
    else:
        trace = check_trace(source, view + " with a layer")
        layer = check_layer(trace, layer, view)
        if head is None:
            raise ValueError(f"{view}: give head= with layer= (a query head 0..{arch.n_heads - 1})")
        head = check_index(head, arch.n_heads, "head", view)
        p = f"layers.{layer}."
        require(trace, [p + "attn.q", p + "attn.k"], view, ["layers.*.attn.q", "layers.*.attn.k"])
        q = trace[p + "attn.q"][head].double().mean(0).cpu()  # (hd,): the head's mean query before RoPE
        k = trace[p + "attn.k"][head // arch.group_size].double().mean(0).cpu()  # (hd,)
        what = f"layer {layer} head {head}'s mean query and its KV head's mean key"
    plain = R.rope_parameters(arch, theta=theta, scaling=False)
    settings = [(plain, "solid")]
    scaled = R.rope_parameters(arch, theta=theta, scaling=scaling) if R.resolve_scaling(arch, scaling) else None
    if scaled is not None:
        settings.append((scaled, "dash"))
    top = int(max_distance or (scaled.context if scaled else 4 * plain.original_context))
    edges = np.unique(np.round(np.logspace(0, math.log10(top + 1), n_points + 1)).astype(np.int64))  # (B+1,)
    lo, hi = edges[:-1], edges[1:] - 1  # each bin: the distances lo..hi
    x = np.sqrt(lo * hi)  # (B,): where a bin sits on the log axis
    span = np.stack([lo, hi], axis=-1)  # (B, 2) for the hover
    groups = R.bands(plain.n_pairs, bands)
    fig = go.Figure()
    for rope, dash in settings:
        share = R.pair_scores_binned(q, k, rope, edges) / math.sqrt(arch.head_dim)  # (B, hd/2): each pair's part
        curves = [(f"pairs {g.start}-{g.stop - 1}", share[:, g.start : g.stop].sum(-1), BAND_COLOURS[b % 8], 1.5)
                  for b, g in enumerate(groups)]  # fmt: skip
        curves.append(("all pairs", share.sum(-1), "black", 2.5))
        for name, y, colour, width in curves:
            fig.add_trace(go.Scatter(
                x=x, y=y.numpy(), customdata=span, mode="lines", name=f"{rope.label}: {name}", legendgroup=rope.label,
                line=dict(color=colour, dash=dash, width=width),
                hovertemplate=f"{rope.label}, {name}<br>distances %{{customdata[0]:,}}..%{{customdata[1]:,}} tokens"
                "<br>mean score %{y:.6f}<extra></extra>",
            ))  # fmt: skip
    ref_line(fig, x=plain.original_context, text=f"trained window {plain.original_context:,} ", log=True, dash="dot")
    if scaled is not None and scaled.context != plain.original_context:
        ref_line(
            fig, x=scaled.context, text=f"scaled window {scaled.context:,} ", log=True, color="#1f77b4", dash="dot"
        )
    fig.update_xaxes(type="log", title_text="relative distance d (query position − key position, tokens)")
    fig.update_yaxes(title_text="contribution to q·k / √head_dim")
    fig.update_layout(legend=dict(font=dict(size=10)))
    return base_layout(
        fig,
        "How RoPE makes attention depend on distance: the score of one query and key placed d tokens apart",
        f"{what}; colour: frequency band (pairs of dimensions); solid: plain RoPE"
        + (f", dashed: {scaled.label}" if scaled else ""),
        "fast bands average out within a few tokens; only slow bands still carry position far away",
        height=520,
        width=980,
    )
