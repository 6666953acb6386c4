"""Experiments on two runs: what changed, which sites carry the answer, and who wrote it.

    diff = compare_runs(clean, edited, answer=(right, wrong))   # two Traces: logit difference, KL, top-k, sites
    sweep = patch_sweep(lab, clean_text, corrupted_text, answer=(right, wrong), site="resid_pre")
    sweep.recovered                                              # [layers, positions]: 1 = the clean answer is back
    heads = head_patch_sweep(lab, clean_text, corrupted_text, answer=(right, wrong))   # [layers, query heads]
    dla = logit_attribution(lab, clean_text, answer=(right, wrong))                    # each head's, MLP's, expert's share

Activation patching (as in TransformerLens's `patching.py`, or Meng et al. 2022's causal tracing) runs the corrupted
prompt and puts one activation of the clean prompt back in; where that brings the clean answer back, that site
carries what the prompts differ in. The answer is measured as the logit difference of two tokens at the last
position, and `recovered` = (patched - corrupted) / (clean - corrupted).

A sweep here costs much less than a forward per patch. A patch at layer L and position p changes nothing before
layer L, and, attention being causal, nothing at positions before p: so each patch re-runs only layers L onward, only
for positions p onward, reading the corrupted run's keys and values for the positions before p (a KV cache, as in
generation), and all the patches of one position run as one batch that grows as the layers go by. Only the two
answer tokens' logits are computed at the end. The result equals a loop of `lab.trace(..., edits=patch(...))` (the
tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .edits import patch
from .forward import decoder_layer, expert, hooked, is_moe, rms_norm, run, unchanged
from .trace import SiteFilter, Trace

# ---- comparing two runs -------------------------------------------------------------------------------------------


@dataclass
class RunDiff:
    """What differs between two runs `a` and `b` (two Traces of the same model).

    position: where the answer is read (default the last). answer_logits: {token id: (logit in a, logit in b)}.
    logit_diff: (a, b) of logit[right] - logit[wrong] when the answer is a pair. kl: [S] KL(a || b) of the
    next-token distributions at every position (when both have the same tokens count). top_a, top_b: the k most
    probable next tokens at `position` as (id, probability). site_change: {site: |b - a| / |a|} over the sites both
    kept with the same shape, in forward order.
    """

    position: int
    answer_logits: dict[int, tuple[float, float]]
    logit_diff: tuple[float, float] | None
    kl: torch.Tensor | None
    top_a: list[tuple[int, float]]
    top_b: list[tuple[int, float]]
    site_change: dict[str, float] = field(default_factory=dict)
    edits: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"at position {self.position}:"]
        if self.logit_diff is not None:
            a, b = self.logit_diff
            lines.append(f"  logit difference (right - wrong): {a:+.3f} -> {b:+.3f} ({b - a:+.3f})")
        for tid, (a, b) in self.answer_logits.items():
            lines.append(f"  logit of token {tid}: {a:.3f} -> {b:.3f}")
        if self.kl is not None:
            lines.append(f"  KL(a || b) here {float(self.kl[self.position]):.4f}; largest {float(self.kl.max()):.4f}")
        lines.append("  top before: " + ", ".join(f"{t} ({p:.2f})" for t, p in self.top_a))
        lines.append("  top after:  " + ", ".join(f"{t} ({p:.2f})" for t, p in self.top_b))
        changed = [(s, c) for s, c in self.site_change.items() if c > 0]
        if changed:
            lines.append(f"  first site that changed: {changed[0][0]} ({changed[0][1]:.2g} relative)")
        return "\n".join(lines)

    _repr_pretty_ = lambda self, p, cycle: p.text(str(self))  # noqa: E731


def compare_runs(a: Trace, b: Trace, answer=None, *, position: int = -1, k: int = 5) -> RunDiff:
    """Compare two runs. answer: a token id, a list of them, or (right, wrong) for a logit difference."""
    pos = position % len(a.tokens)
    if pos >= len(b.tokens):
        raise ValueError(f"position {position} is outside run b ({len(b.tokens)} tokens)")
    ids = [] if answer is None else [int(t) for t in (answer if isinstance(answer, (list, tuple)) else [answer])]
    la, lb = a.logits[pos].float(), b.logits[pos].float()
    vocab = la.shape[-1]
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"answer token ids {bad} are outside the vocabulary (0..{vocab - 1})")
    logits = {t: (float(la[t]), float(lb[t])) for t in ids}
    diff = None
    if isinstance(answer, tuple) and len(ids) == 2:
        diff = (logits[ids[0]][0] - logits[ids[1]][0], logits[ids[0]][1] - logits[ids[1]][1])
    kl = None
    if len(a.tokens) == len(b.tokens):
        pa, pb = F.log_softmax(a.logits.float(), -1), F.log_softmax(b.logits.float(), -1)
        kl = (pa.exp() * (pa - pb)).sum(-1)  # (S,)
    top = lambda x: [(int(i), float(p)) for p, i in zip(*torch.softmax(x, -1).topk(k))]  # noqa: E731
    change = {
        s: float((b[s].float() - a[s].float()).norm() / a[s].float().norm().clamp_min(1e-30))
        for s in a.sites()
        if s in b and b[s].shape == a[s].shape and s != "logits" and a[s].is_floating_point()
    }
    return RunDiff(pos, logits, diff, kl, top(la), top(lb), change, edits=list(b.edits))


# ---- activation patching ------------------------------------------------------------------------------------------

SWEEP_SITES = ("resid_pre", "attn.out", "mlp.out")  # mlp.out means moe.out in a MoE layer
# What a sweep reads of the corrupted run: each layer's input, keys and values, the rope angles, and the residuals
# leaving the layers (the last one gives the corrupted answer).
REUSED = ["layers.*.resid_pre", "layers.*.attn.k_rot", "layers.*.attn.v", "rope.cos", "rope.sin", "layers.*.resid_post"]


@dataclass
class Sweep:
    """The result of a patching sweep. `logit_diff` [rows, cols]: right - wrong at the last position with each patch;
    `recovered` = (logit_diff - corrupted) / (clean - corrupted). Rows are layers; columns positions (`patch_sweep`)
    or query heads (`head_patch_sweep`)."""

    site: str
    layers: list[int]
    columns: list[int]
    column_kind: str  # "position" or "head"
    logit_diff: torch.Tensor
    clean: float
    corrupted: float
    tokens: list[str]  # the corrupted prompt's tokens
    group_size: int = 1

    @property
    def recovered(self) -> torch.Tensor:
        return (self.logit_diff - self.corrupted) / (self.clean - self.corrupted)


def answer_ids(lab, answer) -> tuple[int, int]:
    """(right, wrong) token ids, from ids or texts that are one token each."""
    from .generate import token_id_of

    if not isinstance(answer, (list, tuple)) or len(answer) != 2:
        raise ValueError(f"answer must be (right, wrong): two token ids or one-token texts, got {answer!r}")
    return token_id_of(lab, answer[0]), token_id_of(lab, answer[1])


def answer_logit_diff(lab, h: torch.Tensor, answer: tuple[int, int]) -> torch.Tensor:
    """logit[right] - logit[wrong] from final residuals h (R, H): the final norm, then only the two rows of lm_head."""
    x = rms_norm(h, lab.model.model.norm)  # (R, H)
    with hooked(lab.model.lm_head, x) as (x,):
        w = lab.model.lm_head.weight[list(answer)]  # (2, H)
        logits = F.linear(x, w).float()  # (R, 2)
    return logits[:, 0] - logits[:, 1]


class PrefixKV:
    """Stands in for a KV cache in a sweep: the keys and values of the positions before the patched one, which no
    patch at or after them can change, shared by every row of the batch."""

    def __init__(self, keys: list, values: list):
        self.keys, self.values = keys, values  # per layer: (nKV, p, hd)

    def update(self, k, v, layer_idx):  # k, v: (R, nKV, S', hd) -> (R, nKV, p + S', hd)
        R = k.shape[0]
        pk, pv = self.keys[layer_idx], self.values[layer_idx]
        return torch.cat([pk.expand(R, *pk.shape), k], dim=2), torch.cat([pv.expand(R, *pv.shape), v], dim=2)


def block_site(arch, layer: int, site: str) -> str:
    """`mlp.out` is the MoE block's `moe.out` in a MoE layer."""
    return "moe.out" if site == "mlp.out" and arch.layer_kind(layer) == "moe" else site


