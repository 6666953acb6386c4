"""Generation, seen token by token: the lab's own forward with a KV cache, and every choice recorded.

    gen = lab.generate_steps(chat, max_new_tokens=40, do_sample=True, temperature=0.7, top_p=0.8, seed=0)
    gen.text                        # the answer
    gen.steps[3]                    # the 4th new token: its probability, the runners-up, the entropy, its logits
    gen.branch(3, 425)              # what if the 4th token had been id 425: the rest generated again from there
    for piece in lab.stream(chat):  # the answer as it comes, one piece per token
        print(piece, end="")

Each step, the forward (qwen2_lab/forward.py) runs the new token against the KV cache (HF's own `DynamicCache`, which
grows by one token per step) and gives the raw next-token logits; qwen2_lab/sampling.py chooses the token from them
exactly as transformers' `generate` does (its logits processors, greedy or a draw). With `seed`, the draws come from
a torch.Generator seeded with it, the same numbers `torch.manual_seed(seed)` followed by HF `generate` would draw.

Each step records the raw logits [V], the chosen token's probability before and after the processors, the top
candidates of both distributions, the entropy, and optionally any sites of that token's forward (its attention
over every earlier position, its MoE routing, the logit lens): only what is asked for is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import saved
from .arch import Arch
from .forward import lens_top, qwen2_forward, run, unchanged
from .inputs import InputError, token_id
from .recorder import Edit, Recorder, as_edits, resolve
from .sampling import LENGTH_KNOBS, SAMPLING_KNOBS, Sampling, choose, sampling
from .trace import SiteFilter

if TYPE_CHECKING:  # a hint only: lab.py imports this module, never the other way
    from .lab import Lab


@dataclass(frozen=True)
class Candidate:
    """One possible next token: its id, its text and its probability."""

    id: int
    text: str
    prob: float


@dataclass
class Step:
    """One new token and how it was chosen.

    logits: [V] the raw next-token logits (float32), None when not kept. prob: the token's probability under
    softmax(logits); processed_prob: under the distribution sampling drew from (after the processors). top,
    processed_top: the best candidates of each. entropy: of the raw distribution, in bits. sites: the sites kept for
    this token's forward, at its last position (attention [nH, 1, T] over every earlier position, routing [1, E],
    ...). lens_ids, lens_probs: [L, k] the logit lens of that position. cache_tokens: tokens in the KV cache after
    this step's forward. piece: the text this token added to the answer ('' while half a UTF-8 character waits).
    """

    index: int
    position: int
    token_id: int
    token: str
    piece: str
    prob: float
    processed_prob: float
    entropy: float
    top: list[Candidate]
    processed_top: list[Candidate]
    logits: torch.Tensor | None
    cache_tokens: int
    forced: bool = False
    sites: dict = field(default_factory=dict)
    lens_ids: torch.Tensor | None = None
    lens_probs: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"Step({self.index}: {self.token!r} p={self.prob:.3f} (processed {self.processed_prob:.3f}), H={self.entropy:.2f} bits)"


@dataclass(frozen=True)
class Options:
    """What each step records and changes: kept sites and layers, logit lens width, edits, top candidates, whether
    to keep the raw logits and the final KV cache, and the seed of the sampling draws."""

    sites: tuple | None = ()
    layers: tuple | None = None
    lens: int = 0
    edits: object = None
    top: int = 5
    keep_logits: bool = True
    keep_cache: bool = False
    seed: int | None = None


@dataclass(eq=False)
class Generation:
    """A recorded generation: `steps` (one per new token), `text`, `token_ids`; `branch` to try another token."""

    lab: Lab = field(repr=False)
    prompt_ids: torch.Tensor  # [P]
    settings: Sampling
    options: Options
    steps: list[Step] = field(default_factory=list)
    stop_reason: str = ""  # "eos", "max_new_tokens", or "" while running
    cache: object = field(default=None, repr=False)  # the KV cache after the last step, with keep_cache=True
    forced_next: int | None = None  # a token to take at the next step instead of choosing one (a branch)
    resolved: dict = field(default_factory=dict, repr=False)  # options.edits resolved for this model, by `checked`

    @property
    def token_ids(self) -> list[int]:
        return [s.token_id for s in self.steps]

    @property
    def tokens(self) -> list[str]:
        return [s.token for s in self.steps]

    @property
    def text(self) -> str:
        return self.lab.tokenizer.decode(self.token_ids, skip_special_tokens=True) if self.lab.tokenizer else ""

    @property
    def logits(self) -> torch.Tensor:
        """[N, V]: each step's raw next-token logits."""
        if any(s.logits is None for s in self.steps):
            raise ValueError("this generation kept no logits (keep_logits=False)")
        return torch.stack([s.logits for s in self.steps])

    # ---- its life: run, stream, branch, redo ----------------------------------------------------------------

    @torch.no_grad()
    def run(self) -> Iterator[Step]:
        """Run on from where it is to its end, appending and yielding each Step as its token is chosen. Closing the
        iterator stops generation at the next token; a finished generation yields nothing."""
        yield from run_steps(self)

    def finish(self) -> Generation:
        """Run to the end; returns self."""
        for _ in self.run():
            pass
        return self

    def stream(self) -> Iterator[str]:
        """The text this generation adds as it runs, one piece per token (a branch's kept steps are not repeated;
        a character cut short at the very end comes last). Closing the iterator stops generation."""
        sent = sum(len(s.piece) for s in self.steps)  # the text already there: a branch's kept steps
        for step in self.run():
            if step.piece:
                sent += len(step.piece)
                yield step.piece
        if self.text[sent:]:
            yield self.text[sent:]

    def branch(self, step: int, token, *, finish: bool = True, **changes) -> Generation:
        """What if step `step` had chosen `token` (an id, or a text that is exactly one token)? Steps before it are
        kept, the token is put there, and the rest is generated anew with the same settings (or those in `changes`:
        sampling arguments and options such as seed, edits, sites). finish=False: checked, not run yet (`stream`
        it, or `run` it, to watch it grow)."""
        if not 0 <= step < len(self.steps):
            raise IndexError(f"step {step} out of range: this generation has steps 0..{len(self.steps) - 1}")
        forced = token_id(self.lab.tokenizer, token, self.lab.arch.vocab)
        settings, options = split_changes(self.lab.model, self.settings, self.options, changes)
        gen = Generation(self.lab, self.prompt_ids, settings, options, list(self.steps[:step]), forced_next=forced)
        return checked(gen).finish() if finish else checked(gen)

    def redo(self, *, finish: bool = True, **changes) -> Generation:
        """The same prompt generated again from the start, with `changes` (edits=..., seed=..., temperature=...);
        unchanged settings stay, the random seed included. finish=False: checked, not run yet."""
        settings, options = split_changes(self.lab.model, self.settings, self.options, changes)
        gen = checked(Generation(self.lab, self.prompt_ids, settings, options))
        return gen.finish() if finish else gen

    # ---- to and from a file (qwen2_lab/saved.py) ---------------------------------------------------------------

    def save(self, path) -> Path:
        """Write this generation to one safetensors file: prompt ids, each step's logits, sites and lens bit for bit;
        everything else (candidates, settings, options, edits by their labels, token texts) in the JSON part."""
        return save_generation(self, path)

    @classmethod
    def load(cls, path, *, lab=None) -> Generation:
        """A saved generation. Without `lab` it has no model (a SavedLab stands in: text, tokens and every view
        work; branch needs lab=, a Lab of the same architecture)."""
        return load_generation(path, lab=lab)


