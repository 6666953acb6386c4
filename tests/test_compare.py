"""compare_with_hf: HF's own forward beside the lab's, and the first stage where they part."""

import pytest
import torch

import qwen2_lab
import qwen2_lab.forward as fwd
from tests.helpers import random_lab

IDS = torch.randint(0, 256, (23,), generator=torch.Generator().manual_seed(1)).tolist()


def test_compare_finds_the_first_wrong_stage(monkeypatch):
    """The mismatch finder must point at the first stage a bug touches, not just say 'different'."""
    lab = random_lab(moe=True)
    monkeypatch.setattr(fwd, "rotate_half", lambda x: x.flip(-1))  # a wrong RoPE (interleaved-style mistake)
    report = qwen2_lab.compare_with_hf(lab, IDS)
    assert not report.ok and report.first_mismatch.site == "layers.0.attn.q_rot"


def test_compare_catches_qwen3_style_routing(monkeypatch):
    """Qwen3-MoE takes the top-k first and softmaxes over k: not Qwen2's routing, and compare must say so."""
    lab = random_lab(moe=True)

    def qwen3_weights(probs, experts, norm):  # softmax over the k chosen logits = probabilities renormalised
        weights = probs.gather(-1, experts)
        return weights / weights.sum(-1, keepdim=True)

    monkeypatch.setattr(fwd, "expert_weights", qwen3_weights)
    report = qwen2_lab.compare_with_hf(lab, IDS)
    assert report.first_mismatch.site == "layers.0.moe.topk_weights"


def test_assert_close_is_elementwise_in_float32_and_scaled_in_bfloat16():
    from qwen2_lab.compare import assert_close

    big = torch.tensor([10.0, 0.3, float("-inf")])
    assert_close(big, big.clone(), torch.float32)
    with pytest.raises(AssertionError):
        assert_close(big + torch.tensor([0.0, 2e-4, 0.0]), big, torch.float32)  # float32: element by element
    assert_close(big + torch.tensor([0.0, 0.05, 0.0]), big, torch.bfloat16)  # within 1.6% of the largest value, 10
    with pytest.raises(AssertionError):
        assert_close(big + torch.tensor([0.0, 0.5, 0.0]), big, torch.bfloat16)
