"""Comparing runs: what an edit changed, and where two generations part."""

import pytest

from qwen2_lab import edits as E
from qwen2_lab.experiments import compare_runs
from tests.helpers import CLEAN, random_lab


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
