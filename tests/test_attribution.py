"""Direct logit attribution: the shares add up to the logit difference, and a head's share is its o_proj output read
through the final norm."""

import pytest
import torch

from qwen2_lab.attribution import logit_attribution
from tests.helpers import ANSWER, CLEAN, last_diff


def test_attribution_adds_up_to_the_logit_difference(small_lab):
    dla = logit_attribution(small_lab, CLEAN, ANSWER)
    assert dla.total == pytest.approx(dla.logit, rel=1e-4, abs=1e-4)
    assert dla.logit == pytest.approx(last_diff(small_lab.trace(CLEAN)), rel=1e-6)
    assert dla.heads.shape == (small_lab.arch.n_layers, small_lab.arch.n_heads)
    single = logit_attribution(small_lab, CLEAN, 42)
    assert single.total == pytest.approx(float(small_lab.trace(CLEAN).logits[-1, 42]), rel=1e-4, abs=1e-4)
    for layer, shares in dla.experts.items():
        used = set(
            small_lab.trace(CLEAN, sites=[f"layers.{layer}.moe.topk_experts"])[f"layers.{layer}.moe.topk_experts"][
                -1
            ].tolist()
        )
        assert {e for e in range(small_lab.arch.n_experts) if shares[e] != 0} <= used
        assert float(dla.mlps[layer]) == pytest.approx(float(shares.sum()) + dla.shared[layer], rel=1e-5)


def test_a_heads_share_is_its_o_proj_output_read_through_the_final_norm(small_lab):
    """Head h's share: o_proj applied to that head's output alone, times the final norm's weight and the clean
    run's 1/rms, projected on lm_head's two rows."""
    dla = logit_attribution(small_lab, CLEAN, ANSWER)
    L, h = 1, 2
    z = small_lab.trace(CLEAN, sites=[f"layers.{L}.attn.z"])[f"layers.{L}.attn.z"][:, -1]  # (nH, hd)
    alone = torch.zeros_like(z)
    alone[h] = z[h]
    with torch.no_grad():
        written = small_lab.model.model.layers[L].self_attn.o_proj(alone.flatten())  # (H,): what head h adds
        w = small_lab.model.lm_head.weight[list(ANSWER)]
        share = (small_lab.model.model.norm.weight * written * dla.scale) @ (w[0] - w[1])
    assert float(dla.heads[L, h]) == pytest.approx(float(share), rel=1e-4, abs=1e-5)
