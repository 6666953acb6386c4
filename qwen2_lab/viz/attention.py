"""Grouped-query attention as Qwen2 computes it: every query head's pattern, laid out by the KV head it shares.

In Qwen2, nH query heads share nKV key/value heads: KV head j serves query heads j*g ... j*g + g - 1 (g = nH / nKV,
`repeat_kv`). Heads of one group read the same keys and values with different queries, so they may attend alike;
`gqa_group_similarity` measures how much. `most_structured_head` picks the head worth looking at first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from .style import (
    LEGEND_BELOW,
    MAX_CELLS,
    MAX_HEADS,
    MAX_TOKENS,
    WEIGHT_SCALE,
    at,
    base_layout,
    check_cells,
    check_index,
    layer_sites,
    numpy,
    position_keys,
    subplots,
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


# ---- attention_heads --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionHeads:
    """What attention_heads draws: the chosen heads' patterns on the shown positions."""

    layer: int
    heads: list[int]  # query heads shown
    kv_heads: list[int]  # the KV head each of them reads
    group_size: int  # query heads per KV head
    positions: list[int]  # token positions shown, on both axes
    labels: list[str]  # readable label of every token of the trace
    weights: np.ndarray  # [len(heads), T, T]: pattern[h] on the shown positions (rows query, columns key)
    notes: tuple[str, ...]  # what was left out: heads, positions


def attention_heads_data(
    trace,
    layer: int,
    *,
    groups=None,
    heads=None,
    positions=None,
    max_tokens: int = MAX_TOKENS,
    max_heads: int = MAX_HEADS,
    max_cells: int = MAX_CELLS,
) -> AttentionHeads:
    """The numbers of attention_heads (see there), checked before any work."""
    trace, layer, (pattern,) = layer_sites(trace, layer, ["attn.pattern"], "attention_heads")  # [nH, S, S]
    arch = trace.arch
    chosen, head_note = choose_heads(arch, groups, heads, max_heads)
    pos, pos_note = window(pattern.shape[-1], positions, max_tokens)
    T = len(pos)
    check_cells(len(chosen) * T * T, f"{len(chosen)} heads x {T}x{T} positions", "pass groups=[0] or a shorter positions=", max_cells)  # fmt: skip
    idx = torch.tensor(pos)
    weights = numpy(pattern[torch.tensor(chosen)][:, idx][:, :, idx])  # (heads, T, T)
    if pos[0] > 0:
        pos_note += (
            "; " if pos_note else ""
        ) + f"keys before position {pos[0]} are not drawn (rows sum to less than 1)"
    return AttentionHeads(
        layer, chosen, [kv_head(arch, h) for h in chosen], arch.group_size, pos, token_labels(trace.tokens), weights,
        (head_note, pos_note),
    )  # fmt: skip


def draw_attention_heads(d: AttentionHeads) -> go.Figure:
    """One row per KV group, one heatmap per query head, one colour scale."""
    rows = sorted(set(d.kv_heads))  # one row per KV group shown
    by_row = {j: [i for i, kv in enumerate(d.kv_heads) if kv == j] for j in rows}  # indices into d.heads
    cols = max(len(v) for v in by_row.values())
    titles = [f"head {d.heads[by_row[j][c]]}" if c < len(by_row[j]) else "" for j in rows for c in range(cols)]
    fig = subplots(rows=len(rows), cols=cols, subplot_titles=titles, horizontal_spacing=0.03 / max(1, cols / 4),
                   vertical_spacing=0.1 / max(1, len(rows) / 3))  # fmt: skip
    T, keys = len(d.positions), position_keys(d.positions)
    if len(d.heads) * T * T <= HOVER_CELLS:
        names = np.array([at(d.labels, p) for p in d.positions], dtype=object)
        custom = np.stack(np.broadcast_arrays(names[:, None], names[None, :]), axis=-1)  # (T, T, 2): query, key
        where = "query %{customdata[0]}<br>key %{customdata[1]}"
    else:
        custom, where = None, "query pos %{y} · key pos %{x}"
    for r, j in enumerate(rows):
        for c, i in enumerate(by_row[j]):
            h = d.heads[i]
            fig.add_trace(
                go.Heatmap(
                    z=d.weights[i], x=keys, y=keys, coloraxis="coloraxis", customdata=custom, name=f"head {h}",
                    hovertemplate=f"head {h} (KV head {j})<br>{where}<br>weight %{{z:.6f}}<extra></extra>",
                ),
                row=r + 1, col=c + 1,
            )  # fmt: skip
            fig.update_xaxes(
                row=r + 1, col=c + 1, showticklabels=r == len(rows) - 1, **token_axis(d.labels, d.positions)
            )
            fig.update_yaxes(
                row=r + 1, col=c + 1, showticklabels=c == 0, **token_axis(d.labels, d.positions, reverse=True)
            )
        fig.update_yaxes(row=r + 1, col=1, title_text=f"KV head {j}: query →")
    fig.update_xaxes(row=len(rows), col=1, title_text="key (position read) →")
    fig.update_layout(
        coloraxis=dict(colorscale=WEIGHT_SCALE, cmin=0, cmax=1, colorbar=dict(title="attention<br>weight"))
    )
    return base_layout(
        fig,
        f"Layer {d.layer} attention, grouped by the KV head each query head shares ({d.group_size} query heads per KV head)",
        "colour: share of the query's attention on each key (rows sum to 1; white above the diagonal = the masked"
        " future; the scale stretches small weights)",
        *d.notes,
        height=60 + (200 if cols > 2 else 380) * len(rows),  # one or two heads a row: wide panels, taller too
        top=24,
    )


