"""qwen2_lab.viz: every figure's data equals the trace tensors it claims to show, its limits hold at 72B shapes, its
errors name what to trace, and it renders offline. Figures are checked as data (fig.data / fig.layout), never images.
"""

import json
import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

import qwen2_lab
from qwen2_lab import rope, viz
from qwen2_lab.arch import YARN_128K, family, family_config
from qwen2_lab.trace import Trace
from qwen2_lab.viz.attention import head_overlap

TEXT = "The cat  sat.\nThe <|im_start|> cat"
BIG = 3_000_000  # bytes of figure JSON that still draw smoothly; the 72B-shaped figures must stay under it


@pytest.fixture(scope="module")
def dense():
    lab = qwen2_lab.load("tiny")
    return lab, lab.trace(TEXT, lens=5)


@pytest.fixture(scope="module")
def moe():
    lab = qwen2_lab.load("tiny-moe")
    return lab, lab.trace(TEXT, lens=5)


def synthetic(name: str, S: int, store: dict, **kw) -> Trace:
    """A Trace with a real release's shape and random tensors: a 72B forward is far too big for a test."""
    arch = family()[name]
    tokens = [f" t{i}" if i % 3 else "\n" for i in range(S)]
    return Trace(token_ids=torch.arange(S), tokens=tokens, arch=arch, logits=torch.empty(0), store=store, **kw)


def causal_pattern(nH: int, S: int) -> torch.Tensor:
    """Random attention patterns [nH, S, S]: rows sum to 1, nothing above the diagonal."""
    scores = torch.randn(nH, S, S).masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1)


def t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def heatmaps(fig):
    return [d for d in fig.data if d.type == "heatmap"]


# ---- attention --------------------------------------------------------------------------------------------------


def test_attention_heads_show_each_heads_pattern_in_its_kv_row(dense):
    lab, trace = dense
    pattern = trace["layers.1.attn.pattern"]  # [nH, S, S]
    fig = viz.attention_heads(trace, 1)
    maps = heatmaps(fig)
    assert [m.name for m in maps] == [f"head {h}" for h in range(lab.arch.n_heads)]
    g = lab.arch.group_size
    for h, m in enumerate(maps):
        assert torch.equal(t(m.z), pattern[h])  # exactly the tensor, every query row and key column
        assert m.coloraxis == "coloraxis"
        # head h sits in row h // g: its y axis is that row's (axes are numbered row by row)
        assert m.yaxis == ("y" if h == 0 else f"y{h + 1}") and f"KV {h // g}" in fig.layout.annotations[h].text
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1
    assert "attention" in fig.layout.coloraxis.colorbar.title.text
    # tokens readable on the axes: whitespace visible, duplicates kept as distinct positions
    ticks = list(fig.layout.xaxis.ticktext)
    assert ticks == viz.token_labels(trace.tokens) and any("↵" in x for x in ticks) and any("␣" in x for x in ticks)
    assert list(fig.layout.xaxis.tickvals) == list(range(len(trace.tokens)))
    assert len(ticks) > len(set(ticks))  # the same token twice ("The", "cat" recur), two columns
    assert "head 0 (KV head 0)" in maps[0].hovertemplate and "%{z:.6f}" in maps[0].hovertemplate


def test_attention_heads_choose_groups_heads_and_windows(dense):
    lab, trace = dense
    pattern = trace["layers.0.attn.pattern"]
    g, last = trace.arch.group_size, trace.arch.n_heads - 1
    fig = viz.attention_heads(trace, 0, groups=[1])
    assert [m.name for m in heatmaps(fig)] == [f"head {h}" for h in range(g, 2 * g)]
    fig = viz.attention_heads(trace, -1, heads=[last], positions=range(2, 9))
    (m,) = heatmaps(fig)
    assert torch.equal(t(m.z), trace["layers.3.attn.pattern"][last][2:9, 2:9])
    assert list(m.x) == list(range(2, 9))
    fig = viz.attention_heads(trace, 0, max_tokens=5)  # too long: the last 5 positions, and the title says so
    assert torch.equal(t(heatmaps(fig)[0].z), pattern[0][-5:, -5:]) and "positions=range" in fig.layout.title.text


