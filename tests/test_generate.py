"""generate and stream: the same text as HF generate; a stream closed early stops generating."""

import pytest
import torch
from transformers import StoppingCriteria

MSGS = [{"role": "user", "content": "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?"}]


def test_generate_equals_hf_generate(tiny_moe):
    lab = tiny_moe
    ids = lab.encode(MSGS)[None]
    ref = lab.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    expected = lab.tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    assert lab.generate(MSGS, max_new_tokens=12, do_sample=False) == expected


def test_stream_pieces_add_up_to_generate(tiny):
    pieces = list(tiny.stream(MSGS, max_new_tokens=16, do_sample=False))
    assert len(pieces) >= 1 and "".join(pieces) == tiny.generate(MSGS, max_new_tokens=16, do_sample=False)


def test_closing_a_stream_stops_generation(tiny):
    class Count(StoppingCriteria):
        calls = 0

        def __call__(self, input_ids, scores, **kw):
            Count.calls += 1
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    stream = tiny.stream("1+1=", max_new_tokens=400, min_new_tokens=400, do_sample=False, stopping_criteria=[Count()])
    next(stream)
    stream.close()  # the client left: the generate thread must stop at the next token, not run 400 steps
    assert Count.calls < 50


def test_generation_errors_reach_the_caller(tiny):
    with pytest.raises(ValueError):
        list(tiny.stream("1+1=", max_new_tokens=4, top_k=-3, do_sample=True))


def test_stream_yields_a_piece_per_token_and_never_half_a_character():
    """HF's TextIteratorStreamer waits for a space; the lab's streamer sends each token as it comes."""
    from qwen2_lab import qwen2_tokenizer
    from qwen2_lab.lab import TokenStreamer

    tok = qwen2_tokenizer()
    text = "生活的真谛是 😊 123456\nA∩B={-1,0}<|im_end|>"
    ids = tok.encode(text, add_special_tokens=False)
    streamer = TokenStreamer(tok)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    pieces = list(streamer)
    assert "".join(pieces) == text.replace("<|im_end|>", "")
    assert all("\ufffd" not in p for p in pieces)
    assert len(pieces) >= len(ids) - 3  # one per token, but for the emoji's bytes and the special token
    assert pieces[:3] == [tok.decode([ids[0]]), tok.decode([ids[1]]), tok.decode([ids[2]])]


def test_trace_tensors_work_with_the_weights_afterwards(tiny):
    """A learner multiplies a kept tensor by a weight outside any no_grad block: that must just work."""
    t = tiny.trace("1+1=", sites=["layers.0.attn_norm", "layers.0.attn.q"])
    attn = tiny.model.model.layers[0].self_attn
    q = attn.q_proj(t["layers.0.attn_norm"])  # [S, nH*hd], with autograd on
    torch.testing.assert_close(q.view(q.shape[0], -1, attn.head_dim).transpose(0, 1), t["layers.0.attn.q"])