def split_changes(model, settings: Sampling, options: Options, changes: dict) -> tuple[Sampling, Options]:
    """Sampling settings and options with `changes` applied (a sampling argument or an Options field each)."""
    option_names = set(Options.__dataclass_fields__)
    knobs = {k: v for k, v in changes.items() if k not in option_names}
    current = {k: getattr(settings, k) for k in SAMPLING_KNOBS + LENGTH_KNOBS}
    new_settings = replace(sampling(model, **{**current, **knobs}), eos=settings.eos) if knobs else settings
    opts = {k: v for k, v in changes.items() if k in option_names}
    if "sites" in opts or "layers" in opts:
        opts = {**opts, **_site_options(opts.get("sites", options.sites), opts.get("layers", options.layers))}
    return new_settings, replace(options, **opts)


def _site_options(sites, layers) -> dict:
    as_tuple = lambda x: None if x is None else (tuple(x) if isinstance(x, (list, tuple)) else (x,))  # noqa: E731
    return dict(sites=as_tuple(sites), layers=as_tuple(layers))


def start(
    lab,
    inputs,
    *,
    sites=(),
    layers=None,
    lens: int = 0,
    edits=None,
    top: int = 5,
    keep_logits: bool = True,
    keep_cache: bool = False,
    seed: int | None = None,
    **sampling_kwargs,
) -> Generation:
    """A Generation ready to run (`gen.run()`, `gen.stream()`, `gen.finish()`), everything checked before any token
    is generated: `lab.generation(...)` calls this, `lab.generate_steps(...)` finishes it.

    sampling_kwargs: do_sample, temperature, top_k, top_p, min_p, repetition_penalty, max_new_tokens,
    min_new_tokens (defaults: the model's generation config, as HF generate). sites/layers: sites to keep at every
    step (globs, as in lab.trace; none by default). lens: the logit lens width per step. edits: changes made at every
    step (qwen2_lab/edits.py). top: candidates recorded per step. keep_logits: keep each step's [V] logits.
    keep_cache: keep the final KV cache (gen.cache). seed: the random seed of the sampling draws (None: torch's
    global generator, as HF generate).
    """
    ids = lab.encode(inputs)
    settings = sampling(lab.model, **sampling_kwargs)
    options = Options(**_site_options(sites, layers), lens=int(lens), edits=edits, top=int(top), keep_logits=keep_logits,
                      keep_cache=keep_cache, seed=seed)  # fmt: skip
    return checked(Generation(lab, ids, settings, options))


