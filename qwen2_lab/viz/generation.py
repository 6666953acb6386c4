"""Generation, token by token: how sure the model was of each token, what sampling did to the candidates, the KV
cache growing, and where each new token looked.

Each view takes a `Generation` (lab.generate_steps) and draws what its steps recorded; nothing is run again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ..generate import Generation
from .style import (
    FONT,
    LEGEND_BELOW,
    WEIGHT_SCALE,
    base_layout,
    check_index,
    fit_chars,
    numpy,
    position_keys,
    subplots,
    token_axis,
    token_label,
    token_labels,
)

CELL_FONT = 11  # px: token_confidence's cell text (unset, plotly shrinks it to fit the cells, down to 4 px)
CONFIDENCE_SCALE = [[0.0, "#d73027"], [0.25, "#fc8d59"], [0.5, "#fee08b"], [0.75, "#d9ef8b"], [1.0, "#1a9850"]]


def as_generation(x, view: str) -> Generation:
    if not isinstance(x, Generation):
        raise TypeError(f"{view} takes a Generation: gen = lab.generate_steps(inputs, ...); got {type(x).__name__}")
    if not x.steps:
        raise ValueError(f"{view}: this generation has no steps yet")
    return x


# ---- the answer, each token coloured by its probability -----------------------------------------------------------


@dataclass(frozen=True)
class TokenConfidence:
    """What token_confidence draws: the new tokens laid out in rows of `per_row`, with their probabilities."""

    labels: list[str]  # each new token, readable
    cells: list[str]  # each new token as its cell writes it: cut to fit a cell at a readable size, * if forced
    probs: np.ndarray  # [N] the probability each token had when it was chosen (raw, or after the processors)
    alternatives: list[str]  # per token: the runners-up as hover text
    per_row: int
    processed: bool
    forced: list[bool]


def token_confidence_data(gen, *, processed: bool = False, per_row: int = 8) -> TokenConfidence:
    """The numbers of token_confidence (see there)."""
    gen = as_generation(gen, "token_confidence")
    probs = np.array([s.processed_prob if processed else s.prob for s in gen.steps], dtype=np.float64)
    alternatives = []
    for s in gen.steps:
        top = s.processed_top if processed else s.top
        alternatives.append("<br>".join(f"{token_label(c.text)!s:>14} {c.prob:7.2%}" for c in top) or "(none kept)")
    cut = fit_chars(per_row)
    cells = [token_label(s.token, cut - s.forced) + "*" * s.forced for s in gen.steps]  # * = a token you chose
    return TokenConfidence(
        token_labels(gen.tokens), cells, probs, alternatives, per_row, processed, [s.forced for s in gen.steps]
    )


def draw_token_confidence(d: TokenConfidence) -> go.Figure:
    """The answer as a grid of cells, one per token, read left to right and top to bottom."""
    n, w = len(d.labels), d.per_row
    rows = -(-n // w)
    z = np.full((rows, w), np.nan)
    text = np.full((rows, w), "", dtype=object)
    hover = np.full((rows, w), "", dtype=object)
    for i in range(n):
        r, c = divmod(i, w)
        z[r, c] = d.probs[i]
        text[r, c] = d.cells[i]
        hover[r, c] = f"token {i}: {d.labels[i]} p={d.probs[i]:.2%}<br>best candidates:<br>{d.alternatives[i]}"
    fig = go.Figure(
        go.Heatmap(
            z=z, text=text, texttemplate="%{text}", textfont=dict(size=CELL_FONT, **FONT), customdata=hover,
            colorscale=CONFIDENCE_SCALE, zmin=0, zmax=1,
            xgap=2, ygap=2, colorbar=dict(title="p", tickformat=".0%"), hovertemplate="%{customdata}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    which = "after temperature/top-k/top-p (what sampling drew from)" if d.processed else "under the raw distribution"
    return base_layout(
        fig,
        "How sure the model was of each token it wrote",
        f"colour: the chosen token's probability {which}; hover for the runners-up"
        + ("; * = a token you chose (a branch)" if any(d.forced) else ""),
        height=max(120, 46 * rows),
    )


def token_confidence(gen, **options) -> go.Figure:
    """The generated answer, every token coloured by the probability it had when chosen, its alternatives on hover.

    Options (token_confidence_data): processed=True for the distribution after the sampling processors; per_row=
    tokens per row (8: a cell then holds 7 characters at 11 px from MIN_WIDTH up; longer tokens are cut with '…',
    whole on hover).
    """
    return draw_token_confidence(token_confidence_data(gen, **options))


# ---- one step's candidates, raw against after the processors ------------------------------------------------------


@dataclass(frozen=True)
class Candidates:
    """What candidates draws: one step's best candidates and their probabilities before and after the processors."""

    step: int
    chosen: str
    labels: list[str]  # the union of both top lists, in order of raw probability
    raw: np.ndarray  # [K]
    processed: np.ndarray  # [K] (0 where a processor cut the token)
    settings: str