@torch.no_grad()
def patch_sweep(
    lab, clean, corrupted, answer, *, site: str = "resid_pre", layers=None, positions=None, batch: int = 32
) -> Sweep:
    """Patch `site` (resid_pre, attn.out or mlp.out) of the clean run into the corrupted run at every layer x
    position, one at a time; measure the answer's logit difference. clean, corrupted: inputs of the same length."""
    if site not in SWEEP_SITES:
        raise ValueError(f"site must be one of {SWEEP_SITES}, got {site!r}")
    arch = lab.arch
    clean_ids, bad_ids = lab.encode(clean), lab.encode(corrupted)
    if len(clean_ids) != len(bad_ids):
        raise ValueError(f"clean and corrupted must have as many tokens: {len(clean_ids)} vs {len(bad_ids)}")
    right_wrong = answer_ids(lab, answer)
    layers = list(range(arch.n_layers)) if layers is None else [int(i) for i in layers]
    positions = list(range(len(bad_ids))) if positions is None else [int(p) % len(bad_ids) for p in positions]
    SiteFilter(None, layers).check(arch)
    names = [f"layers.{i}.{block_site(arch, i, site)}" for i in layers]
    clean_run = lab.trace(clean_ids, sites=names + ["layers.*.resid_post"])
    base = lab.trace(bad_ids, sites=REUSED)
    out = torch.empty(len(layers), len(positions))
    for c, p in enumerate(positions):
        patches = [(L, {f"layers.{L}.{block_site(arch, L, site)}": clean_run[f"layers.{L}.{block_site(arch, L, site)}"][..., p, :]}) for L in layers]  # fmt: skip
        diffs = rerun(lab, base, p, patches, right_wrong, batch)
        out[:, c] = diffs
    return Sweep(site, layers, positions, "position", out, _diff(lab, clean_run, right_wrong),
                 _diff(lab, base, right_wrong), base.tokens)  # fmt: skip