def test_attention_views_stay_within_limits_at_72b():
    S = 300
    trace = synthetic("Qwen/Qwen2-72B-Instruct", S, {"layers.79.attn.pattern": causal_pattern(64, S)})
    pattern = trace["layers.79.attn.pattern"]
    fig = viz.attention_heads(trace, 79)
    maps = heatmaps(fig)
    assert len(maps) == viz.MAX_HEADS == 16  # two whole KV groups of 8
    assert all(np.asarray(m.z).shape == (viz.MAX_TOKENS, viz.MAX_TOKENS) for m in maps)
    assert torch.equal(t(maps[9].z), pattern[9][-64:, -64:])
    assert "16 of 64 heads" in fig.layout.title.text and "positions 236..299 of 300" in fig.layout.title.text
    assert len(fig.to_json()) < BIG
    assert [m.name for m in heatmaps(viz.attention_heads(trace, 79, groups=[5]))] == [
        f"head {h}" for h in range(40, 48)
    ]
    with pytest.raises(ValueError, match="max_heads=16"):
        viz.attention_heads(trace, 79, heads=range(20))
    with pytest.raises(ValueError, match="max_cells"):
        viz.attention_heads(trace, 79, max_tokens=S)
    with pytest.raises(ValueError, match="more than max_tokens"):
        viz.attention_heads(trace, 79, positions=range(100))
    fig = viz.gqa_group_similarity(trace, 79)
    assert np.asarray(heatmaps(fig)[0].z).shape == (64, 64) and len(fig.to_json()) < BIG


def test_gqa_group_similarity_is_the_overlap_of_patterns(dense):
    lab, trace = dense
    pattern = trace["layers.2.attn.pattern"].double()  # [nH, S, S]
    fig = viz.gqa_group_similarity(trace, 2)
    z = np.asarray(heatmaps(fig)[0].z)
    S, nH, g = pattern.shape[-1], lab.arch.n_heads, lab.arch.group_size
    for a, b in [
        (0, 1),
        (0, nH - 1),
        (1, nH - 1),
        (nH - 1, nH - 1),
    ]:  # written out: sum over keys of the smaller weight, mean over rows
        rows = [sum(min(pattern[a, i, j], pattern[b, i, j]).item() for j in range(S)) for i in range(1, S)]
        assert z[a, b] == pytest.approx(sum(rows) / len(rows), abs=1e-9)
    within, across = (np.asarray(d.y, dtype=float) for d in fig.data if d.type == "bar")
    for j in range(lab.arch.n_kv_heads):
        mine = list(range(j * g, (j + 1) * g))
        others = [h for h in range(nH) if h not in mine]
        assert within[j] == pytest.approx(np.mean([z[a, b] for a in mine for b in mine if a != b]))
        assert across[j] == pytest.approx(np.mean([z[a, b] for a in mine for b in others]))
    assert torch.allclose(head_overlap(pattern), torch.tensor(z, dtype=torch.float64))


# ---- KV cache ---------------------------------------------------------------------------------------------------


def test_kv_cache_memory_equals_the_formula_for_the_real_family():
    ctx = [4096, 32768, 131072]
    fig = viz.kv_cache_memory(context_lengths=ctx)
    lines = {d.name: d for d in fig.data if d.type == "scatter"}
    assert len(lines) == 15  # five releases x (GQA, as MHA, as MQA)
    for name in family():
        cfg = family_config(name)  # the published config.json numbers, not the Arch
        L, nH, nKV = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
        hd = cfg.hidden_size // nH
        short = name.split("/")[-1].removesuffix("-Instruct")
        for kind, kv in (("GQA", nKV), ("as MHA", nH), ("as MQA", 1)):
            line = lines[f"{short} {kind} ({kv} KV head{'s' * (kv > 1)})"]
            exact = [2 * L * kv * hd * 2 * c for c in ctx]  # K and V x layers x KV heads x head_dim x bf16 bytes
            assert [int(b) for b in np.asarray(line.customdata)[:, 0]] == exact
            assert np.allclose(line.y, np.array(exact) / 2**30)
    assert lines["Qwen2-72B GQA (8 KV heads)"].y[-1] == 40.0  # 40 GiB for 128K tokens of 72B in bf16
    fp8 = viz.kv_cache_memory(family()["Qwen/Qwen2-7B-Instruct"], [1024], dtype="fp8")
    assert int(fp8.data[0].customdata[0][0]) == 2 * 28 * 4 * 128 * 1 * 1024


