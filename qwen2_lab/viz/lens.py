"""The logit lens: each layer's residual read as if it were the last one (final norm, lm_head, softmax), so you can
watch the prediction form layer by layer. The numbers are `trace.lens_ids` / `trace.lens_probs` [layers, S, k],
which `lab.trace(inputs, lens=k)` computes with the model's own final norm and lm_head."""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from ._style import at, base_layout, check_index, check_trace, numpy, token_axis, token_label, token_labels, window

TEXT_CELLS = 2_500  # write the top token into each cell only while cells are big enough to read


def check_lens(trace, view: str):
    """(lens_ids, lens_probs) [L, S, k], or an error saying how to get them."""
    trace = check_trace(trace, view)
    ids, probs = getattr(trace, "lens_ids", None), getattr(trace, "lens_probs", None)
    if ids is None or probs is None:
        raise ValueError(
            f"{view} needs the logit lens, which this trace did not compute: call lab.trace(inputs, lens=5)"
        )
    return ids, probs


def lens_vocab(trace, ids: torch.Tensor, tokenizer=None) -> dict[int, str]:
    """Readable text for each token id in `ids`.

    tokenizer: anything with .decode([id]) (lab.tokenizer) or a function id -> str. Without one, the text the Lab
    stored in trace.lens_text; failing that, ids that occur in the input get their input text, others '#id'.
    """
    unique = sorted(set(ids.flatten().tolist()))
    if tokenizer is None and trace.lens_text is not None:
        tokenizer = trace.lens_text.__getitem__
    if tokenizer is not None:
        decode = (
            tokenizer if callable(tokenizer) and not hasattr(tokenizer, "decode") else lambda i: tokenizer.decode([i])
        )
        return {i: token_label(decode(i)) for i in unique}
    known = {int(i): t for i, t in zip(trace.token_ids.tolist(), trace.tokens)}
    return {i: token_label(known[i]) if i in known else f"#{i}" for i in unique}


def logit_lens(trace, *, tokenizer=None, positions=None, max_tokens: int = 48) -> go.Figure:
    """Layers x positions: the top next-token guess read from each layer's residual, coloured by its probability.

    Needs trace.lens_ids / lens_probs (lab.trace(..., lens=5)). Hover lists the top k with probabilities and says
    whether the guess is the input's actual next token. tokenizer (e.g. lab.tokenizer) writes every guess as text.
    """
    view = "logit_lens"
    ids, probs = check_lens(trace, view)  # (L, S, k) each
    L, S, k = ids.shape
    pos, note = window(S, positions, max_tokens)
    idx = torch.tensor(pos)
    ids, probs = ids[:, idx].cpu(), probs[:, idx].float().cpu()  # (L, T, k)
    vocab = lens_vocab(trace, ids, tokenizer)
    labels = token_labels(trace.tokens)
    nxt = trace.token_ids.tolist()
    top = [[vocab[int(i)] for i in row] for row in ids[..., 0]]  # (L, T): the top guess as text
    hover = [
        [
            f"layer {layer}, after {at(labels, p)}<br>"
            + "<br>".join(
                f"{r + 1}. '{vocab[int(ids[layer, t, r])]}' {float(probs[layer, t, r]):.6f}" for r in range(k)
            )
            + (f"<br>next in the input: '{labels[p + 1]}'" if p + 1 < S else "")
            for t, p in enumerate(pos)
        ]
        for layer in range(L)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=numpy(probs[..., 0]), x=pos, y=list(range(L)), text=top, customdata=hover, colorscale="Blues",
            zmin=0, zmax=1, texttemplate="%{text}" if L * len(pos) <= TEXT_CELLS else None,
            textfont=dict(size=9), colorbar=dict(title="probability<br>of the top<br>guess"),
            hovertemplate="%{customdata}<extra></extra>",
        )
    )  # fmt: skip
    hit = [
        (p, layer) for layer in range(L) for t, p in enumerate(pos) if p + 1 < S and int(ids[layer, t, 0]) == nxt[p + 1]
    ]
    if hit:
        fig.add_trace(
            go.Scatter(
                x=[p for p, _ in hit], y=[layer for _, layer in hit], mode="markers", name="top guess = next input token",
                marker=dict(symbol="circle-open", size=16, color="#d62728", line=dict(width=2)), hoverinfo="skip",
            )
        )  # fmt: skip
    fig.update_xaxes(title_text="position (the guess is for the token after it)", **token_axis(labels, pos))
    fig.update_yaxes(title_text="layer (residual after it)", dtick=1 if L <= 30 else 5)
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return base_layout(
        fig,
        "Logit lens: what each layer's residual would predict next, read through the final norm and lm_head",
        "colour: probability of the top guess; text: the guess; the top row is the model's own prediction",
        "" if tokenizer is not None or trace.lens_text else "guesses not in the input show as #id: pass tokenizer=",
        note,
        height=max(380, 160 + 22 * L),
        width=max(700, 220 + 46 * len(pos)),
    )


def lens_position(trace, position: int, *, tokenizer=None) -> go.Figure:
    """One position's logit lens in full: for every layer its top-k guesses (text) and their probabilities.

    Needs trace.lens_ids / lens_probs (lab.trace(..., lens=5)).
    """
    view = "lens_position"
    ids, probs = check_lens(trace, view)
    L, S, k = ids.shape
    p = check_index(position, S, "position", view)
    ids, probs = ids[:, p].cpu(), probs[:, p].float().cpu()  # (L, k)
    vocab = lens_vocab(trace, ids, tokenizer)
    text = [[vocab[int(i)] for i in row] for row in ids]  # (L, k)
    labels = token_labels(trace.tokens)
    fig = go.Figure(
        go.Heatmap(
            z=numpy(probs), x=[f"#{r + 1}" for r in range(k)], y=list(range(L)), text=text, texttemplate="%{text}",
            colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="probability"),
            hovertemplate="layer %{y}, guess %{x}: '%{text}'<br>probability %{z:.6f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(title_text="rank of the guess")
    fig.update_yaxes(title_text="layer", dtick=1 if L <= 30 else 5)
    following = f"; the input continues with '{labels[p + 1]}'" if p + 1 < S else ""
    return base_layout(
        fig,
        f"Logit lens after {at(labels, p)}: the top {k} guesses for the next token, layer by layer{following}",
        "colour: probability",
        height=max(360, 140 + 22 * L),
        width=max(480, 200 + 90 * k),
    )