def attention_heads(trace, layer: int, **options) -> go.Figure:
    """Every query head's attention pattern in `layer`: one row per KV group, one heatmap per query head.

    Needs trace["layers.{layer}.attn.pattern"] [nH, S, S]. The heatmap of head h shows pattern[h] on the shown
    positions (rows: query position, columns: key position). Options (attention_heads_data): groups=[j, ...] or
    heads=[h, ...] choose heads; positions= a window (range, list, or slice(-24, None) for the last 24);
    max_tokens=, max_heads=, max_cells= raise the limits.
    """
    return draw_attention_heads(attention_heads_data(trace, layer, **options))


# ---- which head to look at first --------------------------------------------------------------------------------


def head_structure(pattern: torch.Tensor, positions=None) -> torch.Tensor:
    """How much structure each head shows on `positions` (default all): [nH, S, S] -> [nH], each in 0..1.

    For each shown query row, take its weights on the shown keys it can see, leaving out the first token (where
    many heads park attention they do not use, an "attention sink"): their sum is how much of the row the figure
    shows, 1 minus their normalised entropy is how concentrated it is (1: one key, 0: spread evenly). A head's score
    is the mean over rows of the product, over rows that see at least two such keys. A previous-token head scores
    near 1; a head that spreads evenly, or only reads the first token, near 0.
    """
    S = pattern.shape[-1]
    idx = torch.arange(S) if positions is None else torch.as_tensor(list(positions))
    w = pattern[:, idx][:, :, idx].double().cpu()  # (nH, T, T): shown queries x shown keys
    seen = (idx[None, :] <= idx[:, None]) & (idx[None, :] != 0)  # (T, T): keys a row sees, first token left out
    w = w * seen
    n = seen.sum(-1)  # (T,)
    rows = n >= 2
    if not rows.any():
        raise ValueError("head_structure needs a query row that sees at least two keys besides the first token")
    mass = w.sum(-1)  # (nH, T): share of each row on those keys
    p = w / mass.clamp_min(1e-30)[..., None]
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)  # (nH, T), nats
    concentration = 1 - entropy / n.clamp_min(2).double().log()  # (nH, T)
    return (mass * concentration)[:, rows].mean(-1)


def most_structured_head(trace, layer: int, *, positions=None, max_tokens: int = MAX_TOKENS) -> int:
    """The query head of `layer` with the highest `head_structure` on `positions` (default the last max_tokens):
    a good first head to show. Needs trace["layers.{layer}.attn.pattern"] and at least 3 tokens."""
    _, _, (pattern,) = layer_sites(trace, layer, ["attn.pattern"], "most_structured_head")
    pos, _ = window(pattern.shape[-1], positions, max_tokens)
    return int(head_structure(pattern, pos).argmax())


# ---- gqa_group_similarity ---------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class GroupSimilarity:
    """What gqa_group_similarity draws."""

    layer: int
    overlap: np.ndarray  # [nH, nH]: head_overlap over the query rows
    group: np.ndarray  # [nH]: the KV head each query head reads
    within: np.ndarray  # [nKV]: mean overlap of two different heads of the group (nan with one head per group)
    across: np.ndarray  # [nKV]: mean overlap of a head of the group with a head of another (nan with one group)
    note: str  # which query rows, when not all


