"""Edits: change one thing inside Qwen2 and see what changes.

An edit is a function at a site. The forward reports every site's tensor (qwen2_lab/forward.py: `x = yield site, x`)
and goes on with what comes back, so an edit at a site changes everything downstream and nothing upstream. The
function sees the site's tensor in the shape of the site table (no batch dimension) and returns one of the same
shape:

    lab.trace(text, edits={"layers.1.attn.z": lambda z: z * 0})          # any function, at any site (or glob)
    lab.trace(text, edits=[zero_heads(1, [0, 3]), steer(2, v, scale=4)])  # ready-made ones, from this module
    lab.generate_steps(chat, edits=drop_expert(0, 5))                     # during generation too

A ready-made edit is an `Edit`: its site, a label saying what it does in words, a check run against the model
before any compute (a head or expert out of range, a vector of the wrong width), and a function of the tensor and
`At`, which says where the edit runs: the site, its layer, the positions of the tokens in this forward (they
continue from the cache when generating), the tensors of earlier sites it asked to `read` (`at.earlier`) and the
model's Arch. `Edit` and the machinery that resolves and applies edits live with the recorder
(qwen2_lab/recorder.py); this module is the catalogue.

Every edit here has a twin made of plain forward hooks on the unmodified transformers model; the tests check that
the two give the same logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import rope as rope_math
from .inputs import InputError
from .recorder import At, Edit, as_edits, resolve
from .trace import position_dim, site_shape, site_spec, split_site

__all__ = [  # the ready-made edits, and what a hand-made one is built from (recorder.py's, here for convenience)
    "zero_heads", "mean_heads", "zero_kv_group", "drop_key", "set_pattern", "steer", "patch", "drop_expert",
    "force_experts", "shared_gate", "rope", "rope_off", "Edit", "At", "as_edits", "resolve",
]  # fmt: skip

# ---- checks shared by the ready-made edits -----------------------------------------------------------------------


def _in_range(what: str, values, limit: Callable) -> Callable:
    values = [int(v) for v in values]

    def check(arch, site):
        n = limit(arch)
        bad = [v for v in values if not 0 <= v < n]
        if bad:
            raise InputError(f"{site}: {what} {bad} out of range: this model has {what} 0..{n - 1}")

    return check


def _layer_kind(kind: str) -> Callable:
    def check(arch, site):
        layer, _ = split_site(site)
        if arch.layer_kind(layer) != kind:
            raise InputError(f"{site}: layer {layer} is a {arch.layer_kind(layer)} layer, not {kind}")

    return check


def _all(*checks) -> Callable:
    def check(arch, site):
        for c in checks:
            c(arch, site)

    return check


def _rows(at: At, positions) -> torch.Tensor:
    """Which rows of this forward's tensor hold the given absolute positions (all rows when positions is None)."""
    if positions is None:
        return torch.arange(len(at.positions))
    wanted = torch.as_tensor(positions, dtype=torch.long, device=at.positions.device)
    return torch.nonzero(torch.isin(at.positions, wanted)).flatten().cpu()


# ---- attention ----------------------------------------------------------------------------------------------------


def zero_heads(layer: int, heads) -> Edit:
    """Zero-ablate query heads: their outputs (attn.z) are set to 0, so o_proj adds nothing from them."""
    heads = [int(h) for h in _list(heads)]

    def fn(z, at):  # z: [nH, S, hd]
        z = z.clone()
        z[heads] = 0
        return z

    return Edit(f"layers.{layer}.attn.z", fn, f"layer {layer}: heads {heads} zeroed", _heads_check(heads))


def mean_heads(layer: int, heads, over=None) -> Edit:
    """Mean-ablate query heads: each head's output at every position replaced by its mean over the positions of
    `over` (a Trace holding this layer's attn.z, e.g. of a reference prompt), or of this forward when None."""
    heads = [int(h) for h in _list(heads)]
    site = f"layers.{layer}.attn.z"
    mean = None
    if over is not None:
        mean = over[site][heads].float().mean(dim=1, keepdim=True)  # [len(heads), 1, hd]

    def fn(z, at):  # z: [nH, S, hd]
        z = z.clone()
        m = z[heads].float().mean(dim=1, keepdim=True) if mean is None else mean.to(z.device)
        z[heads] = m.expand(-1, z.shape[1], -1).to(z.dtype)
        return z

    where = "this run" if over is None else f"a {len(over.tokens)}-token reference"
    return Edit(site, fn, f"layer {layer}: heads {heads} mean-ablated (mean over {where})", _heads_check(heads))


def zero_kv_group(layer: int, group: int) -> Edit:
    """Switch off one KV group: every query head that reads KV head `group` outputs 0 (as if its values were 0)."""

    def fn(z, at):  # z: [nH, S, hd]
        g = at.arch.group_size
        z = z.clone()
        z[group * g : (group + 1) * g] = 0
        return z

    check = _in_range("KV heads", [group], lambda a: a.n_kv_heads)
    return Edit(f"layers.{layer}.attn.z", fn, f"layer {layer}: KV group {group} off", check)


