"""Lab: what it wraps, the inputs it takes, the stages it walks and the traces it refuses before running."""

import pytest
import torch

import qwen2_lab


def test_step_walks_the_same_stages_as_trace(tiny):
    stages = list(tiny.stages("1+1="))
    t = tiny.trace("1+1=")
    assert [s.site for s in stages] == t.sites()
    for s in stages:
        assert torch.equal(s.tensor, t[s.site]), s.site
        assert s.why and (s.layer is None) == (not s.site.startswith("layers."))


def test_lab_wraps_only_qwen2_and_accepts_ids_without_tokenizer(tiny):
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.raises(TypeError, match="Qwen2ForCausalLM"):
        qwen2_lab.Lab(
            LlamaForCausalLM(
                LlamaConfig(
                    hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=32, vocab_size=64
                )
            )
        )
    bare = qwen2_lab.Lab(tiny.model)
    t = bare.trace([1, 2, 3], sites=["embed"])
    assert t.tokens == ["1", "2", "3"] and t.logits.shape == (3, tiny.arch.vocab)
    with pytest.raises(ValueError, match="no tokenizer"):
        bare.trace("text")


def test_input_forms_and_errors(tiny):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "1+1="}]}]  # Gradio 6 content blocks
    ids = tiny.encode(msgs)
    assert tiny.tokenizer.decode(ids).endswith("<|im_start|>assistant\n")
    assert torch.equal(tiny.encode(ids), ids) and torch.equal(tiny.encode(ids.tolist()), ids)
    assert torch.equal(tiny.encode(ids[None]), ids)
    with pytest.raises(ValueError, match="empty"):
        tiny.encode("")
    with pytest.raises(ValueError, match="must lie in"):
        tiny.encode([0, 10**6])
    with pytest.raises(ValueError, match="1-D"):
        tiny.encode(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError):
        tiny.encode(3.5)


def test_trace_asks_for_less_before_running(tiny):
    with pytest.raises(ValueError, match="matches no site"):
        tiny.trace("hi", sites=["layers.*.attn.patern"])
    with pytest.raises(ValueError, match="out of range"):
        tiny.trace("hi", layers=[99])
    with pytest.raises(MemoryError, match="sites="):
        tiny.trace("hi there", max_bytes=1000)
    t = tiny.trace("hi there", sites=["layers.*.attn.pattern"], layers=[1], to_cpu=True)
    assert t.sites() == ["layers.1.attn.pattern"] and t.logits is not None
    with pytest.raises(KeyError, match="pass sites="):
        t["layers.0.attn.q"]


def test_72b_trace_is_refused_by_default():
    """Capturing every site of a 72B-shaped model on a long input would need tens of GiB: refused up front."""
    from qwen2_lab.arch import family
    from qwen2_lab.trace import SiteFilter, estimate_bytes

    arch = family()["Qwen/Qwen2-72B-Instruct"]
    assert estimate_bytes(arch, 2048, SiteFilter().wants, 2) > 4 * 2**30
    pattern, logits = 64 * 2048 * 2048 * 2, 2048 * 152064 * 2  # one layer's pattern, and the logits (always kept)
    assert estimate_bytes(arch, 2048, SiteFilter(["layers.*.attn.pattern"], [0]).wants, 2) == pattern + logits
