"""The lab's step-by-step forward equals transformers', site by site (float32 at 1e-5), on many Qwen2 shapes."""

import pytest
import torch

import qwen2_lab
import qwen2_lab.forward as fwd
from tests.helpers import random_lab

IDS = torch.randint(0, 256, (23,), generator=torch.Generator().manual_seed(1)).tolist()

# Each family member's head layout scaled down (query heads / KV heads, head_dim), tied and untied embeddings.
LAYOUTS = {
    "0.5B 14/2 hd64 tied": dict(num_attention_heads=14, num_key_value_heads=2, head_dim=64, tie_word_embeddings=True),
    "1.5B 12/2 hd128 tied": dict(num_attention_heads=12, num_key_value_heads=2, head_dim=128, tie_word_embeddings=True),
    "7B 28/4 hd128 untied": dict(num_attention_heads=28, num_key_value_heads=4, head_dim=128, tie_word_embeddings=False),
    "72B 64/8 hd128 untied": dict(num_attention_heads=64, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
    "YaRN x4 (128K setting)": dict(
        num_attention_heads=28, num_key_value_heads=4, head_dim=128, max_position_embeddings=131072,
        rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32768, rope_theta=1e6),
    ),
    "YaRN x4, short original window": dict(
        rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=8, rope_theta=1e6),
    ),
}  # fmt: skip
MOE_LAYOUTS = {
    "MoE norm_topk_prob false": dict(norm_topk_prob=False),
    "MoE norm_topk_prob true": dict(norm_topk_prob=True),
    "MoE mixed dense/MoE layers": dict(num_hidden_layers=4, decoder_sparse_step=2, mlp_only_layers=[3]),
    "MoE 7/1 GQA, YaRN, tied": dict(
        num_attention_heads=7, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, rope_theta=1e6),
    ),
}  # fmt: skip


def assert_equal_to_hf(lab, inputs, atol=1e-5):
    report = qwen2_lab.compare_with_hf(lab, inputs)
    assert report.ok, str(report)
    assert report.max_abs_diff <= atol, str(report)
    kinds = {r.site.split(".", 2)[-1] for r in report.rows}
    assert {"attn.q_rot", "attn.pattern", "attn.z", "resid_post", "logits"} <= kinds
    return report


@pytest.mark.parametrize("name", LAYOUTS)
def test_dense_layouts_equal_hf(name):
    lab = random_lab(**LAYOUTS[name])
    assert_equal_to_hf(lab, IDS)


@pytest.mark.parametrize("name", MOE_LAYOUTS)
def test_moe_layouts_equal_hf(name):
    lab = random_lab(moe=True, **MOE_LAYOUTS[name])
    report = assert_equal_to_hf(lab, IDS)
    kinds = {r.site.split(".", 2)[-1] for r in report.rows}
    assert {"moe.router_logits", "moe.topk_experts", "moe.topk_weights", "moe.routed_out", "moe.shared_gate"} <= kinds
    if lab.arch.n_layers > len(lab.arch.moe_layers):
        assert "mlp.act" in kinds  # the dense layers of a mixed model were compared too


def test_bundled_models_equal_hf(tiny, tiny_moe):
    for lab in (tiny, tiny_moe):
        assert_equal_to_hf(lab, [{"role": "user", "content": "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?"}])


def test_bfloat16_within_bf16_tolerance():
    for moe in (False, True):
        lab = random_lab(moe=moe, dtype=torch.bfloat16)
        report = qwen2_lab.compare_with_hf(lab, IDS)
        assert report.rtol == pytest.approx(1.6e-2)
        assert report.ok, str(report)