def checked(gen: Generation) -> Generation:
    """gen with its options checked against the model and its edits resolved, once: every problem is raised here,
    before any token is generated."""
    lab, o = gen.lab, gen.options
    SiteFilter(o.sites, o.layers).check(lab.arch)
    gen.resolved = resolve(o.edits, lab.arch)
    if len(gen.prompt_ids) + gen.settings.max_new_tokens > lab.arch.max_position:
        raise InputError(
            f"the prompt is {len(gen.prompt_ids):,} tokens and max_new_tokens {gen.settings.max_new_tokens:,}: together"
            f" over the context window of {lab.arch.max_position:,} tokens; shorten the prompt or lower max_new_tokens"
        )
    return gen


def run_steps(gen: Generation) -> Iterator[Step]:
    """What `gen.run()` does: run on from where it is to its end, appending and yielding each Step. The first
    forward reads the prompt and the tokens already chosen; then one token at a time, with the KV cache."""
    from transformers import DynamicCache

    lab, s, o = gen.lab, gen.settings, gen.options
    model, device = lab.model, gen.prompt_ids.device
    keep = SiteFilter(o.sites, o.layers)
    processors = s.processors(len(gen.prompt_ids))
    draws = None  # the seeded generator, made on the logits' device at the first draw (see `draw`)
    pieces = Detokenizer(lab.tokenizer)
    for step in gen.steps:  # the steps kept from before (a branch): the detokenizer must know the text so far
        pieces.add(step.token_id)
    chosen = torch.tensor(gen.token_ids, dtype=torch.long, device=device)
    seq = torch.cat([gen.prompt_ids, chosen])[None]  # (1, T): every token so far
    new = seq  # what the next forward reads: everything first, then one token at a time
    cache = DynamicCache(config=model.config)
    lens = (lambda resid: lens_top(model, resid, o.lens)) if o.lens else None
    while len(gen.steps) < s.max_new_tokens and gen.stop_reason != "eos":
        positions = torch.arange(cache.get_seq_length(), seq.shape[1], device=device)  # (S,) this forward's tokens
        rec = Recorder(lab.arch, keep, gen.resolved, positions, read_lens=lens, last_only=True)
        stages = qwen2_forward(model, new, rec.wants, cache=cache, all_logits=False)
        logits = run(stages, unchanged if rec.idle else rec)[0, -1].float()  # (V,) next-token logits, as HF reads them
        scores = processors(seq.to(logits.device), logits[None].clone())[0] if processors else logits  # (V,)
        forced, gen.forced_next = gen.forced_next, None
        if forced is None and draws is None and o.seed is not None:
            draws = torch.Generator(device=logits.device).manual_seed(o.seed)  # where the draws are made
        token = forced if forced is not None else choose(scores, s.do_sample, draws)
        step = record(
            lab, len(gen.steps), seq.shape[1], token, logits, scores, o, rec, pieces, cache, forced is not None
        )
        gen.steps.append(step)
        if o.keep_cache:
            gen.cache = cache
        if token in s.eos:
            gen.stop_reason = "eos"
        yield step
        seq = torch.cat([seq, torch.tensor([[token]], device=device)], dim=1)
        new = seq[:, -1:]
    gen.stop_reason = gen.stop_reason or "max_new_tokens"


