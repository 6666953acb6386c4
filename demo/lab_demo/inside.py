"""Look inside: the reply as it was generated, or the whole conversation traced, drawn by the notebooks' figures.

After a reply, Look inside draws from what the reply recorded while it was generated (`record_options`: at the layer
the view opens on, each new token's attention over every earlier position and its MoE routing, and the logit lens of
every layer; nothing else): no forward pass runs. For another layer, or a chat with no recorded reply, one
`lab.trace` of the conversation keeps only what the figures need (one layer's attention pattern and MoE routing, and
the logit lens read out of every layer), so looking costs one forward pass, never a second copy of the model.

The view opens where there is something to see: a middle layer (the first layers mostly attend locally or to the
first token), the last `WINDOW` tokens (where the model is about to answer, or has just answered, and few enough that
every token label reads) and, for a trace, the KV group of the head with the most structure in that window
(`default_head`); a recorded reply shows every KV group.
"""

from __future__ import annotations

from functools import partial

import gradio as gr
import torch

from qwen2_lab import viz
from qwen2_lab.inputs import number
from qwen2_lab.trace import Trace

from .serving import PRIVATE, on_model, refusals, refused, unlisted

MAX_LOOK_TOKENS = 256  # the last this many tokens of a long chat are traced: the figures stay readable and quick
LENS_TOP_K = 5
WINDOW = 24  # positions shown at first: the conversation's last 24 tokens
MAX_WINDOW = viz.MAX_TOKENS  # the most positions one figure draws
AUTO = "auto"  # the KV-group menu's "every group (recorded) / the group of the most structured head (traced)"
ROUTING = ("router_probs", "topk_experts", "topk_weights", "shared_gate")  # the MoE sites moe_routing draws
EMPTY = "Nothing to look at yet: chat first (or click an example); the figures draw as soon as there is a reply."
MAX_LENS_COST = 1.0  # record the lens while generating by default when it adds at most one forward per token


def chat_turns(history) -> list[dict]:
    """The chat's user and assistant messages (what Look inside reads), as Gradio sends them."""
    return [m for m in history or [] if isinstance(m, dict) and m.get("role") in ("user", "assistant")]


def conversation_ids(lab, history, system_prompt: str | None = None, max_tokens: int = MAX_LOOK_TOKENS):
    """Token ids [S <= max_tokens] of the chat as the model sees it next (chat template with the assistant prompt),
    with the system prompt the chat used (none: the template's default).

    Returns (ids, dropped): a long chat keeps its last `max_tokens` tokens, and `dropped` says how many went.
    """
    turns = chat_turns(history)
    if not turns:
        raise refused("There is nothing to look at yet: chat first (or click an example), then look inside.")
    system = [{"role": "system", "content": system_prompt}] if system_prompt and system_prompt.strip() else []
    ids = lab.encode(system + turns)  # (S,)
    dropped = max(0, len(ids) - max_tokens)
    return ids[dropped:], dropped