def test_sites_hf_does_not_expose_are_consistent():
    """scores, router_probs and resid_mid have no HF twin: check each against the compared sites around it."""
    lab = random_lab(moe=True)
    t = lab.trace(IDS)
    for i in range(lab.arch.n_layers):
        p = f"layers.{i}."
        assert torch.allclose(torch.softmax(t[p + "attn.scores"], -1), t[p + "attn.pattern"], atol=1e-6)
        assert torch.isinf(t[p + "attn.scores"][:, 0, 1:]).all()  # the first token sees only itself
        assert torch.allclose(t[p + "moe.router_probs"], torch.softmax(t[p + "moe.router_logits"], -1), atol=1e-6)
        assert torch.equal(t[p + "moe.router_probs"].topk(2).indices, t[p + "moe.topk_experts"])
        assert torch.allclose(t[p + "resid_mid"], t[p + "resid_pre"] + t[p + "attn.out"], atol=1e-6)
        out = t[p + "moe.routed_out"] + t[p + "moe.shared_gate"][:, None] * t[p + "moe.shared_out"]
        assert torch.allclose(out, t[p + "moe.out"], atol=1e-6)


def test_fused_attention_path_equals_the_explicit_one():
    """Without a pattern site asked for, attention runs fused (no [S, S] matrix); the result must not change."""
    lab = random_lab(num_attention_heads=8, num_key_value_heads=2)
    full = lab.trace(IDS)
    fused = lab.trace(IDS, sites=["layers.*.attn.z", "final_norm"])
    assert "layers.0.attn.pattern" not in fused
    for site in fused.sites():
        torch.testing.assert_close(fused[site], full[site], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.logits, full.logits, rtol=1e-5, atol=1e-5)


def test_offloaded_layer_traces_and_matches(tmp_path):
    """A model dispatched by accelerate with a layer on disk still traces, and equals the same model in memory."""
    from transformers import AutoModelForCausalLM

    from qwen2_lab import Lab

    lab = random_lab(moe=True, num_hidden_layers=3)
    lab.model.save_pretrained(tmp_path / "ckpt")
    device_map = {
        "model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
        "model.layers.1": "disk", "model.layers.2": "cpu", "model.norm": "cpu", "lm_head": "cpu",
    }  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", device_map=device_map, offload_folder=tmp_path / "offload", dtype=torch.float32
    )
    assert model.model.layers[1].self_attn.q_proj.weight.device.type == "meta"  # really offloaded
    offloaded = Lab(model)
    t = offloaded.trace(IDS)
    ref = lab.trace(IDS)
    for site in ref.sites():
        torch.testing.assert_close(t[site], ref[site], rtol=1e-5, atol=1e-5, msg=site)
    assert qwen2_lab.compare_with_hf(offloaded, IDS).ok
    assert model.model.layers[1].self_attn.q_proj.weight.device.type == "meta"  # and went back to disk


def test_the_read_out_is_the_forwards_last_two_steps_and_reads_rows_alone():
    lab = random_lab(tie_word_embeddings=False)
    t = lab.trace(IDS, sites=["layers.*.resid_post"])
    h = t[f"layers.{lab.arch.n_layers - 1}.resid_post"]  # [S, H]
    torch.testing.assert_close(fwd.read_out(lab.model, h), t.logits, rtol=0, atol=0)  # the same ops, bit for bit
    rows = fwd.read_out(lab.model, h, [7, 3])  # [S, 2]: two rows of lm_head only
    torch.testing.assert_close(rows, t.logits[:, [7, 3]], rtol=1e-6, atol=1e-6)
    probs, ids = fwd.lens_top(lab.model, h, 4)
    assert torch.equal(ids, t.logits.topk(4).indices)
    scale = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + lab.model.model.norm.variance_epsilon)  # [S, 1]
    torch.testing.assert_close(fwd.read_out(lab.model, h[-1], [7], scale=float(scale[-1]))[0], t.logits[-1, 7])


def test_head_outputs_add_up_to_o_proj():
    lab = random_lab()
    attn = lab.model.model.layers[1].self_attn
    z = lab.trace(IDS, sites=["layers.1.attn.z"])["layers.1.attn.z"]  # [nH, S, hd]
    each = fwd.head_outputs(attn.o_proj, z)  # [nH, S, H]
    assert each.shape == (lab.arch.n_heads, len(IDS), lab.arch.hidden)
    torch.testing.assert_close(each.sum(0), attn.o_proj(z.transpose(0, 1).reshape(len(IDS), -1)), rtol=1e-5, atol=1e-5)
