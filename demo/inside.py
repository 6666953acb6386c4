"""Look inside: the current conversation traced through the Lab and drawn by the notebooks' own figures.

One `lab.trace` keeps only what the figures need (one layer's attention pattern and MoE routing, and the logit lens
read out of every layer), so looking costs one forward pass of the conversation, never a second copy of the model.
"""

from __future__ import annotations

import gradio as gr

from qwen2_lab import viz

MAX_LOOK_TOKENS = 256  # the last this many tokens of a long chat are traced: the figures stay readable and quick
LENS_TOP_K = 5


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


def default_groups(arch) -> list[int]:
    """The KV groups drawn by default: as many whole groups as fit the attention figure's head limit."""
    return list(range(min(arch.n_kv_heads, max(1, viz.MAX_HEADS // arch.group_size))))


def look_inside(lab, history, layer, groups=None, system_prompt: str | None = None) -> tuple:
    """Trace the conversation; return the attention, logit-lens and (MoE models) routing figures and a note.

    layer: which layer's attention heads and routing to draw, 0..n_layers-1.
    groups: which KV groups' query heads to draw (default: `default_groups`). system_prompt: the chat's.
    """
    try:
        layer = int(layer)
    except (TypeError, ValueError):
        raise gr.Error(f"layer must be a whole number, got {layer!r}") from None
    if not 0 <= layer < lab.arch.n_layers:
        raise gr.Error(f"layer must lie in 0..{lab.arch.n_layers - 1} for {lab.name}, got {layer}")
    ids, dropped = conversation_ids(lab, history, system_prompt)
    routing_sites = (
        ("router_probs", "topk_experts", "topk_weights", "shared_gate") if layer in lab.arch.moe_layers else ()
    )
    sites = [f"layers.{layer}.attn.pattern"] + [f"layers.{layer}.moe.{s}" for s in routing_sites]
    groups = [int(g) for g in groups] if groups else default_groups(lab.arch)
    trace = lab.trace(ids, sites=sites, lens=LENS_TOP_K, to_cpu=True)
    try:
        attention = viz.attention_heads(trace, layer, groups=groups)
        lens = viz.logit_lens(trace, tokenizer=lab.tokenizer)
        routing = viz.moe_routing(trace, layer) if layer in lab.arch.moe_layers else None
    except ValueError as e:  # a figure's size limit, in its own words (which smaller request to make)
        raise gr.Error(str(e)) from None
    note = f"Traced {len(ids)} tokens of the conversation"
    note += f" (its last {len(ids)}; {dropped} earlier tokens left out)." if dropped else "."
    if lab.arch.is_moe and routing is None:
        note += f" Layer {layer} is a dense layer: pick an MoE layer ({list(lab.arch.moe_layers)}) to see routing."
    return attention, lens, routing, note
