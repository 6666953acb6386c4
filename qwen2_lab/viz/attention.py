"""Grouped-query attention as Qwen2 computes it: every query head's pattern, laid out by the KV head it shares.

In Qwen2, nH query heads share nKV key/value heads: KV head j serves query heads j*g ... j*g + g - 1 (g = nH / nKV,
`repeat_kv`). Heads of one group read the same keys and values with different queries, so they may attend alike;
`gqa_group_similarity` measures how much.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ._style import (
    MAX_CELLS,
    MAX_HEADS,
    MAX_TOKENS,
    at,
    base_layout,
    check_cells,
    check_index,
    check_layer,
    check_trace,
    numpy,
    require,
    token_axis,
    token_labels,
    window,
)

HOVER_CELLS = 40_000  # past this many cells, hovers name positions only (token strings per cell weigh too much)


def kv_head(arch, head: int) -> int:
    """The KV head query head `head` reads (repeat_kv's layout)."""
    return head // arch.group_size


def choose_heads(arch, groups=None, heads=None, max_heads: int = MAX_HEADS) -> tuple[list[int], str]:
    """Which query heads to draw, and a note when some were left out.

    heads: explicit query heads; groups: KV heads whose whole group to draw; neither: every group that fits.
    """
    view, nH, g = "attention_heads", arch.n_heads, arch.group_size
    if heads is not None:
        chosen = [check_index(h, nH, "head", view) for h in np.atleast_1d(heads).tolist()]
    elif groups is not None:
        kvs = [check_index(j, arch.n_kv_heads, "KV group", view) for j in np.atleast_1d(groups).tolist()]
        chosen = [h for j in kvs for h in range(j * g, (j + 1) * g)]
    else:
        fit = max(1, max_heads // g)  # whole groups, at least one
        chosen = list(range(min(nH, fit * g)))[:max_heads]
        if len(chosen) < nH:
            groups_shown = sorted({kv_head(arch, h) for h in chosen})
            return chosen, (
                f"{len(chosen)} of {nH} heads (KV groups {groups_shown[0]}..{groups_shown[-1]} of {arch.n_kv_heads}):"
                " pass groups=[...] or heads=[...] for others"
            )
        return chosen, ""
    if len(chosen) > max_heads:
        raise ValueError(
            f"attention_heads: {len(chosen)} heads asked for, more than max_heads={max_heads}: pass fewer"
            f" groups=/heads= (each KV group has {g} heads), or raise max_heads="
        )
    return chosen, ""


def layer_pattern(trace, layer: int, view: str):
    """The checked trace, layer index and that layer's attention pattern [nH, S, S], or an error naming the fix."""
    trace = check_trace(trace, view)
    layer = check_layer(trace, layer, view)
    site = f"layers.{layer}.attn.pattern"
    require(trace, [site], view, ["layers.*.attn.pattern"])
    return trace, layer, trace[site]


def attention_heads(
    trace,
    layer: int,
    *,
    groups=None,
    heads=None,
    positions=None,
    max_tokens: int = MAX_TOKENS,
    max_heads: int = MAX_HEADS,
    max_cells: int = MAX_CELLS,
) -> go.Figure:
    """Every query head's attention pattern in `layer`: one row per KV group, one heatmap per query head.

    Needs trace["layers.{layer}.attn.pattern"] [nH, S, S]. The heatmap of head h shows pattern[h] on the shown
    positions (rows: query position, columns: key position). groups / heads choose heads; positions chooses a window.
    """
    view = "attention_heads"
    trace, layer, pattern = layer_pattern(trace, layer, view)  # pattern: [nH, S, S]
    arch = trace.arch
    chosen, head_note = choose_heads(arch, groups, heads, max_heads)
    pos, pos_note = window(pattern.shape[-1], positions, max_tokens)
    T = len(pos)
    check_cells(
        len(chosen) * T * T,
        f"{len(chosen)} heads x {T}x{T} positions",
        "pass groups=[0] or a shorter positions=",
        max_cells,
    )

    rows = sorted({kv_head(arch, h) for h in chosen})  # one row per KV group shown
    by_row = {j: [h for h in chosen if kv_head(arch, h) == j] for j in rows}
    cols = max(len(v) for v in by_row.values())
    titles = [f"head {by_row[j][c]} · KV {j}" if c < len(by_row[j]) else "" for j in rows for c in range(cols)]
    fig = make_subplots(
        rows=len(rows),
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.04 / max(1, cols / 4),
        vertical_spacing=0.08 / max(1, len(rows) / 3),
    )

    labels = token_labels(trace.tokens)
    idx = torch.tensor(pos)
    hover_tokens = len(chosen) * T * T <= HOVER_CELLS
    if hover_tokens:
        names = np.array([at(labels, p) for p in pos], dtype=object)
        custom = np.stack(np.broadcast_arrays(names[:, None], names[None, :]), axis=-1)  # (T, T, 2): query, key
        where = "query %{customdata[0]}<br>key %{customdata[1]}"
    else:
        custom, where = None, "query pos %{y} · key pos %{x}"
    for r, j in enumerate(rows):
        for c, h in enumerate(by_row[j]):
            z = numpy(pattern[h][idx][:, idx])  # (T, T): this head's weights, query rows x key columns
            fig.add_trace(
                go.Heatmap(
                    z=z, x=pos, y=pos, coloraxis="coloraxis", customdata=custom, name=f"head {h}",
                    hovertemplate=f"head {h} (KV head {j})<br>{where}<br>weight %{{z:.6f}}<extra></extra>",
                ),
                row=r + 1, col=c + 1,
            )  # fmt: skip
            fig.update_xaxes(row=r + 1, col=c + 1, showticklabels=r == len(rows) - 1, **token_axis(labels, pos, 32))
            fig.update_yaxes(
                row=r + 1, col=c + 1, showticklabels=c == 0, autorange="reversed", **token_axis(labels, pos, 32, y=True)
            )
    for r, j in enumerate(rows):
        fig.update_yaxes(row=r + 1, col=1, title_text=f"KV head {j}<br>query →")
    fig.update_xaxes(row=len(rows), col=1, title_text="key (position read) →")
    fig.update_layout(coloraxis=dict(colorscale="Blues", cmin=0, cmax=1, colorbar=dict(title="attention<br>weight")))
    return base_layout(
        fig,
        f"Layer {layer} attention, grouped by the KV head each query head shares ({arch.group_size} query heads per KV head)",
        "colour: share of the query's attention on each key (rows sum to 1; white above the diagonal = the masked future)",
        head_note,
        pos_note,
        height=150 + 190 * len(rows),
        width=150 + 190 * cols,
    )


def head_overlap(pattern: torch.Tensor, queries=None) -> torch.Tensor:
    """How much two heads attend alike: for each query row, the attention they put on the same keys,
    sum_k min(p_a[k], p_b[k]) (1 = identical rows, 0 = disjoint; 1 minus the total-variation distance), averaged
    over the query rows. [nH, S, S] -> [nH, nH].

    queries: the query rows to average over (default all but row 0, which can only read itself in every head).
    """
    rows = list(range(1, pattern.shape[-1])) if queries is None else [q for q in queries if q > 0] or [0]
    p = pattern[:, torch.tensor(rows)].double().cpu()  # (nH, Q, S)
    out = torch.empty(p.shape[0], p.shape[0], dtype=torch.float64)
    for a in range(p.shape[0]):  # one head against all: (nH, Q, S) at a time, never (nH, nH, Q, S)
        out[a] = torch.minimum(p[a], p).sum(-1).mean(-1)
    return out


def gqa_group_similarity(trace, layer: int, *, positions=None, max_tokens: int = 4 * MAX_TOKENS) -> go.Figure:
    """How alike the heads of each KV group attend in `layer`, against heads of other groups.

    Needs trace["layers.{layer}.attn.pattern"] and at least 2 tokens. Left: head_overlap [nH, nH] over the query
    rows `positions` (default the last max_tokens), each group boxed; right: per KV group, the mean overlap within the group and with the
    heads of the other groups.
    """
    view = "gqa_group_similarity"
    trace, layer, pattern = layer_pattern(trace, layer, view)  # pattern: [nH, S, S]
    arch = trace.arch
    if pattern.shape[-1] < 2:
        raise ValueError(f"{view} needs at least 2 tokens (query 0 attends only to itself in every head)")
    queries, note = window(pattern.shape[-1], positions, max_tokens)
    sim = head_overlap(pattern, queries).numpy()  # (nH, nH)
    nH, g, nKV = arch.n_heads, arch.group_size, arch.n_kv_heads
    group = np.arange(nH) // g
    same = group[:, None] == group[None, :]
    off = ~np.eye(nH, dtype=bool)
    within = [sim[(group[:, None] == j) & same & off].mean() if g > 1 else np.nan for j in range(nKV)]
    across = [sim[(group[:, None] == j) & ~same].mean() if nKV > 1 else np.nan for j in range(nKV)]

    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.16,
                        subplot_titles=["overlap of two heads' attention", "mean per KV group"])  # fmt: skip
    ticks = [f"h{h}·kv{group[h]}" for h in range(nH)]
    fig.add_trace(
        go.Heatmap(
            z=sim, x=list(range(nH)), y=list(range(nH)), colorscale="Viridis", zmin=0, zmax=1,
            colorbar=dict(title="overlap", x=0.6),
            hovertemplate="head %{y} vs head %{x}<br>overlap %{z:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    axis = dict(
        tickmode="array", tickvals=list(range(nH)) if nH <= 32 else list(range(0, nH, g)), tickfont=dict(size=9)
    )
    axis["ticktext"] = [ticks[v] for v in axis["tickvals"]]
    fig.update_xaxes(row=1, col=1, title_text="query head", **axis)
    fig.update_yaxes(row=1, col=1, title_text="query head", autorange="reversed", **axis)
    for j in range(nKV):  # a box around each group: the heads that read the same keys and values
        fig.add_shape(type="rect", x0=j * g - 0.5, x1=(j + 1) * g - 0.5, y0=j * g - 0.5, y1=(j + 1) * g - 0.5,
                      line=dict(color="white", width=2), row=1, col=1)  # fmt: skip
    kv = [f"KV {j}" for j in range(nKV)]
    for name, values, color in (("within its group", within, "#1f77b4"), ("with other groups", across, "#bbbbbb")):
        fig.add_trace(
            go.Bar(x=kv, y=[None if np.isnan(v) else float(v) for v in values], name=name, marker_color=color,
                   hovertemplate="%{x}: mean overlap " + name + " %{y:.6f}<extra></extra>"),
            row=1, col=2,
        )  # fmt: skip
    fig.update_yaxes(row=1, col=2, title_text="mean overlap", range=[0, 1])
    fig.update_layout(barmode="group", legend=dict(orientation="h", x=0.7, y=-0.15))
    flat_within, flat_across = sim[same & off], sim[~same]
    summary = (
        f"mean within groups {flat_within.mean():.3f}, across groups {flat_across.mean():.3f}"
        if flat_within.size and flat_across.size else ""
    )  # fmt: skip
    return base_layout(
        fig,
        f"Layer {layer}: do heads that share a KV head attend alike? ({nH} query heads, {nKV} KV heads)",
        "overlap: the attention two heads put on the same keys (sum of the smaller weight), averaged over query rows",
        "boxes: query heads reading the same keys and values; " + summary,
        note,
        height=560,
        width=1000,
    )
