"""Generation on the lab's forward with a KV cache: the same tokens and logits as HF generate, every choice recorded."""

import math

import pytest
import torch

from tests.helpers import random_lab

MSGS = [{"role": "user", "content": "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?"}]
IDS = [3, 17, 42, 5, 99, 7, 23, 11]
SETTINGS = [  # sampling settings HF generate must agree with, token for token, under the same seed
    dict(do_sample=True, temperature=0.9),
    dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05),
    dict(do_sample=True, top_p=0.5, min_p=0.05),
    dict(do_sample=False, repetition_penalty=1.3),
]


def hf_generate(lab, ids, n, seed=None, **kwargs):
    """HF generate's new tokens and its raw logits per step (float32)."""
    ids = torch.as_tensor(ids)[None]
    if seed is not None:
        torch.manual_seed(seed)
    out = lab.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, output_logits=True,
        return_dict_in_generate=True, **kwargs,
    )  # fmt: skip
    return out.sequences[0, ids.shape[1] :].tolist(), torch.stack([x[0] for x in out.logits])


LABS = {
    "dense tied": lambda: random_lab(tie_word_embeddings=True),
    "dense untied": lambda: random_lab(tie_word_embeddings=False, num_key_value_heads=1),
    "dense yarn": lambda: random_lab(
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 1e6},
        max_position_embeddings=64,
    ),
    "moe": lambda: random_lab(moe=True),
    "moe norm_topk_prob": lambda: random_lab(moe=True, norm_topk_prob=True),
}


@pytest.fixture(scope="module", params=list(LABS))
def lab(request):
    return LABS[request.param]()