def test_kv_cache_memory_takes_labs_and_rejects_nonsense(dense):
    lab, trace = dense
    fig = viz.kv_cache_memory([lab], [10], dtype=torch.float32)
    per_token = lab.arch.kv_cache_bytes_per_token(4)
    assert (
        int(fig.data[0].customdata[0][0])
        == 10 * per_token
        == 10 * 2 * lab.arch.n_layers * lab.arch.n_kv_heads * lab.arch.head_dim * 4
    )
    with pytest.raises(ValueError, match="unknown dtype"):
        viz.kv_cache_memory([lab], [10], dtype="float13")
    with pytest.raises(TypeError, match="Archs"):
        viz.kv_cache_memory(["Qwen2-7B"])


# ---- RoPE -------------------------------------------------------------------------------------------------------


def test_rope_frequencies_show_the_models_wavelengths(dense):
    lab, _ = dense
    fig = viz.rope_frequencies(lab.arch)
    inv = lab.model.model.rotary_emb.inv_freq.double().cpu()
    (plain,) = [d for d in fig.data if d.yaxis == "y"]
    assert np.allclose(plain.y, (2 * math.pi / inv).numpy(), rtol=1e-12)
    assert np.allclose(np.asarray(plain.customdata)[:, 1], inv.numpy())


def test_rope_frequencies_mark_yarns_regimes_at_72b():
    arch = family()["Qwen/Qwen2-72B-Instruct"]
    fig = viz.rope_frequencies(arch, YARN_128K)
    top = {d.name.split(": ")[-1]: d for d in fig.data if d.yaxis == "y" and "yarn" in d.name}
    assert {k: len(d.x) for k, d in top.items()} == {"kept": 24, "ramp": 16, "interpolated": 24}
    yarn = rope.rope_parameters(arch, scaling=YARN_128K)
    x = np.concatenate([top[k].x for k in ("kept", "ramp", "interpolated")])
    y = np.concatenate([top[k].y for k in ("kept", "ramp", "interpolated")])
    assert np.allclose(y[np.argsort(x)], (2 * math.pi / yarn.inv_freq.double()).numpy())
    assert "1.1386" in fig.layout.title.text and f"{1.1386**2:.3f}"[:4] in fig.layout.title.text


