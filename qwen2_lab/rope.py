"""RoPE and YaRN as numbers: the frequencies, wavelengths and scores a Qwen2 model's rotary embedding produces.

Every number here comes out of transformers' own rotary module (`Qwen2RotaryEmbedding`, which calls
`ROPE_INIT_FUNCTIONS["yarn"]` for YaRN), built from an `Arch` without any weights, so the figures show exactly the
`inv_freq` and attention factor the model uses. Nothing here changes the forward pass: `forward.py` gets its cos/sin
from the model's own `rotary_emb`.

RoPE in one paragraph. Split a head's hd dimensions into hd/2 pairs (j, j + hd/2) (the "rotate-half" layout).
Pair j is a point in a plane, and RoPE turns it by the angle position * inv_freq[j], where
inv_freq[j] = theta ** (-2j / hd). Fast pairs (small j) turn almost a radian per token; slow pairs (j near hd/2)
take up to 2*pi*theta tokens for one turn (their *wavelength*). A query at position m and a key at n then meet at
the angle (m - n) * inv_freq[j]: attention scores depend on relative distance only.

YaRN (Qwen2-7B/72B-Instruct's 128K setting): pairs that turn more than beta_fast = 32 times within the original
context are *kept*; pairs turning less than beta_slow = 1 time are *interpolated* (inv_freq divided by `factor`, so
they never see an angle they did not see in training); a linear *ramp* joins the two. cos and sin are both
multiplied by the attention factor 0.1 ln(factor) + 1, so every q.k is multiplied by its square.

`scaling` everywhere: None = the architecture's own (plain RoPE for most configs); False, "none" or
{"rope_type": "default"} = plain RoPE; a number f = YaRN with factor f on the model's original context; a dict =
HF rope parameters, e.g. `qwen2_lab.arch.YARN_128K`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .arch import as_arch
from .forward import apply_rope

PLAIN = {"rope_type": "default"}


@dataclass(frozen=True, eq=False)
class Rope:
    """One RoPE setting and what transformers computes from it.

    inv_freq: [hd/2] float32, angle per token of each pair; attention_factor: multiplies cos and sin;
    original_context: the window the model was trained on; context: the window this setting reaches.
    """

    theta: float
    scaling: dict | None  # None for plain RoPE
    head_dim: int
    inv_freq: torch.Tensor  # [hd/2]
    attention_factor: float
    original_context: int
    context: int
    module: torch.nn.Module  # the HF rotary embedding that computed inv_freq; `cos_sin` runs its forward

    @property
    def n_pairs(self) -> int:
        return self.head_dim // 2

    @property
    def label(self) -> str:
        if not self.scaling:
            return f"RoPE (theta {self.theta:g})"
        return f"{self.scaling['rope_type']} x{self.scaling.get('factor', '?')} (theta {self.theta:g})"


def original_context(arch) -> int:
    """The context the model was trained on: YaRN's original_max_position_embeddings, else max_position."""
    scaling = arch.rope_scaling or {}
    return int(scaling.get("original_max_position_embeddings") or arch.max_position)


def resolve_scaling(arch, scaling=None) -> dict | None:
    """The rope parameters (without rope_theta) meant by `scaling` (see the module docstring); None = plain RoPE."""
    if scaling is None:
        return dict(arch.rope_scaling) if arch.rope_scaling else None
    if scaling is False or scaling == "none":
        return None
    if isinstance(scaling, bool):
        raise ValueError("scaling=True is ambiguous: pass a YaRN factor (e.g. 4) or a dict such as YARN_128K")
    if isinstance(scaling, (int, float)):
        if scaling < 1:
            raise ValueError(f"a YaRN factor must be >= 1, got {scaling}")
        if scaling == 1:
            return None
        scaling = {"rope_type": "yarn", "factor": float(scaling)}
    if not isinstance(scaling, dict):
        raise TypeError(f"scaling must be None, False, a YaRN factor or a dict of rope parameters, got {scaling!r}")
    out = {k: v for k, v in scaling.items() if k != "rope_theta"}
    out["rope_type"] = out.get("rope_type") or out.pop("type", None) or "default"
    if out["rope_type"] == "default":
        return None
    out.setdefault("original_max_position_embeddings", original_context(arch))
    return out