def test_greedy_equals_hf_generate_token_for_token_and_logits_at_1e5(lab):
    tokens, logits = hf_generate(lab, IDS, 12, do_sample=False)
    gen = lab.generate_steps(IDS, max_new_tokens=12, do_sample=False)
    assert gen.token_ids == tokens
    torch.testing.assert_close(gen.logits, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_seeded_sampling_draws_what_hf_generate_draws(lab, settings):
    for seed in (0, 1):
        tokens, _ = hf_generate(lab, IDS, 10, seed=seed, **settings)
        assert lab.generate_steps(IDS, max_new_tokens=10, seed=seed, **settings).token_ids == tokens


def test_bundled_models_generate_what_hf_generates(tiny, tiny_moe):
    for lab in (tiny, tiny_moe):
        ids = lab.encode(MSGS)
        tokens, logits = hf_generate(lab, ids, 24, do_sample=False)
        gen = lab.generate_steps(MSGS, max_new_tokens=24, do_sample=False)
        assert gen.token_ids == tokens
        torch.testing.assert_close(gen.logits, logits, rtol=1e-5, atol=1e-5)
        assert gen.text == lab.tokenizer.decode(tokens, skip_special_tokens=True)
        assert lab.generate(MSGS, max_new_tokens=24, do_sample=False) == gen.text


def test_each_step_records_its_choice_before_and_after_the_processors():
    lab = random_lab()
    gen = lab.generate_steps(IDS, max_new_tokens=6, do_sample=True, temperature=0.5, top_k=5, seed=3, top=4)
    for i, step in enumerate(gen.steps):
        probs = torch.softmax(step.logits, -1)
        assert step.index == i and step.position == len(IDS) + i and step.cache_tokens == len(IDS) + i
        assert step.prob == pytest.approx(float(probs[step.token_id]), rel=1e-6)
        scores = step.logits / 0.5  # temperature 0.5, then only the 5 best kept
        scores[scores < scores.topk(5).values[-1]] = float("-inf")
        processed = torch.softmax(scores, -1)
        assert step.processed_prob == pytest.approx(float(processed[step.token_id]), rel=1e-5)
        assert [c.id for c in step.top] == probs.topk(4).indices.tolist()
        assert [c.prob for c in step.processed_top] == pytest.approx(processed.topk(4).values.tolist(), rel=1e-5)
        assert step.entropy == pytest.approx(float(-(probs * probs.log()).sum()) / math.log(2), rel=1e-5)


def test_the_kv_cache_grows_one_token_per_step():
    lab = random_lab()
    gen = lab.generate_steps(IDS, max_new_tokens=5, do_sample=False, keep_cache=True)
    assert [s.cache_tokens for s in gen.steps] == [len(IDS) + i for i in range(5)]
    assert gen.cache.get_seq_length() == len(IDS) + 4  # the last token is chosen, not yet read by a forward
    layer = gen.cache.layers[0]
    assert layer.keys.shape == (1, lab.arch.n_kv_heads, len(IDS) + 4, lab.arch.head_dim)


def test_sites_at_each_step_equal_a_trace_of_the_text_so_far():
    lab = random_lab(moe=True)
    gen = lab.generate_steps(IDS, max_new_tokens=4, do_sample=False, sites=["layers.1.attn.pattern", "*.moe.*"], lens=3)
    for step in gen.steps:
        so_far = IDS + gen.token_ids[: step.index]  # what the forward of this step has read
        trace = lab.trace(so_far, sites=["layers.1.attn.pattern", "*.moe.*"], lens=3)
        pattern = step.sites["layers.1.attn.pattern"]
        assert pattern.shape == (lab.arch.n_heads, 1, len(so_far))  # this token's query over every earlier key
        torch.testing.assert_close(pattern[:, 0], trace["layers.1.attn.pattern"][:, -1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(step.sites["layers.0.moe.router_probs"][0], trace["layers.0.moe.router_probs"][-1])
        assert torch.equal(step.lens_ids, trace.lens_ids[:, -1])


def test_branch_keeps_the_steps_before_and_continues_from_the_new_token():
    lab = random_lab()
    gen = lab.generate_steps(IDS, max_new_tokens=8, do_sample=False)
    same = gen.branch(3, gen.token_ids[3])
    assert same.token_ids == gen.token_ids  # the same token at step 3 reproduces the greedy run
    torch.testing.assert_close(same.logits, gen.logits, rtol=1e-5, atol=1e-5)
    other = next(c.id for c in gen.steps[3].top if c.id != gen.token_ids[3])
    alt = gen.branch(3, other)
    assert alt.token_ids[:3] == gen.token_ids[:3] and alt.token_ids[3] == other and alt.steps[3].forced
    assert len(alt.steps) == 8 and alt.steps[3].prob == pytest.approx(gen.steps[3].top[1].prob, rel=1e-5)
    fresh = lab.generate_steps(IDS + alt.token_ids[:4], max_new_tokens=4, do_sample=False)
    assert alt.token_ids[4:] == fresh.token_ids


def test_branch_by_text_on_the_bundled_model(tiny):
    gen = tiny.generate_steps(MSGS, max_new_tokens=6, do_sample=False)
    alt = gen.branch(0, "{")
    assert alt.tokens[0] == "{" and alt.steps[0].forced


def test_stream_pieces_add_up_to_the_text(tiny):
    pieces = list(tiny.stream(MSGS, max_new_tokens=16, do_sample=False))
    assert len(pieces) >= 2 and "".join(pieces) == tiny.generate(MSGS, max_new_tokens=16, do_sample=False)


def test_closing_a_stream_stops_generation(tiny):
    forwards = []
    handle = tiny.model.model.embed_tokens.register_forward_hook(lambda *a: forwards.append(1))
    try:
        stream = tiny.stream("1+1=", max_new_tokens=400, min_new_tokens=400, do_sample=False)
        next(stream)
        stream.close()  # the client left: generation stops now, not after 400 steps
    finally:
        handle.remove()
    assert len(forwards) <= 2


def test_bad_branches_are_refused(tiny):
    gen = tiny.generate_steps(MSGS, max_new_tokens=3, do_sample=False)
    with pytest.raises(IndexError, match="steps 0..2"):
        gen.branch(3, 5)
    with pytest.raises(ValueError, match=rf"0\.\.{tiny.arch.vocab - 1}\b"):
        gen.branch(0, 10**6)
    with pytest.raises(ValueError, match="exactly one token"):
        gen.branch(0, "A={1,2,3}")


def test_generation_stops_at_the_end_of_turn(tiny):
    gen = tiny.generate_steps(MSGS, max_new_tokens=100, do_sample=False)
    assert gen.stop_reason == "eos" and gen.token_ids[-1] in tiny.model.generation_config.eos_token_id
    assert "<|im_end|>" not in gen.text


def test_keep_logits_false_keeps_none():
    gen = random_lab().generate_steps(IDS, max_new_tokens=2, keep_logits=False)
    assert all(s.logits is None for s in gen.steps) and gen.cache is None  # nor the cache, unless keep_cache=True
    with pytest.raises(ValueError, match="kept no logits"):
        _ = gen.logits


def test_detokenizer_gives_a_piece_per_token_and_never_half_a_character():
    """HF's TextIteratorStreamer waits for a space; the lab's detokenizer gives each token's text as it comes."""
    from qwen2_lab import qwen2_tokenizer
    from qwen2_lab.generate import Detokenizer

    tok = qwen2_tokenizer()
    text = "生活的真谛是 😊 123456\nA∩B={-1,0}<|im_end|>"
    ids = tok.encode(text, add_special_tokens=False)
    pieces = Detokenizer(tok)
    out = [pieces.add(i) for i in ids]
    out.append(tok.decode(ids, skip_special_tokens=True)[len("".join(out)) :])  # what waits at the very end
    assert "".join(out) == text.replace("<|im_end|>", "")
    assert all("\ufffd" not in p for p in out)
    assert sum(1 for p in out if p) >= len(ids) - 3  # one per token, but for the emoji's bytes and the special token
    assert out[:3] == [tok.decode([ids[0]]), tok.decode([ids[1]]), tok.decode([ids[2]])]


def test_trace_tensors_work_with_the_weights_afterwards(tiny):
    """A learner multiplies a kept tensor by a weight outside any no_grad block: that must just work."""
    t = tiny.trace("1+1=", sites=["layers.0.attn_norm", "layers.0.attn.q"])
    attn = tiny.model.model.layers[0].self_attn
    q = attn.q_proj(t["layers.0.attn_norm"])  # [S, nH*hd], with autograd on
    torch.testing.assert_close(q.view(q.shape[0], -1, attn.head_dim).transpose(0, 1), t["layers.0.attn.q"])


def test_a_branch_not_finished_is_not_run_yet_and_streams_only_its_new_text(tiny):
    gen = tiny.generate_steps(MSGS, max_new_tokens=12, do_sample=False, keep_logits=False)
    other = next(c.id for c in gen.steps[4].top if c.id != gen.token_ids[4])
    fork = gen.branch(4, other, finish=False)
    assert fork.token_ids == gen.token_ids[:4] and fork.forced_next == other and not fork.stop_reason
    kept = "".join(s.piece for s in fork.steps)
    new = "".join(fork.stream())
    assert kept + new == fork.text and fork.token_ids == gen.branch(4, other).token_ids
    with pytest.raises(IndexError, match=f"steps 0..{len(gen.steps) - 1}"):
        gen.branch(len(gen.steps), other, finish=False)
    assert list(gen.run()) == []  # a finished generation has nothing left to run


def test_redo_generates_the_same_prompt_again_with_a_change_and_the_same_seed():
    from qwen2_lab import edits as E

    lab = random_lab()
    gen = lab.generate_steps(IDS, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3)
    assert lab.generation(IDS, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3).steps == []  # not run
    again = gen.redo()
    assert again.token_ids == gen.token_ids and again is not gen  # the same seed draws the same tokens
    edit = E.zero_heads(1, [0, 1])
    edited = gen.redo(edits=edit)
    direct = lab.generate_steps(IDS, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3, edits=edit)
    assert edited.token_ids == direct.token_ids and edited.options.seed == 3
    lazy = gen.redo(edits=edit, finish=False)
    assert lazy.steps == [] and "".join(lazy.stream()) == edited.text
    with pytest.raises(ValueError, match="out of range"):
        gen.redo(edits=E.zero_heads(1, [99]))  # checked before any token
