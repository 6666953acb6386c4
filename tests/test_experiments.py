"""Comparing runs, patching sweeps and direct logit attribution: sweeps equal the plain loop of one patched forward per
patch, and the attribution adds up to the logit."""

import pytest
import torch

from qwen2_lab import edits as E
from qwen2_lab.attribution import logit_attribution
from qwen2_lab.experiments import compare_runs
from qwen2_lab.patching import head_patch_sweep, naive_patch, patch_sweep
from tests.helpers import random_lab

CLEAN = [5, 17, 42, 8, 99, 23, 7, 61, 3]
CORRUPT = [5, 17, 40, 8, 12, 23, 7, 61, 3]
ANSWER = (42, 12)


@pytest.fixture(scope="module", params=["dense", "moe"])
def lab(request):
    return random_lab(moe=request.param == "moe", num_hidden_layers=3)


def last_diff(trace, answer=ANSWER) -> float:
    return float(trace.logits[-1, answer[0]] - trace.logits[-1, answer[1]])


@pytest.mark.parametrize("site", ["resid_pre", "attn.out", "mlp.out"])
def test_a_sweep_equals_one_patched_forward_per_patch(lab, site):
    sweep = patch_sweep(lab, CLEAN, CORRUPT, ANSWER, site=site, batch=4)  # several batches per position
    clean = lab.trace(CLEAN)
    for i, L in enumerate(sweep.layers):
        name = f"layers.{L}.{'moe.out' if site == 'mlp.out' and lab.arch.layer_kind(L) == 'moe' else site}"
        for c, p in list(enumerate(sweep.columns))[::3]:  # every third position: the sweep's batches mix them all
            expected = last_diff(naive_patch(lab, clean, CORRUPT, name, p))
            assert float(sweep.logit_diff[i, c]) == pytest.approx(expected, rel=1e-5, abs=1e-5), (name, p)
    assert sweep.clean == pytest.approx(last_diff(clean), rel=1e-5)
    assert sweep.corrupted == pytest.approx(last_diff(lab.trace(CORRUPT)), rel=1e-5)


def test_patching_where_the_runs_agree_changes_nothing(lab):
    sweep = patch_sweep(lab, CLEAN, CORRUPT, ANSWER, positions=[0, 1, 3])  # the prompts first differ at position 2
    assert sweep.recovered[:, :2].abs().max() < 1e-5  # before it, both runs are the same at every layer
    assert sweep.recovered[0, 2].abs() < 1e-5  # token 3 is the same, and layer 0 has not yet read token 2
    assert sweep.recovered[1:, 2].abs().max() > 1e-3  # later layers at position 3 have read it


def test_the_last_position_at_the_last_layer_brings_the_clean_answer_back(lab):
    sweep = patch_sweep(lab, CLEAN, CORRUPT, ANSWER, site="resid_pre", layers=[lab.arch.n_layers - 1], positions=[-1])
    clean_resid = lab.trace(CLEAN, sites=[f"layers.{lab.arch.n_layers - 1}.resid_pre"])
    expected = last_diff(naive_patch(lab, clean_resid, CORRUPT, f"layers.{lab.arch.n_layers - 1}.resid_pre", 8))
    assert float(sweep.logit_diff[0, 0]) == pytest.approx(expected, rel=1e-5)


def test_a_head_sweep_equals_one_patched_forward_per_head(lab):
    sweep = head_patch_sweep(lab, CLEAN, CORRUPT, ANSWER, positions=[2, 4, 8], batch=5)
    clean = lab.trace(CLEAN, sites=["layers.*.attn.z"])
    for i, L in enumerate(sweep.layers):
        for h in range(lab.arch.n_heads):

            def fn(z, at, L=L, h=h):
                z = z.clone()
                z[h, [2, 4, 8]] = clean[f"layers.{L}.attn.z"][h, [2, 4, 8]]
                return z

            expected = last_diff(lab.trace(CORRUPT, sites=[], edits=E.Edit(f"layers.{L}.attn.z", fn, "one head")))
            assert float(sweep.logit_diff[i, h]) == pytest.approx(expected, rel=1e-5, abs=1e-5), (L, h)


def test_attribution_adds_up_to_the_logit_difference(lab):
    dla = logit_attribution(lab, CLEAN, ANSWER)
    assert dla.total == pytest.approx(dla.logit, rel=1e-4, abs=1e-4)
    assert dla.logit == pytest.approx(last_diff(lab.trace(CLEAN)), rel=1e-6)
    assert dla.heads.shape == (lab.arch.n_layers, lab.arch.n_heads)
    single = logit_attribution(lab, CLEAN, 42)
    assert single.total == pytest.approx(float(lab.trace(CLEAN).logits[-1, 42]), rel=1e-4, abs=1e-4)
    for layer, shares in dla.experts.items():
        used = set(
            lab.trace(CLEAN, sites=[f"layers.{layer}.moe.topk_experts"])[f"layers.{layer}.moe.topk_experts"][
                -1
            ].tolist()
        )
        assert {e for e in range(lab.arch.n_experts) if shares[e] != 0} <= used
        assert float(dla.mlps[layer]) == pytest.approx(float(shares.sum()) + dla.shared[layer], rel=1e-5)


