"""A figure of generation that `qwen2_lab.viz` does not offer yet: where each new token looked, by KV group.

It draws only what a reply recorded while it was generated (each step's `layers.{layer}.attn.pattern`, this token's
query over every earlier position, [nH, 1, T]); nothing runs the model. Like the `viz` figures it is a pure function
that computes the numbers (`generated_attention_data`) and a short one that draws them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from qwen2_lab.viz import token_labels

MAX_KEYS = 256  # key positions drawn: the last ones before the shown tokens (a long chat's start is left out)


@dataclass(frozen=True)
class GeneratedAttention:
    """What generated_attention draws: the shown new tokens' attention over the key positions shown, averaged over
    the query heads of each KV group."""

    layer: int
    groups: list[int]
    weights: np.ndarray  # [G, N, K]: KV group, shown new token, key position (NaN where that token could not read)
    keys: list[int]  # the K key positions shown (absolute positions in the prompt and the reply)
    key_labels: list[str]  # the token at each of them
    steps: list[int]  # the N new tokens shown (their step numbers)
    rows: list[str]  # the tokens of those steps
    prompt_length: int
    left_out: int  # earlier key positions not drawn


def generated_attention_data(gen, layer: int, *, groups=None, steps=None, max_keys: int = MAX_KEYS):
    """The numbers of generated_attention. gen: a Generation whose steps kept `layers.{layer}.attn.pattern`.
    groups: the KV groups (default all); steps: which new tokens (default all)."""
    arch, site = gen.lab.arch, f"layers.{layer}.attn.pattern"
    if not gen.steps or site not in gen.steps[0].sites:
        raise KeyError(f"this generation did not record {site!r}: generate with sites=[{site!r}]")
    groups = list(range(arch.n_kv_heads)) if groups is None else list(groups)
    steps = list(range(len(gen.steps))) if steps is None else list(steps)
    T = gen.steps[steps[-1]].cache_tokens  # the positions the last shown token could read
    first = max(0, T - max_keys)
    weights = np.full((len(groups), len(steps), T - first), np.nan)
    for n, i in enumerate(steps):
        pattern = gen.steps[i].sites[site][:, 0].float()  # (nH, t): this token's query over the t positions before it
        by_group = pattern.reshape(arch.n_kv_heads, arch.group_size, -1).mean(1)  # (nKV, t)
        t = pattern.shape[-1]
        if t > first:
            weights[:, n, : t - first] = by_group[groups, first:].cpu().numpy()
    ids = gen.prompt_ids.tolist() + gen.token_ids
    labels = token_labels(gen.lab.tokens(ids[first:T]))
    rows = token_labels([gen.steps[i].token for i in steps])
    return GeneratedAttention(
        layer, groups, weights, list(range(first, T)), labels, steps, rows, len(gen.prompt_ids), first
    )


def draw_generated_attention(d: GeneratedAttention) -> go.Figure:
    """One heatmap per KV group: rows are the new tokens, columns the positions they read."""
    G, N, K = d.weights.shape
    fig = make_subplots(rows=G, cols=1, shared_xaxes=True, vertical_spacing=0.08 / max(1, G / 3),
                        subplot_titles=[f"KV group {g}" for g in d.groups])  # fmt: skip
    names = np.array(d.key_labels, dtype=object)
    hover = np.broadcast_to(names, (N, K))
    tick = max(1, -(-K // 48))
    for r, g in enumerate(d.groups):
        fig.add_trace(
            go.Heatmap(
                z=d.weights[r], x=d.keys, y=d.steps, coloraxis="coloraxis", customdata=hover, name=f"KV group {g}",
                hovertemplate="new token %{y} reads '%{customdata}' (position %{x})<br>weight %{z:.4f}<extra></extra>",
            ),
            row=r + 1, col=1,
        )  # fmt: skip
        fig.update_yaxes(row=r + 1, col=1, autorange="reversed", tickmode="array", tickvals=d.steps,
                         ticktext=d.rows, title_text="new token")  # fmt: skip
        if d.keys[0] <= d.prompt_length - 1 < d.keys[-1]:
            fig.add_vline(x=d.prompt_length - 0.5, line=dict(color="#444", dash="dot", width=1), row=r + 1, col=1)
    fig.update_xaxes(row=G, col=1, title_text="position read (prompt | reply)", tickmode="array",
                     tickvals=d.keys[::tick], ticktext=d.key_labels[::tick], tickangle=-60)  # fmt: skip
    top = float(np.nanmax(d.weights)) if np.isfinite(d.weights).any() else 1.0
    fig.update_layout(coloraxis=dict(colorscale="Blues", cmin=0, cmax=top, colorbar=dict(title="attention<br>weight")))
    notes = [
        "each row: one new token's attention over every earlier position (a row sums to 1), the mean of the query"
        f" heads that share the KV head; colour up to the largest weight shown, {top:.2f}; the dotted line ends the"
        " prompt"
    ]
    if d.left_out:
        notes.append(f"the first {d.left_out} positions are left out")
    title = f"Layer {d.layer}: where each new token looked, by KV group"
    fig.update_layout(
        title=dict(text="<br>".join([title] + [f"<sup>{n}</sup>" for n in notes]), x=0.01, xanchor="left"),
        height=140 + G * max(160, 40 + 18 * N),
        margin=dict(t=90),
    )
    return fig


def generated_attention(gen, layer: int, **options) -> go.Figure:
    """Each new token's attention back over the prompt and the reply so far, one panel per KV group (the mean of its
    query heads). Options: groups=, steps=, max_keys= (see generated_attention_data)."""
    return draw_generated_attention(generated_attention_data(gen, layer, **options))