def rope_parameters(source, *, theta: float | None = None, scaling=None) -> Rope:
    """The `Rope` transformers builds for this architecture (Arch, Lab or Trace), optionally with another theta or
    scaling: a rotary module is made from a weightless config, as the model made its own."""
    arch = as_arch(source)
    theta = float(arch.rope_theta if theta is None else theta)
    if not theta > 1:
        raise ValueError(f"rope theta must be > 1, got {theta}")
    scaling = resolve_scaling(arch, scaling)
    original = original_context(arch)
    context = int(scaling["factor"] * scaling["original_max_position_embeddings"]) if scaling else original
    module = rotary_module(arch, theta, scaling, context)
    return Rope(
        theta=theta,
        scaling=scaling,
        head_dim=arch.head_dim,
        inv_freq=module.inv_freq.detach().float().cpu(),
        attention_factor=float(module.attention_scaling),
        original_context=original,
        context=context,
        module=module,
    )


def rotary_module(arch, theta: float, scaling: dict | None, max_position: int) -> torch.nn.Module:
    """transformers' rotary embedding (Qwen2 or Qwen2-MoE, as the model uses) for these rope parameters."""
    if arch.model_type == "qwen2_moe":
        from transformers import Qwen2MoeConfig as Config
        from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeRotaryEmbedding as Rotary
    else:
        from transformers import Qwen2Config as Config
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding as Rotary

    config = Config(
        hidden_size=arch.n_heads * arch.head_dim,  # so that head_dim = hidden / heads, as in every Qwen2
        num_attention_heads=arch.n_heads,
        num_key_value_heads=arch.n_kv_heads,
        num_hidden_layers=1,
        intermediate_size=8,
        vocab_size=8,
        max_position_embeddings=max_position,
        rope_parameters={"rope_theta": theta, **(scaling or PLAIN)},
    )
    return Rotary(config)


def wavelengths(inv_freq: torch.Tensor) -> torch.Tensor:
    """Tokens per full turn of each pair: 2 pi / inv_freq. [hd/2] -> [hd/2]."""
    return 2 * math.pi / inv_freq.double()


def turns(inv_freq: torch.Tensor, context: int) -> torch.Tensor:
    """How many full turns each pair makes over `context` tokens (YaRN's criterion). [hd/2] -> [hd/2]."""
    return context / wavelengths(inv_freq)


def yarn_ramp(rope: Rope, plain: Rope) -> torch.Tensor:
    """Where each pair sits between YaRN's two regimes, read off the frequencies transformers computed:
    0 = kept (extrapolated, inv_freq unchanged), 1 = interpolated (inv_freq / factor), between = the ramp. [hd/2].

    YaRN mixes inv = plain/factor * r + plain * (1 - r), so r = (1 - inv/plain) / (1 - 1/factor).
    """
    if not rope.scaling or rope.scaling.get("rope_type") != "yarn":
        return torch.zeros(rope.n_pairs, dtype=torch.float64)
    factor = float(rope.scaling["factor"])
    ratio = rope.inv_freq.double() / plain.inv_freq.double()  # [hd/2], between 1/factor and 1
    return ((1 - ratio) / (1 - 1 / factor)).clamp(0, 1)


def yarn_regimes(rope: Rope, plain: Rope, tol: float = 1e-4) -> list[str]:
    """ "kept", "ramp" or "interpolated" for each pair (all "kept" without YaRN)."""
    r = yarn_ramp(rope, plain)
    return ["kept" if x < tol else "interpolated" if x > 1 - tol else "ramp" for x in r.tolist()]


def cos_sin(rope: Rope, positions) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [P, hd] at `positions` (ints), from the HF rotary module's own forward (attention factor in)."""
    pos = torch.as_tensor(positions, dtype=torch.long)[None]  # (1, P)
    dummy = torch.zeros(1, dtype=torch.float32)  # the module reads only its dtype and device
    cos, sin = rope.module(dummy, pos)  # (1, P, hd) each
    return cos[0], sin[0]