def test_a_heads_share_is_its_o_proj_output_read_through_the_final_norm(lab):
    """Head h's share: o_proj applied to that head's output alone, times the final norm's weight and the clean
    run's 1/rms, projected on lm_head's two rows."""
    dla = logit_attribution(lab, CLEAN, ANSWER)
    L, h = 1, 2
    z = lab.trace(CLEAN, sites=[f"layers.{L}.attn.z"])[f"layers.{L}.attn.z"][:, -1]  # (nH, hd)
    alone = torch.zeros_like(z)
    alone[h] = z[h]
    with torch.no_grad():
        written = lab.model.model.layers[L].self_attn.o_proj(alone.flatten())  # (H,): what head h adds
        w = lab.model.lm_head.weight[list(ANSWER)]
        share = (lab.model.model.norm.weight * written * dla.scale) @ (w[0] - w[1])
    assert float(dla.heads[L, h]) == pytest.approx(float(share), rel=1e-4, abs=1e-5)


def test_compare_runs_says_what_changed(tiny):
    text = "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?"
    clean = tiny.trace(text, sites=["layers.*.resid_post", "layers.*.attn.z"])
    edited = tiny.trace(text, sites=["layers.*.resid_post", "layers.*.attn.z"], edits=E.zero_heads(2, [0, 1]))
    right, wrong = int(clean.logits[-1].argmax()), int(clean.logits[-1].argsort()[-2])
    diff = compare_runs(clean, edited, answer=(right, wrong))
    assert diff.logit_diff[0] == pytest.approx(float(clean.logits[-1, right] - clean.logits[-1, wrong]))
    assert diff.logit_diff[1] == pytest.approx(float(edited.logits[-1, right] - edited.logits[-1, wrong]))
    assert diff.top_a[0][0] == right
    assert diff.kl.shape == (len(clean.tokens),) and float(diff.kl.min()) >= -1e-6
    assert all(v == 0 for s, v in diff.site_change.items() if s.startswith(("layers.0.", "layers.1.")))
    assert diff.site_change["layers.2.attn.z"] > 0 and diff.site_change["layers.3.resid_post"] > 0
    assert float(compare_runs(clean, clean).kl.abs().max()) == 0
    assert "logit difference" in str(diff) and diff.edits == edited.edits


def test_bad_sweeps_are_refused(lab):
    with pytest.raises(ValueError, match="as many tokens"):
        patch_sweep(lab, CLEAN, CORRUPT[:-1], ANSWER)
    with pytest.raises(ValueError, match="site must be one of"):
        patch_sweep(lab, CLEAN, CORRUPT, ANSWER, site="attn.pattern")
    with pytest.raises(ValueError, match=r"\(right, wrong\)"):
        patch_sweep(lab, CLEAN, CORRUPT, 42)
    with pytest.raises(ValueError, match="out of range"):
        patch_sweep(lab, CLEAN, CORRUPT, ANSWER, layers=[9])


def test_divergence_finds_where_an_edit_changes_the_answer():
    from qwen2_lab.experiments import divergence

    lab = random_lab()
    a = lab.generate_steps(CLEAN, max_new_tokens=6, do_sample=False)
    b = a.branch(2, next(c.id for c in a.steps[2].top if c.id != a.token_ids[2]))
    d = divergence(a, b)
    assert d.step == 2 and d.token_a == a.tokens[2] and d.token_b == b.tokens[2]
    assert d.p_a[0] == pytest.approx(a.steps[2].prob)
    assert d.p_a == pytest.approx((d.p_a[0], d.p_a[0]), rel=1e-5)  # the same step, which b recomputes: float noise
    assert divergence(a, a).step is None and "agree" in str(divergence(a, a))
    steered = lab.generate_steps(
        CLEAN, max_new_tokens=6, do_sample=False, keep_logits=False, edits=E.zero_heads(1, [0, 1, 2])
    )
    d = divergence(a, steered)  # no logits kept: the step is recomputed with the run's own edits
    kept = lab.generate_steps(CLEAN, max_new_tokens=6, do_sample=False, edits=E.zero_heads(1, [0, 1, 2]))
    assert d.step is not None and d.p_b[1] == pytest.approx(kept.steps[d.step].prob, rel=1e-5)
