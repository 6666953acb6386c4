"""What if: change one thing inside the model and regenerate the chat's last answer with it.

The change is one of the lab's ready-made edits (qwen2_lab/edits.py): a query head off, a whole KV group off, an
expert taken out of a MoE layer's routing, the shared expert's gate at 0, or another RoPE theta. The answer is
generated again from the same prompt with the same settings (greedy, or the same random seed when sampling), and
`qwen2_lab.experiments.divergence` finds the first token where the two answers part and how likely each run found
each token there. Every choice is checked against the model's shape (`lab.arch`) before anything runs.
"""

from __future__ import annotations

import math

import gradio as gr
from inside import number

from qwen2_lab import edits, generate
from qwen2_lab.experiments import divergence

KINDS = {  # value: what the menu says
    "head": "a query head off (its output zeroed)",
    "kv_group": "a KV group off (all its query heads zeroed)",
    "expert": "an expert dropped from routing (the top-k picks the next best)",
    "shared_gate": "the shared expert's gate at 0",
    "rope_theta": "another RoPE theta (every layer)",
}
MOE_ONLY = ("expert", "shared_gate")
THETA = 10_000.0  # the menu's other theta: the original Transformer's and Qwen1's, against Qwen2's 1,000,000


def kind_choices(arch) -> list[tuple[str, str]]:
    """The menu of changes this model offers: experts and the shared gate on MoE models only."""
    return [(words, kind) for kind, words in KINDS.items() if arch.is_moe or kind not in MOE_ONLY]


def which_label(arch) -> str:
    """The label of the number that picks the head, KV group or expert, with the ranges this model has."""
    ranges = [f"head 0-{arch.n_heads - 1}", f"KV group 0-{arch.n_kv_heads - 1}"]
    if arch.is_moe:
        ranges.append(f"expert 0-{arch.n_experts - 1}")
    return "Which: " + ", ".join(ranges)


def make_edit(lab, kind: str, layer, which, theta) -> tuple:
    """(the edit, what it does in words) for the menu's choice; a gr.Error naming a choice this model cannot take."""
    arch = lab.arch
    if kind == "rope_theta":
        try:
            theta = float(theta)
        except (TypeError, ValueError):
            raise gr.Error(f"RoPE theta must be a number, got {theta!r}") from None
        if not (math.isfinite(theta) and theta > 1):
            raise gr.Error(f"RoPE theta must be a number above 1 (Qwen2 uses {arch.rope_theta:,.0f}), got {theta:g}")
        return edits.rope(theta=theta), f"RoPE theta {theta:,.0f} instead of {arch.rope_theta:,.0f}"
    if kind not in KINDS:
        raise gr.Error(f"Unknown change {kind!r}: choose one of {list(KINDS)}")
    layer = number("layer", layer, 0, arch.n_layers - 1)
    if kind == "head":
        head = number("head", which, 0, arch.n_heads - 1)
        return edits.zero_heads(layer, [head]), f"layer {layer}: query head {head} off"
    if kind == "kv_group":
        group = number("KV group", which, 0, arch.n_kv_heads - 1)
        heads = f"{group * arch.group_size}-{(group + 1) * arch.group_size - 1}"
        return edits.zero_kv_group(layer, group), f"layer {layer}: KV group {group} off (query heads {heads})"
    if not arch.is_moe:
        raise gr.Error(f"{lab.name} is a dense model: it has no experts and no shared expert. Choose a head instead.")
    if layer not in arch.moe_layers:
        raise gr.Error(f"Layer {layer} is a dense layer: choose one of the MoE layers {list(arch.moe_layers)}")
    if kind == "expert":
        expert = number("expert", which, 0, arch.n_experts - 1)
        return edits.drop_expert(layer, expert), f"layer {layer}: expert {expert} dropped (routing renormalised)"
    return edits.shared_gate(layer, value=0), f"layer {layer}: the shared expert's gate at 0"


def regenerate(gen, edit) -> generate.Generation:
    """`gen`'s prompt generated again with `edit`: the same settings and seed, the same candidates recorded, no
    sites or lens (nothing looks inside this run)."""
    return gen.redo(edits=edit, sites=(), layers=None, lens=0, keep_logits=False)


def what_if(gen, kind: str, layer, which, theta) -> tuple[str, str, str]:
    """The chat's last answer, the answer regenerated with the change, and a note: what changed, and where the two
    answers part (the first differing token, with its probability in both runs)."""
    if gen is None or not gen.steps:
        raise gr.Error("There is no answer to change yet: chat first, then ask what if.")
    edit, words = make_edit(gen.lab, kind, layer, which, theta)
    edited = regenerate(gen, edit)
    return gen.text, edited.text, note(gen, edited, words)


def most_changed(a, b) -> tuple[int, tuple[float, float]]:
    """Of the tokens two runs share, the one whose probability (raw, as each run chose it) moved most: (its step,
    (its probability in a, in b))."""
    pairs = [(s.prob, t.prob) for s, t in zip(a.steps, b.steps)]
    k = max(range(len(pairs)), key=lambda i: abs(pairs[i][0] - pairs[i][1]))
    return k, pairs[k]


def note(gen, edited, words: str) -> str:
    how = "greedy, as before" if not gen.settings.do_sample else f"sampled with the same seed, {gen.options.seed}"
    d = divergence(gen, edited)
    if d.step is None:
        same = "The change altered no token: the two answers agree" + (
            "" if len(gen.steps) == len(edited.steps) else " as far as the shorter one goes"
        )
        k, (p, q) = most_changed(gen, edited)
        text = (
            f"**{words}** ({how}). {same}; the model's confidence moved most at token {k}, {gen.steps[k].token!r}:"
            f" probability {p:.1%} before, {q:.1%} with the change."
        )
    else:
        text = (
            f"**{words}** ({how}). The answers part at token {d.step}: the answer had {d.token_a!r}"
            f" (probability {d.p_a[0]:.1%}, {d.p_a[1]:.1%} with the change); with the change the model chose"
            f" {d.token_b!r} ({d.p_b[0]:.1%} before, {d.p_b[1]:.1%} with the change)."
        )
    forced = [step.index for step in gen.steps if step.forced]
    if forced:
        text += (
            f" The answer had been continued from token {forced[0]} with a token you chose; the changed run starts"
            " from the prompt and chooses every token itself."
        )
    return text
