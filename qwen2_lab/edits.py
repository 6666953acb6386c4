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
continue from the cache when generating) and the tensors of earlier sites it asked to `read`.

Every edit here has a twin made of plain forward hooks on the unmodified transformers model; the tests check that
the two give the same logits.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .trace import SHAPES, position_dim, site_specs, split_site


class At(NamedTuple):
    """Where an edit runs: the site, its layer (None for embed, rope, final_norm, logits), the positions of this
    forward's tokens [S] (0..S-1 without a cache), the earlier sites the edit reads (per sequence), and the Arch."""

    site: str
    layer: int | None
    positions: torch.Tensor
    run: dict
    arch: object


@dataclass(frozen=True)
class Edit:
    """A change at a site: `fn(tensor, at) -> tensor`, in the site's documented shape (no batch dimension).

    site: a site name or a glob over them ("layers.*.attn.z"). label: what it does, in words (kept in
    trace.edits). check(arch, site): raises ValueError, before any compute, when the edit cannot apply to this
    model. reads: earlier sites of the same run that `fn` reads from `at.run`.
    """

    site: str
    fn: Callable[[torch.Tensor, At], torch.Tensor]
    label: str = ""
    check: Callable | None = None
    reads: tuple[str, ...] = field(default=())


def as_edits(edits) -> list[Edit]:
    """A list of Edits from an Edit, a list of them (nested lists too), or a dict {site: function of the tensor}."""
    if edits is None:
        return []
    if isinstance(edits, Edit):
        return [edits]
    if isinstance(edits, dict):
        out = []
        for site, fn in edits.items():
            if isinstance(fn, Edit):
                raise TypeError(f"edits={{{site!r}: Edit(...)}}: pass ready-made edits in a list, not in a dict")
            if not callable(fn):
                raise TypeError(f"the edit at {site!r} must be a function of the tensor, got {type(fn).__name__}")
            out.append(Edit(site, lambda x, at, fn=fn: fn(x), getattr(fn, "__name__", "function")))
        return out
    if isinstance(edits, Iterable) and not isinstance(edits, (str, torch.Tensor)):
        return [e for item in edits for e in as_edits(item)]
    raise TypeError(f"edits must be an Edit, a list of them or a dict {{site: function}}, got {type(edits).__name__}")


def resolve(edits, arch) -> dict[str, list[Edit]]:
    """{site: [edits, in the order given]} for this architecture; every problem raised before any compute."""
    names = [name for name, _ in site_specs(arch)]
    out: dict[str, list[Edit]] = {}
    for edit in as_edits(edits):
        sites = [n for n in names if fnmatch.fnmatchcase(n, edit.site)]
        layer, name = _layer_and_name(edit.site)
        if not sites and name in SHAPES and layer is not None and 0 <= layer < arch.n_layers:
            raise ValueError(f"{edit.site}: layer {layer} is a {arch.layer_kind(layer)} layer: it has no {name}")
        if not sites:
            raise ValueError(
                f"edit site {edit.site!r} matches no site of this model (layers 0..{arch.n_layers - 1}); see"
                " qwen2_lab.SITES, e.g. 'layers.0.attn.z'"
            )
        for read in edit.reads:
            if read not in names or names.index(read) >= names.index(sites[0]):
                raise ValueError(f"the edit at {edit.site!r} reads {read!r}, which is not an earlier site")
        for site in sites:
            if edit.check is not None:
                edit.check(arch, site)
            out.setdefault(site, []).append(edit)
    return out


def _layer_and_name(site: str) -> tuple[int | None, str]:
    try:
        return split_site(site)
    except ValueError:  # a glob or a malformed layer number
        return None, ""


def apply(edits: list[Edit], x: torch.Tensor, at: At) -> torch.Tensor:
    """Run `edits` on the forward's tensor x (B, ...) one sequence at a time; check each result's shape."""
    rows = []
    for b in range(x.shape[0]):
        y = x[b]
        for edit in edits:
            new = edit.fn(y, at)
            if not isinstance(new, torch.Tensor) or new.shape != y.shape:
                got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise ValueError(
                    f"the edit {edit.label or edit.site!r} at {at.site} returned {got}; it must return a tensor"
                    f" of the site's shape {tuple(y.shape)}"
                )
            y = new.to(device=x.device, dtype=x.dtype)
        rows.append(y)
    return torch.stack(rows)


def reads_of(resolved: dict[str, list[Edit]]) -> set[str]:
    return {r for edits in resolved.values() for e in edits for r in e.reads}


# ---- checks shared by the ready-made edits -----------------------------------------------------------------------


