"""The generation and experiment figures draw the numbers their sources hold (a Generation, a Sweep, an
Attribution, a RunDiff), and refuse what they cannot draw."""

import html

import numpy as np
import pytest
import torch

from qwen2_lab import edits, viz
from qwen2_lab.attribution import logit_attribution
from qwen2_lab.experiments import compare_runs
from qwen2_lab.patching import head_patch_sweep, patch_sweep
from qwen2_lab.viz.style import text_columns

CHAT = [{"role": "user", "content": "A={2,5,8}, B={1,5,7}. What is A∩B?"}]


def ask(b):
    return [
        {"role": "user", "content": f"A={{3,5,7,9}}, B={b}. What is A∩B?"},
        {"role": "assistant", "content": "A∩B={"},
    ]


@pytest.fixture(scope="module")
def gen(tiny):
    return tiny.generate_steps(CHAT, max_new_tokens=8, do_sample=True, temperature=0.8, top_k=5, seed=1,
                               sites=["layers.2.attn.pattern"], keep_cache=True)  # fmt: skip


def test_token_confidence_shows_each_tokens_probability(gen):
    d = viz.token_confidence_data(gen)
    assert d.probs.tolist() == [s.prob for s in gen.steps] and len(d.labels) == len(gen.steps)
    assert viz.token_confidence_data(gen, processed=True).probs.tolist() == [s.processed_prob for s in gen.steps]
    fig = viz.draw_token_confidence(d)
    assert np.nansum(np.asarray(fig.data[0].z, dtype=float)) == pytest.approx(d.probs.sum())


def width(label: str) -> int:
    """Columns a label takes on screen: HTML entities are one character, a Chinese character two."""
    return text_columns(html.unescape(label))


def test_token_confidence_writes_its_tokens_at_a_readable_size(gen, tiny):
    """A size set (plotly shrinks unsized cell text to fit, down to 4 px) and each cell's text cut to what fits a
    cell at MIN_WIDTH; the whole token stays on hover."""
    vocab = tiny.tokens(list(range(tiny.arch.vocab)))
    longest = max(range(len(vocab)), key=lambda i: width(viz.token_label(vocab[i], 100)))
    branch = gen.branch(1, longest)
    d = viz.token_confidence_data(branch)
    (heatmap,) = viz.draw_token_confidence(d).data
    size = heatmap.textfont.size
    assert size >= 11
    cell_px = (viz.MIN_WIDTH - 200) / d.per_row  # the plot's width at MIN_WIDTH (margins, colour bar) per cell
    written = [t for row in heatmap.text for t in row if t]
    assert len(written) == len(branch.steps)
    assert all(width(t) * 0.6 * size <= cell_px for t in written), written  # monospace: 0.6 em per column
    assert width(viz.token_label(vocab[longest], 100)) * 0.6 * size > cell_px  # the test has a token to cut
    wide = viz.token_label("，求target的开始位置", 8)  # a Chinese character takes two columns: cut by columns
    assert width(wide) <= 8 and wide.endswith("…") and viz.token_label("<|im_end|>", 8) == "&lt;|im_en…"
    assert written[1].endswith("…*") and viz.token_label(vocab[longest]) in heatmap.customdata[0][1]


def test_candidates_are_the_steps_probabilities_before_and_after_the_processors(gen):
    d = viz.candidates_data(gen, 1)
    step = gen.steps[1]
    probs = torch.softmax(step.logits, -1)
    after = {c.id: c.prob for c in step.processed_top}
    ids = [i for i in dict.fromkeys([c.id for c in step.top] + [c.id for c in step.processed_top] + [step.token_id])]
    ids.sort(key=lambda i: -float(probs[i]))
    assert d.raw == pytest.approx([float(probs[i]) for i in ids]) and d.processed == pytest.approx(
        [after.get(i, 0) for i in ids]
    )
    assert "top-k 5" in d.settings and list(viz.draw_candidates(d).data[1].y) == pytest.approx(d.processed.tolist())


def test_kv_cache_growth_is_the_cache_the_generation_kept(gen, tiny):
    d = viz.kv_cache_growth_data(gen)
    assert d.tokens.tolist() == [s.cache_tokens for s in gen.steps]
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in gen.cache.layers)  # the real cache, in memory
    assert d.per_layer[-1] * tiny.arch.n_layers == held
    assert (d.per_layer_mha / d.per_layer == tiny.arch.group_size).all()


