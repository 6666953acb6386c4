"""Activation patching: which layer, position or head carries what two prompts differ in.

    sweep = patch_sweep(lab, clean_text, corrupted_text, answer=(right, wrong), site="resid_pre")
    sweep.recovered                                        # [layers, positions]: 1 = the clean answer is back
    heads = head_patch_sweep(lab, clean_text, corrupted_text, answer=(right, wrong))   # [layers, query heads]

Activation patching (as in TransformerLens's `patching.py`, or Meng et al. 2022's causal tracing) runs the corrupted
prompt and puts one activation of the clean prompt back in; where that brings the clean answer back, that site
carries what the prompts differ in. The answer is measured as the logit difference of two tokens at the last
position, and `recovered` = (patched - corrupted) / (clean - corrupted).

A sweep here costs much less than a forward per patch. A patch at layer L and position p changes nothing before
layer L, and, attention being causal, nothing at positions before p: so each patch re-runs only layers L onward, only
for positions p onward, reading the corrupted run's keys and values for the positions before p (a KV cache, as in
generation), and all the patches of one position run as one batch that grows as the layers go by. Only the two
answer tokens' logits are computed at the end. The result equals a loop of `lab.trace(..., edits=patch(...))` (the
tests check it; `naive_patch` is that loop's body).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .edits import patch
from .forward import decoder_layer, read_out, run, unchanged
from .inputs import InputError, answer_ids
from .trace import SiteFilter, Trace, block_out

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


def answer_logit_diff(lab, h: torch.Tensor, answer: tuple[int, int]) -> torch.Tensor:
    """logit[right] - logit[wrong] from final residuals h (R, H): the forward's read-out, two rows of lm_head only."""
    logits = read_out(lab.model, h, answer).float()  # (R, 2)
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


def sweep_site(arch, layer: int, site: str) -> str:
    """The full name of a sweep's site in `layer` (`mlp.out` is the MoE block's `moe.out` in a MoE layer)."""
    return block_out(arch, layer) if site == "mlp.out" else f"layers.{layer}.{site}"


@torch.no_grad()
def patch_sweep(
    lab, clean, corrupted, answer, *, site: str = "resid_pre", layers=None, positions=None, batch: int = 32
) -> Sweep:
    """Patch `site` (resid_pre, attn.out or mlp.out) of the clean run into the corrupted run at every layer x
    position, one at a time; measure the answer's logit difference. clean, corrupted: inputs of the same length."""
    if site not in SWEEP_SITES:
        raise InputError(f"site must be one of {SWEEP_SITES}, got {site!r}")
    arch = lab.arch
    clean_ids, bad_ids, right_wrong, layers, positions = sweep_inputs(lab, clean, corrupted, answer, layers, positions)
    names = [sweep_site(arch, i, site) for i in layers]
    clean_run = lab.trace(clean_ids, sites=names + ["layers.*.resid_post"])
    base = lab.trace(bad_ids, sites=REUSED)
    out = torch.empty(len(layers), len(positions))
    for c, p in enumerate(positions):
        patches = [(L, {sweep_site(arch, L, site): clean_run[sweep_site(arch, L, site)][..., p, :]}) for L in layers]
        diffs = rerun(lab, base, p, patches, right_wrong, batch)
        out[:, c] = diffs
    return Sweep(site, layers, positions, "position", out, _diff(lab, clean_run, right_wrong),
                 _diff(lab, base, right_wrong), base.tokens)  # fmt: skip


@torch.no_grad()
def head_patch_sweep(lab, clean, corrupted, answer, *, layers=None, positions=None, batch: int = 32) -> Sweep:
    """Patch each query head's output (attn.z) of the clean run into the corrupted run, at `positions` (default
    every position), one head at a time: [layers, query heads] of the answer's logit difference."""
    arch = lab.arch
    clean_ids, bad_ids, right_wrong, layers, positions = sweep_inputs(lab, clean, corrupted, answer, layers, positions)
    positions = sorted(set(positions))
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


def sweep_inputs(lab, clean, corrupted, answer, layers, positions) -> tuple:
    """What every sweep checks first: two inputs of one length, (right, wrong) tokens, layers and positions in range.
    Returns (clean ids, corrupted ids, (right, wrong), layers, positions)."""
    clean_ids, bad_ids = lab.encode(clean), lab.encode(corrupted)
    if len(clean_ids) != len(bad_ids):
        raise InputError(f"clean and corrupted must have as many tokens: {len(clean_ids)} vs {len(bad_ids)}")
    layers = list(range(lab.arch.n_layers)) if layers is None else [int(i) for i in layers]
    SiteFilter(None, layers).check(lab.arch)
    S = len(bad_ids)
    positions = list(range(S)) if positions is None else [int(p) % S for p in positions]
    right_wrong = answer_ids(lab.tokenizer, answer, lab.arch.vocab)
    if len(right_wrong) != 2:
        raise InputError(f"a sweep measures a logit difference: give answer=(right, wrong), got {answer!r}")
    return clean_ids, bad_ids, right_wrong, layers, positions


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
