"""Dual Chunk Attention (DCA; An et al. 2024, "Training-Free Long-Context Scaling of Large Language Models",
arXiv 2402.17463), written to be read, in plain torch.

Why. A model trained on windows of c tokens has never seen RoPE turn a query and a key by more than c - 1 positions
apart: beyond that its attention scores are extrapolation. DCA keeps every query-key distance that RoPE sees below c,
however long the input, by giving each token several position indices instead of one. Qwen2 combined it with YaRN
for its long-context settings; vLLM ships it (`dual_chunk_rope.py`); HF transformers does not.

How. Names follow Qwen's configs and vLLM: `chunk_size` c (the window RoPE was trained on), `local_size` w, and the
input cut into chunks of `chunk_len` s = c - w tokens. Keys get the position j mod s (their place in their chunk).
A query i is rotated three times, once per kind of key it reads:

    intra       keys in its own chunk:            query position i mod s          distance i - j, exact, < s
    successive  keys in the chunk just before:    min(i mod s + s, c - 1)          exact for the first w tokens
                                                                                   of a chunk, then clamped, < c
    inter       keys two or more chunks back:     c - 1                            between c - s and c - 1

Each kind gives a partial attention over its own keys (its output and the log-sum-exp of its scores); merging the
three by log-sum-exp gives exactly one softmax over all the keys, as a flash-attention kernel merges blocks. When the
whole input fits in `chunk_size` tokens every distance is the true one and DCA equals ordinary causal attention with
RoPE (tests/test_dca.py checks it on real q, k, v from a trace).

Shapes: nH query heads, nKV KV heads, S tokens, hd head_dim. q, k, v are one sequence's, before RoPE, as a trace
keeps them: `trace["layers.0.attn.q"]` [nH, S, hd], `.attn.k` and `.attn.v` [nKV, S, hd].
"""

from __future__ import annotations

import torch

from .forward import apply_rope, repeat_kv
from .rope import Rope, cos_sin

FUTURE, INTRA, SUCCESSIVE, INTER = 0, 1, 2, 3  # the kinds of (query, key) pair, as `regions` labels them
KINDS = {INTRA: "intra", SUCCESSIVE: "successive", INTER: "inter"}


def chunk_len(chunk_size: int, local_size: int) -> int:
    """s = c - w: how many tokens one chunk holds. Checks that 0 <= local_size < chunk_size."""
    if not (isinstance(chunk_size, int) and isinstance(local_size, int)):
        raise TypeError(f"chunk_size and local_size must be ints, got {chunk_size!r} and {local_size!r}")
    if chunk_size < 2 or not 0 <= local_size < chunk_size:
        raise ValueError(
            f"need chunk_size >= 2 and 0 <= local_size < chunk_size, got chunk_size={chunk_size},"
            f" local_size={local_size}: chunk_size is the window RoPE was trained on (e.g. 32768 for Qwen2),"
            " local_size the stretch of the previous chunk kept at its true distance (e.g. chunk_size // 16)"
        )
    return chunk_size - local_size


def regions(S: int, chunk_size: int, local_size: int) -> torch.Tensor:
    """Which kind of attention each (query i, key j) pair belongs to: FUTURE (j > i), INTRA, SUCCESSIVE or INTER.

    -> [S, S] long.
    """
    s = chunk_len(chunk_size, local_size)
    chunk = torch.arange(S) // s  # (S,): the chunk each token falls in
    gap = chunk[:, None] - chunk[None, :]  # (S, S): query's chunk minus key's chunk
    kind = torch.full((S, S), INTER, dtype=torch.long)  # (S, S)
    kind[gap == 1] = SUCCESSIVE
    kind[gap == 0] = INTRA
    future = torch.ones(S, S, dtype=torch.bool).triu(1)  # (S, S): True above the diagonal
    return kind.masked_fill(future, FUTURE)


def positions(S: int, chunk_size: int, local_size: int) -> dict[str, torch.Tensor]:
    """The position index RoPE gives each token: "key" for keys, and one per kind for queries. Each [S] long."""
    s = chunk_len(chunk_size, local_size)
    i = torch.arange(S)  # (S,)
    return {
        "key": i % s,  # a key's place in its own chunk
        "intra": i % s,  # the same numbering: distances inside a chunk are the true ones
        "successive": (i % s + s).clamp(max=chunk_size - 1),  # as if the previous chunk sat right before it
        "inter": torch.full((S,), chunk_size - 1),  # as far as training went: a far key sits c - 1 - (j mod s) away
    }


def distances(S: int, chunk_size: int, local_size: int) -> torch.Tensor:
    """The query-key distance RoPE sees for each pair under DCA; -1 for the future (masked). -> [S, S] long.

    Ordinary attention sees i - j, up to S - 1; DCA never more than chunk_size - 1.
    """
    pos, kind = positions(S, chunk_size, local_size), regions(S, chunk_size, local_size)
    out = torch.full((S, S), -1, dtype=torch.long)  # (S, S)
    for k, name in KINDS.items():
        d = pos[name][:, None] - pos["key"][None, :]  # (S, S): if every pair were of this kind
        out = torch.where(kind == k, d, out)
    return out


