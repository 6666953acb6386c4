"""Real widths: the published configs' hidden sizes, head layouts, vocabularies and expert counts, with few layers
(random weights: exactness does not depend on the values, and the full models would not fit a 2-core CI machine)."""

import qwen2_lab
from tests.helpers import family_lab as lab_from

IDS = list(range(100, 140))


def test_qwen2_0_5b_widths_and_vocab_equal_hf():
    lab = lab_from("Qwen/Qwen2-0.5B-Instruct", num_hidden_layers=2)  # 896 hidden, 14/2 heads, 151,936 vocab, tied
    assert (lab.arch.hidden, lab.arch.n_heads, lab.arch.n_kv_heads, lab.arch.vocab) == (896, 14, 2, 151936)
    report = qwen2_lab.compare_with_hf(lab, IDS)
    assert report.ok and report.max_abs_diff <= 1e-5, str(report)


def test_qwen2_7b_widths_equal_hf():
    lab = lab_from("Qwen/Qwen2-7B-Instruct", num_hidden_layers=1, vocab_size=2048)  # 3584 hidden, 28/4, 18944 MLP
    report = qwen2_lab.compare_with_hf(lab, IDS)
    assert report.ok and report.max_abs_diff <= 1e-5, str(report)


def test_qwen2_57b_a14b_routing_equals_hf():
    """64 experts, top-8, norm_topk_prob false, 28/4 heads at 3584 wide; expert widths shrunk to fit the CPU."""
    lab = lab_from(
        "Qwen/Qwen2-57B-A14B-Instruct",
        num_hidden_layers=1, vocab_size=2048, moe_intermediate_size=64, shared_expert_intermediate_size=512,
    )  # fmt: skip
    assert (lab.arch.n_experts, lab.arch.top_k, lab.arch.norm_topk_prob) == (64, 8, False)
    report = qwen2_lab.compare_with_hf(lab, IDS)
    assert report.ok and report.max_abs_diff <= 1e-5, str(report)
    t = lab.trace(IDS, sites=["layers.0.moe.topk_weights"])
    assert (t["layers.0.moe.topk_weights"].sum(-1) < 1).all()  # raw probabilities: they do not sum to 1