def test_generated_attention_is_each_steps_pattern_by_kv_group(gen, tiny):
    d = viz.generated_attention_data(gen, 2)
    g = tiny.arch.group_size
    for n, step in enumerate(gen.steps):
        p = step.sites["layers.2.attn.pattern"][:, 0]  # (nH, t)
        for group in range(tiny.arch.n_kv_heads):
            expected = p[group * g : (group + 1) * g].float().mean(0).numpy()
            np.testing.assert_allclose(d.weights[group, n, : p.shape[-1]], expected, rtol=1e-6)
        assert np.isnan(d.weights[:, n, p.shape[-1] :]).all()
    with pytest.raises(KeyError, match=r"sites=\['layers.1.attn.pattern'\]"):
        viz.generated_attention(gen, 1)
    a, b = len(gen.steps) - 2, len(gen.steps) - 1
    window = viz.generated_attention_data(gen, 2, steps=[a, b], max_keys=10)  # two steps, their last 10 keys
    assert window.steps == [a, b] and len(window.keys) == 10 and window.keys[-1] == gen.steps[b].cache_tokens - 1
    last = gen.steps[b].sites["layers.2.attn.pattern"][:, 0, -10:].float()
    np.testing.assert_allclose(window.weights[0, 1], last[:g].mean(0).numpy(), rtol=1e-6)
    assert window.left_out == gen.steps[b].cache_tokens - 10


@pytest.fixture(scope="module")
def runs(tiny):
    clean, corrupted = ask("{1,3,4,8}"), ask("{1,5,4,8}")
    return dict(
        sweep=patch_sweep(tiny, clean, corrupted, answer=("3", "5")),
        heads=head_patch_sweep(tiny, clean, corrupted, answer=("3", "5")),
        dla=logit_attribution(tiny, clean, answer=("3", "5")),
        diff=compare_runs(
            tiny.trace(clean),
            tiny.trace(clean, edits=edits.zero_heads(3, [0])),
            answer=(tiny.tokenizer.encode("3")[0], tiny.tokenizer.encode("5")[0]),
        ),  # fmt: skip
    )


def test_patching_heatmap_draws_the_sweeps_recovered_share(runs):
    d = viz.patching_heatmap_data(runs["sweep"])
    np.testing.assert_array_equal(d.recovered, runs["sweep"].recovered.numpy())
    assert len(d.labels) == len(runs["sweep"].tokens) and d.positions == runs["sweep"].columns
    np.testing.assert_array_equal(np.asarray(viz.patching_heatmap(runs["sweep"]).data[0].z), d.recovered)
    with pytest.raises(ValueError, match="head_grid"):
        viz.patching_heatmap(runs["heads"])


def test_head_grid_draws_a_head_sweep_or_an_attribution(runs, tiny):
    np.testing.assert_array_equal(viz.head_grid_data(runs["heads"]).values, runs["heads"].recovered.numpy())
    d = viz.head_grid_data(runs["dla"])
    np.testing.assert_array_equal(d.values, runs["dla"].heads.numpy())
    assert d.group_size == tiny.arch.group_size and f"{runs['dla'].total:+.3f}" in d.note
    fig = viz.head_grid(runs["dla"])
    assert len(fig.layout.shapes) == tiny.arch.n_kv_heads - 1  # a line between KV groups
    with pytest.raises(TypeError, match="head_patch_sweep or logit_attribution"):
        viz.head_grid(runs["diff"])


def test_edit_effect_draws_both_runs(runs, tiny):
    d = viz.edit_effect_data(runs["diff"], tiny.tokens)
    diff = runs["diff"]
    assert d.before.tolist() == [a for a, _ in diff.answer_logits.values()]
    assert d.after.tolist() == [b for _, b in diff.answer_logits.values()]
    assert d.p_before.tolist() == [a for _, a, _ in diff.top] and d.p_after.tolist() == [b for _, _, b in diff.top]
    assert d.edits == ["layer 3: heads [0] zeroed"]
    assert list(d.p_before) == sorted(d.p_before, reverse=True)


def test_edit_effect_names_a_function_edit_by_its_site(tiny):
    """An edit given as {site: function} is named by where it acts (and the function, if it has a name), not
    '<lambda>'."""

    def double(x):
        return 2 * x

    prompt = ask("{1,3,4,8}")
    edited = tiny.trace(prompt, sites=[], edits={"layers.1.attn.out": lambda x: 2 * x, "layers.2.mlp.out": double})
    diff = compare_runs(tiny.trace(prompt, sites=[]), edited, answer=17)
    assert viz.edit_effect_data(diff).edits == ["layers.1.attn.out: a function", "layers.2.mlp.out: function double"]
    subtitle = viz.edit_effect(diff, tiny.tokens).layout.title.subtitle.text
    assert "layers.1.attn.out: a function" in subtitle and "lambda" not in subtitle