def candidates_data(gen, step: int) -> Candidates:
    """The numbers of candidates (see there). Probabilities come from the step's logits when kept, else from its
    recorded top lists."""
    import torch

    gen = as_generation(gen, "candidates")
    step = check_index(step, len(gen.steps), "step", "candidates")
    s = gen.steps[step]
    ids = list(dict.fromkeys([c.id for c in s.top] + [c.id for c in s.processed_top] + [s.token_id]))
    raw = {c.id: c.prob for c in s.top}
    after = {c.id: c.prob for c in s.processed_top}
    if s.logits is not None:
        raw = dict(zip(ids, torch.softmax(s.logits, -1)[ids].tolist()))
    ids.sort(key=lambda i: -raw.get(i, 0.0))
    names = gen.lab.tokens(ids)
    cfg = gen.settings
    knobs = (
        [f"temperature {cfg.temperature:g}", f"top-k {cfg.top_k}", f"top-p {cfg.top_p:g}"]
        if cfg.do_sample
        else ["greedy"]
    )
    if cfg.repetition_penalty not in (None, 1.0):
        knobs.append(f"repetition penalty {cfg.repetition_penalty:g}")
    return Candidates(
        step, token_label(s.token), token_labels(names), np.array([raw.get(i, 0.0) for i in ids]),
        np.array([after.get(i, 0.0) for i in ids]), ", ".join(knobs),
    )  # fmt: skip


def draw_candidates(d: Candidates) -> go.Figure:
    """Grouped bars: each candidate's raw probability beside the one sampling drew from."""
    keys = position_keys(range(len(d.labels)))
    fig = go.Figure()
    for name, values, colour in (
        ("raw: softmax(logits)", d.raw, "#9ecae1"),
        ("after the processors", d.processed, "#08519c"),
    ):
        fig.add_trace(go.Bar(x=keys, y=values, name=name, marker_color=colour,
                             hovertemplate="%{x}: %{y:.3%}<extra>" + name + "</extra>"))  # fmt: skip
    fig.update_xaxes(title_text="candidate next token", **token_axis(d.labels, list(range(len(d.labels)))))
    fig.update_yaxes(title_text="probability", tickformat=".0%", rangemode="tozero")
    fig.update_layout(barmode="group", legend=LEGEND_BELOW)
    return base_layout(
        fig, f"Step {d.step}: the candidates, and what sampling made of them (chose {d.chosen})", d.settings, height=320
    )


def candidates(gen, step: int) -> go.Figure:
    """One step's best candidates: their raw probabilities against those after repetition penalty, temperature,
    top-k and top-p (the distribution sampling drew from). Tokens a processor removed have 0 after it."""
    return draw_candidates(candidates_data(gen, step))


