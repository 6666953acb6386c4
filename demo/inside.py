"""Look inside: the current conversation traced through the Lab and drawn by the notebooks' own figures.

One `lab.trace` keeps only what the figures need (one layer's attention pattern and MoE routing, and the logit lens
read out of every layer), so looking costs one forward pass of the conversation, never a second copy of the model.

The view opens where there is something to see: a middle layer (the first layers mostly attend locally or to the
first token), the last `WINDOW` tokens (where the model is about to answer, and few enough that every token label
reads), and the KV group of the head whose attention is sharpest in that window (`sharpest_head`).
"""

from __future__ import annotations

import gradio as gr
import torch

from qwen2_lab import viz

MAX_LOOK_TOKENS = 256  # the last this many tokens of a long chat are traced: the figures stay readable and quick
LENS_TOP_K = 5
WINDOW = 24  # positions shown at first: the conversation's last 24 tokens
MAX_WINDOW = viz.MAX_TOKENS  # the most positions one figure draws
AUTO = "auto"  # the KV-group menu's "the group of the sharpest head"


def conversation_ids(lab, history, system_prompt: str | None = None, max_tokens: int = MAX_LOOK_TOKENS):
    """Token ids [S <= max_tokens] of the chat as the model sees it next (chat template with the assistant prompt),
    with the system prompt the chat used (none: the template's default).

    Returns (ids, dropped): a long chat keeps its last `max_tokens` tokens, and `dropped` says how many went.
    """
    turns = [m for m in history or [] if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
    if not turns:
        raise gr.Error("There is nothing to look at yet: chat first (or click an example), then look inside.")
    system = [{"role": "system", "content": system_prompt}] if system_prompt and system_prompt.strip() else []
    ids = lab.encode(system + turns)  # (S,)
    dropped = max(0, len(ids) - max_tokens)
    return ids[dropped:], dropped


def default_layer(arch) -> int:
    """The layer Look inside opens on: the middle one (on MoE models, the middle MoE layer, so routing shows)."""
    layers = list(arch.moe_layers) if arch.is_moe else list(range(arch.n_layers))
    return layers[len(layers) // 2]


def group_choices(arch) -> list[tuple[str, str | int]]:
    """The KV-group menu: the sharpest head's group, then each group with the query heads it serves."""
    g = arch.group_size
    each = [(f"KV group {j} (query heads {j * g}-{(j + 1) * g - 1})", j) for j in range(arch.n_kv_heads)]
    return [("the sharpest head's group", AUTO), *each]


def shown_positions(n: int, size: int, back: int) -> tuple[range, int]:
    """The `size` positions (at most) that end `back` tokens before the last of `n`; and the `back` used, which is
    cut to n - 1 when the conversation is shorter than asked."""
    back = min(max(0, back), n - 1)
    end = n - back
    return range(max(0, end - size), end), back


def sharpest_head(pattern: torch.Tensor, positions) -> tuple[int, torch.Tensor]:
    """The head whose attention is sharpest on the shown window, and every head's score [nH].

    pattern: one layer's attention [nH, S, S]. A head's score is the weight each shown query puts on its single
    strongest shown key, averaged over the queries: 1 when every query reads one token (previous token, a copy of an
    earlier one), 1/n for a head that spreads evenly, low for one whose attention lies outside the window. Key 0 is
    set aside: trained models park spare attention on the first token (an "attention sink"), which would make almost
    every head look sharp there.
    """
    idx = torch.as_tensor(list(positions))
    keys = idx[idx > 0]
    if keys.numel() == 0:  # the window is the first token alone: nothing to compare
        return 0, torch.zeros(pattern.shape[0])
    queries = idx[idx >= keys[0]]  # queries that can see at least one shown key
    peak = pattern[:, queries][:, :, keys].amax(dim=-1)  # (nH, Tq): each query's strongest shown key
    scores = peak.float().mean(dim=-1)  # (nH,)
    return int(scores.argmax()), scores


def number(name: str, value, lo: int, hi: int) -> int:
    """A whole-number control's value, or a gr.Error that names the control and its range."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a whole number, got {value!r}") from None
    if not lo <= n <= hi:
        raise gr.Error(f"{name} must lie in {lo}..{hi}, got {n}")
    return n


def look_inside(lab, history, layer, group=AUTO, window=WINDOW, back=0, system_prompt: str | None = None) -> tuple:
    """Trace the conversation; return the attention, logit-lens and (MoE models) routing figures and a note.

    layer: which layer's attention heads and routing to draw, 0..n_layers-1. group: the KV group whose query heads
    to draw, or AUTO for the group of the sharpest head. window: how many positions to show; back: the window ends
    this many tokens before the last. system_prompt: the chat's.
    """
    arch = lab.arch
    layer = number("layer", layer, 0, arch.n_layers - 1)
    window = number("window", window, 1, MAX_WINDOW)
    back = number("back", back, 0, MAX_LOOK_TOKENS - 1)
    if group != AUTO:
        group = number("KV group", group, 0, arch.n_kv_heads - 1)
    ids, dropped = conversation_ids(lab, history, system_prompt)
    is_moe_layer = layer in arch.moe_layers
    routing_sites = ("router_probs", "topk_experts", "topk_weights", "shared_gate") if is_moe_layer else ()
    sites = [f"layers.{layer}.attn.pattern"] + [f"layers.{layer}.moe.{s}" for s in routing_sites]
    trace = lab.trace(ids, sites=sites, lens=LENS_TOP_K, to_cpu=True)
    positions, back_used = shown_positions(len(ids), window, back)
    head, scores = sharpest_head(trace[f"layers.{layer}.attn.pattern"], positions)
    group = head // arch.group_size if group == AUTO else group
    try:
        attention = viz.attention_heads(trace, layer, groups=[group], positions=positions)
        lens = viz.logit_lens(trace, tokenizer=lab.tokenizer, positions=positions)
        routing = viz.moe_routing(trace, layer, positions=positions) if is_moe_layer else None
    except ValueError as e:  # a figure's size limit, in its own words
        raise gr.Error(str(e)) from None
    note = (
        window_note(len(ids), dropped, positions, back, back_used)
        + " "
        + head_note(arch, layer, head, float(scores[head]))
    )
    return fit_width(attention), fit_width(lens), routing and fit_width(routing), note


def fit_width(fig):
    """The figure drawn at the page's width instead of the width it was made with, so nothing is cut off on the
    right (its height stays)."""
    return fig.update_layout(width=None, autosize=True)


def window_note(n: int, dropped: int, positions: range, back_asked: int, back: int) -> str:
    """Which tokens were traced and which positions the figures show, in words."""
    note = f"Traced the conversation's {n} tokens" + (f" (its last {n}; {dropped} earlier left out)" if dropped else "")
    note += f"; showing positions {positions[0]}..{positions[-1]}"
    note += " (the last ones)." if back == 0 else f", ending {back} tokens before the last."
    if back < back_asked:
        note += f" The conversation is shorter than {back_asked} tokens back, so the window starts at its beginning."
    return note


def head_note(arch, layer: int, head: int, score: float) -> str:
    """Which head stands out in the window, and what to pick for routing on an MoE model's dense layer."""
    note = (
        f"In layer {layer}, head {head} (KV group {head // arch.group_size}) has the sharpest attention here: on"
        f" average {score:.2f} of each query's weight on a single key (the first token set aside)."
    )
    if arch.is_moe and layer not in arch.moe_layers:
        note += f" Layer {layer} is a dense layer: pick an MoE layer ({list(arch.moe_layers)}) to see routing."
    return note
