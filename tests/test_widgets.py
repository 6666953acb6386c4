"""qwen2_lab.widgets driven without a browser: moving a control redraws the figure, in place, with the right slice."""

import math

import numpy as np
import pytest
import torch

from qwen2_lab import rope, viz
from qwen2_lab.arch import family
from qwen2_lab.widgets import AttentionExplorer, LensExplorer, MoEExplorer, RopeExplorer
from tests.helpers import synthetic_trace

TEXT = "The cat sat on the mat."


def z(data) -> torch.Tensor:
    return torch.tensor(np.array(data.z, dtype=np.float32))


def z_y(data) -> torch.Tensor:
    return torch.tensor(np.array(data.y, dtype=np.float32))


def test_attention_explorer_follows_layer_group_and_head(tiny_trace):
    trace = tiny_trace
    ex = AttentionExplorer(trace)
    figure = ex.figure
    ex.layer.value = 2  # an ipywidgets control moved, as in a browser
    assert ex.figure is figure  # updated in place, never replaced
    nH, g = trace.arch.n_heads, trace.arch.group_size
    assert [d.name for d in figure.data] == [f"head {h}" for h in range(nH)]
    for h, d in enumerate(figure.data):
        assert torch.equal(z(d), trace["layers.2.attn.pattern"][h])
    ex.group.value = 1
    assert [d.name for d in figure.data] == [f"head {h}" for h in range(g, 2 * g)]
    assert [label for label, _ in ex.head.options][1:] == [f"head {h}" for h in range(g, 2 * g)]
    ex.head.value = 2 * g - 1
    (only,) = figure.data
    assert torch.equal(z(only), trace["layers.2.attn.pattern"][2 * g - 1])
    ex.show(layer=3, group=-1)  # several controls, one redraw
    assert torch.equal(z(figure.data[0]), trace["layers.3.attn.pattern"][0])
    ex.view.value = "group similarity"
    assert figure.layout.title.text.startswith("Layer 3: do heads that share a KV head")
    assert ex._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"]


def test_attention_explorer_hides_the_group_and_head_menus_where_they_do_nothing(tiny_trace):
    ex = AttentionExplorer(tiny_trace)
    assert [c.layout.display for c in (ex.layer, ex.group, ex.head)] == [None, None, None]
    ex.view.value = "group similarity"  # one figure for every head: neither menu applies
    assert [c.layout.display for c in (ex.layer, ex.group, ex.head)] == [None, "none", "none"]
    ex.view.value = "patterns"
    assert ex.group.layout.display is None and ex.head.layout.display is None


def test_attention_explorer_from_a_lab_traces_one_layer_and_new_inputs(tiny):
    lab = tiny
    ex = AttentionExplorer(lab, "one two")
    ex.layer.value = 1
    kept = ex.source.get(1)
    assert kept.sites() == ["layers.1.attn.pattern"]  # only what the view needs
    ex.set_inputs("a much longer input, to trace again")
    fresh = lab.trace("a much longer input, to trace again", sites=["layers.1.attn.pattern"])
    assert torch.equal(z(ex.figure.data[0]), fresh["layers.1.attn.pattern"][0])
    assert list(ex.figure.layout.xaxis.labelalias.values()) == viz.token_labels(fresh.tokens)
    ex.text.value = "typed in the box"  # the text box traces what is typed
    assert len(ex.figure.data[0].z) == len(lab.trace("typed in the box", sites=["logits"]).tokens)
    ex.text.value = ""  # nothing to trace: said under the controls, the last figure stays
    assert "empty" in ex.message.value and len(ex.figure.data[0].z) > 0


def test_attention_explorer_stays_within_limits_at_72b():
    S = 200
    pattern = torch.rand(64, S, S).tril()
    trace = synthetic_trace("Qwen/Qwen2-72B-Instruct", S, {"layers.5.attn.pattern": pattern})
    ex = AttentionExplorer(trace, layer=5)
    assert len(ex.figure.data) == 16 and "16 of 64 heads" in ex.figure.layout.title.text  # notes: in the title's text
    ex.group.value = 7
    assert [d.name for d in ex.figure.data] == [f"head {h}" for h in range(56, 64)]
    assert torch.equal(z(ex.figure.data[3]), pattern[59][-64:, -64:])
    ex.layer.value = 6  # not traced: the explorer says which sites to trace instead of failing
    assert "layers.*.attn.pattern" in ex.message.value and len(ex.figure.data) == 8