def rotated(x: torch.Tensor, pos: torch.Tensor, rope: Rope) -> torch.Tensor:
    """RoPE at the given positions, with the model's own cos/sin (YaRN's attention factor included).

    x: [n, S, hd] before RoPE; pos: [S] -> [n, S, hd] float32.
    """
    cos, sin = (t.to(x.device) for t in cos_sin(rope, pos.tolist()))  # (S, hd) each, float32
    return apply_rope(x.float()[None], cos[None], sin[None])[0]  # forward.apply_rope wants (B, n, S, hd)


def partial_attention(q, k, v, allowed: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of q over the keys `allowed` lets each query read, plus the log-sum-exp of those scores.

    q, k, v: [nH, S, hd] (RoPE applied, KV heads repeated); allowed: [S, S] bool.
    Returns z [nH, S, hd] (0 for a query with no allowed key) and lse [nH, S] (-inf there).
    """
    scores = (q @ k.transpose(-1, -2)) * scale  # (nH, S, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (nH, S)
    empty = torch.isinf(lse)[..., None]  # (nH, S, 1): rows with no key of this kind
    pattern = torch.exp(scores - lse.masked_fill(empty[..., 0], 0)[..., None])  # (nH, S, S); rows sum to 1 or 0
    return (pattern @ v).masked_fill(empty, 0.0), lse


def merge(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Partial attentions over disjoint key sets, merged into one softmax over all keys.

    parts: (z [nH, S, hd], lse [nH, S]) each. With L = logsumexp of the lse's, z = sum_i exp(lse_i - L) z_i: each
    part is weighted by its share of the total softmax mass. -> [nH, S, hd].
    """
    lses = torch.stack([lse for _, lse in parts])  # (P, nH, S)
    share = torch.softmax(lses, dim=0)  # (P, nH, S): exp(lse_i - L); 0 for an empty part
    return sum(w[..., None] * z for w, (z, _) in zip(share, parts))


def _checked(q, k, v, rope: Rope):
    """q [nH, S, hd], k and v [nKV, S, hd], with nKV dividing nH and hd the rope's."""
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            f"q, k, v must be one sequence's [heads, S, head_dim] (as trace['layers.0.attn.q'] is), got shapes"
            f" {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape or q.shape[1:] != k.shape[1:] or q.shape[0] % k.shape[0]:
        raise ValueError(
            f"q {tuple(q.shape)} and k, v {tuple(k.shape)}, {tuple(v.shape)} do not fit: same S and head_dim, and"
            " the number of query heads a multiple of the KV heads"
        )
    if q.shape[-1] != rope.head_dim:
        raise ValueError(f"head_dim {q.shape[-1]} but the rope is for head_dim {rope.head_dim}: use the model's own")
    return q.shape[0] // k.shape[0]


def dca_scores(q, k, rope: Rope, chunk_size: int, local_size: int, scale: float | None = None) -> torch.Tensor:
    """The whole DCA score matrix at once: each (i, j) scored with the query rotated for its kind; -inf in the future.

    q: [nH, S, hd], k: [nKV, S, hd], before RoPE -> [nH, S, S] float32. softmax(dca_scores) @ v equals
    `dual_chunk_attention`, which never builds this matrix whole (what a kernel would do, block by block).
    """
    groups = _checked(q, k, k, rope)
    S, scale = q.shape[1], q.shape[-1] ** -0.5 if scale is None else scale
    pos, kind = positions(S, chunk_size, local_size), regions(S, chunk_size, local_size).to(q.device)
    k_rot = repeat_kv(rotated(k, pos["key"], rope)[None], groups)[0]  # (nH, S, hd)
    out = torch.full((q.shape[0], S, S), float("-inf"), device=q.device)  # (nH, S, S)
    for kk, name in KINDS.items():
        scores = (rotated(q, pos[name], rope) @ k_rot.transpose(-1, -2)) * scale  # (nH, S, S)
        out = torch.where(kind == kk, scores, out)
    return out


def dual_chunk_attention(
    q, k, v, rope: Rope, chunk_size: int, local_size: int, scale: float | None = None
) -> torch.Tensor:
    """Causal attention with DCA's remapped positions: intra, successive and inter parts merged by log-sum-exp.

    q: [nH, S, hd], k and v: [nKV, S, hd], one sequence before RoPE (a trace's attn.q / attn.k / attn.v); rope: the
    model's (`qwen2_lab.rope.rope_parameters(lab.arch)`); scale: default hd ** -0.5, as Qwen2's attention.
    -> z [nH, S, hd] float32, comparable with the trace's attn.z. Equals ordinary attention when S <= chunk_size.
    """
    groups = _checked(q, k, v, rope)
    S, scale = q.shape[1], q.shape[-1] ** -0.5 if scale is None else scale
    pos, kind = positions(S, chunk_size, local_size), regions(S, chunk_size, local_size).to(q.device)
    k_rot = repeat_kv(rotated(k, pos["key"], rope)[None], groups)[0]  # (nH, S, hd): one rotation for every key
    v = repeat_kv(v.float()[None], groups)[0]  # (nH, S, hd)
    parts = [
        partial_attention(rotated(q, pos[name], rope), k_rot, v, kind == kk, scale)  # (nH, S, hd), (nH, S)
        for kk, name in KINDS.items()
    ]
    return merge(parts)  # (nH, S, hd)
