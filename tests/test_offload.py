"""Every public function on a model accelerate has offloaded or split, equal to the same model in memory.

A 72B user on one GPU loads with a `device_map` that puts layers on "disk" (accelerate keeps their weights on the
meta device and brings each layer in only for its forward); on several GPUs the layers sit on different devices. On
the CPU both are made with "cpu" and "disk": `offloaded` has every decoder layer on disk, `split` alternates layers
between "cpu" and "disk" and keeps the final norm and lm_head on disk. Each is loaded with `qwen2_lab.load` from a
saved random Qwen2-MoE checkpoint (one dense layer among the MoE ones, untied embeddings, Qwen2's real vocabulary and
tokenizer) and compared with that checkpoint loaded whole into memory, at 1e-5 in float32.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

import qwen2_lab
from qwen2_lab import edits, viz
from qwen2_lab.forward import lens_top
from tests.helpers import save_real_vocab_checkpoint

LAYERS = 3
SHAPE = dict(num_hidden_layers=LAYERS, mlp_only_layers=[1], tie_word_embeddings=False)  # layer 1 dense, 0 and 2 MoE
TEXT = "A={3,5,7,9}, B={1,3,4,8}. What is A∩B?"
CORRUPTED = "A={3,5,7,9}, B={1,5,4,8}. What is A∩B?"  # one token differs (Qwen2 splits digits one by one)
EDGES = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu"}
PLACEMENTS = {
    "offloaded": {**EDGES, **{f"model.layers.{i}": "disk" for i in range(LAYERS)}, "model.norm": "cpu", "lm_head": "cpu"},
    "split": {**EDGES, **{f"model.layers.{i}": ("cpu", "disk")[i % 2] for i in range(LAYERS)},
              "model.norm": "disk", "lm_head": "disk"},
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_real_vocab_checkpoint(tmp_path_factory.mktemp("offload") / "random-qwen2-moe", moe=True, **SHAPE)


@pytest.fixture(scope="module")
def memory(checkpoint):
    return qwen2_lab.load(str(checkpoint), device="cpu")


@pytest.fixture(scope="module", params=sorted(PLACEMENTS))
def placed(request, checkpoint, tmp_path_factory):
    """The same checkpoint loaded by a device_map with layers on "disk": the "offloaded" and the "split" one."""
    folder = tmp_path_factory.mktemp(f"offload-{request.param}")
    lab = qwen2_lab.load(str(checkpoint), device_map=PLACEMENTS[request.param], offload_folder=str(folder))
    on_disk = lab.model.model.layers[0 if request.param == "offloaded" else 1].self_attn.q_proj.weight
    assert on_disk.device.type == "meta", "accelerate left that layer's weights on disk"
    if request.param == "split":
        assert lab.model.lm_head.weight.device.type == "meta" and lab.model.model.norm.weight.device.type == "meta"
    return lab


def same(a, b, where="result"):
    """a equals b at 1e-5, field by field: tensors, arrays, numbers, dataclasses, dicts, lists, plotly figures."""
    if isinstance(a, qwen2_lab.Lab) or isinstance(a, torch.nn.Module):
        return  # the model itself: what it computed is compared, not the object
    if hasattr(a, "to_plotly_json"):
        return same(a.to_plotly_json(), b.to_plotly_json(), where)
    if isinstance(a, torch.Tensor):
        return torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{where}: {m}")
    if isinstance(a, np.ndarray) and a.dtype.kind in "fc":
        return np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=where)
    if isinstance(a, np.ndarray):
        return np.testing.assert_array_equal(a, b, err_msg=where)
    if isinstance(a, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5) or (math.isnan(a) and math.isnan(b)), (
            f"{where}: {a} != {b}"
        )
        return
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
        return
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
        return
    assert a == b, f"{where}: {a!r} != {b!r}"


def same_trace(a, b):
    assert a.sites() == b.sites() and a.tokens == b.tokens and a.edits == b.edits
    for site in a.sites():
        same(a[site], b[site], site)
    same(a.logits, b.logits, "logits")
    same((a.lens_ids, a.lens_probs), (b.lens_ids, b.lens_probs), "lens")


def test_trace_every_site_and_the_lens(memory, placed):
    same_trace(placed.trace(TEXT, lens=5), memory.trace(TEXT, lens=5))
    resid = memory.trace(TEXT, sites=["layers.1.resid_post"])["layers.1.resid_post"]  # [S, H]
    same(lens_top(placed.model, resid, 5), lens_top(memory.model, resid, 5), "lens_top")  # the lens of any residual
    assert qwen2_lab.compare_with_hf(placed, TEXT).ok


def test_step_yields_the_same_stages(memory, placed):
    a, b = list(placed.stages(TEXT)), list(memory.stages(TEXT))
    assert [s.site for s in a] == [s.site for s in b]
    for x, y in zip(a, b):
        same(x.tensor, y.tensor, x.site)


def every_edit(lab):
    return [
        edits.zero_heads(0, [0, 1]), edits.mean_heads(2, [3]), edits.zero_kv_group(1, 0), edits.drop_key(2, 3),
        edits.steer("layers.1.resid_post", torch.ones(lab.arch.hidden), scale=0.5), edits.drop_expert(0, 1),
        edits.force_experts(2, [0, 5]), edits.shared_gate(0, value=0.0), edits.rope(theta=1e4), edits.rope_off([1]),
    ]  # fmt: skip


def test_edits(memory, placed):
    for edit_a, edit_b in zip(every_edit(placed), every_edit(memory)):
        same_trace(placed.trace(TEXT, edits=edit_a), memory.trace(TEXT, edits=edit_b))
    clean = memory.trace(TEXT, sites=["layers.1.resid_pre"])
    patched = edits.patch("layers.1.resid_pre", clean, positions=[5])
    same_trace(placed.trace(CORRUPTED, edits=patched), memory.trace(CORRUPTED, edits=patched))


@pytest.mark.parametrize("sampling", [dict(do_sample=False), dict(do_sample=True, temperature=0.8, top_p=0.9, seed=0)])
def test_generate_steps(memory, placed, sampling):
    options = dict(max_new_tokens=6, sites=["layers.2.moe.topk_experts"], lens=3, edits=edits.zero_heads(1, [2]))
    a, b = placed.generate_steps(TEXT, **options, **sampling), memory.generate_steps(TEXT, **options, **sampling)
    assert a.token_ids == b.token_ids and a.text == b.text
    same(a.steps, b.steps, "steps")
    greedy = dict(max_new_tokens=6, do_sample=False)
    assert placed.generate(TEXT, **greedy) == memory.generate(TEXT, **greedy)


def answer(lab):
    return qwen2_lab.inputs.first_tokens(lab.tokenizer, "3", "5")


def test_patch_sweeps(memory, placed):
    for site in ("resid_pre", "attn.out", "mlp.out"):
        a = qwen2_lab.patching.patch_sweep(placed, TEXT, CORRUPTED, answer(placed), site=site)
        same(a, qwen2_lab.patching.patch_sweep(memory, TEXT, CORRUPTED, answer(memory), site=site), site)
    heads = qwen2_lab.patching.head_patch_sweep(placed, TEXT, CORRUPTED, answer(placed))
    same(heads, qwen2_lab.patching.head_patch_sweep(memory, TEXT, CORRUPTED, answer(memory)), "heads")


def test_logit_attribution(memory, placed):
    from qwen2_lab.attribution import logit_attribution

    same(logit_attribution(placed, TEXT, answer(placed)), logit_attribution(memory, TEXT, answer(memory)), "dla")


def test_compare_runs_and_divergence(memory, placed):
    from qwen2_lab.experiments import compare_runs, divergence

    def runs(lab):
        plain, off = lab.trace(TEXT), lab.trace(TEXT, edits=edits.zero_heads(2, [0, 1, 2, 3]))
        gens = [lab.generate_steps(TEXT, max_new_tokens=4, do_sample=True, seed=s) for s in (0, 1)]
        return compare_runs(plain, off, answer=answer(lab), lab=lab), divergence(*gens)

    same(runs(placed), runs(memory), "runs")


def views(lab):
    """Every figure drawn from a trace or a generation of `lab` (kv_cache_memory and the rope spectra read only
    the config, which offload does not touch)."""
    t = lab.trace(TEXT, lens=5)
    gen = lab.generate_steps(TEXT, max_new_tokens=4, do_sample=True, seed=0, sites=["layers.1.attn.pattern"])
    sweep = qwen2_lab.patching.patch_sweep(lab, TEXT, CORRUPTED, answer(lab))
    return {
        "attention_heads": viz.attention_heads(t, 0), "gqa_group_similarity": viz.gqa_group_similarity(t, 1),
        "rope_rotation": viz.rope_rotation(t, 0, 0, 3), "moe_routing": viz.moe_routing(t, 2),
        "moe_token": viz.moe_token(t, 0, 2), "moe_expert_load": viz.moe_expert_load(t), "logit_lens": viz.logit_lens(t),
        "lens_position": viz.lens_position(t, 2), "residual_norms": viz.residual_norms(t),
        "token_confidence": viz.token_confidence(gen), "candidates": viz.candidates(gen, 1),
        "kv_cache_growth": viz.kv_cache_growth(gen), "patching_heatmap": viz.patching_heatmap(sweep),
    }  # fmt: skip


def test_viz_views(memory, placed):
    same(views(placed), views(memory), "views")


def test_explorers(memory, placed):
    from qwen2_lab import widgets

    def explore(lab):
        edit = widgets.EditExplorer(lab, TEXT, answer=answer(lab)).toggle_head(1, 0).toggle_expert(2, 3)
        shown = [widgets.AttentionExplorer(lab, TEXT, layer=1), widgets.RopeExplorer(lab, TEXT, layer=2, head=1),
                 widgets.MoEExplorer(lab, TEXT, layer=2, token=3), widgets.LensExplorer(lab, TEXT)]  # fmt: skip
        return [e.draw() for e in shown] + [edit.draw(), edit.probability(answer(lab)[0])]

    same(explore(placed), explore(memory), "explorers")


def test_same_tells_different_results_apart(memory):
    """The comparison above fails where it should: one head off changes the trace, a figure, a sweep's numbers."""
    plain, off = memory.trace(TEXT, lens=5), memory.trace(TEXT, lens=5, edits=edits.zero_heads(0, [0]))
    for a, b in [(plain["layers.2.resid_post"], off["layers.2.resid_post"]), (viz.logit_lens(plain), viz.logit_lens(off)),
                 (plain.logits[-1].tolist(), off.logits[-1].tolist())]:  # fmt: skip
        with pytest.raises(AssertionError):
            same(a, b)


def test_demo_look_inside_and_what_if(memory, placed):
    """The web demo's Look inside (a trace of the chat: attention, lens and routing figures, a note) and What if (the
    reply regenerated with each kind of change), as its tabs call them."""
    from lab_demo import inside, whatif

    history = [{"role": "user", "content": TEXT}]

    def demo(lab):
        looked = [inside.look_inside(lab, history, layer) for layer in (1, 2)]  # a dense layer and a MoE one
        gen = lab.generate_steps(history, max_new_tokens=5, do_sample=True, temperature=0.8, seed=0)
        changed = [whatif.what_if(gen, kind, 2, 1, whatif.THETA) for _, kind in whatif.kind_choices(lab.arch)]
        return looked, changed

    same(demo(placed), demo(memory), "demo")
