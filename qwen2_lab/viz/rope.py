"""RoPE and YaRN: how fast each pair of dimensions turns, a real query turning through positions, and what the
turning does to attention scores over distance. The numbers come from `qwen2_lab.rope` (transformers' own rotary
module); see its docstring for the ideas."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from .. import rope as R
from ..arch import as_arch
from .style import (
    LEGEND_BELOW,
    as_trace,
    at,
    base_layout,
    check_index,
    check_layer,
    layer_sites,
    numpy,
    ref_line,
    require,
    subplots,
    token_labels,
    window,
)

REGIME_COLOURS = {"kept": "#d62728", "ramp": "#ff7f0e", "interpolated": "#1f77b4"}
BAND_COLOURS = ["#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


# ---- rope_frequencies -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RopeFrequencies:
    """What rope_frequencies draws: per frequency pair, its speed under plain RoPE and (if asked) under YaRN."""

    name: str  # the model
    head_dim: int
    plain: R.Rope  # the model's theta, no scaling
    scaled: R.Rope | None  # with the scaling asked for, or None
    regimes: list[str] | None  # per pair with YaRN: "kept", "ramp" or "interpolated"


def rope_frequencies_data(arch, scaling=None, *, theta: float | None = None) -> RopeFrequencies:
    """The numbers of rope_frequencies (see there)."""
    arch = as_arch(arch)
    plain = R.rope_parameters(arch, theta=theta, scaling=False)
    scaled = R.rope_parameters(arch, theta=theta, scaling=scaling)
    if not scaled.scaling:
        return RopeFrequencies(arch.name, arch.head_dim, plain, None, None)
    return RopeFrequencies(arch.name, arch.head_dim, plain, scaled, R.yarn_regimes(scaled, plain))


def draw_rope_frequencies(d: RopeFrequencies) -> go.Figure:
    """Top: each pair's wavelength against the windows; bottom: its turns in the trained window (both log)."""
    plain, h = d.plain, d.plain.n_pairs
    pairs = np.arange(h)
    fig = subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.06)

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
    if d.scaled is not None:
        regimes = np.array(d.regimes)
        for regime, colour in REGIME_COLOURS.items():
            if (regimes == regime).any():
                add(d.scaled, f"{d.scaled.label}: {regime}", regimes == regime, colour, "circle")
        af = d.scaled.attention_factor
        notes.append(f"attention factor {af:.4f} multiplies cos and sin, so every q·k by {af**2:.4f}")
        ref_line(fig, y=d.scaled.context, text=f"scaled window {d.scaled.context:,}", log=True, row=1, col=1, color="#1f77b4")  # fmt: skip
    ref_line(fig, y=plain.original_context, text=f"trained window {plain.original_context:,}", log=True, row=1, col=1)
    for t, text in (
        (32, "32 turns: faster pairs kept (beta_fast)"),
        (1, "1 turn: slower pairs interpolated (beta_slow)"),
    ):
        ref_line(fig, y=t, text=text, log=True, row=2, col=1, color="#777777", dash="dot")
    fig.update_yaxes(type="log", title_text="wavelength<br>(tokens per turn)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(type="log", title_text=f"turns in<br>{plain.original_context:,} tokens", exponentformat="power", row=2, col=1)  # fmt: skip
    fig.update_xaxes(title_text=f"frequency pair j (dims j and j+{h}): fast on the left, slow on the right", row=2, col=1)  # fmt: skip
    fig.update_layout(legend=LEGEND_BELOW)
    return base_layout(
        fig,
        f"RoPE in {d.name}: pair j turns by position × theta^(-2j/{d.head_dim}); slow pairs barely turn in the window",
        "each dot one pair of q/k dimensions; hover for its exact inv_freq",
        *notes,
        height=520,
    )


def rope_frequencies(arch, scaling=None, *, theta: float | None = None) -> go.Figure:
    """Each frequency pair's wavelength (tokens per full turn) against the context window, and with YaRN which pairs
    are kept, ramped or interpolated, and the attention factor.

    arch: an Arch, Lab or Trace. scaling: None = the arch's own (plain RoPE for most); a YaRN factor or dict such as
    `qwen2_lab.arch.YARN_128K` to compare; False = plain. theta: another RoPE base, to see what it would change.
    """
    return draw_rope_frequencies(rope_frequencies_data(arch, scaling, theta=theta))


# ---- rope_rotation ----------------------------------------------------------------------------------------------


def _own_rope(arch, theta, scaling) -> bool:
    """Whether theta/scaling are the model's own, so the trace's q_rot was computed with them."""
    return (theta is None or float(theta) == arch.rope_theta) and R.resolve_scaling(arch, scaling) == R.resolve_scaling(
        arch
    )


@dataclass(frozen=True)
class RopeRotation:
    """What rope_rotation draws: one head's query placed at many positions, and its KV head's keys, in a few planes."""

    layer: int
    head: int
    kv_head: int
    token: int  # the query's own position
    labels: list[str]  # readable label of every token of the trace
    rope: R.Rope  # the RoPE used (the model's, or the theta / scaling asked for)
    own: bool  # whether that is the model's own, so `query` is the trace's q_rot
    pairs: list[int]  # the frequency pairs drawn, one plane each (dims j and j + hd/2)
    path_positions: list[int]  # where the query is placed
    path: np.ndarray  # [P, hd]: the query rotated to each of them
    key_positions: list[int]
    keys: np.ndarray  # [K, hd]: the KV head's keys rotated to their own positions
    query: np.ndarray  # [hd]: the query at its own position


def rope_rotation_data(trace, layer: int, head: int, token: int, *, pairs=None, positions=None, theta=None,
                       scaling=None, max_points: int = 512) -> RopeRotation:  # fmt: skip
    """The numbers of rope_rotation (see there)."""
    view = "rope_rotation"
    hint = ["layers.*.attn.q*", "layers.*.attn.k*"]
    trace, layer, (q_all, k_all) = layer_sites(trace, layer, ["attn.q", "attn.k"], view, hint=hint)  # [nH|nKV, S, hd]
    arch, p = trace.arch, f"layers.{layer}."
    head = check_index(head, arch.n_heads, "head", view)
    S = q_all.shape[1]
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
    path_pos = list(range(S)) if positions is None else [int(x) for x in positions]
    if len(path_pos) > max_points:
        path_pos = path_pos[:: -(-len(path_pos) // max_points)]
    kv = head // arch.group_size
    q = q_all[head, token].float().cpu()  # (hd,): this token's query before RoPE
    path = R.rotate(q.expand(len(path_pos), -1), path_pos, rope)  # (P, hd): the same query placed at each position
    own = _own_rope(arch, theta, scaling) and p + "attn.q_rot" in trace
    query = trace[p + "attn.q_rot"][head, token].float().cpu() if own else R.rotate(q[None], [token], rope)[0]  # (hd,)
    key_pos, _ = window(S, None, max_points)
    k = k_all[kv][key_pos].float().cpu()  # (K, hd): the KV head's keys before RoPE
    keys = trace[p + "attn.k_rot"][kv][key_pos].float().cpu() if own and p + "attn.k_rot" in trace else R.rotate(k, key_pos, rope)  # fmt: skip
    return RopeRotation(
        layer, head, kv, token, token_labels(trace.tokens), rope, own, pairs, path_pos, numpy(path), key_pos,
        numpy(keys), numpy(query),
    )  # fmt: skip


def draw_rope_rotation(d: RopeRotation) -> go.Figure:
    """One square plane per pair: the query's path, the keys, and the query itself as a star."""
    h, S = d.rope.n_pairs, len(d.labels)
    lam = R.wavelengths(d.rope.inv_freq).numpy()
    titles = [f"pair {j} (dims {j}, {j + h})<br>{lam[j]:.3g} tokens a turn" for j in d.pairs]
    fig = subplots(rows=1, cols=len(d.pairs), horizontal_spacing=0.07, subplot_titles=titles)
    fig.update_annotations(font_size=11)  # two lines over each of up to 8 narrow planes
    path_names = [f"pos {x}" + (f" {at(d.labels, x)}" if x < S else "") for x in d.path_positions]
    query_name = ("the model's q_rot" if d.own else "the query") + f" at {at(d.labels, d.token)}"
    for c, j in enumerate(d.pairs):
        first = c == 0
        fig.add_trace(
            go.Scatter(
                x=d.path[:, j], y=d.path[:, j + h], mode="lines+markers", name="query placed at each position",
                legendgroup="path", showlegend=first, text=path_names, line=dict(color="#cccccc", width=1),
                marker=dict(size=5, color=d.path_positions, colorscale="Viridis", showscale=first,
                            colorbar=dict(title="position")),
                hovertemplate="query at %{text}<br>(%{x:.6f}, %{y:.6f})<extra></extra>",
            ),
            row=1, col=c + 1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=d.keys[:, j], y=d.keys[:, j + h], mode="markers", name=f"keys of KV head {d.kv_head} at their positions",
                legendgroup="keys", showlegend=first, text=[at(d.labels, x) for x in d.key_positions],
                marker=dict(size=6, symbol="x-thin", line=dict(width=1, color="#d62728"), color="#d62728"),
                hovertemplate="key %{text}<br>(%{x:.6f}, %{y:.6f})<extra></extra>",
            ),
            row=1, col=c + 1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=[float(d.query[j])], y=[float(d.query[j + h])], mode="markers", name=query_name, legendgroup="q",
                showlegend=first, marker=dict(size=15, symbol="star", color="#111111"),
                hovertemplate=f"query of head {d.head} at {at(d.labels, d.token)}<br>(%{{x:.6f}}, %{{y:.6f}})<extra></extra>",
            ),
            row=1, col=c + 1,
        )  # fmt: skip
        fig.update_xaxes(row=1, col=c + 1, title_text=f"dim {j}", zeroline=True, constrain="domain")
        fig.update_yaxes(row=1, col=c + 1, title_text=f"dim {j + h}", zeroline=True, scaleanchor=f"x{c + 1 if c else ''}",
                         scaleratio=1, constrain="domain")  # fmt: skip
    fig.update_layout(legend=LEGEND_BELOW)
    return base_layout(
        fig,
        f"Layer {d.layer}, head {d.head}: RoPE turns each plane of the query of {at(d.labels, d.token)} by position × inv_freq",
        f"{d.rope.label}: fast pairs spin, slow pairs barely move; the angle between query and key is all that depends"
        " on position",
        height=300,
        top=40,
    )


def rope_rotation(trace, layer: int, head: int, token: int, **options) -> go.Figure:
    """One head's real query (the token's q before RoPE) turning through positions, in a few frequency planes, with
    the keys of its KV head at their own positions.

    Needs layers.{layer}.attn.q and .attn.k (and attn.q_rot to mark the model's own rotated query). Options
    (rope_rotation_data): pairs= the frequency pairs to draw (default 4 from fast to slow); positions= where to
    place the query (default every position of the trace); theta= / scaling= a RoPE other than the model's, to see
    what it would change; max_points=.
    """
    return draw_rope_rotation(rope_rotation_data(trace, layer, head, token, **options))


# ---- rope_distance_decay ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistanceDecay:
    """What rope_distance_decay draws: the score of one query and key at each bin of distances, per band of pairs."""

    what: str  # which query and key
    ropes: list[R.Rope]  # plain RoPE, then the scaled one if any
    bands: list[range]  # the frequency pairs of each band, fastest first
    lo: np.ndarray  # [B]: each bin's first distance
    hi: np.ndarray  # [B]: its last
    shares: np.ndarray  # [len(ropes), B, len(bands)]: each band's mean contribution to q·k / sqrt(hd)
    original_context: int


def rope_distance_decay_data(source, layer: int | None = None, head: int | None = None, *, scaling=4.0, theta=None,
                             bands: int = 4, max_distance: int | None = None, n_points: int = 200) -> DistanceDecay:  # fmt: skip
    """The numbers of rope_distance_decay (see there)."""
    view = "rope_distance_decay"
    if layer is None:
        arch = as_arch(source)
        q = k = torch.ones(arch.head_dim, dtype=torch.float64)
        what = "a query and a key equal in every dimension (all ones)"
    else:
        trace = as_trace(source, view + " with a layer")
        arch = trace.arch
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
    ropes = [plain] + (
        [R.rope_parameters(arch, theta=theta, scaling=scaling)] if R.resolve_scaling(arch, scaling) else []
    )
    top = int(max_distance or (ropes[-1].context if len(ropes) > 1 else 4 * plain.original_context))
    edges = np.unique(np.round(np.logspace(0, math.log10(top + 1), n_points + 1)).astype(np.int64))  # (B+1,)
    groups = R.bands(plain.n_pairs, bands)
    shares = []
    for rope in ropes:
        share = R.pair_scores_binned(q, k, rope, edges) / math.sqrt(arch.head_dim)  # (B, hd/2): each pair's part
        shares.append(torch.stack([share[:, g.start : g.stop].sum(-1) for g in groups], -1).numpy())  # (B, bands)
    return DistanceDecay(what, ropes, groups, edges[:-1], edges[1:] - 1, np.stack(shares), plain.original_context)


def draw_rope_distance_decay(d: DistanceDecay) -> go.Figure:
    """A line per band and one for all pairs, solid for plain RoPE, dashed for the scaled one (log distance)."""
    x = np.sqrt(d.lo * d.hi)  # (B,): where a bin sits on the log axis
    span = np.stack([d.lo, d.hi], axis=-1)  # (B, 2) for the hover
    fig = go.Figure()
    for rope, shares, dash in zip(d.ropes, d.shares, ("solid", "dash")):
        curves = [
            (f"pairs {g.start}-{g.stop - 1}", shares[:, b], BAND_COLOURS[b % 8], 1.5) for b, g in enumerate(d.bands)
        ]
        curves.append(("all pairs", shares.sum(-1), "black", 2.5))
        for name, y, colour, width in curves:
            fig.add_trace(go.Scatter(
                x=x, y=y, customdata=span, mode="lines", name=f"{rope.label}: {name}", legendgroup=rope.label,
                line=dict(color=colour, dash=dash, width=width),
                hovertemplate=f"{rope.label}, {name}<br>distances %{{customdata[0]:,}}..%{{customdata[1]:,}} tokens"
                "<br>mean score %{y:.6f}<extra></extra>",
            ))  # fmt: skip
    ref_line(fig, x=d.original_context, text=f"trained window {d.original_context:,} ", log=True, dash="dot")
    scaled = d.ropes[1] if len(d.ropes) > 1 else None
    if scaled is not None and scaled.context != d.original_context:
        ref_line(fig, x=scaled.context, text=f"scaled window {scaled.context:,} ", log=True, color="#1f77b4",
                 dash="dot", at=0.93)  # fmt: skip
    fig.update_xaxes(type="log", title_text="relative distance d (query position − key position, tokens)")
    fig.update_yaxes(title_text="contribution to q·k / √head_dim")
    fig.update_layout(legend=dict(LEGEND_BELOW, font=dict(size=11)))
    return base_layout(
        fig,
        "How RoPE makes attention depend on distance: the score of one query and key placed d tokens apart",
        f"{d.what}; colour: frequency band (pairs of dimensions); solid: plain RoPE"
        + (f", dashed: {scaled.label}" if scaled else ""),
        "fast bands average out within a few tokens; only slow bands still carry position far away",
        height=420,
    )


def rope_distance_decay(source, layer: int | None = None, head: int | None = None, **options) -> go.Figure:
    """q·k / sqrt(hd) for the same query and key placed d tokens apart, split into frequency bands, plain RoPE
    against YaRN. Each point is the exact mean over a bin of distances (log-spaced, n_points bins up to
    max_distance): at one distance a fast pair's share is + or - at random, the mean shows what survives.

    source: an Arch or Lab (then q = k = all ones, RoFormer's long-range bound), or a Trace with layer and head (then
    the head's own mean query and its KV head's mean key, before RoPE: by bilinearity, the average score over every
    query/key pair of the trace moved d tokens apart). Options (rope_distance_decay_data): scaling= the YaRN
    (factor or dict) to compare with plain RoPE (default x4 on the model's trained window; None = the arch's own,
    False = plain only); theta=; bands= (default 4); max_distance=; n_points=.
    """
    return draw_rope_distance_decay(rope_distance_decay_data(source, layer, head, **options))