def rotate(x: torch.Tensor, positions, rope: Rope) -> torch.Tensor:
    """Rotate vectors x [P, hd] (pre-RoPE q or k) to `positions` [P], as the model's attention does. -> [P, hd]."""
    cos, sin = (t.to(x.device) for t in cos_sin(rope, positions))  # (P, hd): made on the CPU, x may be on a GPU
    return apply_rope(x.float()[None, None], cos[None], sin[None])[0, 0]  # forward's own apply_rope


def pair_scores(q: torch.Tensor, k: torch.Tensor, rope: Rope, distances) -> torch.Tensor:
    """Each pair's share of q_rot . k_rot when the query sits `d` tokens after the key, for each d. [D, hd/2].

    q, k: [hd] pre-RoPE vectors. For pair j with q = (a1, a2), k = (b1, b2) and angle phi = d * inv_freq[j]:
    share = factor^2 * ((a1 b1 + a2 b2) cos phi + (a1 b2 - a2 b1) sin phi). The sum over pairs equals
    rotate(q, m + d) . rotate(k, m) for any m: attention sees relative distance only. Not divided by sqrt(hd).
    """
    h = rope.n_pairs
    q, k = q.cpu().double(), k.cpu().double()  # beside inv_freq on the CPU (q, k may be on a GPU; MPS: no float64)
    a1, a2, b1, b2 = q[:h], q[h:], k[:h], k[h:]  # [hd/2] each
    phi = torch.as_tensor(distances, dtype=torch.float64)[:, None] * rope.inv_freq.double()  # (D, hd/2)
    same, cross = a1 * b1 + a2 * b2, a1 * b2 - a2 * b1  # [hd/2] each
    return rope.attention_factor**2 * (same * phi.cos() + cross * phi.sin())


def pair_scores_binned(q: torch.Tensor, k: torch.Tensor, rope: Rope, edges) -> torch.Tensor:
    """pair_scores averaged over every integer distance d in [edges[i], edges[i+1]), for each bin i. [B, hd/2].

    Fast pairs swing between + and - from one token to the next, so their share at a single distance is noise; the
    average over a bin of distances shows what survives. Exact sums (no sampling), from
    sum_{d=a}^{b-1} cos(d phi) = (sin((b - 1/2) phi) - sin((a - 1/2) phi)) / (2 sin(phi / 2)), and likewise for sin.
    """
    h = rope.n_pairs
    q, k = q.cpu().double(), k.cpu().double()  # beside inv_freq on the CPU (q, k may be on a GPU; MPS: no float64)
    a1, a2, b1, b2 = q[:h], q[h:], k[:h], k[h:]  # [hd/2] each
    same, cross = a1 * b1 + a2 * b2, a1 * b2 - a2 * b1  # [hd/2] each
    e = torch.as_tensor(edges, dtype=torch.float64)
    if e.ndim != 1 or len(e) < 2 or not (e[1:] > e[:-1]).all():
        raise ValueError("edges must be increasing distances, at least two of them")
    lo, hi = e[:-1, None], e[1:, None]  # (B, 1) each
    phi = rope.inv_freq.double()  # (hd/2,)
    half = 2 * torch.sin(phi / 2)  # (hd/2,)
    cos_sum = (torch.sin((hi - 0.5) * phi) - torch.sin((lo - 0.5) * phi)) / half  # (B, hd/2)
    sin_sum = (torch.cos((lo - 0.5) * phi) - torch.cos((hi - 0.5) * phi)) / half  # (B, hd/2)
    return rope.attention_factor**2 * (same * cos_sum + cross * sin_sum) / (hi - lo)


def bands(n_pairs: int, n_bands: int) -> list[range]:
    """Split pairs 0..n_pairs-1 into n_bands contiguous bands, fastest first."""
    n_bands = max(1, min(n_bands, n_pairs))
    edges = [round(i * n_pairs / n_bands) for i in range(n_bands + 1)]
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:])]