# ---- the KV cache, growing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheGrowth:
    """What kv_cache_growth draws: tokens in the cache after each step and its bytes, this model against full
    multi-head attention (as many KV heads as query heads)."""

    steps: np.ndarray  # [N]
    tokens: np.ndarray  # [N] tokens cached after each step's forward
    per_layer: np.ndarray  # [N] bytes per layer, this model (GQA)
    per_layer_mha: np.ndarray  # [N] bytes per layer with full multi-head attention
    n_layers: int
    n_kv_heads: int
    n_heads: int
    dtype: str


def kv_cache_growth_data(gen) -> CacheGrowth:
    """The numbers of kv_cache_growth (see there): 2 (keys, values) x KV heads x head_dim x bytes per token."""
    gen = as_generation(gen, "kv_cache_growth")
    a, item = gen.lab.arch, gen.lab.dtype.itemsize
    tokens = np.array([s.cache_tokens for s in gen.steps])
    per_token = 2 * a.n_kv_heads * a.head_dim * item
    mha = 2 * a.n_heads * a.head_dim * item
    return CacheGrowth(np.arange(len(tokens)), tokens, tokens * per_token, tokens * mha, a.n_layers, a.n_kv_heads,
                       a.n_heads, str(gen.lab.dtype).removeprefix("torch."))  # fmt: skip


def draw_kv_cache_growth(d: CacheGrowth) -> go.Figure:
    fig = go.Figure()
    lines = [
        (
            d.per_layer * d.n_layers,
            f"this model: {d.n_kv_heads} KV heads (grouped-query attention)",
            "#08519c",
            "solid",
        ),
        (d.per_layer_mha * d.n_layers, f"full multi-head attention: {d.n_heads} KV heads", "#d62728", "dash"),
    ]
    for total, name, colour, dash in lines:
        fig.add_trace(go.Scatter(
            x=d.steps, y=total / 2**10, name=name, mode="lines+markers", line=dict(color=colour, dash=dash),
            customdata=np.stack([d.tokens, total / d.n_layers / 2**10], -1),
            hovertemplate="step %{x}: %{customdata[0]} tokens cached<br>%{y:,.1f} KiB in all,"
            " %{customdata[1]:,.2f} KiB per layer<extra></extra>",
        ))  # fmt: skip
    fig.update_xaxes(title_text="generation step")
    fig.update_yaxes(title_text=f"KV cache, KiB ({d.dtype})", rangemode="tozero")
    fig.update_layout(legend=LEGEND_BELOW)
    return base_layout(
        fig, "The KV cache grows by one token per step",
        f"keys and values of every cached token in each of {d.n_layers} layers; GQA keeps {d.n_heads // d.n_kv_heads}x"
        " less than multi-head attention would",
        height=320,
    )  # fmt: skip


def kv_cache_growth(gen) -> go.Figure:
    """The KV cache after each step of this generation: its size, this model's against full multi-head attention's."""
    return draw_kv_cache_growth(kv_cache_growth_data(gen))


# ---- where each new token looked ------------------------------------------------------------------------------------


MAX_KEYS = 256  # key positions drawn: the last ones before the shown tokens (a long chat's start is left out)


@dataclass(frozen=True)
class GeneratedAttention:
    """What generated_attention draws: each shown step's attention over the key positions shown, averaged over the
    query heads of each KV group."""

    layer: int
    groups: list[int]
    weights: np.ndarray  # [G, N, K]: group, shown step, key position (NaN past what that step could read)
    keys: list[int]  # the K key positions shown (absolute: prompt, then answer)
    labels: list[str]  # the token at each of them
    steps: list[int]  # the N steps shown
    rows: list[str]  # "→ token": the query whose attention chose that token (it sits one position before it)
    prompt_length: int
    left_out: int  # earlier key positions not drawn