def _in_range(what: str, values, limit: Callable) -> Callable:
    values = [int(v) for v in values]

    def check(arch, site):
        n = limit(arch)
        bad = [v for v in values if not 0 <= v < n]
        if bad:
            raise ValueError(f"{site}: {what} {bad} out of range: this model has {what} 0..{n - 1}")

    return check


def _layer_kind(kind: str) -> Callable:
    def check(arch, site):
        layer, _ = split_site(site)
        if arch.layer_kind(layer) != kind:
            raise ValueError(f"{site}: layer {layer} is a {arch.layer_kind(layer)} layer, not {kind}")

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
            raise ValueError(
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
            raise ValueError(f"steer: {s} is not a residual-width site ([S, H]); steer resid_pre/mid/post or an out")
        if vector.numel() != arch.hidden:
            raise ValueError(f"steer: the vector has {vector.numel()} values; {s} needs {arch.hidden} (hidden size)")

    where = "every position" if positions is None else f"positions {list(_list(positions))}"
    return Edit(site, fn, f"{site}: steered by {scale:g} x a vector at {where}", check)


def patch(site: str, source, positions=None) -> Edit:
    """Replace the tensor at `site` by the one another run kept (`source`, a Trace holding `site`), at `positions`
    (absolute; None = every position of this forward, which `source` must also have)."""
    if site not in source:
        raise ValueError(f"patch: the source trace does not hold {site!r}; trace it with sites=[{site!r}]")
    theirs = source[site]
    dim = position_dim(site)

    def fn(x, at):
        rows = _rows(at, positions)
        wanted = at.positions[rows].cpu()
        if int(wanted.max()) >= theirs.shape[dim]:
            raise ValueError(
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
    from .trace import site_shape, site_spec

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
            raise ValueError(f"force_experts: give {arch.top_k} different experts (top_k), got {chosen}")

    check = _all(_layer_kind("moe"), _in_range("experts", chosen, lambda a: a.n_experts), count)
    return Edit(f"layers.{layer}.moe.topk_experts", fn, f"layer {layer}: experts forced to {chosen}", check)


def shared_gate(layer: int, value: float | None = None, scale: float | None = None) -> Edit:
    """Set the shared expert's sigmoid gate to `value` (0 switches the shared expert off), or multiply it by
    `scale`, for every token of a MoE layer."""
    if (value is None) == (scale is None):
        raise ValueError("shared_gate: give either value= (0..1) or scale=")
    if value is not None and not 0 <= value <= 1:
        raise ValueError(f"shared_gate: a sigmoid gate lies in 0..1, got value={value}")

    def fn(g, at):  # g: [S]
        return torch.full_like(g, value) if value is not None else g * scale

    what = f"set to {value:g}" if value is not None else f"scaled by {scale:g}"
    return Edit(f"layers.{layer}.moe.shared_gate", fn, f"layer {layer}: shared-expert gate {what}", _layer_kind("moe"))


# ---- RoPE ---------------------------------------------------------------------------------------------------------


def rope(lab, theta: float | None = None, yarn_factor: float | None = None) -> list[Edit]:
    """Run the model with another RoPE: rope theta `theta` and/or YaRN with factor `yarn_factor` (1 = plain RoPE),
    for every layer. cos and sin come from transformers' own rotary module built for those parameters."""
    from . import rope as rope_math

    scaling = None if yarn_factor is None else (False if yarn_factor == 1 else yarn_factor)
    setting = rope_math.rope_parameters(lab.arch, theta=theta, scaling=scaling)

    def new(which):
        def fn(x, at):  # x: [S, hd]
            cos, sin = rope_math.cos_sin(setting, at.positions.cpu())
            return (cos if which == "cos" else sin).to(x)

        return Edit(f"rope.{which}", fn, f"RoPE: {setting.label}")

    return [new("cos"), new("sin")]


def rope_off(layers) -> list[Edit]:
    """Switch RoPE off in these layers: their queries and keys go on unrotated (attn.q_rot = attn.q, k_rot = k), so
    attention there cannot tell positions apart except through the causal mask."""
    out = []
    for layer in _list(layers):
        for qk in ("q", "k"):
            read = f"layers.{layer}.attn.{qk}"
            out.append(
                Edit(f"{read}_rot", lambda x, at, read=read: at.run[read], f"layer {layer}: RoPE off", reads=(read,))
            )
    return out


def _list(x) -> list:
    if isinstance(x, torch.Tensor):
        return x.flatten().tolist()
    return list(x) if isinstance(x, (list, tuple, range)) else [x]
