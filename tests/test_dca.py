"""qwen2_lab.dca: Dual Chunk Attention equals the lab's own attention (itself equal to HF's) inside one chunk, and
keeps every distance RoPE sees below chunk_size on long inputs."""

import pytest
import torch

from qwen2_lab import dca
from qwen2_lab.rope import rope_parameters, rotate

from .helpers import random_lab

QKVZ = ["layers.*.attn.q", "layers.*.attn.k", "layers.*.attn.v", "layers.*.attn.z"]
TEXT = "已知集合A={3,5,7,9}，B={1,3,4,9}，则A∩B= and nums=[1,2,2,4], target=2, 327+48="


def qkv(trace, layer):
    p = f"layers.{layer}.attn."
    return trace[p + "q"], trace[p + "k"], trace[p + "v"]


@pytest.fixture(scope="module")
def sharp():
    """A random Qwen2 with large weights (attention far from uniform), with YaRN x4 so the attention factor counts."""
    yarn = dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64, rope_theta=1e6)
    return random_lab(rope_parameters=yarn, max_position_embeddings=256)


def test_one_chunk_equals_the_labs_attention_on_tiny(tiny):
    trace = tiny.trace(TEXT, sites=QKVZ)
    S = len(trace.tokens)
    rope = rope_parameters(tiny.arch)
    for layer in range(tiny.arch.n_layers):
        z = dca.dual_chunk_attention(*qkv(trace, layer), rope, chunk_size=S + 8, local_size=4)  # S <= chunk_len
        torch.testing.assert_close(z, trace[f"layers.{layer}.attn.z"].float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra", [0, 3])  # chunk_len = S (one chunk exactly); S - chunk_len = 3 (a second chunk)
def test_within_chunk_size_equals_the_labs_attention_with_yarn(sharp, extra):
    ids = torch.arange(40) * 5 % 256
    trace = sharp.trace(ids, sites=QKVZ)
    S, rope = len(ids), rope_parameters(sharp.arch)
    assert rope.attention_factor > 1  # YaRN's factor is in the cos/sin DCA uses, as in the model's
    local = 6
    chunk_size = S - extra + local  # chunk_len = S - extra; every query of chunk 2 is within the local window
    assert dca.regions(S, chunk_size, local).eq(dca.SUCCESSIVE).any() == (extra > 0)
    for layer in range(sharp.arch.n_layers):
        z = dca.dual_chunk_attention(*qkv(trace, layer), rope, chunk_size, local)
        torch.testing.assert_close(z, trace[f"layers.{layer}.attn.z"].float(), rtol=1e-5, atol=1e-5)


def test_long_input_keeps_every_distance_below_chunk_size():
    S, c, w = 200, 32, 8
    s = dca.chunk_len(c, w)
    d, kind = dca.distances(S, c, w), dca.regions(S, c, w)
    i, j = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    past = j <= i
    assert torch.equal(kind == dca.FUTURE, ~past) and torch.equal(d < 0, ~past)
    assert d[past].max() == c - 1 and d[past].min() == 0  # ordinary attention would see up to S - 1 = 199
    assert (i - j)[past].max() == S - 1
    assert torch.equal(d[kind == dca.INTRA], (i - j)[kind == dca.INTRA])  # inside a chunk: the true distance
    local = (kind == dca.SUCCESSIVE) & (i % s < w)  # the first w queries of a chunk see the previous chunk truly
    assert torch.equal(d[local], (i - j)[local])
    far = (kind == dca.SUCCESSIVE) & ~local
    assert (d[far] <= (i - j)[far]).all()
    inter = d[kind == dca.INTER]
    assert inter.min() == c - s and inter.max() == c - 1
    assert set(kind[past].unique().tolist()) == {dca.INTRA, dca.SUCCESSIVE, dca.INTER}


def test_long_input_scores_are_rope_at_the_remapped_distance_and_merge_is_one_softmax(sharp):
    ids = torch.arange(90) * 7 % 256
    S, c, w, layer = len(ids), 24, 6, 1
    trace = sharp.trace(ids, sites=QKVZ, layers=[layer])
    q, k, v = qkv(trace, layer)
    rope = rope_parameters(sharp.arch)
    scores = dca.dca_scores(q, k, rope, c, w)  # (nH, S, S)
    d = dca.distances(S, c, w)
    # Every score is what RoPE gives this query and key placed d tokens apart: the distance is all RoPE sees.
    g = sharp.arch.group_size
    for h, i, j in [(0, 5, 2), (1, 40, 30), (3, 89, 0), (2, 60, 47), (0, 89, 89)]:
        qr, kr = rotate(q[h, i][None], [int(d[i, j])], rope)[0], rotate(k[h // g, j][None], [0], rope)[0]
        assert float(scores[h, i, j]) == pytest.approx(float(qr @ kr) * rope.head_dim**-0.5, rel=1e-4, abs=1e-5)
    assert d.max() < c
    # The three partial attentions merged by log-sum-exp are one softmax over the whole score matrix.
    z = dca.dual_chunk_attention(q, k, v, rope, c, w)
    ref = torch.softmax(scores, -1) @ v.float().repeat_interleave(g, dim=0)
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-5)
    # Past chunk_size tokens DCA is no longer ordinary attention (which the trace holds).
    plain = trace[f"layers.{layer}.attn.z"].float()
    torch.testing.assert_close(z[:, :c], plain[:, :c], rtol=1e-5, atol=1e-5)
    assert (z[:, c:] - plain[:, c:]).abs().max() > 1e-3


def test_merge_of_disjoint_parts_equals_one_softmax():
    torch.manual_seed(0)
    scores, v = torch.randn(2, 5, 7), torch.randn(2, 7, 3)
    split = torch.zeros(5, 7, dtype=torch.long)
    split[:, 2:5], split[:, 5:] = 1, 2
    split[0] = 0  # part 1 and 2 are empty for query 0
    parts = []
    for part in range(3):
        allowed = split == part
        eye = torch.eye(7).expand(2, 7, 7)  # k = I, so that q @ k^T is the given scores
        z, lse = dca.partial_attention(scores, eye, v, allowed, 1.0)
        parts.append((z, lse))
    torch.testing.assert_close(dca.merge(parts), torch.softmax(scores, -1) @ v)


def test_bad_inputs_say_what_to_do(tiny):
    rope = rope_parameters(tiny.arch)
    with pytest.raises(ValueError, match="local_size < chunk_size"):
        dca.chunk_len(16, 16)
    with pytest.raises(TypeError, match="ints"):
        dca.chunk_len(16.0, 4)
    q, k = torch.zeros(8, 5, 16), torch.zeros(2, 5, 16)
    with pytest.raises(ValueError, match="one sequence"):
        dca.dual_chunk_attention(q[None], k, k, rope, 8, 2)
    with pytest.raises(ValueError, match="multiple of the KV heads"):
        dca.dual_chunk_attention(q[:7], k, k, rope, 8, 2)
    with pytest.raises(ValueError, match="head_dim"):
        dca.dual_chunk_attention(q[..., :8], k[..., :8], k[..., :8], rope, 8, 2)
