"""qwen2_lab.viz: each view's numbers (its `_data` function) equal the trace tensors they claim to show, its limits
hold at 72B shapes, its errors name what to trace, and its figure draws those numbers and renders offline. The
figures' fit in a real browser is tests/test_figures_browser.py's."""

import json
import math
import re

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from qwen2_lab import rope, viz
from qwen2_lab.arch import YARN_128K, family, family_config
from tests.helpers import synthetic_trace

BIG = 3_000_000  # bytes of figure JSON that still draw smoothly; the 72B-shaped figures must stay under it


def causal_pattern(nH: int, S: int) -> torch.Tensor:
    """Random attention patterns [nH, S, S]: rows sum to 1, nothing above the diagonal."""
    scores = torch.randn(nH, S, S).masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def heatmaps(fig):
    return [d for d in fig.data if d.type == "heatmap"]


# ---- attention --------------------------------------------------------------------------------------------------


def test_attention_heads_data_is_each_heads_pattern(tiny_trace):
    trace = tiny_trace
    arch, pattern = trace.arch, trace["layers.1.attn.pattern"]  # [nH, S, S]
    d = viz.attention_heads_data(trace, 1)
    assert d.heads == list(range(arch.n_heads)) and d.kv_heads == [h // arch.group_size for h in d.heads]
    assert d.positions == list(range(len(trace.tokens))) and d.notes == ("", "")
    for i, h in enumerate(d.heads):
        assert torch.equal(t(d.weights[i]), pattern[h])  # exactly the tensor, every query row and key column
    assert d.labels == viz.token_labels(trace.tokens) and "↵" in d.labels and "␣" in "".join(d.labels)
    # the figure draws those numbers, one heatmap per head, on token axes that keep repeated tokens apart
    fig = viz.draw_attention_heads(d)
    assert [m.name for m in heatmaps(fig)] == [f"head {h}" for h in d.heads]
    assert all(np.array_equal(m.z, w) for m, w in zip(heatmaps(fig), d.weights))
    axis = fig.layout.xaxis
    assert list(axis.categoryarray) == [str(p) for p in d.positions]  # one category per position
    assert [axis.labelalias[str(p)] for p in d.positions] == d.labels  # written with the token under it
    assert len(set(d.labels)) < len(d.labels)  # "The" and "cat" recur, and stay two columns each
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1 and fig.layout.width is None


def test_attention_heads_choose_groups_heads_and_windows(tiny_trace):
    trace = tiny_trace
    g, last, S = trace.arch.group_size, trace.arch.n_heads - 1, len(trace.tokens)
    assert viz.attention_heads_data(trace, 0, groups=[1]).heads == list(range(g, 2 * g))
    d = viz.attention_heads_data(trace, -1, heads=[last], positions=range(2, 9))
    assert d.layer == 3 and torch.equal(t(d.weights[0]), trace["layers.3.attn.pattern"][last][2:9, 2:9])
    assert d.notes[1] == f"positions 2..8 of {S}; keys before position 2 are not drawn (rows sum to less than 1)"
    assert viz.attention_heads_data(trace, 0, positions=slice(-5, None)).positions == list(range(S - 5, S))
    d = viz.attention_heads_data(trace, 0, max_tokens=5)  # too long: the last 5 positions, and the note says how
    assert torch.equal(t(d.weights[0]), trace["layers.0.attn.pattern"][0][-5:, -5:])
    assert "positions=range" in d.notes[1]
    assert d.notes[1] in viz.draw_attention_heads(d).layout.title.subtitle.text.replace("<br>", " ")


def test_attention_views_stay_within_limits_at_72b():
    S = 300
    trace = synthetic_trace("Qwen/Qwen2-72B-Instruct", S, {"layers.79.attn.pattern": causal_pattern(64, S)})
    pattern = trace["layers.79.attn.pattern"]
    d = viz.attention_heads_data(trace, 79)
    assert d.heads == list(range(viz.MAX_HEADS)) and d.weights.shape == (16, viz.MAX_TOKENS, viz.MAX_TOKENS)
    assert torch.equal(t(d.weights[9]), pattern[9][-64:, -64:])
    assert "16 of 64 heads" in d.notes[0] and "positions 236..299 of 300" in d.notes[1]
    assert len(viz.draw_attention_heads(d).to_json()) < BIG
    assert viz.attention_heads_data(trace, 79, groups=[5]).heads == list(range(40, 48))
    with pytest.raises(ValueError, match="max_heads=16"):
        viz.attention_heads(trace, 79, heads=range(20))
    with pytest.raises(ValueError, match="max_cells"):
        viz.attention_heads(trace, 79, max_tokens=S)
    with pytest.raises(ValueError, match="more than max_tokens"):
        viz.attention_heads(trace, 79, positions=range(100))
    fig = viz.gqa_group_similarity(trace, 79)
    assert np.asarray(heatmaps(fig)[0].z).shape == (64, 64) and len(fig.to_json()) < BIG


def test_head_structure_finds_the_head_with_a_pattern():
    S = 12
    uniform = torch.ones(S, S).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    sink = torch.zeros(S, S)
    sink[:, 0] = 1  # every row reads only the first token
    previous = torch.zeros(S, S)
    previous[0, 0], previous[torch.arange(1, S), torch.arange(S - 1)] = 1, 1  # each row reads the token before
    half = (sink + previous) / 2
    pattern = torch.stack([uniform, sink, previous, half])  # [4, S, S]
    score = viz.head_structure(pattern)
    assert score[0] == pytest.approx(0, abs=1e-9) and score[1] == 0 and score[2] == pytest.approx(1)
    assert score[3] == pytest.approx(0.5)  # half the row beyond the first token, all of it on one key
    # written out for one row, 7, of an even mix of the uniform and the previous-token head: its share on keys
    # 1..7 times 1 - entropy / ln 7, averaged with the five other rows of positions 0..7 that see two such keys
    row = ((uniform + previous) / 2)[7]
    one = torch.zeros(1, S, S)
    one[0, 7] = row
    share = row[1:8].double()
    p = share / share.sum()
    expect = share.sum() * (1 + (p * p.log()).sum() / math.log(7)) / 6
    assert viz.head_structure(one, range(8))[0] == pytest.approx(expect.item())
    trace = synthetic_trace(
        "Qwen/Qwen2-0.5B-Instruct", S, {"layers.3.attn.pattern": torch.stack([uniform, previous] * 7)}
    )
    assert viz.most_structured_head(trace, 3) in {h for h in range(14) if h % 2}
    with pytest.raises(ValueError, match="at least two keys"):
        viz.head_structure(pattern[:, :2, :2])


def test_most_structured_head_on_a_real_trace(tiny_trace):
    pattern = tiny_trace["layers.2.attn.pattern"]
    score = viz.head_structure(pattern, range(3, pattern.shape[-1]))
    assert viz.most_structured_head(tiny_trace, 2, positions=range(3, pattern.shape[-1])) == int(score.argmax())
    assert score.shape == (tiny_trace.arch.n_heads,) and ((0 <= score) & (score <= 1)).all()


def test_gqa_group_similarity_is_the_overlap_of_patterns(tiny_trace):
    trace = tiny_trace
    pattern = trace["layers.2.attn.pattern"].double()  # [nH, S, S]
    d = viz.gqa_group_similarity_data(trace, 2)
    S, nH, g = pattern.shape[-1], trace.arch.n_heads, trace.arch.group_size
    for a, b in [(0, 1), (0, nH - 1), (1, nH - 1), (nH - 1, nH - 1)]:
        # written out: sum over keys of the smaller weight, mean over rows
        rows = [sum(min(pattern[a, i, j], pattern[b, i, j]).item() for j in range(S)) for i in range(1, S)]
        assert d.overlap[a, b] == pytest.approx(sum(rows) / len(rows), abs=1e-9)
    for j in range(trace.arch.n_kv_heads):
        mine = list(range(j * g, (j + 1) * g))
        others = [h for h in range(nH) if h not in mine]
        assert d.within[j] == pytest.approx(np.mean([d.overlap[a, b] for a in mine for b in mine if a != b]))
        assert d.across[j] == pytest.approx(np.mean([d.overlap[a, b] for a in mine for b in others]))
    fig = viz.draw_gqa_group_similarity(d)
    assert np.array_equal(heatmaps(fig)[0].z, d.overlap)
    assert [list(b.y) for b in fig.data if b.type == "bar"] == [list(d.within), list(d.across)]


# ---- KV cache ---------------------------------------------------------------------------------------------------


def test_kv_cache_memory_equals_the_formula_for_the_real_family():
    ctx = [4096, 32768, 131072]
    d = viz.kv_cache_memory_data(context_lengths=ctx)
    assert [n.split("/")[-1] for n in d.names] == [n.split("/")[-1] for n in family()]
    for m, name in enumerate(d.names):
        cfg = family_config(name)  # the published config.json numbers, not the Arch
        L, nH, nKV = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
        hd = cfg.hidden_size // nH
        for i, kv in enumerate((nKV, nH, 1)):  # GQA, as MHA, as MQA
            exact = [2 * L * kv * hd * 2 * c for c in ctx]  # K and V x layers x KV heads x head_dim x bf16 bytes
            assert d.n_kv[m, i] == kv and d.total[m, i].tolist() == exact and d.per_token[m, i] == exact[0] // 4096
    assert d.total[3, 0, -1] == 40 * 2**30  # 40 GiB for 128K tokens of 72B in bf16
    fig = viz.draw_kv_cache_memory(d)
    lines = {s.name: s for s in fig.data if s.type == "scatter" and s.x[0] is not None}
    assert len(lines) == 15 and lines["Qwen2-72B GQA (8 KV heads)"].y[-1] == 40.0
    assert [int(b) for b in np.asarray(lines["Qwen2-7B as MQA (1 KV head)"].customdata)[:, 0]] == d.total[2, 2].tolist()
    legend = [s.name for s in fig.data if s.showlegend is not False]
    assert legend == ["Qwen2-0.5B", "Qwen2-1.5B", "Qwen2-7B", "Qwen2-72B", "Qwen2-57B-A14B", "GQA", "as MHA", "as MQA"]
    fp8 = viz.kv_cache_memory_data(family()["Qwen/Qwen2-7B-Instruct"], [1024], dtype="fp8")
    assert fp8.total[0, 0, 0] == 2 * 28 * 4 * 128 * 1 * 1024


def test_kv_cache_memory_takes_labs_and_rejects_nonsense(tiny):
    d = viz.kv_cache_memory_data([tiny], [10], dtype=torch.float32)
    a = tiny.arch
    assert d.total[0, 0, 0] == 10 * a.kv_cache_bytes_per_token(4) == 10 * 2 * a.n_layers * a.n_kv_heads * a.head_dim * 4
    with pytest.raises(ValueError, match="unknown dtype"):
        viz.kv_cache_memory([tiny], [10], dtype="float13")
    with pytest.raises(TypeError, match="Archs"):
        viz.kv_cache_memory(["Qwen2-7B"])


# ---- RoPE -------------------------------------------------------------------------------------------------------


def test_rope_frequencies_show_the_models_wavelengths(tiny):
    d = viz.rope_frequencies_data(tiny.arch)
    inv = tiny.model.model.rotary_emb.inv_freq.double().cpu()
    assert torch.equal(d.plain.inv_freq, tiny.model.model.rotary_emb.inv_freq.cpu()) and d.scaled is None
    (plain,) = [s for s in viz.draw_rope_frequencies(d).data if s.yaxis == "y"]
    assert np.allclose(plain.y, (2 * math.pi / inv).numpy(), rtol=1e-12)
    assert np.allclose(np.asarray(plain.customdata)[:, 1], inv.numpy())


def test_rope_frequencies_mark_yarns_regimes_at_72b():
    arch = family()["Qwen/Qwen2-72B-Instruct"]
    d = viz.rope_frequencies_data(arch, YARN_128K)
    assert d.regimes == ["kept"] * 24 + ["ramp"] * 16 + ["interpolated"] * 24
    yarn = rope.rope_parameters(arch, scaling=YARN_128K)
    assert torch.equal(d.scaled.inv_freq, yarn.inv_freq) and d.scaled.attention_factor == yarn.attention_factor
    fig = viz.draw_rope_frequencies(d)
    top = {s.name.split(": ")[-1]: s for s in fig.data if s.yaxis == "y" and "yarn" in s.name}
    x = np.concatenate([top[k].x for k in ("kept", "ramp", "interpolated")])
    y = np.concatenate([top[k].y for k in ("kept", "ramp", "interpolated")])
    assert np.allclose(y[np.argsort(x)], (2 * math.pi / yarn.inv_freq.double()).numpy())
    assert "1.1386" in fig.layout.title.subtitle.text and f"{1.1386**2:.3f}"[:4] in fig.layout.title.subtitle.text


def test_rope_rotation_shows_the_models_q_and_k(tiny_trace):
    trace = tiny_trace
    arch = trace.arch
    layer, head, token = 2, arch.n_heads - 1, 7
    d = viz.rope_rotation_data(trace, layer, head, token)
    h, kv = arch.head_dim // 2, head // arch.group_size
    q_rot, k_rot = trace[f"layers.{layer}.attn.q_rot"][head], trace[f"layers.{layer}.attn.k_rot"][kv]  # [S, hd]
    assert d.own and d.pairs == [0, h // 4, h // 2, h - 1] and d.kv_head == kv
    assert torch.equal(t(d.query), q_rot[token]) and torch.equal(t(d.keys), k_rot)
    # the path passes through the model's own q_rot at the token's position
    assert torch.allclose(t(d.path[token]), q_rot[token], atol=1e-6)
    fig = viz.draw_rope_rotation(d)
    for c, j in enumerate(d.pairs):
        path, keys, star = fig.data[3 * c : 3 * c + 3]
        assert (star.x[0], star.y[0]) == (float(d.query[j]), float(d.query[j + h]))
        assert list(keys.x) == list(d.keys[:, j]) and list(path.y) == list(d.path[:, j + h])
    assert "the model's q_rot" in fig.data[2].name
    other = viz.rope_rotation_data(trace, layer, head, token, theta=1e4)  # what another theta would do
    assert not other.own and other.query[0] == d.query[0]  # pair 0 turns one radian per token whatever theta is
    assert other.query[h - 1] != pytest.approx(d.query[h - 1])  # the slowest pair turns faster with theta 1e4


def test_rope_distance_decay_bins_equal_the_rotated_dot_product(tiny, tiny_trace):
    d = viz.rope_distance_decay_data(tiny_trace, 1, 3, scaling=False, max_distance=500)
    assert len(d.ropes) == 1 and d.shares.shape == (1, len(d.lo), 4)
    q = tiny_trace["layers.1.attn.q"][3].double().mean(0)  # the head's mean query, before RoPE
    k = tiny_trace["layers.1.attn.k"][3 // tiny.arch.group_size].double().mean(0)
    r = rope.rope_parameters(tiny.arch)
    for i in (0, 5, len(d.lo) - 1):  # each bin: the mean of rotated q . rotated k / sqrt(hd) over its distances
        dots = [
            rope.rotate(q[None], [x + 9], r)[0] @ rope.rotate(k[None], [9], r)[0] for x in range(d.lo[i], d.hi[i] + 1)
        ]
        expect = float(torch.stack(dots).double().mean()) / tiny.arch.head_dim**0.5
        assert d.shares[0, i].sum() == pytest.approx(expect, rel=1e-4, abs=1e-6)
    *bands, total = viz.draw_rope_distance_decay(d).data
    assert np.allclose(total.y, d.shares[0].sum(-1)) and np.allclose(sum(np.asarray(b.y) for b in bands), total.y)
    both = viz.rope_distance_decay_data(tiny.arch)  # default: plain RoPE against YaRN x4, q = k = ones
    assert [r.label.split()[0] for r in both.ropes] == ["RoPE", "yarn"] and "all ones" in both.what


# ---- MoE --------------------------------------------------------------------------------------------------------


def test_moe_routing_shows_probs_topk_and_shared_gate(tiny_moe_trace):
    trace, p = tiny_moe_trace, "layers.2.moe."
    d = viz.moe_routing_data(trace, 2)
    assert torch.equal(t(d.probs), trace[p + "router_probs"]) and torch.equal(t(d.gate), trace[p + "shared_gate"])
    assert np.array_equal(d.experts, trace[p + "topk_experts"].numpy())
    assert torch.equal(t(d.weights), trace[p + "topk_weights"]) and not d.norm_topk_prob
    heat, chosen, gate = viz.draw_moe_routing(d).data
    assert np.array_equal(heat.z, d.probs) and np.array_equal(gate.x, d.gate)
    assert np.array_equal(chosen.x, d.experts.flatten())
    # each chosen cell carries its weight as the heatmap's own text: plotly writes it dark on light cells and light
    # on dark ones (no fixed colour that vanishes on one of them)
    written = [(r, e) for r, row in enumerate(heat.text) for e, x in enumerate(row) if x]
    assert written == sorted((r, int(e)) for r, row in enumerate(d.experts) for e in row)
    assert heat.text[0][int(d.experts[0, 0])] == f"{d.weights[0, 0]:.2f}" and heat.textfont.color is None
    assert "raw probabilities" in viz.draw_moe_routing(d).layout.title.subtitle.text  # as in Qwen2-57B-A14B


def test_moe_token_shows_one_tokens_decision(tiny_moe_trace):
    trace, p, token = tiny_moe_trace, "layers.0.moe.", 4
    d = viz.moe_token_data(trace, 0, token)
    assert torch.equal(t(d.probs), trace[p + "router_probs"][token])
    assert d.experts == trace[p + "topk_experts"][token].tolist()
    assert torch.equal(t(d.weights), trace[p + "topk_weights"][token])
    assert d.gate == float(trace[p + "shared_gate"][token])
    top = trace[p + "router_probs"][token].sort(descending=True).values
    assert d.margin == pytest.approx(float(top[1] - top[2]))
    probs, labels, mix = viz.draw_moe_token(d).data
    assert [e for e, c in enumerate(probs.marker.color) if c == "#d62728"] == sorted(d.experts)
    assert list(labels.x) == d.experts and mix.y == (pytest.approx(float(d.weights.sum())), d.gate)


def test_moe_expert_load_entropy_and_margin(tiny_moe_trace):
    trace = tiny_moe_trace
    d = viz.moe_expert_load_data(trace)
    E, k = trace.arch.n_experts, trace.arch.top_k
    assert d.layers == list(trace.arch.moe_layers)
    for layer in d.layers:
        probs, experts = trace[f"layers.{layer}.moe.router_probs"], trace[f"layers.{layer}.moe.topk_experts"]
        counts = [int((experts == e).sum()) for e in range(E)]
        assert np.allclose(d.load[layer], np.array(counts) / experts.numel())
        assert d.entropy[layer] == pytest.approx(float(-(probs.double() * probs.double().log()).sum(-1).mean()))
        top = probs.sort(-1, descending=True).values
        assert np.allclose(d.margin[layer], (top[:, k - 1] - top[:, k]).numpy(), atol=1e-7)
        assert d.aux[layer] == pytest.approx(E * float((d.load[layer] * probs.double().mean(0).numpy()).sum()))
    load, entropy, margin = viz.draw_moe_expert_load(d).data
    assert np.array_equal(load.z, d.load) and np.array_equal(entropy.x, d.entropy)
    assert np.array_equal(margin.z, d.margin)


def test_moe_views_stay_within_limits_at_57b():
    S, E, k = 300, 64, 8
    store = {}
    for layer in range(28):
        probs = torch.randn(S, E).softmax(-1)
        w, idx = probs.topk(k, -1)
        routing = {"router_probs": probs, "topk_experts": idx, "topk_weights": w, "shared_gate": torch.rand(S)}
        store |= {f"layers.{layer}.moe.{name}": v for name, v in routing.items()}
    trace = synthetic_trace("Qwen/Qwen2-57B-A14B-Instruct", S, store)
    for fig in (viz.moe_expert_load(trace), viz.moe_routing(trace, 27), viz.moe_token(trace, 27, -1)):
        assert len(fig.to_json()) < BIG
    d = viz.moe_routing_data(trace, 27)
    assert d.probs.shape == (viz.MAX_TOKENS, E) and d.note.startswith("positions 236..299")
    assert heatmaps(viz.draw_moe_routing(d))[0].text is None  # 64 experts: cells too narrow to write weights in


def test_moe_views_refuse_dense_layers(tiny_trace):
    with pytest.raises(ValueError, match="dense Qwen2.*tiny-moe"):
        viz.moe_routing(tiny_trace, 0)
    with pytest.raises(ValueError, match="dense Qwen2"):
        viz.moe_expert_load(tiny_trace)


# ---- logit lens and residual ------------------------------------------------------------------------------------


def test_logit_lens_shows_the_lens(tiny, tiny_trace):
    trace = tiny_trace
    d = viz.logit_lens_data(trace, tokenizer=tiny.tokenizer)
    assert torch.equal(t(d.probs), trace.lens_probs) and np.array_equal(d.ids, trace.lens_ids.numpy()) and d.decoded
    assert d.guesses[1, 2, 4] == tiny.tokenizer.decode([int(trace.lens_ids[1, 2, 4])])
    nxt = trace.token_ids.tolist()
    assert d.hits.tolist() == [
        [p + 1 < len(nxt) and int(i) == nxt[p + 1] for p, i in enumerate(row)] for row in d.ids[..., 0]
    ]
    assert torch.equal(trace.lens_ids[-1, :, 0].cpu(), trace.logits.argmax(-1).cpu())  # the last layer: the model's
    heat = viz.draw_logit_lens(d).data[0]  # a row per position, a column per layer: z as in the trace, transposed
    assert np.array_equal(heat.z, d.probs[..., 0]) and heat.transpose
    assert f"{d.probs[1, 2, 4]:.6f}" in heat.customdata[2][1]  # hovers and text as drawn: [position][layer]
    assert heat.text[2][1] == viz.token_label(d.guesses[1, 2, 0])
    pos = viz.lens_position_data(trace, 3, tokenizer=tiny.tokenizer)
    assert torch.equal(t(pos.probs), trace.lens_probs[:, 3]) and pos.following == d.labels[4]
    assert np.array_equal(viz.draw_lens_position(pos).data[0].z, pos.probs)


def test_logit_lens_without_a_lens_says_how(tiny):
    trace = tiny.trace("hi", sites=["logits"])
    with pytest.raises(ValueError, match=r"lab.trace\(inputs, lens=5\)"):
        viz.logit_lens(trace)


def test_logit_lens_stays_within_limits_at_72b():
    S = 300
    trace = synthetic_trace("Qwen/Qwen2-72B-Instruct", S, {}, lens_ids=torch.randint(0, 152064, (80, S, 5)),
                      lens_probs=torch.rand(80, S, 5))  # fmt: skip
    d = viz.logit_lens_data(trace)
    assert d.probs.shape == (80, 32, 5) and not d.decoded and d.guesses[0, 0, 0].startswith("#")
    fig = viz.draw_logit_lens(d)
    assert len(fig.to_json()) < BIG and "pass tokenizer=" in fig.layout.title.subtitle.text


def test_residual_norms(tiny_moe_trace):
    trace = tiny_moe_trace
    d = viz.residual_norms_data(trace)
    assert d.layers == list(range(trace.arch.n_layers))
    for i in d.layers:
        for part, site in enumerate(("resid_pre", "attn.out", "moe.out", "resid_post")):
            assert d.mean[part, i] == pytest.approx(float(trace[f"layers.{i}.{site}"].norm(dim=-1).mean()), rel=1e-6)
        assert np.allclose(d.post[i], trace[f"layers.{i}.resid_post"].norm(dim=-1).numpy(), rtol=1e-6)
    *lines, heat = viz.draw_residual_norms(d).data
    assert [list(s.y) for s in lines] == d.mean.tolist() and np.array_equal(heat.z, d.post)


# ---- what every view shares --------------------------------------------------------------------------------------


def every_view(tiny, trace, moe_trace):
    return {
        "attention_heads": viz.attention_heads(trace, 0),
        "gqa_group_similarity": viz.gqa_group_similarity(trace, 0),
        "kv_cache_memory": viz.kv_cache_memory(),
        "rope_frequencies": viz.rope_frequencies(tiny.arch, YARN_128K),
        "rope_rotation": viz.rope_rotation(trace, 0, 0, 3),
        "rope_distance_decay": viz.rope_distance_decay(tiny.arch),
        "moe_routing": viz.moe_routing(moe_trace, 1),
        "moe_token": viz.moe_token(moe_trace, 1, 2),
        "moe_expert_load": viz.moe_expert_load(moe_trace),
        "logit_lens": viz.logit_lens(trace),
        "lens_position": viz.lens_position(trace, 2),
        "residual_norms": viz.residual_norms(trace),
        **generation_and_experiment_views(tiny),
    }


def generation_and_experiment_views(tiny):
    from qwen2_lab import edits
    from qwen2_lab.experiments import compare_runs
    from qwen2_lab.patching import head_patch_sweep, patch_sweep

    gen = tiny.generate_steps("A={2,5,8}, B={1,5,7}. What is A∩B?", max_new_tokens=4, do_sample=True, seed=0,
                              sites=["layers.1.attn.pattern"])  # fmt: skip
    clean, corrupted = [3, 17, 42, 5, 99], [3, 17, 40, 5, 99]
    plain, edited = tiny.trace(clean), tiny.trace(clean, edits=edits.zero_heads(1, [0]))
    return {
        "token_confidence": viz.token_confidence(gen),
        "candidates": viz.candidates(gen, 1),
        "kv_cache_growth": viz.kv_cache_growth(gen),
        "generated_attention": viz.generated_attention(gen, 1),
        "patching_heatmap": viz.patching_heatmap(patch_sweep(tiny, clean, corrupted, answer=(7, 9), layers=[0, 3])),
        "head_grid": viz.head_grid(head_patch_sweep(tiny, clean, corrupted, answer=(7, 9), layers=[2])),
        "edit_effect": viz.edit_effect(compare_runs(plain, edited, answer=(7, 9)), tiny.tokens),
    }


def test_every_view_teaches_fills_its_container_and_renders_offline(tiny, tiny_trace, tiny_moe_trace):
    views = every_view(tiny, tiny_trace, tiny_moe_trace)
    assert set(views) == set(viz.VIEWS)
    for name, fig in views.items():
        assert isinstance(fig, go.Figure), name
        assert fig.layout.title.text and fig.layout.width is None and fig.layout.autosize, name  # fills its container
        for trace in fig.data:  # hover with exact values everywhere (or deliberately none, for labels)
            assert trace.hovertemplate or trace.hoverinfo == "skip", (name, trace.name)
        for trace in heatmaps(fig):  # a colour always says what it means
            bar = fig.layout.coloraxis.colorbar if trace.coloraxis else trace.colorbar
            assert bar.title.text, name
        # JupyterLab draws this mime type with the plotly.js bundled in the plotly wheel: no CDN, no network
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig)
        assert set(bundle) == {"application/vnd.plotly.v1+json"}, name
        text = json.dumps(bundle["application/vnd.plotly.v1+json"], default=str)
        text = re.sub(r'"bdata": "[^"]*"', '"bdata": ""', text)  # base64 numbers may spell "cdn" by chance
        assert "http://" not in text and "https://" not in text and "cdn" not in text.lower(), name


def test_missing_sites_are_named_with_the_sites_to_pass(tiny, tiny_moe, tiny_trace):
    bare = tiny.trace("hello there", sites=["logits"])
    cases = {
        lambda: viz.attention_heads(bare, 1): r"layers.1.attn.pattern.*sites=\['layers.\*.attn.pattern'\]",
        lambda: viz.gqa_group_similarity(bare, 0): r"sites=\['layers.\*.attn.pattern'\]",
        lambda: viz.most_structured_head(bare, 0): r"sites=\['layers.\*.attn.pattern'\]",
        lambda: viz.rope_rotation(bare, 0, 0, 0): r"sites=\['layers.\*.attn.q\*', 'layers.\*.attn.k\*'\]",
        lambda: viz.rope_distance_decay(bare, 0, 0): r"'layers.0.attn.q'",
        lambda: viz.residual_norms(bare): r"sites=\['layers.\*.resid_pre'",
        lambda: viz.moe_routing(tiny_moe.trace("hi", sites=["logits"]), 0): r"sites=\['layers.\*.moe.\*'\]",
        lambda: viz.moe_expert_load(tiny_moe.trace("hi", sites=["logits"])): r"sites=\['layers.\*.moe.\*'\]",
    }
    for call, message in cases.items():
        with pytest.raises(KeyError, match=message):
            call()
    with pytest.raises(TypeError, match="attention_heads takes a Trace.*a Lab: call lab.trace"):
        viz.attention_heads(tiny, 0)
    with pytest.raises(TypeError, match="logit_lens takes a Trace"):
        viz.logit_lens({"layers.0.attn.pattern": None})
    with pytest.raises(ValueError, match="layer 4 out of range: this model has layers 0..3"):
        viz.attention_heads(bare, 4)
    with pytest.raises(ValueError, match="head 8 out of range"):
        viz.rope_rotation(tiny_trace, 0, 8, 0)
    with pytest.raises(TypeError, match="tokenizer must be"):
        viz.logit_lens(tiny_trace, tokenizer="gpt2")


def test_token_labels_make_whitespace_and_markup_visible():
    assert viz.token_labels([" the", "\n", "\t", "", "<|im_start|>", "a&b"]) == [
        "␣the", "↵", "⇥", "∅", "&lt;|im_start|&gt;", "a&amp;b",
    ]  # fmt: skip
    assert viz.token_label("\x00") == "\\x00" and len(viz.token_label("x" * 40)) == 14