def default_layer(arch) -> int:
    """The layer Look inside opens on: the middle one (on MoE models, the middle MoE layer, so routing shows)."""
    layers = list(arch.moe_layers) if arch.is_moe else list(range(arch.n_layers))
    return layers[len(layers) // 2]


def group_choices(arch) -> list[tuple[str, str | int]]:
    """The KV-group menu: auto (a recorded reply: every group; a trace: the most structured head's group), then each group
    with the query heads it serves."""
    g = arch.group_size
    each = [(f"KV group {j} (query heads {j * g}-{(j + 1) * g - 1})", j) for j in range(arch.n_kv_heads)]
    return [("auto", AUTO), *each]


def shown_positions(n: int, size: int, back: int) -> tuple[range, int]:
    """The `size` positions (at most) that end `back` tokens before the last of `n`; and the `back` used, which is
    cut to n - 1 when the conversation is shorter than asked."""
    back = min(max(0, back), n - 1)
    end = n - back
    return range(max(0, end - size), end), back


def default_head(pattern: torch.Tensor, positions) -> tuple[int, torch.Tensor]:
    """The head with the most structure in the shown window (`viz.head_structure`, the notebooks' own measure), and
    every head's score [nH]; head 0 when the window is too short to compare heads."""
    try:
        scores = viz.head_structure(pattern, positions)
    except ValueError:  # no shown query sees two keys besides the first token
        return 0, torch.zeros(pattern.shape[0])
    return int(scores.argmax()), scores


@refusals
def look_inside(
    lab, history, layer, group=AUTO, window=WINDOW, back=0, system_prompt: str | None = None, gen=None
) -> tuple:
    """The attention, logit-lens and (MoE models) routing figures and a note: drawn from `gen`'s record when it is
    the chat's last reply and recorded `layer`, else from a trace of the conversation.

    layer: which layer's attention heads and routing to draw, 0..n_layers-1. group: the KV group whose query heads
    to draw, or AUTO (recorded: every group; traced: the group of the most structured head). window: how many positions to
    show; back: the window ends this many tokens before the last. system_prompt: the chat's.
    """
    arch = lab.arch
    layer = number("layer", layer, low=0, high=arch.n_layers - 1, integer=True)
    window = number("window", window, low=1, high=MAX_WINDOW, integer=True)
    back = number("back", back, low=0, high=MAX_LOOK_TOKENS - 1, integer=True)
    if group != AUTO:
        group = number("KV group", group, low=0, high=arch.n_kv_heads - 1, integer=True)
    if gen is not None and gen.steps and recorded_layer(gen) == layer:
        return look_at_record(lab, gen, layer, group, window, back)
    drawn, note = look_at_trace(lab, history, layer, group, window, back, system_prompt)
    return (*drawn, why_traced(gen, layer) + note)


def look_at_trace(lab, history, layer: int, group, window: int, back: int, system_prompt) -> tuple:
    """Trace the conversation; return (attention, lens, routing or None) and a note."""
    arch = lab.arch
    ids, dropped = conversation_ids(lab, history, system_prompt)
    is_moe_layer = layer in arch.moe_layers
    sites = [f"layers.{layer}.attn.pattern"] + [f"layers.{layer}.moe.{s}" for s in (ROUTING if is_moe_layer else ())]
    trace = lab.trace(ids, sites=sites, lens=LENS_TOP_K, to_cpu=True)
    positions, back_used = shown_positions(len(ids), window, back)
    head, scores = default_head(trace[f"layers.{layer}.attn.pattern"], positions)
    group = head // arch.group_size if group == AUTO else group
    attention, lens, routing = draw(
        lambda: viz.attention_heads(trace, layer, groups=[group], positions=positions), lab, trace, layer, positions
    )
    note = (
        window_note(len(ids), dropped, positions, back, back_used)
        + " "
        + head_note(arch, layer, head, float(scores[head]))
    )
    return (attention, lens, routing), note


def draw(attention, lab, trace, layer: int, positions) -> tuple:
    """(attention(), the logit lens, MoE routing or None) at the page's width; a figure's size limit as a gr.Error."""
    try:
        lens = viz.logit_lens(trace, tokenizer=lab.tokenizer, positions=positions, max_tokens=MAX_WINDOW)
        routing = viz.moe_routing(trace, layer, positions=positions) if layer in lab.arch.moe_layers else None
        attention = attention()
    except ValueError as e:  # a figure's size limit, in its own words
        raise refused(str(e)) from None
    return fit_width(attention), fit_width(lens), routing and fit_width(routing)


# ---- the reply, as it recorded itself ----------------------------------------------------------------------------


def record_options(arch) -> dict:
    """What a reply on the page records for Look inside's default view, and nothing else: at the layer the view
    opens on, each new token's attention over every earlier position ([nH, 1, T] per token) and, on an MoE layer,
    its routing; and the logit lens (top `LENS_TOP_K` of every layer) of each new token's forward."""
    layer = default_layer(arch)
    routing = [f"layers.{layer}.moe.{s}" for s in ROUTING] if layer in arch.moe_layers else []
    return dict(sites=[f"layers.{layer}.attn.pattern", *routing], lens=LENS_TOP_K)


def lens_cost(arch) -> float:
    """The work the logit lens adds to each new token, as a share of that token's forward: every layer's residual
    through lm_head (n_layers x hidden x vocab multiply-adds) against the forward's (its active weights, with
    lm_head once). About 0.6 for the bundled models, 6.6 for Qwen2-0.5B, 2.2 for Qwen2-7B."""
    lm_head = arch.hidden * arch.vocab
    forward = arch.active_params - arch.embedding_params + lm_head
    return arch.n_layers * lm_head / forward


def record_by_default(arch) -> bool:
    """Whether the page records replies for Look inside unless told otherwise: where the lens costs little."""
    return lens_cost(arch) <= MAX_LENS_COST


def recorded_layer(gen) -> int | None:
    """The layer whose attention `gen` recorded with the logit lens (what `record_options` asks for), or None."""
    if not gen.options.lens:
        return None
    layers = [int(s.split(".")[1]) for s in gen.options.sites or () if s.endswith(".attn.pattern")]
    return layers[0] if len(layers) == 1 else None


def record_trace(gen, layer: int) -> Trace:
    """The reply's record as a Trace of its prompt and new tokens, for the `viz` figures: the logit lens and (on an
    MoE layer) the routing at the position each new token's forward read (the token before it). The other positions
    were never recorded; they hold zeros, and the figures are only asked for recorded positions."""
    lab, steps = gen.lab, gen.steps
    ids = torch.cat([gen.prompt_ids.cpu(), torch.tensor(gen.token_ids, dtype=torch.long)])  # (S,)
    read = torch.tensor([s.position - 1 for s in steps])  # (N,) the position each step's forward read last

    def spread(rows: torch.Tensor, dim: int) -> torch.Tensor:  # rows: N along dim -> S along dim, zeros elsewhere
        shape = list(rows.shape)
        shape[dim] = len(ids)
        out = torch.zeros(shape, dtype=rows.dtype)
        out.index_copy_(dim, read, rows.cpu())
        return out

    routing = [f"layers.{layer}.moe.{s}" for s in ROUTING] if layer in lab.arch.moe_layers else []
    store = {site: spread(torch.cat([s.sites[site] for s in steps]), 0) for site in routing}  # (S, ...) each
    lens_ids = spread(torch.stack([s.lens_ids for s in steps], 1), 1)  # (L, S, k)
    lens_probs = spread(torch.stack([s.lens_probs for s in steps], 1), 1)  # (L, S, k)
    no_logits = torch.empty(len(ids), 0)  # the record keeps no logits (the figures drawn from it read none)
    return Trace(ids, lab.tokens(ids), lab.arch, no_logits, store, lens_ids=lens_ids, lens_probs=lens_probs)


def look_at_record(lab, gen, layer: int, group, window: int, back: int) -> tuple:
    """The default view of the reply `gen`, drawn from its record alone: its new tokens' attention by KV group, their
    logit lens and routing; and a note."""
    n = len(gen.steps)
    steps, back_used = shown_positions(n, window, back)
    trace = record_trace(gen, layer)
    positions = [gen.steps[i].position - 1 for i in steps]  # the positions whose forwards chose those tokens
    groups = None if group == AUTO else [group]
    attention, lens, routing = draw(
        lambda: viz.generated_attention(gen, layer, groups=groups, steps=steps), lab, trace, layer, positions
    )
    return attention, lens, routing, record_note(n, steps, back, back_used, layer)


def record_note(n: int, steps: range, back_asked: int, back: int, layer: int) -> str:
    note = (
        f"Drawn from what the last reply recorded while it was generated (no forward pass ran): its {n} new tokens;"
        f" showing tokens {steps[0]}..{steps[-1]}"
    )
    note += " (the last ones)." if back == 0 else f", ending {back} tokens before the last."
    if back < back_asked:
        note += f" The reply is shorter than {back_asked} tokens back, so the window starts at its beginning."
    note += (
        f" Attention: each new token's query in layer {layer} over every earlier position, the mean of each KV"
        " group's query heads. The logit lens and routing of a new token are read at the position before it, whose"
        " forward chose it. Choose another layer to trace the whole conversation instead."
    )
    return note


def why_traced(gen, layer: int) -> str:
    """Why the view traced the conversation although the chat has a reply, in words ('' when it has none)."""
    if gen is None or not gen.steps:
        return ""
    recorded = recorded_layer(gen)
    if recorded is None:
        return "The last reply was not recorded for Look inside (see the chat's settings), so the conversation was traced. "
    return f"The last reply recorded layer {recorded}, not layer {layer}, so the conversation was traced. "


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
        f"In layer {layer}, head {head} (KV group {head // arch.group_size}) shows the most structure here (score"
        f" {score:.2f} of 1: how much of its attention lands in the window, on few keys, the first token set aside)."
    )
    if arch.is_moe and layer not in arch.moe_layers:
        note += f" Layer {layer} is a dense layer: pick an MoE layer ({list(arch.moe_layers)}) to see routing."
    return note


