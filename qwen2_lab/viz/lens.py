"""The logit lens: each layer's residual read as if it were the last one (final norm, lm_head, softmax), so you can
watch the prediction form layer by layer. The numbers are `trace.lens_ids` / `trace.lens_probs` [layers, S, k],
which `lab.trace(inputs, lens=k)` computes with the model's own final norm and lm_head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch

from .style import (
    LEGEND_BELOW,
    as_trace,
    at,
    base_layout,
    check_index,
    fit_chars,
    position_keys,
    token_axis,
    token_label,
    token_labels,
    window,
)

TEXT_CELLS, TEXT_COLUMNS = 2_500, 16  # write guesses into cells only while cells are wide enough to read
LENS_TOKENS = 32  # positions (rows) shown by default


def check_lens(trace, view: str):
    """(trace, lens_ids, lens_probs) [L, S, k], or an error saying how to get the lens."""
    trace = as_trace(trace, view)
    if trace.lens_ids is None or trace.lens_probs is None:
        raise ValueError(
            f"{view} needs the logit lens, which this trace did not compute: call lab.trace(inputs, lens=5)"
        )
    return trace, trace.lens_ids, trace.lens_probs


def lens_vocab(trace, ids: torch.Tensor, tokenizer=None) -> tuple[dict[int, str], bool]:
    """The text of each token id in `ids`, and whether it is real text for all of them.

    tokenizer: anything with .decode([id]) (lab.tokenizer) or a function id -> str. Without one, the text the Lab
    stored in trace.lens_text; failing that, ids that occur in the input get their input text, others '#id'.
    """
    from transformers import PreTrainedTokenizerBase

    unique = sorted(set(ids.flatten().tolist()))
    if tokenizer is None and trace.lens_text is not None:
        tokenizer = trace.lens_text.__getitem__
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return {i: tokenizer.decode([i]) for i in unique}, True
    if callable(tokenizer):
        return {i: tokenizer(i) for i in unique}, True
    if tokenizer is not None:
        raise TypeError(f"tokenizer must be an HF tokenizer (lab.tokenizer) or a function id -> str, got {tokenizer!r}")
    known = {int(i): t for i, t in zip(trace.token_ids.tolist(), trace.tokens)}
    return {i: known.get(i, f"#{i}") for i in unique}, all(i in known for i in unique)


# ---- logit_lens -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogitLens:
    """What logit_lens draws: for each layer and shown position, the top-k guesses for the next token."""

    positions: list[int]  # token positions shown
    labels: list[str]  # readable label of every token of the trace
    ids: np.ndarray  # [L, T, k]: token ids of the guesses, best first
    probs: np.ndarray  # [L, T, k]: their probabilities
    guesses: np.ndarray  # [L, T, k]: their text (object array of str)
    hits: np.ndarray  # [L, T]: whether the top guess is the input's next token
    decoded: bool  # whether every guess is real text (else some are '#id')
    note: str  # which positions, when not all


def logit_lens_data(trace, *, tokenizer=None, positions=None, max_tokens: int = LENS_TOKENS) -> LogitLens:
    """The numbers of logit_lens (see there)."""
    trace, ids, probs = check_lens(trace, "logit_lens")  # (L, S, k) each
    S = ids.shape[1]
    pos, note = window(S, positions, max_tokens)
    idx = torch.tensor(pos)
    ids, probs = ids[:, idx].cpu(), probs[:, idx].float().cpu()  # (L, T, k)
    text, decoded = lens_vocab(trace, ids, tokenizer)
    guesses = np.vectorize(lambda i: text[int(i)], otypes=[object])(ids.numpy())
    nxt = torch.tensor([int(trace.token_ids[p + 1]) if p + 1 < S else -1 for p in pos])  # (T,)
    hits = (ids[..., 0] == nxt).numpy()  # (L, T)
    return LogitLens(pos, token_labels(trace.tokens), ids.numpy(), probs.numpy(), guesses, hits, decoded, note)


def draw_logit_lens(d: LogitLens) -> go.Figure:
    """A table: a row per position, a column per layer, each cell the top guess coloured by its probability. (z is
    [layers, positions] as in the trace, drawn transposed; text and hovers are given as drawn.)"""
    L, T, k = d.ids.shape
    keys, S = position_keys(d.positions), len(d.labels)
    cut = fit_chars(L)
    write = L <= TEXT_COLUMNS and L * T <= TEXT_CELLS
    top = [[token_label(d.guesses[layer, t, 0], cut) for layer in range(L)] for t in range(T)]  # (T, L)
    hover = [
        [
            f"layer {layer}, after {at(d.labels, p)}<br>"
            + "<br>".join(f"{r + 1}. '{token_label(d.guesses[layer, t, r])}' {d.probs[layer, t, r]:.6f}" for r in range(k))
            + (f"<br>next in the input: '{d.labels[p + 1]}'" if p + 1 < S else "")
            for layer in range(L)
        ]
        for t, p in enumerate(d.positions)
    ]  # fmt: skip
    fig = go.Figure(
        go.Heatmap(
            z=d.probs[..., 0], transpose=True, x=list(range(L)), y=keys, text=top, customdata=hover, colorscale="Blues",
            zmin=0, zmax=1, texttemplate="%{text}" if write else None, textfont=dict(size=11),
            colorbar=dict(title="probability<br>of the top<br>guess"), hovertemplate="%{customdata}<extra></extra>",
        )
    )  # fmt: skip
    layer, t = np.nonzero(d.hits)
    if len(layer):
        fig.add_trace(
            go.Scatter(
                x=layer, y=[keys[i] for i in t], mode="markers", name="top guess = the next input token",
                marker=dict(symbol="circle-open", size=18, color="#d62728", line=dict(width=2)), hoverinfo="skip",
                showlegend=True,
            )
        )  # fmt: skip
    fig.update_yaxes(
        title_text="position (the guess is for the token after it)", **token_axis(d.labels, d.positions, reverse=True)
    )
    fig.update_xaxes(title_text="layer (the residual after it)", dtick=1 if L <= 30 else 5, side="top")
    fig.update_layout(legend=LEGEND_BELOW)
    return base_layout(
        fig,
        "Logit lens: what each layer's residual would predict next, read through the final norm and lm_head",
        "colour: probability of the top guess"
        + ("; text: the guess" if write else "; hover for the guesses")
        + "; the last column is the model's own prediction",
        "" if d.decoded else "guesses not in the input show as #id: pass tokenizer=",
        d.note,
        height=max(220, 24 * T),
        top=30,
    )


def logit_lens(trace, **options) -> go.Figure:
    """Positions x layers: the top next-token guess read from each layer's residual, coloured by its probability.

    Needs trace.lens_ids / lens_probs (lab.trace(..., lens=5)). Hover lists the top k with probabilities and says
    whether the guess is the input's actual next token. Options (logit_lens_data): tokenizer= (e.g. lab.tokenizer)
    writes every guess as text; positions= a window (slice(-24, None): the last 24); max_tokens= (default 32).
    """
    return draw_logit_lens(logit_lens_data(trace, **options))


# ---- lens_position ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LensPosition:
    """What lens_position draws: one position's top-k guesses in every layer."""

    position: int
    name: str  # the position as a title names it
    following: str | None  # readable label of the input's next token (None at the last position)
    probs: np.ndarray  # [L, k]
    guesses: np.ndarray  # [L, k]: text (object array of str)