def generated_attention_data(
    gen, layer: int, *, groups=None, steps=None, max_keys: int = MAX_KEYS
) -> GeneratedAttention:
    """The numbers of generated_attention (see there). Needs the steps to have kept layers.{layer}.attn.pattern."""
    gen = as_generation(gen, "generated_attention")
    a = gen.lab.arch
    layer = check_index(layer, a.n_layers, "layer", "generated_attention")
    site = f"layers.{layer}.attn.pattern"
    if site not in gen.steps[0].sites:
        raise KeyError(f"generated_attention needs {site!r} at every step: lab.generate_steps(..., sites=[{site!r}])")
    groups = list(range(a.n_kv_heads)) if groups is None else [check_index(g, a.n_kv_heads, "group", "generated_attention") for g in groups]  # fmt: skip
    steps = list(range(len(gen.steps))) if steps is None else [check_index(i, len(gen.steps), "step", "generated_attention") for i in steps]  # fmt: skip
    T = gen.steps[steps[-1]].cache_tokens  # the positions the last shown step could read
    first = max(0, T - max_keys)
    weights = np.full((len(groups), len(steps), T - first), np.nan)
    for n, i in enumerate(steps):
        p = numpy(gen.steps[i].sites[site][:, 0])  # (nH, t): this step's query over the t positions it read
        by_group = p.reshape(a.n_kv_heads, a.group_size, -1).mean(1)  # (nKV, t)
        if p.shape[-1] > first:
            weights[:, n, : p.shape[-1] - first] = by_group[groups, first:]
    ids = gen.prompt_ids.tolist() + gen.token_ids
    labels = token_labels(gen.lab.tokens(ids[first:T]))
    rows = ["→ " + token_label(gen.steps[i].token) for i in steps]
    return GeneratedAttention(layer, groups, weights, list(range(first, T)), labels, steps, rows,
                              len(gen.prompt_ids), first)  # fmt: skip


def draw_generated_attention(d: GeneratedAttention) -> go.Figure:
    G, N, K = d.weights.shape
    keys, rows = position_keys(d.keys), position_keys(d.steps)
    fig = subplots(rows=G, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                   subplot_titles=[f"KV group {g}" for g in d.groups])  # fmt: skip
    step_rows, key_labels = dict(zip(d.steps, d.rows)), dict(zip(d.keys, d.labels))  # the axes' categories: steps, keys
    for i in range(G):
        fig.add_trace(go.Heatmap(
            z=d.weights[i], x=keys, y=rows, colorscale=WEIGHT_SCALE, zmin=0, zmax=1, showscale=i == 0, name=f"KV group {d.groups[i]}",
            colorbar=dict(title="weight"), customdata=np.array([d.labels] * N, dtype=object),
            hovertemplate="step %{y}: reads %{customdata} (pos %{x})<br>weight %{z:.3f}<extra></extra>",
        ), row=i + 1, col=1)  # fmt: skip
        fig.update_yaxes(row=i + 1, col=1, title_text="choosing", **token_axis(step_rows, d.steps, reverse=True))
        if d.keys[0] <= d.prompt_length - 1 < d.keys[-1]:
            fig.add_vline(x=d.prompt_length - d.keys[0] - 0.5, line=dict(color="#444", dash="dot", width=1),
                          row=i + 1, col=1)  # fmt: skip
    fig.update_xaxes(row=G, col=1, title_text="position read (prompt | answer)", **token_axis(key_labels, d.keys))
    notes = [
        "each row: the attention that chose the token after the arrow, over every position before it (mean of the"
        " query heads sharing that KV head); the dotted line ends the prompt"
    ]
    if d.left_out:
        notes.append(f"the first {d.left_out} positions are left out (max_keys=)")
    return base_layout(fig, f"Layer {d.layer}: where each new token looked, by KV group", *notes,
                       height=max(160, 22 * N) * G, top=20)  # fmt: skip


def generated_attention(gen, layer: int, **options) -> go.Figure:
    """Each generated token's attention back over the prompt and the answer so far, one panel per KV group.

    Needs lab.generate_steps(..., sites=["layers.{layer}.attn.pattern"]). Options (generated_attention_data):
    groups= which KV groups, steps= which steps, max_keys= how many of the last key positions.
    """
    return draw_generated_attention(generated_attention_data(gen, layer, **options))
