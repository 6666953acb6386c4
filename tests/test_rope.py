"""qwen2_lab.rope against the rotary embedding transformers builds inside a real (random, tiny) model."""

import math

import pytest
import torch

import qwen2_lab
from qwen2_lab import rope
from qwen2_lab.arch import YARN_128K, arch_of, family
from tests.helpers import random_model

YARN4 = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}


def rope_model(rope_parameters: dict, max_position: int = 1024):
    """A random 2-layer Qwen2 (head_dim 16, 4 query heads / 2 KV heads) with theta 1e4 and these rope parameters."""
    return random_model(rope_parameters={"rope_theta": 1e4, **rope_parameters}, max_position_embeddings=max_position)


@pytest.fixture(scope="module")
def yarn_model():
    return rope_model(YARN4)


@pytest.fixture(scope="module")
def yarn_qk(yarn_model):
    """The YaRN model's Rope, and a random query and key before RoPE (head_dim 16)."""
    torch.manual_seed(1)
    return rope.rope_parameters(arch_of(yarn_model)), torch.randn(16), torch.randn(16)


def test_default_inv_freq_equals_the_models(tiny):
    r = rope.rope_parameters(tiny.arch)
    assert torch.equal(r.inv_freq, tiny.model.model.rotary_emb.inv_freq.cpu())
    assert r.attention_factor == tiny.model.model.rotary_emb.attention_scaling == 1.0
    assert r.scaling is None and r.context == r.original_context == tiny.arch.max_position


def test_yarn_inv_freq_and_attention_factor_equal_the_models(yarn_model):
    emb = yarn_model.model.rotary_emb
    r = rope.rope_parameters(arch_of(yarn_model))
    assert torch.equal(r.inv_freq, emb.inv_freq)
    assert r.attention_factor == emb.attention_scaling
    assert r.attention_factor == pytest.approx(0.1 * math.log(4) + 1, abs=1e-12)
    assert r.context == 1024 and r.original_context == 256
    # The same YaRN asked of the plain model's arch by factor alone: the original window is the model's own.
    plain_arch = arch_of(rope_model({"rope_type": "default"}, max_position=256))
    assert torch.equal(rope.rope_parameters(plain_arch, scaling=4).inv_freq, emb.inv_freq)


def test_cos_sin_and_rotation_equal_the_models(yarn_model):
    r = rope.rope_parameters(arch_of(yarn_model))
    pos = torch.tensor([0, 1, 7, 300, 1000])
    cos, sin = r.module(torch.zeros(1), pos[None])
    ref_cos, ref_sin = yarn_model.model.rotary_emb(torch.zeros(1), pos[None])
    assert torch.equal(cos, ref_cos) and torch.equal(sin, ref_sin)
    # rotate() turns pre-RoPE q into the model's own q_rot (the lab's trace of a forward equal to HF's).
    lab = qwen2_lab.Lab(yarn_model)
    trace = lab.trace(list(range(12)), sites=["layers.1.attn.q", "layers.1.attn.q_rot"])
    q, q_rot = trace["layers.1.attn.q"], trace["layers.1.attn.q_rot"]  # [nH, S, hd]
    for h in range(q.shape[0]):
        torch.testing.assert_close(rope.rotate(q[h], range(12), r), q_rot[h], rtol=1e-6, atol=1e-6)


def test_pair_scores_sum_to_the_rotated_dot_product(yarn_qk):
    r, q, k = yarn_qk
    distances = [0, 1, 5, 100, 700]
    scores = rope.pair_scores(q, k, r, distances)  # [D, hd/2]
    for m in (0, 33):  # relative distance only: the key's own position does not matter
        for d, row in zip(distances, scores):
            qr = rope.rotate(q[None], [m + d], r)[0].double()
            kr = rope.rotate(k[None], [m], r)[0].double()
            assert row.sum().item() == pytest.approx((qr @ kr).item(), rel=1e-5, abs=1e-5)


def test_yarn_regimes_for_72b():
    """Qwen2-72B-Instruct's 128K setting (head_dim 128, theta 1e6, original window 32768, factor 4): pairs 0..23 are
    kept, 24..39 ramp, 40..63 are interpolated (YaRN's beta_fast = 32 and beta_slow = 1 turns in the window)."""
    arch = family()["Qwen/Qwen2-72B-Instruct"]
    plain, yarn = rope.rope_parameters(arch, scaling=False), rope.rope_parameters(arch, scaling=YARN_128K)
    regimes = rope.yarn_regimes(yarn, plain)
    assert regimes == ["kept"] * 24 + ["ramp"] * 16 + ["interpolated"] * 24
    # Kept pairs are unchanged, interpolated ones divided by the factor, exactly as transformers computed them.
    torch.testing.assert_close(yarn.inv_freq[:24], plain.inv_freq[:24], rtol=1e-6, atol=0)
    torch.testing.assert_close(yarn.inv_freq[40:], plain.inv_freq[40:] / 4, rtol=1e-6, atol=0)
    # Fast kept pairs turn more than beta_fast=32 times in the original window; interpolated ones under once.
    t = rope.turns(plain.inv_freq, 32768)
    assert (t[:23] > 32).all() and (t[41:] < 1).all()
    assert yarn.context == 131072 and yarn.attention_factor == pytest.approx(1.1386, abs=1e-4)


def test_scaling_arguments():
    arch = family(YARN_128K)["Qwen/Qwen2-7B-Instruct"]
    assert rope.resolve_scaling(arch)["factor"] == 4.0  # None: the arch's own
    assert rope.resolve_scaling(arch, False) is None
    assert rope.resolve_scaling(arch, {"rope_type": "default"}) is None
    assert rope.resolve_scaling(arch, 2)["original_max_position_embeddings"] == 32768
    assert rope.resolve_scaling(arch, {"type": "yarn", "factor": 2.0})["rope_type"] == "yarn"  # old config spelling
    with pytest.raises(ValueError, match="factor must be >= 1"):
        rope.resolve_scaling(arch, 0.5)
    with pytest.raises(TypeError, match="scaling must be"):
        rope.resolve_scaling(arch, "yarn")
    with pytest.raises(TypeError, match="Arch, Lab or Trace.*family\\(\\)\\[name\\]"):
        rope.rope_parameters("Qwen2-7B")
    assert rope.bands(64, 4) == [range(0, 16), range(16, 32), range(32, 48), range(48, 64)]


def test_binned_pair_scores_are_the_mean_over_each_bin(yarn_qk):
    r, q, k = yarn_qk
    edges = [1, 2, 5, 40, 1000]
    binned = rope.pair_scores_binned(q, k, r, edges)  # [B, hd/2]
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        torch.testing.assert_close(binned[i], rope.pair_scores(q, k, r, range(lo, hi)).mean(0), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="increasing"):
        rope.pair_scores_binned(q, k, r, [5, 5])