def record(lab, index, position, token, logits, scores, o: Options, rec, pieces, cache, forced) -> Step:
    """One Step: the chosen token and its alternatives, before and after the processors."""
    logp = torch.log_softmax(logits, dim=-1)  # (V,)
    probs = logp.exp()  # (V,)
    processed = probs if scores is logits else torch.softmax(scores, dim=-1)  # (V,): no processor, the same
    entropy = float(-(probs * logp).nan_to_num().sum()) / math.log(2)
    step = Step(
        index=index,
        position=position,
        token_id=token,
        token=lab.tokens([token])[0],
        piece=pieces.add(token),
        prob=float(probs[token]),
        processed_prob=float(processed[token]),
        entropy=entropy,
        top=candidates(lab, probs, o.top),
        processed_top=candidates(lab, processed, o.top),
        logits=logits if o.keep_logits else None,
        cache_tokens=cache.get_seq_length(),
        forced=forced,
        sites=rec.store,
    )
    lens = rec.lens_read()
    if lens is not None:
        step.lens_probs, step.lens_ids = lens  # (L, k) each: every layer's guesses at this token's position
    return step


def candidates(lab, probs: torch.Tensor, k: int) -> list[Candidate]:
    if k <= 0:
        return []
    p, ids = probs.topk(k)
    ids = ids.tolist()
    return [Candidate(i, t, float(q)) for i, t, q in zip(ids, lab.tokens(ids), p.tolist())]


class Detokenizer:
    """Text pieces as tokens come, one per token; only an incomplete UTF-8 character (decoded as '\ufffd') is held
    back until its next byte arrives. Special tokens are left out. Each line is decoded whole, so that merges
    across tokens hold, and forgotten once it ends, so that decoding stays cheap however long the answer."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.line: list[int] = []  # the tokens of the current line
        self.sent = 0  # characters of the current line already given out

    def add(self, token_id: int) -> str:
        if self.tokenizer is None:  # a Lab without a tokenizer generates ids only
            return ""
        self.line.append(token_id)
        text = self.tokenizer.decode(self.line, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half a character: wait for the rest of its bytes
            return ""
        piece, self.sent = text[self.sent :], len(text)
        if text.endswith("\n"):
            self.line, self.sent = [], 0
        return piece


# ---- to and from a file: what Generation.save writes and Generation.load reads --------------------------------


def shown_ids(gen: Generation) -> list[int]:
    """Every token id a generation's views may label: prompt, answer, candidates and the logit lens."""
    ids = set(gen.prompt_ids.tolist()) | set(gen.token_ids)
    for s in gen.steps:
        ids |= {c.id for c in s.top + s.processed_top}
        if s.lens_ids is not None:
            ids |= set(s.lens_ids.flatten().tolist())
    return sorted(ids)