def test_rope_explorer_theta_factor_and_rotation(tiny, tiny_trace):
    lab, trace = tiny, tiny_trace
    ex = RopeExplorer(trace)
    hd = lab.arch.head_dim
    ex.theta.value = 1e4
    (plain_top,) = [d for d in ex.figure.data if d.yaxis == "y"]
    expected = [2 * math.pi * 1e4 ** (2 * j / hd) for j in range(hd // 2)]  # wavelength of pair j at theta 1e4
    assert np.allclose(plain_top.y, expected, rtol=1e-6)
    ex.factor.value = 4.0
    assert f"{0.1 * math.log(4) + 1:.4f}" in ex.figure.layout.title.text  # YaRN's attention factor
    assert any("interpolated" in d.name for d in ex.figure.data)
    ex.show(view="rotation", theta=lab.arch.rope_theta, factor=1.0, layer=1, head=lab.arch.n_heads - 1, token=3)
    star = ex.figure.data[2]
    q_rot = trace["layers.1.attn.q_rot"][lab.arch.n_heads - 1, 3]
    assert (star.x[0], star.y[0]) == (float(q_rot[0]), float(q_rot[hd // 2])) and "the model's q_rot" in star.name
    ex.view.value = "distance decay"
    yarn = rope.rope_parameters(lab.arch, scaling=False)
    assert ex.figure.data[-1].name == f"{yarn.label}: all pairs"  # factor 1: plain RoPE alone


def test_rope_explorer_from_an_arch():
    ex = RopeExplorer(family()["Qwen/Qwen2-7B-Instruct"])
    assert ex.layer.disabled and len(ex.figure.data) >= 1 and not ex.message.value
    assert ex.layer.layout.display == ex.token.layout.display == "none"  # frequencies: theta and factor only
    ex.view.value = "rotation"
    assert "Trace" in ex.message.value  # said, not raised
    assert ex.layer.layout.display is None and ex.token.layout.display is None


def test_moe_explorer_layer_token_and_load(tiny, tiny_moe, tiny_moe_trace):
    lab, trace = tiny_moe, tiny_moe_trace
    ex = MoEExplorer(trace)
    assert ex.layer.options == tuple(lab.arch.moe_layers)
    ex.layer.value = 2
    assert torch.equal(z(ex.figure.data[0]), trace["layers.2.moe.router_probs"])
    ex.show(view="token", token=4)
    assert torch.equal(torch.tensor(np.array(ex.figure.data[0].y)), trace["layers.2.moe.router_probs"][4])
    ex.layer.value = 0
    assert torch.equal(torch.tensor(np.array(ex.figure.data[0].y)), trace["layers.0.moe.router_probs"][4])
    ex.view.value = "all layers"
    assert np.asarray(ex.figure.data[0].z).shape == (lab.arch.n_layers, lab.arch.n_experts)
    with pytest.raises(ValueError, match="dense Qwen2"):
        MoEExplorer(tiny, "hi")


def test_moe_explorer_shows_the_token_slider_only_where_it_acts(tiny_moe_trace):
    ex = MoEExplorer(tiny_moe_trace)
    figure = ex.figure.to_json()
    assert ex.token.layout.display == "none"  # "layer": every token at once
    ex.token.value = 3  # (a hidden slider moved anyway redraws the same figure)
    assert ex.figure.to_json() == figure
    ex.view.value = "token"
    assert ex.token.layout.display is None and ex.layer.layout.display is None
    ex.token.value = 5
    assert torch.equal(z_y(ex.figure.data[0]), tiny_moe_trace["layers.0.moe.router_probs"][5])
    ex.view.value = "all layers"  # every layer and token at once: neither control applies
    assert ex.token.layout.display == ex.layer.layout.display == "none"


def test_moe_explorer_text_box_shows_the_chat_as_text(tiny_moe):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"}]  # fmt: skip
    ex = MoEExplorer(tiny_moe, chat)
    assert ex.text.value == "What is 2+2?" and ex.text.description == "user"  # the user's words, not a repr
    ex.text.value = "What is 3+3?"  # typed: the same chat, with the new question (the old answer dropped)
    assert ex.source.inputs == [chat[0], {"role": "user", "content": "What is 3+3?"}]
    assert ex.source.get().tokens == tiny_moe.trace(ex.source.inputs, sites=["logits"]).tokens
    assert ex.text.value == "What is 3+3?"
    ids = tiny_moe.encode("1+1=")
    ex.set_inputs(ids)  # token ids: shown decoded
    assert ex.text.value == "1+1=" and ex.token.max == len(ids) - 1


def test_lens_explorer_position(tiny):
    lab = tiny
    ex = LensExplorer(lab, TEXT)
    trace = ex.source.get()
    assert torch.equal(z(ex.figure.data[0]), trace.lens_probs[..., 0])
    assert ex.figure.data[0].text[0][0] == viz.token_label(lab.tokenizer.decode([int(trace.lens_ids[0, 0, 0])]))
    assert ex.position.layout.display == "none"  # every position at once
    ex.show(view="one position", position=2)
    assert torch.equal(z(ex.figure.data[0]), trace.lens_probs[:, 2]) and ex.position.layout.display is None
    ex.set_inputs("short")
    assert ex.position.max == len(ex.source.get().tokens) - 1


def test_explorers_need_something_to_show(tiny):
    lab = tiny
    with pytest.raises(ValueError, match=r"AttentionExplorer\(lab, inputs\)"):
        AttentionExplorer(lab)
    with pytest.raises(TypeError, match="takes a Trace"):
        LensExplorer("some text")
    with pytest.raises(AttributeError, match="no control 'colour'"):
        AttentionExplorer(lab, "x").show(colour=1)


def ask_set(b):
    return [
        {"role": "user", "content": f"A={{3,5,7,9}}, B={b}. What is A∩B?"},
        {"role": "assistant", "content": "A∩B={"},
    ]


def test_edit_explorer_switches_heads_and_redraws_the_answer(tiny):
    from qwen2_lab import edits
    from qwen2_lab.widgets import EditExplorer

    ex = EditExplorer(tiny, ask_set("{1,3,4,8}"), answer=("3", "5"), layer=3)
    before = list(ex.figure.data[0].y)  # the answer tokens' logits, unedited (data[2]: edited)
    assert before[0] == pytest.approx(float(ex.clean.logits[-1, tiny.tokenizer.encode("3")[0]]))
    ex.toggle_head(3, 0).toggle_head(2, 2)
    assert ex.heads_off == {(3, 0), (2, 2)} and ex.head_buttons[0].value  # layer 3's head 0 shows pressed
    expected = tiny.trace(ask_set("{1,3,4,8}"), sites=[], edits=[edits.zero_heads(2, [2]), edits.zero_heads(3, [0])])
    three = tiny.tokenizer.encode("3")[0]
    assert ex.probability("3") == pytest.approx(float(expected.logits[-1].softmax(-1)[three]), rel=1e-6)
    assert list(ex.figure.data[2].y)[0] == pytest.approx(float(expected.logits[-1, three]), rel=1e-6)
    ex.head_buttons[1].value = True  # a click in the browser: layer 3, head 1 off
    assert (3, 1) in ex.heads_off
    ex.show(layer=2)
    assert ex.head_buttons[2].value and not ex.head_buttons[1].value  # the buttons show layer 2 now
    ex.clear()
    assert not ex.heads_off and ex.probability("3") == pytest.approx(float(ex.clean.logits[-1].softmax(-1)[three]))
    with pytest.raises(ValueError, match="heads 0..7"):
        ex.toggle_head(3, 8)
    with pytest.raises(ValueError, match="not a MoE layer"):
        ex.toggle_expert(0, 1)


def test_edit_explorer_drops_experts_on_a_moe(tiny_moe):
    from qwen2_lab import edits
    from qwen2_lab.widgets import EditExplorer

    ex = EditExplorer(tiny_moe, ask_set("{1,3,4,8}"), layer=1)
    ex.toggle_expert(1, 3)
    assert ex.experts_off == {(1, 3)} and ex.expert_buttons[3].value
    expected = tiny_moe.trace(ask_set("{1,3,4,8}"), sites=[], edits=edits.drop_expert(1, 3))
    assert ex.probability(ex.answer[0]) == pytest.approx(float(expected.logits[-1].softmax(-1)[ex.answer[0]]))


def test_generation_explorer_scrubs_through_the_steps(tiny):
    from qwen2_lab.widgets import GenerationExplorer

    gen = tiny.generate_steps([{"role": "user", "content": "A={2,5,8}, B={1,5,7}. What is A∩B?"}], max_new_tokens=6,
                              do_sample=True, temperature=0.9, seed=0, sites=["layers.2.attn.pattern"])  # fmt: skip
    ex = GenerationExplorer(gen)
    ex.show(step=3)
    assert "Step 3" in ex.figure.layout.title.text
    assert list(ex.figure.data[0].y) == pytest.approx(viz.candidates_data(gen, 3).raw.tolist())
    ex.show(view="attention")
    assert ex.layer.layout.display is None and ex.step.layout.display == "none"
    assert ex.figure.data[0].z is not None and "Layer 2" in ex.figure.layout.title.text
    ex.show(view="kv cache")
    assert list(ex.figure.data[0].x) == list(range(len(gen.steps)))


def test_generation_explorer_shows_attention_in_every_layer_traced_on_demand(tiny):
    """A generation that kept no attention still offers every layer; what the explorer traces equals what the steps
    record when asked to (sampled, and on a branch)."""
    from qwen2_lab.widgets import GenerationExplorer

    chat = [{"role": "user", "content": "A={2,5,8}, B={1,5,7}. What is A∩B?"}]
    settings = dict(max_new_tokens=6, do_sample=True, temperature=1.5, seed=1)
    plain = tiny.generate_steps(chat, **settings).branch(2, "7")
    recorded = tiny.generate_steps(chat, **settings, sites=["layers.*.attn.pattern"]).branch(2, "7")
    assert plain.token_ids == recorded.token_ids
    ex = GenerationExplorer(plain)
    assert ex.layer.options == tuple(range(tiny.arch.n_layers)) and not ex.layer.disabled
    for layer in range(tiny.arch.n_layers):
        ex.show(view="attention", layer=layer)
        assert ex.message.value == "" and f"Layer {layer}" in ex.figure.layout.title.text
        want = viz.generated_attention_data(recorded, layer).weights  # [G, N, K]
        for g, d in enumerate(ex.figure.data):
            np.testing.assert_allclose(np.array(d.z, dtype=np.float64), want[g], atol=1e-5)
    assert not plain.steps[0].sites  # the generation itself is left as it was
