"""Activation patching sweeps equal the plain loop of one patched forward per patch, dense and MoE."""

import pytest

from qwen2_lab import edits as E
from qwen2_lab.patching import head_patch_sweep, naive_patch, patch_sweep
from tests.helpers import ANSWER, CLEAN, CORRUPT, last_diff


@pytest.mark.parametrize("site", ["resid_pre", "attn.out", "mlp.out"])
def test_a_sweep_equals_one_patched_forward_per_patch(small_lab, site):
    sweep = patch_sweep(small_lab, CLEAN, CORRUPT, ANSWER, site=site, batch=4)  # several batches per position
    clean = small_lab.trace(CLEAN)
    for i, L in enumerate(sweep.layers):
        name = f"layers.{L}.{'moe.out' if site == 'mlp.out' and small_lab.arch.layer_kind(L) == 'moe' else site}"
        for c, p in list(enumerate(sweep.columns))[::3]:  # every third position: the sweep's batches mix them all
            expected = last_diff(naive_patch(small_lab, clean, CORRUPT, name, p))
            assert float(sweep.logit_diff[i, c]) == pytest.approx(expected, rel=1e-5, abs=1e-5), (name, p)
    assert sweep.clean == pytest.approx(last_diff(clean), rel=1e-5)
    assert sweep.corrupted == pytest.approx(last_diff(small_lab.trace(CORRUPT)), rel=1e-5)


def test_patching_where_the_runs_agree_changes_nothing(small_lab):
    sweep = patch_sweep(
        small_lab, CLEAN, CORRUPT, ANSWER, positions=[0, 1, 3]
    )  # the prompts first differ at position 2
    assert sweep.recovered[:, :2].abs().max() < 1e-5  # before it, both runs are the same at every layer
    assert sweep.recovered[0, 2].abs() < 1e-5  # token 3 is the same, and layer 0 has not yet read token 2
    assert sweep.recovered[1:, 2].abs().max() > 1e-3  # later layers at position 3 have read it


def test_the_last_position_at_the_last_layer_brings_the_clean_answer_back(small_lab):
    sweep = patch_sweep(
        small_lab, CLEAN, CORRUPT, ANSWER, site="resid_pre", layers=[small_lab.arch.n_layers - 1], positions=[-1]
    )
    clean_resid = small_lab.trace(CLEAN, sites=[f"layers.{small_lab.arch.n_layers - 1}.resid_pre"])
    expected = last_diff(
        naive_patch(small_lab, clean_resid, CORRUPT, f"layers.{small_lab.arch.n_layers - 1}.resid_pre", 8)
    )
    assert float(sweep.logit_diff[0, 0]) == pytest.approx(expected, rel=1e-5)


def test_a_head_sweep_equals_one_patched_forward_per_head(small_lab):
    sweep = head_patch_sweep(small_lab, CLEAN, CORRUPT, ANSWER, positions=[2, 4, 8], batch=5)
    clean = small_lab.trace(CLEAN, sites=["layers.*.attn.z"])
    for i, L in enumerate(sweep.layers):
        for h in range(small_lab.arch.n_heads):

            def fn(z, at, L=L, h=h):
                z = z.clone()
                z[h, [2, 4, 8]] = clean[f"layers.{L}.attn.z"][h, [2, 4, 8]]
                return z

            expected = last_diff(small_lab.trace(CORRUPT, sites=[], edits=E.Edit(f"layers.{L}.attn.z", fn, "one head")))
            assert float(sweep.logit_diff[i, h]) == pytest.approx(expected, rel=1e-5, abs=1e-5), (L, h)


def test_bad_sweeps_are_refused(small_lab):
    with pytest.raises(ValueError, match="as many tokens"):
        patch_sweep(small_lab, CLEAN, CORRUPT[:-1], ANSWER)
    with pytest.raises(ValueError, match="site must be one of"):
        patch_sweep(small_lab, CLEAN, CORRUPT, ANSWER, site="attn.pattern")
    with pytest.raises(ValueError, match=r"\(right, wrong\)"):
        patch_sweep(small_lab, CLEAN, CORRUPT, 42)
    with pytest.raises(ValueError, match="out of range"):
        patch_sweep(small_lab, CLEAN, CORRUPT, ANSWER, layers=[9])