@torch.no_grad()
def head_patch_sweep(lab, clean, corrupted, answer, *, layers=None, positions=None, batch: int = 32) -> Sweep:
    """Patch each query head's output (attn.z) of the clean run into the corrupted run, at `positions` (default
    every position), one head at a time: [layers, query heads] of the answer's logit difference."""
    arch = lab.arch
    clean_ids, bad_ids = lab.encode(clean), lab.encode(corrupted)
    if len(clean_ids) != len(bad_ids):
        raise ValueError(f"clean and corrupted must have as many tokens: {len(clean_ids)} vs {len(bad_ids)}")
    right_wrong = answer_ids(lab, answer)
    layers = list(range(arch.n_layers)) if layers is None else [int(i) for i in layers]
    SiteFilter(None, layers).check(arch)
    S = len(bad_ids)
    positions = list(range(S)) if positions is None else sorted({int(p) % S for p in positions})
    clean_run = lab.trace(clean_ids, sites=[f"layers.{i}.attn.z" for i in layers] + ["layers.*.resid_post"])
    base = lab.trace(bad_ids, sites=REUSED)
    first = positions[0]  # nothing before the first patched position changes
    patches = []
    for L in layers:
        z_clean = clean_run[f"layers.{L}.attn.z"][:, first:]  # (nH, S - first, hd)
        for h in range(arch.n_heads):
            patches.append((L, {f"layers.{L}.attn.z": (h, z_clean[h], [p - first for p in positions])}))
    diffs = rerun(lab, base, first, patches, right_wrong, batch)
    return Sweep("attn.z", layers, list(range(arch.n_heads)), "head", diffs.view(len(layers), arch.n_heads),
                 _diff(lab, clean_run, right_wrong), _diff(lab, base, right_wrong), base.tokens, arch.group_size)  # fmt: skip


def _diff(lab, trace, answer) -> float:
    return float(answer_logit_diff(lab, trace[f"layers.{lab.arch.n_layers - 1}.resid_post"][-1:], answer)[0])


def rerun(lab, base: Trace, p: int, patches: list, answer, batch: int) -> torch.Tensor:
    """Run each patch on top of `base` from its layer onward, for positions p onward; the answer's logit difference
    per patch. patches: [(layer, {site: what to put there})], in which `what` is a residual-width row for position
    p, or (head, z [S - p, hd], positions relative to p) for attn.z."""
    out = torch.empty(len(patches))
    order = sorted(range(len(patches)), key=lambda i: patches[i][0])
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        out[chunk] = rerun_chunk(lab, base, p, [patches[i] for i in chunk], answer)
    return out


