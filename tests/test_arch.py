"""Arch: the shape in plain numbers, and parameter counts that equal the model's and the official table."""

from dataclasses import replace

import pytest

from qwen2_lab.arch import OFFICIAL_PARAMS_B, YARN_128K, arch_of, family
from tests.helpers import random_model


@pytest.mark.parametrize(
    "moe,kw",
    [
        (False, dict(tie_word_embeddings=True)),
        (False, dict(tie_word_embeddings=False, num_attention_heads=8, num_key_value_heads=1, head_dim=16)),
        (True, dict(tie_word_embeddings=False)),
        (True, dict(num_hidden_layers=4, decoder_sparse_step=2, mlp_only_layers=[3], tie_word_embeddings=True)),
    ],
)
def test_counts_equal_the_model(moe, kw):
    model = random_model(moe, **kw)
    a = arch_of(model)
    assert a.total_params == model.num_parameters()
    emb = model.get_input_embeddings().weight.numel() * (1 if a.tied_embeddings else 2)
    assert a.embedding_params == emb and a.non_embedding_params == a.total_params - emb
    if moe:  # active: swap each MoE layer's experts for just top-k of them
        per_expert = model.model.layers[a.moe_layers[0]].mlp.experts.down_proj[0].numel() * 3
        assert a.active_params == a.total_params - len(a.moe_layers) * (a.n_experts - a.top_k) * per_expert
        assert a.moe_layers == tuple(i for i, l in enumerate(model.model.layers) if hasattr(l.mlp, "experts"))


def test_family_reproduces_the_official_counts():
    fam = family()
    for name, (total, non_emb) in OFFICIAL_PARAMS_B.items():
        a = fam[name]
        if name == "Qwen/Qwen2-7B-Instruct":
            # The blog's 7B row leaves one 0.545B embedding matrix out of both numbers (the checkpoint holds 7.62B).
            one = a.vocab * a.hidden
            assert round(a.total_params / 1e9, 2) == 7.62
            assert abs((a.total_params - one) / 1e9 - total) < 0.006
            assert abs((a.non_embedding_params - one) / 1e9 - non_emb) < 0.006
            continue
        assert abs(a.total_params / 1e9 - total) < 0.006, name
        assert abs(a.non_embedding_params / 1e9 - non_emb) < 0.01, name
    moe = fam["Qwen/Qwen2-57B-A14B-Instruct"]
    assert round(moe.active_params / 1e9) == 14  # "A14B"
    assert [fam[n].group_size for n in fam] == [7, 6, 7, 8, 7]


def test_yarn_and_kv_cache():
    a = family(YARN_128K)["Qwen/Qwen2-7B-Instruct"]
    assert a.rope_scaling["factor"] == 4.0 and a.max_position == 131072
    assert a.kv_cache_bytes_per_token(2) == 2 * 28 * 4 * 128 * 2
    assert "7 per KV head" in str(a)


def test_as_arch_takes_what_holds_an_arch_and_names_what_does_not(tiny, tiny_trace):
    from qwen2_lab.arch import as_arch, family_config
    from qwen2_lab.viz.style import as_trace

    arch = family()["Qwen/Qwen2-7B-Instruct"]
    assert as_arch(arch) is arch and as_arch(tiny) is tiny.arch and as_arch(tiny_trace) is tiny_trace.arch
    assert as_arch(family_config("Qwen/Qwen2-7B-Instruct")) == arch_of(family_config("Qwen/Qwen2-7B-Instruct"))
    assert replace(as_arch(tiny.model), name=tiny.arch.name) == tiny.arch  # a model: the Arch of its config
    with pytest.raises(TypeError, match=r"got str: for a release by name use qwen2_lab.family\(\)\[name\]"):
        as_arch("Qwen/Qwen2-7B-Instruct")
    with pytest.raises(TypeError, match="got dict"):
        as_arch({"hidden_size": 64})
    assert as_trace(tiny_trace) is tiny_trace
    with pytest.raises(TypeError, match=r"viz.x takes a Trace.*got Lab \(a Lab: call lab.trace\(...\) first\)"):
        as_trace(tiny, "viz.x")