def gqa_group_similarity_data(
    trace, layer: int, *, positions=None, max_tokens: int = 4 * MAX_TOKENS
) -> GroupSimilarity:
    """The numbers of gqa_group_similarity (see there)."""
    view = "gqa_group_similarity"
    trace, layer, (pattern,) = layer_sites(trace, layer, ["attn.pattern"], view)  # [nH, S, S]
    if pattern.shape[-1] < 2:
        raise ValueError(f"{view} needs at least 2 tokens (query 0 attends only to itself in every head)")
    queries, note = window(pattern.shape[-1], positions, max_tokens)
    sim = head_overlap(pattern, queries).numpy()  # (nH, nH)
    nH, g, nKV = trace.arch.n_heads, trace.arch.group_size, trace.arch.n_kv_heads
    group = np.arange(nH) // g
    same, other = group[:, None] == group[None, :], ~np.eye(nH, dtype=bool)
    within = np.array([sim[(group[:, None] == j) & same & other].mean() if g > 1 else np.nan for j in range(nKV)])
    across = np.array([sim[(group[:, None] == j) & ~same].mean() if nKV > 1 else np.nan for j in range(nKV)])
    return GroupSimilarity(layer, sim, group, within, across, note)


def draw_gqa_group_similarity(d: GroupSimilarity) -> go.Figure:
    """Left: the overlap of every pair of heads, each KV group boxed, its colour bar beside it; right: per group,
    within against across."""
    nH, nKV = len(d.group), len(d.within)
    g = nH // nKV
    fig = subplots(rows=1, cols=2, column_widths=[0.55, 0.22], horizontal_spacing=0.23,
                   subplot_titles=["overlap of two heads' attention", "mean per KV group"])  # fmt: skip
    ticks = [f"h{h}·kv{d.group[h]}" for h in range(nH)]
    fig.add_trace(
        go.Heatmap(
            z=d.overlap, x=list(range(nH)), y=list(range(nH)), colorscale="Viridis", zmin=0, zmax=1,
            colorbar=dict(title="overlap", x=0.565, xanchor="left"),
            hovertemplate="head %{y} vs head %{x}<br>overlap %{z:.6f}<extra></extra>",
        ),
        row=1, col=1,
    )  # fmt: skip
    shown = list(range(nH)) if nH <= 32 else list(range(0, nH, g))
    axis = dict(tickmode="array", tickvals=shown, ticktext=[ticks[v] for v in shown], tickfont=dict(size=10), automargin=True)  # fmt: skip
    fig.update_xaxes(row=1, col=1, title_text="query head", **axis)
    fig.update_yaxes(row=1, col=1, title_text="query head", autorange="reversed", **axis)
    for j in range(nKV):  # a box around each group: the heads that read the same keys and values
        fig.add_shape(type="rect", x0=j * g - 0.5, x1=(j + 1) * g - 0.5, y0=j * g - 0.5, y1=(j + 1) * g - 0.5,
                      line=dict(color="white", width=2), row=1, col=1)  # fmt: skip
    kv = [f"KV {j}" for j in range(nKV)]
    for name, values, color in (("within its group", d.within, "#1f77b4"), ("with other groups", d.across, "#bbbbbb")):
        fig.add_trace(
            go.Bar(x=kv, y=[None if np.isnan(v) else float(v) for v in values], name=name, marker_color=color,
                   hovertemplate="%{x}: mean overlap " + name + " %{y:.6f}<extra></extra>"),
            row=1, col=2,
        )  # fmt: skip
    fig.update_yaxes(row=1, col=2, title_text="mean overlap", range=[0, 1])
    fig.update_layout(barmode="group", legend=LEGEND_BELOW)
    same, other = d.group[:, None] == d.group[None, :], ~np.eye(nH, dtype=bool)
    flat_within, flat_across = d.overlap[same & other], d.overlap[~same]
    summary = (
        f"mean within groups {flat_within.mean():.3f}, across groups {flat_across.mean():.3f}"
        if flat_within.size and flat_across.size else ""
    )  # fmt: skip
    return base_layout(
        fig,
        f"Layer {d.layer}: do heads that share a KV head attend alike? ({nH} query heads, {nKV} KV heads)",
        "overlap: the attention two heads put on the same keys (sum of the smaller weight), averaged over query rows",
        "boxes: query heads reading the same keys and values; " + summary,
        d.note,
        height=440,
        top=24,
    )


def gqa_group_similarity(trace, layer: int, **options) -> go.Figure:
    """How alike the heads of each KV group attend in `layer`, against heads of other groups.

    Needs trace["layers.{layer}.attn.pattern"] and at least 2 tokens. Top: head_overlap [nH, nH] over the query
    rows `positions=` (default the last max_tokens=256), each group boxed; right: per KV group, the mean overlap
    within the group and with the heads of the other groups.
    """
    return draw_gqa_group_similarity(gqa_group_similarity_data(trace, layer, **options))
