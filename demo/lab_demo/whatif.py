"""What if: change one thing inside the model and regenerate the chat's last answer with it.

The change is one of the lab's ready-made edits (qwen2_lab/edits.py): a query head off, a whole KV group off, an
expert taken out of a MoE layer's routing, the shared expert's gate at 0, or another RoPE theta. The answer is
generated again from the same prompt with the same settings (greedy, or the same random seed when sampling), and
`qwen2_lab.experiments.divergence` finds the first token where the two answers part and how likely each run found
each token there. Every choice is checked against the model's shape (`lab.arch`) before anything runs.
"""

from __future__ import annotations

import gradio as gr

from qwen2_lab import edits, generate
from qwen2_lab.experiments import divergence
from qwen2_lab.inputs import InputError, number
from qwen2_lab.recorder import resolve

from .inside import default_layer
from .serving import PRIVATE, QUICK, on_model, refusals, refused, unlisted

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


READS = {  # the inputs each change reads, beside the menu: (layer, which, theta)
    "head": (True, True, False),
    "kv_group": (True, True, False),
    "expert": (True, True, False),
    "shared_gate": (True, False, False),
    "rope_theta": (False, False, True),
}


def needed(name: str, value, **bounds):
    """A number the change reads (`qwen2_lab.inputs.number`), refused when it was left empty."""
    if value is None:
        raise InputError(f"{name} is needed for this change: give a number")
    return number(name, value, **bounds)


def make_edit(lab, kind: str, layer, which, theta) -> tuple:
    """(the edit, its label) for the menu's choice, checked against the model (`recorder.resolve`: the edit's own
    check names a head, group, expert or layer this model does not have) before anything runs."""
    if kind not in KINDS:
        raise InputError(f"Unknown change {kind!r}: choose one of {list(KINDS)}")
    if kind == "rope_theta":
        edit = edits.rope(theta=needed("RoPE theta", theta, low=1, open_low=True))
    else:
        layer = needed("layer", layer, integer=True)
        which = needed(kind.replace("_", " "), which, integer=True) if READS[kind][1] else None
        make = {
            "head": lambda: edits.zero_heads(layer, [which]),
            "kv_group": lambda: edits.zero_kv_group(layer, which),
            "expert": lambda: edits.drop_expert(layer, which),
            "shared_gate": lambda: edits.shared_gate(layer, value=0),
        }
        edit = make[kind]()  # fmt: skip
    resolve(edit, lab.arch)
    return edit, (edit[0] if isinstance(edit, list) else edit).label


def regenerate(gen, edit) -> generate.Generation:
    """`gen`'s prompt generated again with `edit`: the same settings and seed, the same candidates recorded, no
    sites or lens (nothing looks inside this run)."""
    return gen.redo(edits=edit, sites=(), layers=None, lens=0, keep_logits=False)


@refusals
def what_if(gen, kind: str, layer, which, theta) -> tuple[str, str, str]:
    """The chat's last answer, the answer regenerated with the change, and a note: what changed, and where the two
    answers part (the first differing token, with its probability in both runs)."""
    edit, label = checked(gen, kind, layer, which, theta)
    return changed(gen, edit, label)


@refusals
def checked(gen, kind: str, layer, which, theta) -> tuple:
    """(the edit, its label), once there is an answer to change and the change fits the model; nothing runs."""
    if gen is None or not gen.steps:
        raise refused("There is no answer to change yet: chat first, then ask what if.")
    return make_edit(gen.lab, kind, layer, which, theta)


def changed(gen, edit, label: str) -> tuple[str, str, str]:
    """The answer, the answer regenerated with `edit`, and the note."""
    edited = regenerate(gen, edit)
    return gen.text, edited.text, note(gen, edited, label)


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


# ---- the panel ---------------------------------------------------------------------------------------------------


def shown_inputs(kind: str) -> tuple:
    """The layer, which and theta inputs as the change `kind` reads them: the others hidden."""
    return tuple(gr.update(visible=v) for v in READS.get(kind, (True, True, True)))


def build(lab, page) -> None:
    """What if: the chat's last answer regenerated with one change inside the model, beside the answer it gave. The
    change is checked first (a quick event whose only output is a hidden state: a refusal shows its message and
    leaves the last result as it was), then run."""
    arch = lab.arch
    gr.Markdown(
        "Change one thing inside the model and regenerate the chat's last answer with it: the same prompt and"
        " settings (greedy, or the same random seed when sampling). Both answers are shown, with the first token where"
        " they part and how its probability changed."
    )
    kind = gr.Dropdown(kind_choices(arch), value="head", label="Change", elem_id="what-if-kind")
    with gr.Row():
        layer = gr.Number(default_layer(arch), precision=0, label=f"Layer (0-{arch.n_layers - 1})",
                          elem_id="what-if-layer")  # fmt: skip
        which = gr.Number(0, precision=0, label=which_label(arch), elem_id="what-if-which")
        theta = gr.Number(THETA, label=f"RoPE theta (this model's: {arch.rope_theta:,.0f})", elem_id="what-if-theta",
                          visible=False)  # fmt: skip
    run_btn = gr.Button("Regenerate the last answer with this change", elem_id="what-if-btn", variant="primary")
    note_md = gr.Markdown(elem_id="what-if-note")
    with gr.Row():
        before = gr.Textbox(label="The last answer", lines=6, interactive=False, elem_id="what-if-before")
        after = gr.Textbox(label="With the change", lines=6, interactive=False, elem_id="what-if-after")
    choice = [page.gen, kind, layer, which, theta]
    kind.change(shown_inputs, kind, [layer, which, theta], queue=False, **PRIVATE)
    ok = run_btn.click(lambda *c: checked(*c) and None, choice, None, **QUICK)  # a refusal: no mark on the result
    on_model(ok.success, what_if, choice, [before, after, note_md], **unlisted("what_if"))
