"""The web demo's Look inside panel (demo/lab_demo/inside.py): the view's defaults and controls on a traced
conversation, and after a reply, drawn from what the reply recorded (no forward pass). Each figure's numbers are
compared with the lab's own trace or the reply's record.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch
from lab_demo import chat, check, examples, inside

import qwen2_lab
from qwen2_lab import viz
from qwen2_lab.arch import arch_of, family_config

from .helpers import GREEDY_24 as GREEDY
from .helpers import QUESTION, Forwards, direct, page_reply

PROMPT = check.problem_prompts()["gaokao-2024-set"]["zh"]
GREEDY_LONG = (None, 0.0, 1.0, 0, 128, 1.0)  # the page's default length: the whole reply


def test_the_default_head_is_the_one_with_most_structure_in_the_window():
    """Three heads on 6 positions: even causal attention, all weight on the first token (an attention sink), and
    each query on the token before it. The last has the most structure; the sink none, since key 0 is set aside."""
    S = 6
    even = torch.tril(torch.ones(S, S)) / torch.arange(1, S + 1)[:, None]
    sink = torch.zeros(S, S)
    sink[:, 0] = 1
    previous = torch.zeros(S, S)
    previous[0, 0] = 1
    previous[torch.arange(1, S), torch.arange(S - 1)] = 1  # query i reads key i - 1
    pattern = torch.stack([even, sink, previous])  # (3, S, S)
    head, scores = inside.default_head(pattern, range(S))
    assert head == 2 and torch.equal(scores, viz.head_structure(pattern, range(S))) and scores[1] == 0
    assert inside.default_head(pattern, range(3, 6))[0] == 2  # a window: queries and keys 3..5 only
    assert inside.default_head(pattern, [0])[0] == 0  # the first token alone: nothing to compare, no error


def test_shown_positions_end_where_asked():
    assert inside.shown_positions(100, 24, 0) == (range(76, 100), 0)
    assert inside.shown_positions(100, 24, 10) == (range(66, 90), 10)
    assert inside.shown_positions(10, 24, 0) == (range(0, 10), 0)
    assert inside.shown_positions(10, 24, 50) == (range(0, 1), 9)  # further back than the chat: its first token


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_look_inside_opens_on_a_middle_layer_the_last_tokens_and_the_most_structured_head(name):
    lab = qwen2_lab.load(name)
    arch = lab.arch
    history = [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}, {"role": "assistant", "content": "2"}]
    layer = inside.default_layer(arch)
    assert 0 < layer < arch.n_layers - 1 and (layer in arch.moe_layers or not arch.is_moe)
    attention, lens, routing, note = inside.look_inside(lab, history, layer, system_prompt="Be brief.")
    ids = lab.encode([{"role": "system", "content": "Be brief."}, *history])  # the chat with the system prompt it had
    assert len(ids) > inside.WINDOW
    pattern = lab.trace(ids, sites=[f"layers.{layer}.attn.pattern"])[f"layers.{layer}.attn.pattern"]
    last = range(len(ids) - inside.WINDOW, len(ids))
    head, _ = inside.default_head(pattern, last)
    group = head // arch.group_size
    assert len(attention.data) == arch.group_size  # that head's KV group, one heatmap per query head
    for h, trace in zip(range(group * arch.group_size, (group + 1) * arch.group_size), attention.data):
        assert torch.equal(torch.tensor(np.asarray(trace.z)), pattern[h][-inside.WINDOW :, -inside.WINDOW :])
    assert np.asarray(lens.data[0].z).shape == (arch.n_layers, inside.WINDOW)
    assert (routing is not None) == arch.is_moe
    assert f"conversation's {len(ids)} tokens" in note and f"head {head} (KV group {group})" in note
    titles = [f.layout.title.text + f.layout.title.subtitle.text for f in (attention, lens)]  # notes: the subtitle
    assert "positions=" not in note + "".join(titles)  # no Python hints


def test_look_inside_controls(demo_lab):
    arch = demo_lab.arch
    history = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "2"}]
    attention, lens, _, note = inside.look_inside(demo_lab, history, 0, group=1, window=8, back=5)
    n = len(inside.conversation_ids(demo_lab, history)[0])
    assert [t.name for t in attention.data] == [f"head {h}" for h in range(arch.group_size, 2 * arch.group_size)]
    assert [int(p) for p in lens.data[0].y] == list(range(n - 13, n - 5))  # the lens: a row per position
    assert "ending 5 tokens before the last" in note
    for kwargs, match in [
        (dict(layer=arch.n_layers), f"layer must be <= {arch.n_layers - 1}"),
        (dict(layer=0, group=arch.n_kv_heads), f"KV group must be <= {arch.n_kv_heads - 1}"),
        (dict(layer=0, window=0), "window must be >= 1"),
        (dict(layer="x"), "layer must be a number"),
        (dict(layer=1.5), "layer must be a whole number"),
    ]:
        with pytest.raises(gr.Error, match=match):
            inside.look_inside(demo_lab, history, **kwargs)
    with pytest.raises(gr.Error, match="nothing to look at"):
        inside.look_inside(demo_lab, [], 0)


def test_a_page_reply_records_the_candidates_and_look_insides_sites_and_nothing_else(demo_lab):
    history, gen = page_reply(demo_lab)
    assert history[-1] == {"role": "assistant", "content": gen.text}
    assert gen.token_ids == direct(demo_lab).token_ids  # the same reply as the lab's own generation
    layer = inside.default_layer(demo_lab.arch)
    for step in gen.steps:
        assert len(step.top) == chat.TOP and step.logits is None  # no [V] logits kept per session
        assert set(step.sites) == {f"layers.{layer}.attn.pattern"}
        assert step.lens_ids.shape == (demo_lab.arch.n_layers, inside.LENS_TOP_K)
    assert gen.cache is None and inside.recorded_layer(gen) == layer
    _, plain = page_reply(demo_lab, record=False)  # recording off: the candidates only
    assert all(not s.sites and s.lens_ids is None for s in plain.steps) and inside.recorded_layer(plain) is None
    api = chat.start(demo_lab, chat.conversation(QUESTION, [], None), chat.generation_kwargs(demo_lab, *GREEDY[1:]))
    assert api.options.top == 0 and api.options.sites == () and not api.steps  # the `chat` API records nothing


def test_the_lens_is_recorded_by_default_only_where_it_costs_little(demo_lab, moe_lab):
    assert inside.record_by_default(demo_lab.arch) and inside.record_by_default(moe_lab.arch)
    assert inside.lens_cost(demo_lab.arch) == pytest.approx(0.6, abs=0.05)  # as the docstring and README say
    for name, cost in [("Qwen/Qwen2-0.5B-Instruct", 6.6), ("Qwen/Qwen2-7B-Instruct", 2.2)]:
        arch = arch_of(family_config(name), name)
        assert inside.lens_cost(arch) == pytest.approx(cost, abs=0.05) and not inside.record_by_default(arch)


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_look_inside_after_a_reply_draws_from_its_record_without_a_forward(name, demo_lab, moe_lab):
    lab = demo_lab if name == "tiny" else moe_lab
    arch, layer = lab.arch, inside.default_layer(lab.arch)
    history, gen = page_reply(lab)
    with Forwards(lab) as forwards:
        attention, lens, routing, note = inside.look_inside(lab, history, layer, gen=gen)
    assert forwards.n == 0 and "no forward pass ran" in note
    shown = list(range(max(0, len(gen.steps) - inside.WINDOW), len(gen.steps)))
    assert f"showing tokens {shown[0]}..{shown[-1]}" in note
    assert [t.name for t in attention.data] == [f"KV group {g}" for g in range(arch.n_kv_heads)]
    for g, heatmap in enumerate(attention.data):  # each row: one new token's attention, its group's mean
        z = np.asarray(heatmap.z, dtype=float)
        for row, i in enumerate(shown):
            pattern = gen.steps[i].sites[f"layers.{layer}.attn.pattern"][:, 0]  # (nH, T)
            mean = pattern[g * arch.group_size : (g + 1) * arch.group_size].mean(0)
            assert np.allclose(z[row, : len(mean)], mean.numpy(), atol=1e-6)
    read = [gen.steps[i].position - 1 for i in shown]  # the positions whose forwards chose the shown tokens
    assert list(lens.data[0].y) == [str(p) for p in read]  # a row per position
    expected = torch.stack([gen.steps[i].lens_probs[:, 0] for i in shown], 1)  # (L, N): each layer's top guess
    assert np.allclose(np.asarray(lens.data[0].z, dtype=float), expected.numpy())
    assert (routing is not None) == arch.is_moe
    if arch.is_moe:
        probs = torch.cat([gen.steps[i].sites[f"layers.{layer}.moe.router_probs"] for i in shown])  # (N, E)
        assert np.allclose(np.asarray(routing.data[0].z, dtype=float), probs.numpy())
    trace = lab.trace(torch.cat([gen.prompt_ids, torch.tensor(gen.token_ids[:-1])]), lens=inside.LENS_TOP_K)
    assert torch.equal(inside.record_trace(gen, layer).lens_ids[:, read], trace.lens_ids[:, read])  # as traced


def test_look_inside_traces_the_conversation_for_another_layer_or_an_unrecorded_reply(demo_lab):
    history, gen = page_reply(demo_lab)
    recorded = inside.default_layer(demo_lab.arch)
    with Forwards(demo_lab) as forwards:
        attention, *_, note = inside.look_inside(demo_lab, history, 0, gen=gen)
    assert forwards.n == 1 and f"recorded layer {recorded}, not layer 0, so the conversation was traced" in note
    assert "Layer 0 attention" in attention.layout.title.text
    _, plain = page_reply(demo_lab, record=False)
    *_, note = inside.look_inside(demo_lab, history, recorded, gen=plain)
    assert "was not recorded for Look inside" in note and "Traced the conversation's" in note
    *_, note = inside.look_inside(demo_lab, history, recorded, gen=None)
    assert note.startswith("Traced the conversation's")


def test_a_long_replys_attention_fills_every_row_of_its_window(demo_lab):
    """A reply longer than the window (the window shows its last tokens, not from step 0): every row drawn is a
    category of the figure's row axis, in order, so each row shows its own step's weights under its own label (the
    axis once listed steps 0..23 while the rows were steps 18..41: 18 rows drawn empty, 6 against wrong labels)."""
    gaokao = next(e for e in examples.examples(demo_lab) if e["label"] == "Gaokao set filter (English)")
    *_, (history, gen) = chat.reply(demo_lab, [{"role": "user", "content": gaokao["prompt"]}], *GREEDY_LONG,
                                    top=chat.TOP, **inside.record_options(demo_lab.arch))  # fmt: skip
    assert len(gen.steps) > inside.WINDOW, "the reply must be longer than the window to test its offset"
    attention, *_ = inside.look_inside(demo_lab, history, inside.default_layer(demo_lab.arch), gen=gen)
    shown = range(len(gen.steps) - inside.WINDOW, len(gen.steps))
    for heatmap, axis in zip(attention.data, ("yaxis", "yaxis2")):
        rows = list(attention.layout[axis].categoryarray)
        assert list(heatmap.y) == rows == [str(i) for i in shown]
        assert not np.isnan(np.asarray(heatmap.z, dtype=float)[:, 0]).any()  # each row read the first position
        keys = list(attention.layout["xaxis2"].categoryarray)
        assert list(heatmap.x) == keys
    labels = attention.layout.yaxis.labelalias
    assert [labels[str(i)] for i in shown] == [f"→ {viz.token_label(gen.steps[i].token)}" for i in shown]