def lens_position_data(trace, position: int, *, tokenizer=None) -> LensPosition:
    """The numbers of lens_position (see there)."""
    trace, ids, probs = check_lens(trace, "lens_position")
    S = ids.shape[1]
    p = check_index(position, S, "position", "lens_position")
    ids, probs = ids[:, p].cpu(), probs[:, p].float().cpu()  # (L, k)
    text, _ = lens_vocab(trace, ids, tokenizer)
    labels = token_labels(trace.tokens)
    guesses = np.vectorize(lambda i: text[int(i)], otypes=[object])(ids.numpy())
    return LensPosition(p, at(labels, p), labels[p + 1] if p + 1 < S else None, probs.numpy(), guesses)


def draw_lens_position(d: LensPosition) -> go.Figure:
    """Layers down, ranks across, each cell a guess coloured by its probability."""
    L, k = d.probs.shape
    cut = fit_chars(k)
    fig = go.Figure(
        go.Heatmap(
            z=d.probs, x=[f"#{r + 1}" for r in range(k)], y=list(range(L)), texttemplate="%{text}",
            text=[[token_label(g, cut) for g in row] for row in d.guesses], textfont=dict(size=11),
            customdata=[[token_label(g) for g in row] for row in d.guesses], colorscale="Blues", zmin=0, zmax=1,
            colorbar=dict(title="probability"),
            hovertemplate="layer %{y}, guess %{x}: '%{customdata}'<br>probability %{z:.6f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(title_text="rank of the guess", side="top")
    fig.update_yaxes(title_text="layer", dtick=1 if L <= 30 else 5, autorange="reversed")
    following = f"; the input continues with '{d.following}'" if d.following is not None else ""
    return base_layout(
        fig,
        f"Logit lens after {d.name}: the top {k} guesses for the next token, layer by layer{following}",
        "colour: probability",
        height=max(220, 26 * L),
        top=30,
    )


def lens_position(trace, position: int, **options) -> go.Figure:
    """One position's logit lens in full: for every layer its top-k guesses (text) and their probabilities.

    Needs trace.lens_ids / lens_probs (lab.trace(..., lens=5)). Options: tokenizer=.
    """
    return draw_lens_position(lens_position_data(trace, position, **options))