def rerun_chunk(lab, base: Trace, p: int, patches: list, answer) -> torch.Tensor:
    """The rows of one batch, entering at their own layers (sorted), all reading positions p onward."""
    model, n = lab.model, lab.arch.n_layers
    cos, sin = base["rope.cos"][None, p:], base["rope.sin"][None, p:]  # (1, S - p, hd)
    prefix = PrefixKV([base[f"layers.{i}.attn.k_rot"][:, :p] for i in range(n)],
                      [base[f"layers.{i}.attn.v"][:, :p] for i in range(n)])  # fmt: skip
    h, waiting = None, list(patches)
    for j in range(patches[0][0], n):
        entering = [w for w in waiting if w[0] == j]
        waiting = waiting[len(entering) :]
        if entering:
            fresh = base[f"layers.{j}.resid_pre"][p:].expand(len(entering), -1, -1).clone()  # (r, S - p, H)
            h = fresh if h is None else torch.cat([h, fresh])
        first_new = h.shape[0] - len(entering)
        visit = Patcher(f"layers.{j}.", entering, first_new) if entering else unchanged
        h = run(
            decoder_layer(model.model.layers[j], f"layers.{j}.", h, cos, sin, visit.wants if entering else _no, prefix),
            visit,
        )
    return answer_logit_diff(lab, h[:, -1], answer).cpu()


def _no(site: str) -> bool:
    return False


class Patcher:
    """The `visit` of one layer of a sweep: puts each entering row's patch in place; the rows already running pass."""

    def __init__(self, prefix: str, entering: list, first_row: int):
        self.prefix, self.first_row = prefix, first_row
        self.by_site: dict[str, list] = {}
        for r, (_, patch_at) in enumerate(entering):
            for site, what in patch_at.items():
                self.by_site.setdefault(site, []).append((first_row + r, what))

    def wants(self, site: str) -> bool:
        return False  # patches never need the attention pattern: the fused kernel runs

    def __call__(self, site: str, x: torch.Tensor) -> torch.Tensor:
        if site not in self.by_site:
            return x
        x = x.clone()
        for row, what in self.by_site[site]:
            if isinstance(what, tuple):  # (head, z, relative positions): x is (R, nH, S - p, hd)
                head, z, rel = what
                x[row, head, rel] = z[rel].to(x)
            else:  # a residual-width row at the first position read: x is (R, S - p, H)
                x[row, 0] = what.to(x)
        return x


def naive_patch(lab, clean_trace: Trace, corrupted, site: str, position: int) -> Trace:
    """One patch done the plain way, a full forward with an edit: what a sweep must equal (and what
    TransformerLens's generic_activation_patch does per index)."""
    return lab.trace(corrupted, sites=[], edits=patch(site, clean_trace, positions=[position]))


# ---- direct logit attribution -------------------------------------------------------------------------------------


@dataclass
class Attribution:
    """Who wrote the answer's logit (difference) at `position`, each component read straight through the final norm.

    The last residual is the sum of the embedding, every head's output (o_proj is linear, without bias) and every
    MLP's or expert's output. With the final norm's scale 1/rms(residual) held at its actual value, the logit is
    linear in that sum: the contributions below add up to the logit exactly. (Attribution ignores that each part
    also moves the rms: that is the final norm's scaling.)

    embed: the token embedding's share. heads: [L, nH]. mlps: [L] the MLP (dense layer) or the whole MoE block.
    experts: {layer: [E]} the routed experts' shares (0 for experts the token did not use). shared: {layer: the
    gated shared expert's share}. total: the sum of all shares; logit: the model's own value; scale: 1/rms.
    """

    position: int
    answer: tuple
    embed: float
    heads: torch.Tensor
    mlps: torch.Tensor
    experts: dict[int, torch.Tensor]
    shared: dict[int, float]
    total: float
    logit: float
    scale: float
    group_size: int = 1