def drop_key(layer: int, position: int, heads=None, renormalise: bool = True) -> Edit:
    """Hide key position `position` from every later query (the query at that position still reads itself).

    renormalise=True: its score is set to -inf before softmax, so the others share its attention (at attn.scores).
    renormalise=False: its attention weight is set to 0 after softmax and the rows sum to less than 1 (at
    attn.pattern). heads: which query heads (default all).
    """
    site = f"layers.{layer}.attn.{'scores' if renormalise else 'pattern'}"
    hs = None if heads is None else [int(h) for h in _list(heads)]

    def fn(a, at):  # a: [nH, S, T]
        later = at.positions > position  # (S,): the queries after the hidden key
        a = a.clone()
        view = a if hs is None else a[hs]
        view[:, later, position] = float("-inf") if renormalise else 0.0
        if hs is not None:
            a[hs] = view
        return a

    how = "renormalised" if renormalise else "not renormalised"
    check = _heads_check(hs) if hs is not None else None
    return Edit(site, fn, f"layer {layer}: key {position} hidden from later queries ({how})", check)


def set_pattern(layer: int, head: int, pattern: torch.Tensor) -> Edit:
    """Replace one head's attention pattern by `pattern` [S, S] (rows: query positions, columns: keys)."""
    pattern = torch.as_tensor(pattern)

    def fn(a, at):  # a: [nH, S, T]
        if pattern.dim() != 2 or pattern.shape[1] < a.shape[2] or pattern.shape[0] <= int(at.positions.max()):
            raise InputError(
                f"set_pattern: the pattern is {tuple(pattern.shape)}; this run needs at least "
                f"[{int(at.positions.max()) + 1}, {a.shape[2]}] (query positions x keys)"
            )
        a = a.clone()
        a[head] = pattern[at.positions.cpu()][:, : a.shape[2]].to(a)
        return a

    return Edit(
        f"layers.{layer}.attn.pattern", fn, f"layer {layer}: head {head}'s pattern replaced", _heads_check([head])
    )


def _heads_check(heads) -> Callable:
    return _in_range("query heads", heads, lambda a: a.n_heads)


# ---- the residual stream: steering and patching -------------------------------------------------------------------


def steer(site, vector, scale: float = 1.0, positions=None) -> Edit:
    """Add `scale * vector` [H] to a residual-width site at `positions` (absolute; None = every position, generated
    ones included). `site`: a site name such as "layers.3.resid_post", or a layer number for its resid_pre."""
    site = f"layers.{site}.resid_pre" if isinstance(site, int) else site
    vector = torch.as_tensor(vector).flatten()

    def fn(x, at):  # x: [S, H]
        x = x.clone()
        rows = _rows(at, positions)
        x[rows] += scale * vector.to(x)
        return x

    def check(arch, s):
        if _width(arch, s) != arch.hidden:
            raise InputError(f"steer: {s} is not a residual-width site ([S, H]); steer resid_pre/mid/post or an out")
        if vector.numel() != arch.hidden:
            raise InputError(f"steer: the vector has {vector.numel()} values; {s} needs {arch.hidden} (hidden size)")

    where = "every position" if positions is None else f"positions {list(_list(positions))}"
    return Edit(site, fn, f"{site}: steered by {scale:g} x a vector at {where}", check)


def patch(site: str, source, positions=None) -> Edit:
    """Replace the tensor at `site` by the one another run kept (`source`, a Trace holding `site`), at `positions`
    (absolute; None = every position of this forward, which `source` must also have)."""
    if site not in source:
        raise InputError(f"patch: the source trace does not hold {site!r}; trace it with sites=[{site!r}]")
    theirs = source[site]
    dim = position_dim(site)

    def fn(x, at):
        rows = _rows(at, positions)
        wanted = at.positions[rows].cpu()
        if int(wanted.max()) >= theirs.shape[dim]:
            raise InputError(
                f"patch: the source holds {theirs.shape[dim]} positions at {site}; this run asks for {int(wanted.max())}"
            )
        x = x.clone()
        index = [slice(None)] * x.dim()
        index[dim] = rows
        x[tuple(index)] = theirs.index_select(dim, wanted.to(theirs.device)).to(x)
        return x

    where = "every position" if positions is None else f"positions {list(_list(positions))}"
    return Edit(site, fn, f"{site}: patched from another run at {where}")


def _width(arch, site) -> int:
    return site_shape(site_spec(site), arch, 1)[-1]


# ---- the MoE router, its experts and the shared expert ------------------------------------------------------------