# ---- the panel ---------------------------------------------------------------------------------------------------


def build(lab, page, opened=None) -> None:
    """Look inside: layer, KV group and position window as controls; figures at full width. It draws when its tab
    is opened (`opened`: the tab) and whenever a control changes, and clears as a new turn starts, so what it
    shows always matches the chat's last reply."""
    arch = lab.arch
    gr.Markdown(
        "The chat's last reply drawn from what it recorded while it was generated (its new tokens' attention in one"
        " layer, their logit lens, their MoE routing), with the same `qwen2_lab.viz` figures as the notebooks; for"
        " another layer, or when the reply was not recorded, the conversation is traced once through the lab's"
        f" step-by-step forward. It opens on a middle layer and the last {WINDOW} tokens, and redraws as you"
        " change a control."
    )
    with gr.Row():
        layer = gr.Slider(0, arch.n_layers - 1, default_layer(arch), step=1, label="Layer", elem_id="look-layer")
        group = gr.Dropdown(
            group_choices(arch), value=AUTO, label="KV group (its query heads are drawn)", elem_id="look-group",
            info="auto: every group for a recorded reply; the most structured head's group for a traced conversation",
        )  # fmt: skip
        window = gr.Slider(1, MAX_WINDOW, WINDOW, step=1, label="Positions shown", elem_id="look-window")
        back = gr.Slider(0, MAX_LOOK_TOKENS - 1, 0, step=1, label="Window ends this many tokens before the last",
                         elem_id="look-back")  # fmt: skip
    note = gr.Markdown(EMPTY, elem_id="look-note")
    figures = [
        gr.Plot(label="Attention, by the KV head the query heads share", elem_id="attention-plot"),
        gr.Plot(label="Logit lens: each layer's best guess for the next token", elem_id="lens-plot"),
        gr.Plot(label="MoE routing", visible=arch.is_moe, elem_id="routing-plot"),
    ]

    def look(history, gen, layer, group, window, back, system_prompt):
        if not chat_turns(history):
            return None, None, None, EMPTY  # nothing to draw yet: no error mark, the note says what to do
        return look_inside(lab, history, layer, group, window, back, system_prompt, gen=gen)

    controls = [page.chatbot, page.gen, layer, group, window, back, page.settings[0]]
    triggers = [layer.change, group.change, window.change, back.change] + ([opened.select] if opened else [])
    on_model(partial(gr.on, triggers), look, controls, [*figures, note], trigger_mode="always_last",
             **unlisted("look_inside"))  # fmt: skip
    page.on_turn(lambda: (None, None, None, EMPTY), None, [*figures, note], queue=False)
    page.chatbot.clear(lambda: (None, None, None, EMPTY), None, [*figures, note], queue=False, **PRIVATE)