def test_rope_rotation_shows_the_models_q_and_k(dense):
    lab, trace = dense
    layer, head, token = 2, lab.arch.n_heads - 1, 7
    fig = viz.rope_rotation(trace, layer, head, token)
    h, kv = lab.arch.head_dim // 2, head // lab.arch.group_size
    q_rot, k_rot = trace[f"layers.{layer}.attn.q_rot"][head], trace[f"layers.{layer}.attn.k_rot"][kv]  # [S, hd]
    pairs = [0, h // 4, h // 2, h - 1]
    for c, j in enumerate(pairs):
        traj, keys, star = fig.data[3 * c : 3 * c + 3]
        assert (float(star.x[0]), float(star.y[0])) == (float(q_rot[token, j]), float(q_rot[token, j + h]))
        assert np.allclose(keys.x, q_or(k_rot[:, j])) and np.allclose(keys.y, q_or(k_rot[:, j + h]))
        # the trajectory passes through the model's own q_rot at the token's position
        assert traj.x[token] == pytest.approx(float(q_rot[token, j]), abs=1e-6)
        assert traj.y[token] == pytest.approx(float(q_rot[token, j + h]), abs=1e-6)
    assert "the model's q_rot" in fig.data[2].name
    other = viz.rope_rotation(trace, layer, head, token, theta=1e4)  # what another theta would do
    assert "the model's" not in other.data[2].name
    assert other.data[2].x[0] == fig.data[2].x[0]  # pair 0 turns one radian per token whatever theta is
    assert other.data[11].x[0] != pytest.approx(fig.data[11].x[0])  # the slowest pair turns faster with theta 1e4


def q_or(x):
    return x.float().numpy()


def test_rope_distance_decay_bins_equal_the_rotated_dot_product(dense):
    lab, trace = dense
    fig = viz.rope_distance_decay(trace, 1, 3, scaling=False, max_distance=500)
    *bands, total = fig.data
    assert np.allclose(sum(np.asarray(b.y) for b in bands), total.y)
    q = trace["layers.1.attn.q"][3].double().mean(0)  # the head's mean query, before RoPE
    k = trace["layers.1.attn.k"][3 // lab.arch.group_size].double().mean(0)
    r = rope.rope_parameters(lab.arch)
    span = np.asarray(total.customdata)
    for i in (0, 5, len(span) - 1):  # each point: the mean over its bin of rotated q . rotated k / sqrt(hd)
        lo, hi = int(span[i, 0]), int(span[i, 1])
        dots = [rope.rotate(q[None], [d + 9], r)[0] @ rope.rotate(k[None], [9], r)[0] for d in range(lo, hi + 1)]
        assert total.y[i] == pytest.approx(
            float(torch.stack(dots).double().mean()) / lab.arch.head_dim**0.5, rel=1e-4, abs=1e-6
        )
    both = viz.rope_distance_decay(lab.arch)  # default: plain RoPE against YaRN x4, q = k = ones
    assert {d.line.dash for d in both.data} == {"solid", "dash"} and "yarn" in both.data[-1].name


# ---- MoE --------------------------------------------------------------------------------------------------------


def test_moe_routing_shows_probs_topk_and_shared_gate(moe):
    lab, trace = moe
    p = "layers.2.moe."
    fig = viz.moe_routing(trace, 2)
    heat, chosen, gate = fig.data
    assert torch.equal(t(heat.z), trace[p + "router_probs"])
    assert np.array_equal(chosen.x, trace[p + "topk_experts"].flatten().numpy())
    assert np.array_equal(np.asarray(chosen.y), np.repeat(np.arange(len(trace.tokens)), lab.arch.top_k))
    weights = np.asarray(chosen.customdata)[:, 0].astype(np.float32)
    assert np.array_equal(weights, trace[p + "topk_weights"].flatten().numpy())
    assert torch.equal(t(gate.x), trace[p + "shared_gate"])
    assert "raw probabilities" in fig.layout.title.text  # norm_topk_prob false, as in Qwen2-57B-A14B


def test_moe_token_shows_one_tokens_decision(moe):
    lab, trace = moe
    p, token = "layers.0.moe.", 4
    fig = viz.moe_token(trace, 0, token)
    probs, labels, mix = fig.data
    assert torch.equal(t(probs.y), trace[p + "router_probs"][token])
    chosen = trace[p + "topk_experts"][token].tolist()
    assert [e for e, c in enumerate(probs.marker.color) if c == "#d62728"] == sorted(chosen)
    assert list(labels.x) == chosen
    assert mix.y[0] == pytest.approx(float(trace[p + "topk_weights"][token].sum()))
    assert mix.y[1] == pytest.approx(float(trace[p + "shared_gate"][token]))


def test_moe_expert_load_entropy_and_margin(moe):
    lab, trace = moe
    fig = viz.moe_expert_load(trace)
    load, entropy, margin = fig.data
    E, k = lab.arch.n_experts, lab.arch.top_k
    for layer in lab.arch.moe_layers:
        probs, experts = trace[f"layers.{layer}.moe.router_probs"], trace[f"layers.{layer}.moe.topk_experts"]
        counts = [int((experts == e).sum()) for e in range(E)]
        assert np.allclose(load.z[layer], np.array(counts) / experts.numel())
        ent = -(probs.double() * probs.double().log()).sum(-1).mean()
        assert entropy.x[layer] == pytest.approx(float(ent))
        top = probs.sort(-1, descending=True).values
        assert np.allclose(margin.z[layer], (top[:, k - 1] - top[:, k]).numpy(), atol=1e-7)


def test_moe_views_stay_within_limits_at_57b():
    S, E, k = 300, 64, 8
    store = {}
    for layer in range(28):
        probs = torch.randn(S, E).softmax(-1)
        w, idx = probs.topk(k, -1)
        p = f"layers.{layer}.moe."
        store |= {
            p + "router_probs": probs,
            p + "topk_experts": idx,
            p + "topk_weights": w,
            p + "shared_gate": torch.rand(S),
        }
    trace = synthetic("Qwen/Qwen2-57B-A14B-Instruct", S, store)
    for fig in (viz.moe_expert_load(trace), viz.moe_routing(trace, 27), viz.moe_token(trace, 27, -1)):
        assert len(fig.to_json()) < BIG
    fig = viz.moe_routing(trace, 27)
    assert np.asarray(fig.data[0].z).shape == (viz.MAX_TOKENS, E) and "positions 236..299" in fig.layout.title.text


def test_moe_views_refuse_dense_layers(dense):
    _, trace = dense
    with pytest.raises(ValueError, match="dense Qwen2.*tiny-moe"):
        viz.moe_routing(trace, 0)
    with pytest.raises(ValueError, match="dense Qwen2"):
        viz.moe_expert_load(trace)


# ---- logit lens and residual ------------------------------------------------------------------------------------


def test_logit_lens_shows_the_lens(dense):
    lab, trace = dense
    fig = viz.logit_lens(trace, tokenizer=lab.tokenizer)
    heat = fig.data[0]
    assert torch.equal(t(heat.z), trace.lens_probs[..., 0])
    expected = [[viz.token_label(lab.tokenizer.decode([i])) for i in row] for row in trace.lens_ids[..., 0].tolist()]
    assert [list(r) for r in heat.text] == expected
    # hover lists the top k with exact probabilities
    assert f"{float(trace.lens_probs[1, 2, 4]):.6f}" in heat.customdata[1][2]
    # the last layer's lens is the model's own prediction
    assert torch.equal(trace.lens_ids[-1, :, 0].cpu(), trace.logits.argmax(-1).cpu())
    pos = viz.lens_position(trace, 3, tokenizer=lab.tokenizer)
    assert torch.equal(t(pos.data[0].z), trace.lens_probs[:, 3])


def test_logit_lens_without_a_lens_says_how(dense):
    lab, _ = dense
    trace = lab.trace("hi", sites=["logits"])
    with pytest.raises(ValueError, match=r"lab.trace\(inputs, lens=5\)"):
        viz.logit_lens(trace)


def test_logit_lens_stays_within_limits_at_72b():
    S = 300
    trace = synthetic("Qwen/Qwen2-72B-Instruct", S, {}, lens_ids=torch.randint(0, 152064, (80, S, 5)),
                      lens_probs=torch.rand(80, S, 5))  # fmt: skip
    fig = viz.logit_lens(trace)
    assert np.asarray(fig.data[0].z).shape == (80, 48) and len(fig.to_json()) < BIG
    assert "#" in fig.data[0].text[0][0]  # no tokenizer: ids the input lacks are written #id


def test_residual_norms(moe):
    lab, trace = moe
    fig = viz.residual_norms(trace)
    pre, attn, block, post, heat = fig.data
    for i in range(lab.arch.n_layers):
        for line, site in ((pre, "resid_pre"), (attn, "attn.out"), (block, "moe.out"), (post, "resid_post")):
            assert line.y[i] == pytest.approx(float(trace[f"layers.{i}.{site}"].norm(dim=-1).mean()), rel=1e-6)
        assert np.allclose(heat.z[i], trace[f"layers.{i}.resid_post"].norm(dim=-1).numpy(), rtol=1e-6)


# ---- what every view shares --------------------------------------------------------------------------------------


def every_view(dense, moe):
    (lab, trace), (_, mtrace) = dense, moe
    return {
        "attention_heads": viz.attention_heads(trace, 0),
        "gqa_group_similarity": viz.gqa_group_similarity(trace, 0),
        "kv_cache_memory": viz.kv_cache_memory(),
        "rope_frequencies": viz.rope_frequencies(lab.arch, YARN_128K),
        "rope_rotation": viz.rope_rotation(trace, 0, 0, 3),
        "rope_distance_decay": viz.rope_distance_decay(lab.arch),
        "moe_routing": viz.moe_routing(mtrace, 1),
        "moe_token": viz.moe_token(mtrace, 1, 2),
        "moe_expert_load": viz.moe_expert_load(mtrace),
        "logit_lens": viz.logit_lens(trace),
        "lens_position": viz.lens_position(trace, 2),
        "residual_norms": viz.residual_norms(trace),
    }


def test_every_view_teaches_and_renders_offline(dense, moe):
    for name, fig in every_view(dense, moe).items():
        assert isinstance(fig, go.Figure), name
        assert fig.layout.title.text, name
        for trace in fig.data:  # hover with exact values everywhere (or deliberately none, for labels)
            assert trace.hovertemplate or trace.hoverinfo == "skip", (name, trace.name)
        for trace in heatmaps(fig):  # a colour always says what it means
            bar = fig.layout.coloraxis.colorbar if trace.coloraxis else trace.colorbar
            assert bar.title.text, name
        # JupyterLab draws this mime type with the plotly.js bundled in the plotly wheel: no CDN, no network
        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(fig)
        assert set(bundle) == {"application/vnd.plotly.v1+json"}, name
        text = json.dumps(bundle["application/vnd.plotly.v1+json"], default=str)
        assert "http://" not in text and "https://" not in text and "cdn" not in text.lower(), name


def test_missing_sites_are_named_with_the_sites_to_pass(dense, moe):
    lab, _ = dense
    bare = lab.trace("hello there", sites=["logits"])
    cases = {
        lambda: viz.attention_heads(bare, 1): r"layers.1.attn.pattern.*sites=\['layers.\*.attn.pattern'\]",
        lambda: viz.gqa_group_similarity(bare, 0): r"sites=\['layers.\*.attn.pattern'\]",
        lambda: viz.rope_rotation(bare, 0, 0, 0): r"sites=\['layers.\*.attn.q\*', 'layers.\*.attn.k\*'\]",
        lambda: viz.rope_distance_decay(bare, 0, 0): r"'layers.0.attn.q'",
        lambda: viz.residual_norms(bare): r"sites=\['layers.\*.resid_pre'",
        lambda: viz.moe_routing(moe[0].trace("hi", sites=["logits"]), 0): r"sites=\['layers.\*.moe.\*'\]",
    }
    for call, message in cases.items():
        with pytest.raises(KeyError, match=message):
            call()
    with pytest.raises(TypeError, match="a Lab: call lab.trace"):
        viz.attention_heads(lab, 0)
    with pytest.raises(ValueError, match="layer 4 out of range: this model has layers 0..3"):
        viz.attention_heads(bare, 4)
    with pytest.raises(ValueError, match="head 8 out of range"):
        viz.rope_rotation(dense[1], 0, 8, 0)


def test_token_labels_make_whitespace_and_markup_visible():
    assert viz.token_labels([" the", "\n", "\t", "", "<|im_start|>", "a&b"]) == [
        "␣the", "↵", "⇥", "∅", "&lt;|im_start|&gt;", "a&amp;b",
    ]  # fmt: skip
    assert viz.token_label("\x00") == "\\x00" and len(viz.token_label("x" * 40)) == 14