def drop_expert(layer: int, expert: int, renormalise: bool = True) -> Edit:
    """Take an expert out of a MoE layer's routing: no token is sent to it; the top-k picks the next best.

    renormalise=True: its router logit is set to -inf, so the softmax shares its probability among the others and
    the weights of the chosen experts grow (at moe.router_logits). renormalise=False: its probability is set to 0
    after the softmax and the others keep theirs (at moe.router_probs).
    """
    site = f"layers.{layer}.moe.{'router_logits' if renormalise else 'router_probs'}"

    def fn(x, at):  # x: [S, E]
        x = x.clone()
        x[:, expert] = float("-inf") if renormalise else 0.0
        return x

    how = "routing renormalised" if renormalise else "probabilities not renormalised"
    check = _all(_layer_kind("moe"), _in_range("experts", [expert], lambda a: a.n_experts))
    return Edit(site, fn, f"layer {layer}: expert {expert} dropped ({how})", check)


def force_experts(layer: int, experts, positions=None) -> Edit:
    """Send tokens to the given k experts (best first) instead of the router's choice; their weights are still the
    router's probabilities of those experts (renormalised if norm_topk_prob). positions: absolute, None = all."""
    chosen = [int(e) for e in _list(experts)]

    def fn(x, at):  # x: [S, k]
        x = x.clone()
        x[_rows(at, positions)] = torch.tensor(chosen, dtype=x.dtype, device=x.device)
        return x

    def count(arch, site):
        if len(chosen) != arch.top_k or len(set(chosen)) != len(chosen):
            raise InputError(f"force_experts: give {arch.top_k} different experts (top_k), got {chosen}")

    check = _all(_layer_kind("moe"), _in_range("experts", chosen, lambda a: a.n_experts), count)
    return Edit(f"layers.{layer}.moe.topk_experts", fn, f"layer {layer}: experts forced to {chosen}", check)


def shared_gate(layer: int, value: float | None = None, scale: float | None = None) -> Edit:
    """Set the shared expert's sigmoid gate to `value` (0 switches the shared expert off), or multiply it by
    `scale`, for every token of a MoE layer."""
    if (value is None) == (scale is None):
        raise InputError("shared_gate: give either value= (0..1) or scale=")
    if value is not None and not 0 <= value <= 1:
        raise InputError(f"shared_gate: a sigmoid gate lies in 0..1, got value={value}")

    def fn(g, at):  # g: [S]
        return torch.full_like(g, value) if value is not None else g * scale

    what = f"set to {value:g}" if value is not None else f"scaled by {scale:g}"
    return Edit(f"layers.{layer}.moe.shared_gate", fn, f"layer {layer}: shared-expert gate {what}", _layer_kind("moe"))


# ---- RoPE ---------------------------------------------------------------------------------------------------------


def rope(theta: float | None = None, yarn_factor: float | None = None) -> list[Edit]:
    """Run the model with another RoPE: rope theta `theta` and/or YaRN with factor `yarn_factor` (1 = plain RoPE),
    for every layer. cos and sin come from transformers' own rotary module built for those parameters and the
    model the edit runs on (`at.arch`); bad values are refused before any compute."""
    if theta is None and yarn_factor is None:
        raise InputError("rope: give theta= and/or yarn_factor=")
    scaling = None if yarn_factor is None else (False if yarn_factor == 1 else yarn_factor)

    made: dict = {}  # id(arch) -> (arch, its Rope): built once per model, not at every generated token

    def setting(arch):
        if id(arch) not in made:
            made[id(arch)] = (arch, rope_math.rope_parameters(arch, theta=theta, scaling=scaling))
        return made[id(arch)][1]

    def check(arch, site):
        try:
            setting(arch)
        except ValueError as e:
            raise InputError(f"rope: {e}") from None

    def new(which):
        def fn(x, at):  # x: [S, hd]
            cos, sin = rope_math.cos_sin(setting(at.arch), at.positions.cpu())
            return (cos if which == "cos" else sin).to(x)

        return Edit(f"rope.{which}", fn, f"RoPE: {_rope_label(theta, yarn_factor)}", check)

    return [new("cos"), new("sin")]


def _rope_label(theta, yarn_factor) -> str:
    parts = ([] if theta is None else [f"theta {theta:g}"]) + (
        [] if yarn_factor is None else ["YaRN off" if yarn_factor == 1 else f"YaRN x{yarn_factor:g}"]
    )
    return ", ".join(parts)


def rope_off(layers) -> list[Edit]:
    """Switch RoPE off in these layers: their queries and keys go on unrotated (attn.q_rot = attn.q, k_rot = k), so
    attention there cannot tell positions apart except through the causal mask."""
    out = []
    for layer in _list(layers):
        for qk in ("q", "k"):
            read = f"layers.{layer}.attn.{qk}"
            out.append(
                Edit(
                    f"{read}_rot", lambda x, at, read=read: at.earlier[read], f"layer {layer}: RoPE off", reads=(read,)
                )
            )
    return out


def _list(x) -> list:
    if isinstance(x, torch.Tensor):
        return x.flatten().tolist()
    return list(x) if isinstance(x, (list, tuple, range)) else [x]
