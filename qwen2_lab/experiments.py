"""Two runs side by side: what an edit changed, and where two generations part.

    diff = compare_runs(clean, edited, answer=(right, wrong))   # two Traces: logit difference, KL, top-k, sites
    print(diff)
    where = divergence(gen, gen_with_edit)                      # two Generations: the first token they disagree on

Which sites carry an answer is the business of qwen2_lab/patching.py (activation patching sweeps); who wrote it, of
qwen2_lab/attribution.py (direct logit attribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .inputs import InputError, answer_ids
from .trace import Trace

# ---- comparing two runs -------------------------------------------------------------------------------------------


@dataclass
class RunDiff:
    """What differs between two runs `a` and `b` (two Traces of the same model).

    position: where the answer is read (default the last). answer_logits: {token id: (logit in a, logit in b)}.
    logit_diff: (a, b) of logit[right] - logit[wrong] when the answer is a pair. kl: [S] KL(a || b) of the
    next-token distributions at every position (when both have the same tokens count). top_a, top_b: the k most
    probable next tokens at `position` as (id, probability). top: the tokens of either list, most probable in a
    first, as (id, probability in a, probability in b). site_change: {site: |b - a| / |a|} over the sites both
    kept with the same shape, in forward order.
    """

    position: int
    answer_logits: dict[int, tuple[float, float]]
    logit_diff: tuple[float, float] | None
    kl: torch.Tensor | None
    top_a: list[tuple[int, float]]
    top_b: list[tuple[int, float]]
    top: list[tuple[int, float, float]]
    site_change: dict[str, float] = field(default_factory=dict)
    edits: list = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # token texts, when compare_runs was given `tokens`

    def name(self, token: int) -> str:
        return repr(self.names[token]) if token in self.names else str(token)

    def __str__(self) -> str:
        lines = [f"at position {self.position}:"]
        if self.logit_diff is not None:
            a, b = self.logit_diff
            lines.append(f"  logit difference (right - wrong): {a:+.3f} -> {b:+.3f} ({b - a:+.3f})")
        for tid, (a, b) in self.answer_logits.items():
            lines.append(f"  logit of token {self.name(tid)}: {a:.3f} -> {b:.3f}")
        if self.kl is not None:
            lines.append(f"  KL(a || b) here {float(self.kl[self.position]):.4f}; largest {float(self.kl.max()):.4f}")
        lines.append("  top before: " + ", ".join(f"{self.name(t)} ({p:.2f})" for t, p in self.top_a))
        lines.append("  top after:  " + ", ".join(f"{self.name(t)} ({p:.2f})" for t, p in self.top_b))
        changed = [(s, c) for s, c in self.site_change.items() if c > 0]
        if changed:
            lines.append(f"  first site that changed: {changed[0][0]} ({changed[0][1]:.2g} relative)")
        return "\n".join(lines)

    _repr_pretty_ = lambda self, p, cycle: p.text(str(self))  # noqa: E731


def compare_runs(a: Trace, b: Trace, answer=None, *, position: int = -1, k: int = 5, lab=None) -> RunDiff:
    """Compare two runs. answer: a token, or (right, wrong) for a logit difference (ids, or one-token texts when
    `lab` is given, as everywhere an answer is taken). lab: the Lab of the runs, to read answers given as text and
    to name tokens when printed."""
    pos = position % len(a.tokens)
    if pos >= len(b.tokens):
        raise InputError(f"position {position} is outside run b ({len(b.tokens)} tokens)")
    la, lb = a.logits[pos].float(), b.logits[pos].float()
    ids = [] if answer is None else list(answer_ids(None if lab is None else lab.tokenizer, answer, la.shape[-1]))
    logits = {t: (float(la[t]), float(lb[t])) for t in ids}
    diff = None
    if len(ids) == 2:
        diff = (logits[ids[0]][0] - logits[ids[1]][0], logits[ids[0]][1] - logits[ids[1]][1])
    kl = None
    if len(a.tokens) == len(b.tokens):
        pa, pb = F.log_softmax(a.logits.float(), -1), F.log_softmax(b.logits.float(), -1)
        kl = (pa.exp() * (pa - pb)).sum(-1)  # (S,)
    pa, pb = torch.softmax(la, -1), torch.softmax(lb, -1)
    top_a, top_b = [[(int(i), float(p)) for p, i in zip(*probs.topk(k))] for probs in (pa, pb)]
    both = list(dict.fromkeys([i for i, _ in top_a + top_b]))
    both.sort(key=lambda i: -float(pa[i]))
    top = [(i, float(pa[i]), float(pb[i])) for i in both]
    change = {
        s: float((b[s].float() - a[s].float()).norm() / a[s].float().norm().clamp_min(1e-30))
        for s in a.sites()
        if s in b and b[s].shape == a[s].shape and s != "logits" and a[s].is_floating_point()
    }
    named = list(dict.fromkeys(ids + [i for i, _, _ in top]))
    names = dict(zip(named, lab.tokens(named))) if lab is not None else {}
    return RunDiff(pos, logits, diff, kl, top_a, top_b, top, change, edits=list(b.edits), names=names)


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
        raise InputError("the two generations start from different prompts")
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