@torch.no_grad()
def logit_attribution(lab, inputs, answer, *, position: int = -1) -> Attribution:
    """Direct logit attribution of `answer` (a token, or (right, wrong) for a difference) at `position`."""
    from .generate import token_id_of

    arch, model = lab.arch, lab.model
    pair = isinstance(answer, (list, tuple))
    ids = answer_ids(lab, answer) if pair else (token_id_of(lab, answer),)
    sites = ["embed", "layers.*.attn.z", f"layers.{arch.n_layers - 1}.resid_post"]
    if len(arch.moe_layers) < arch.n_layers:
        sites.append("layers.*.mlp.out")
    if arch.moe_layers:
        sites += ["layers.*.mlp_norm", "layers.*.moe.topk_*", "layers.*.moe.shared_*"]
    trace = lab.trace(inputs, sites=sites)
    pos = position % len(trace.tokens)
    final = trace[f"layers.{arch.n_layers - 1}.resid_post"][pos].float()  # (H,)
    norm = model.model.norm
    scale = float(torch.rsqrt(final.pow(2).mean() + norm.variance_epsilon))
    w_u = model.lm_head.weight[list(ids)].float()  # (1 or 2, H)
    direction = w_u[0] - w_u[1] if pair else w_u[0]  # (H,)
    read = norm.weight.float() * direction * scale  # (H,): how a unit of residual moves the answer's logit

    def share(x):  # x: (..., H) -> (...)
        return (x.float() * read).sum(-1)

    heads, mlps, experts, shared = torch.zeros(arch.n_layers, arch.n_heads), torch.zeros(arch.n_layers), {}, {}
    for i, layer in enumerate(model.model.layers):
        z = trace[f"layers.{i}.attn.z"][:, pos].float()  # (nH, hd)
        w_o = layer.self_attn.o_proj.weight.float().view(arch.hidden, arch.n_heads, arch.head_dim)  # (H, nH, hd)
        heads[i] = share(torch.einsum("nd,hnd->nh", z, w_o))
        if is_moe(layer.mlp):
            experts[i], shared[i] = expert_shares(layer.mlp, trace, i, pos, share, arch.n_experts)
            mlps[i] = experts[i].sum() + shared[i]
        else:
            mlps[i] = share(trace[f"layers.{i}.mlp.out"][pos])
    embed = float(share(trace["embed"][pos]))
    total = embed + float(heads.sum()) + float(mlps.sum())
    logits = trace.logits[pos].float()
    logit = float(logits[ids[0]] - logits[ids[1]]) if pair else float(logits[ids[0]])
    return Attribution(pos, ids, embed, heads, mlps, experts, shared, total, logit, scale, arch.group_size)


def expert_shares(moe, trace: Trace, i: int, pos: int, share, n_experts: int) -> tuple[torch.Tensor, float]:
    """Each routed expert's share (weight x its output) and the gated shared expert's, for one token."""
    x = trace[f"layers.{i}.mlp_norm"][pos : pos + 1]  # (1, H)
    out = torch.zeros(n_experts)
    chosen, weights = trace[f"layers.{i}.moe.topk_experts"][pos], trace[f"layers.{i}.moe.topk_weights"][pos]
    with hooked(moe.experts, x) as (x,):
        for e, w in zip(chosen.tolist(), weights):
            out[e] = share(expert(moe.experts, e, x)[0] * w)
    gated = trace[f"layers.{i}.moe.shared_gate"][pos] * trace[f"layers.{i}.moe.shared_out"][pos]
    return out, float(share(gated))


# ---- two generations: where they part ------------------------------------------------------------------------------


@dataclass
class Divergence:
    """Where two generations of the same prompt first chose different tokens (e.g. before and after an edit).

    step: that step (None when one is a prefix of the other). token_a, token_b: what each chose there.
    p_a: (probability of token_a in run a, in run b); p_b: the same for token_b; both under the raw distribution.
    """

    step: int | None
    token_a: str = ""
    token_b: str = ""
    p_a: tuple[float, float] = (0.0, 0.0)
    p_b: tuple[float, float] = (0.0, 0.0)

    def __str__(self) -> str:
        if self.step is None:
            return "the two answers agree token for token (as far as the shorter goes)"
        return (
            f"they part at step {self.step}: {self.token_a!r} (p {self.p_a[0]:.2%} -> {self.p_a[1]:.2%}) against"
            f" {self.token_b!r} (p {self.p_b[0]:.2%} -> {self.p_b[1]:.2%})"
        )


def divergence(a, b) -> Divergence:
    """The first step at which generations a and b (same prompt) chose different tokens, and how likely each token
    was in each run there (the raw distributions). A run that kept no logits has its step recomputed: one forward
    of the prompt and the tokens both runs share, with that run's edits."""
    if not torch.equal(a.prompt_ids.cpu(), b.prompt_ids.cpu()):
        raise ValueError("the two generations start from different prompts")
    k = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None)
    if k is None:
        return Divergence(None)
    pa, pb = _step_probs(a, k), _step_probs(b, k)
    ta, tb = a.steps[k].token_id, b.steps[k].token_id
    return Divergence(
        k, a.steps[k].token, b.steps[k].token, (float(pa[ta]), float(pb[ta])), (float(pa[tb]), float(pb[tb]))
    )


def _step_probs(gen, k: int) -> torch.Tensor:
    """softmax of step k's logits [V]: kept, or recomputed from the prompt and the first k tokens."""
    logits = gen.steps[k].logits
    if logits is None:
        ids = torch.cat(
            [gen.prompt_ids, torch.tensor(gen.token_ids[:k], dtype=torch.long, device=gen.prompt_ids.device)]
        )
        logits = gen.lab.trace(ids, sites=[], edits=gen.options.edits).logits[-1]
    return torch.softmax(logits.float(), -1).cpu()