STEP_TENSORS = ("logits", "lens_ids", "lens_probs")


def save_generation(gen: Generation, path) -> Path:
    """What gen.save(path) writes."""
    tensors = {"prompt_ids": gen.prompt_ids}
    steps = []
    for s in gen.steps:
        tensors |= {f"steps.{s.index}.{k}": getattr(s, k) for k in STEP_TENSORS if getattr(s, k) is not None}
        tensors |= {f"steps.{s.index}.site/{site}": t for site, t in s.sites.items()}
        scalars = {f.name: getattr(s, f.name) for f in fields(Step) if f.name not in STEP_TENSORS + ("sites",)}
        steps.append({**scalars, "top": [asdict(c) for c in s.top],
                      "processed_top": [asdict(c) for c in s.processed_top], "sites": list(s.sites)})  # fmt: skip
    ids = shown_ids(gen)
    options = {**asdict(gen.options), "edits": [[e.site, e.label] for e in as_edits(gen.options.edits)]}
    info = dict(
        kind="Generation", lab=str(gen.lab.name), arch=gen.lab.arch.as_dict(),
        dtype=str(gen.lab.dtype).removeprefix("torch."), settings=asdict(gen.settings), options=options,
        stop_reason=gen.stop_reason, text=gen.text, steps=steps, vocab=dict(zip(map(str, ids), gen.lab.tokens(ids))),
    )  # fmt: skip
    return saved.write(path, tensors, info)


def load_generation(path, *, lab=None) -> Generation:
    """What Generation.load(path, lab=None) reads: the steps with their candidates, logits, sites and lens."""
    f = saved.Reader(path, "Generation")
    info, arch = f.info, saved.arch_from(f.info["arch"])
    if lab is not None and not same_shape(lab.arch, arch):
        raise ValueError(
            f"{f.path} was generated by {info['lab']!r}, whose architecture differs from lab's {lab.name!r}"
        )
    steps = [load_step(f, s) for s in info["steps"]]
    if lab is None:
        vocab = {int(i): t for i, t in info["vocab"].items()}
        lab = saved.SavedLab(
            info["lab"], arch, getattr(torch, info["dtype"]), vocab, info["text"], [s.token_id for s in steps]
        )
    s = info["settings"]
    settings = Sampling(**{**s, "eos": tuple(s["eos"])})
    o = info["options"]
    edits = [Edit(site, unsaved_edit(site, label), label) for site, label in o["edits"]] or None
    tup = lambda x: None if x is None else tuple(x)  # noqa: E731
    options = Options(**{**o, "sites": tup(o["sites"]), "layers": tup(o["layers"]), "edits": edits})
    return Generation(lab, f.get("prompt_ids"), settings, options, steps, stop_reason=info["stop_reason"])


def same_shape(a: Arch, b: Arch) -> bool:
    """Whether two Archs describe the same model, whatever name each goes by (a local folder, a hub id)."""
    return {**a.as_dict(), "name": None} == {**b.as_dict(), "name": None}


def load_step(f: saved.Reader, s: dict) -> Step:
    i = s["index"]
    tensors = {k: f.get(f"steps.{i}.{k}") if f"steps.{i}.{k}" in f.names else None for k in STEP_TENSORS}
    sites = {site: f.get(f"steps.{i}.site/{site}") for site in s["sites"]}
    top = [Candidate(**c) for c in s["top"]]
    processed = [Candidate(**c) for c in s["processed_top"]]
    return Step(**{**s, **tensors, "sites": sites, "top": top, "processed_top": processed})


def unsaved_edit(site: str, label: str):
    """The stand-in for an edit's function, which a file cannot hold: running it says what to do instead."""

    def fn(x, at):
        raise RuntimeError(
            f"the edit at {site!r} ({label}) was loaded from a file, which keeps its label, not its function:"
            " pass edits= again (gen.branch(..., edits=...))"
        )

    return fn
