"""The web demo's What if panel (demo/lab_demo/whatif.py): the last answer regenerated with one change inside the
model, compared with the lab generating with that edit directly (`generate_steps(..., edits=...)`,
`experiments.divergence`); changes the model cannot take are refused before anything runs.
"""

from __future__ import annotations

import gradio as gr
import pytest
from lab_demo import whatif

from qwen2_lab import edits
from qwen2_lab.experiments import divergence
from qwen2_lab.inputs import InputError

from .helpers import GREEDY_24 as GREEDY
from .helpers import SAMPLED, direct, page_reply, random_lab


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_what_if_a_head_is_off_is_the_lab_generating_with_that_edit(demo_lab, settings):
    _, gen = page_reply(demo_lab, settings=settings)
    before, after, note = whatif.what_if(gen, "head", 1, 2, None)
    assert (gen.options.seed is not None) == gen.settings.do_sample  # a sampled reply keeps its seed
    seed = dict(seed=gen.options.seed) if gen.settings.do_sample else {}
    edited = direct(demo_lab, settings, edits=edits.zero_heads(1, [2]), keep_logits=False, **seed)
    assert (before, after) == (gen.text, edited.text)
    assert edits.zero_heads(1, [2]).label in note  # the edit's own label names the change
    d = divergence(gen, edited)
    if d.step is None:  # the same tokens: the note says where the model's confidence moved most
        k = max(range(len(gen.steps)), key=lambda i: abs(gen.steps[i].prob - edited.steps[i].prob))
        assert f"at token {k}, {gen.steps[k].token!r}: probability {gen.steps[k].prob:.1%} before," in note
        assert f"{edited.steps[k].prob:.1%} with the change" in note
    else:
        assert f"part at token {d.step}: the answer had {d.token_a!r} (probability {d.p_a[0]:.1%}" in note


def test_what_if_on_a_moe_model_drops_an_expert_or_the_shared_gate_or_changes_rope(moe_lab):
    """Each change is the lab's edit, applied: the changed answer and the probabilities in the note (where the
    answers part, or where the confidence moved most) are those of the lab generating with that edit."""
    _, gen = page_reply(moe_lab)
    for kind, edit in [
        ("expert", edits.drop_expert(1, 3)),
        ("shared_gate", edits.shared_gate(1, value=0)),
        ("rope_theta", edits.rope(theta=10_000)),
    ]:
        _, after, note = whatif.what_if(gen, kind, 1, 3, 10_000)
        edited = direct(moe_lab, edits=edit, keep_logits=False)
        words = whatif.make_edit(moe_lab, kind, 1, 3, 10_000)[1]
        assert after == edited.text and note == whatif.note(gen, edited, words)
        assert any(s.prob != t.prob for s, t in zip(gen.steps, edited.steps)), "the edit changed nothing"
    assert edits.rope(theta=10_000)[0].label in note
    assert [kind for _, kind in whatif.kind_choices(moe_lab.arch)] == list(whatif.KINDS)


def test_what_if_refuses_what_the_model_does_not_have(demo_lab):
    arch = demo_lab.arch
    _, gen = page_reply(demo_lab)
    assert "expert" not in [kind for _, kind in whatif.kind_choices(arch)]
    for args, match in [
        (
            ("head", 1, arch.n_heads, None),
            rf"query heads \[{arch.n_heads}\] out of range: this model has query heads 0..{arch.n_heads - 1}",
        ),
        (
            ("kv_group", 1, arch.n_kv_heads, None),
            rf"KV heads \[{arch.n_kv_heads}\] out of range: this model has KV heads 0..{arch.n_kv_heads - 1}",
        ),
        (("head", arch.n_layers, 0, None), rf"matches no site of this model \(layers 0..{arch.n_layers - 1}\)"),
        (("head", 1, "two", None), "head must be a number"),
        (("head", 1, 1.5, None), "head must be a whole number"),
        (("expert", 1, 0, None), "layer 1 is a dense layer"),
        (("rope_theta", 0, 0, 0.5), "RoPE theta must be > 1"),
        (("rope_theta", 0, 0, "big"), "must be a number"),
        (("bigger", 0, 0, None), "Unknown change"),
    ]:
        with pytest.raises(gr.Error, match=match):
            whatif.what_if(gen, *args)
    with pytest.raises(gr.Error, match="no answer to change"):
        whatif.what_if(None, "head", 0, 0, None)
    mixed = random_lab(moe=True, mlp_only_layers=[0])  # a MoE model with a dense layer 0
    with pytest.raises(InputError, match=r"layer 0 is a dense layer: it has no moe.shared_gate"):
        whatif.make_edit(mixed, "shared_gate", 0, 0, None)
    with pytest.raises(InputError, match=r"experts \[6\] out of range: this model has experts 0..5"):
        whatif.make_edit(mixed, "expert", 1, 6, None)


def test_what_if_shows_only_the_inputs_the_change_reads(moe_lab):
    """Each change shows the inputs it reads and hides the others: a hidden one may be empty, a shown one may not."""
    given = (1, 1, 10_000)  # layer, which, theta
    for kind in whatif.KINDS:
        shown = [update["visible"] for update in whatif.shown_inputs(kind)]
        args = [value if visible else None for value, visible in zip(given, shown)]
        whatif.make_edit(moe_lab, kind, *args)  # what is hidden is not read
        for i in (i for i, visible in enumerate(shown) if visible):
            with pytest.raises(InputError, match="is needed for this change"):
                whatif.make_edit(moe_lab, kind, *[None if j == i else a for j, a in enumerate(args)])
    assert [u["visible"] for u in whatif.shown_inputs("rope_theta")] == [False, False, True]
