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
from dataclasses import dataclass, field, replace

import torch

from .edits import resolve
from .forward import qwen2_forward, run, unchanged
from .inputs import token_id
from .recorder import Recorder
from .sampling import LENGTH_KNOBS, SAMPLING_KNOBS, Sampling, choose, sampling
from .trace import SiteFilter


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

    lab: object = field(repr=False)
    prompt_ids: torch.Tensor  # [P]
    settings: Sampling
    options: Options
    steps: list[Step] = field(default_factory=list)
    stop_reason: str = ""  # "eos", "max_new_tokens", or "" while running
    cache: object = field(default=None, repr=False)  # the KV cache after the last step, with keep_cache=True
    forced_next: int | None = None  # a token to take at the next step instead of choosing one (a branch)

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

    def branch(self, step: int, token, **changes) -> Generation:
        """Generate again from step `step` with `token` (an id, or a text that is exactly one token) in place of
        the one chosen there. Steps before it are kept; the rest is generated anew with the same settings (or those
        in `changes`: sampling arguments and options such as seed, edits, sites)."""
        gen = self.fork(step, token, **changes)
        for _ in run_steps(gen):
            pass
        return gen

    def fork(self, step: int, token, **changes) -> Generation:
        """`branch`, checked but not run yet: run it with `run_steps` (or `stream_pieces`) to watch it grow."""
        if not 0 <= step < len(self.steps):
            raise IndexError(f"step {step} out of range: this generation has steps 0..{len(self.steps) - 1}")
        forced = token_id(self.lab.tokenizer, token, self.lab.arch.vocab)
        settings, options = split_changes(self.lab.model, self.settings, self.options, changes)
        return Generation(self.lab, self.prompt_ids, settings, options, list(self.steps[:step]), forced_next=forced)

    def __repr__(self) -> str:
        return f"Generation({len(self.steps)} tokens, {self.stop_reason or 'running'}: {self.text[:60]!r})"

    def save(self, path):
        """Write this generation to one safetensors file (qwen2_lab/saved.py); returns the path."""
        from .saved import save_generation

        return save_generation(self, path)

    @classmethod
    def load(cls, path, *, lab=None) -> Generation:
        """A saved generation. Without `lab` it has no model (a SavedLab stands in: text, tokens and every view
        work; branch needs lab=); see qwen2_lab/saved.py."""
        from .saved import load_generation

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


def generate_steps(lab, inputs, **kwargs) -> Generation:
    """Generate a continuation of `inputs` (a string, chat messages or ids) on the lab's forward, recording each
    new token; see `prepare` for the arguments."""
    gen = prepare(lab, inputs, **kwargs)
    for _ in run_steps(gen):
        pass
    return gen


def iter_steps(lab, inputs, **kwargs) -> Iterator[Step]:
    """`generate_steps`, one step at a time as each token is chosen; closing the iterator stops generation."""
    yield from run_steps(prepare(lab, inputs, **kwargs))


def stream(lab, inputs, **kwargs) -> Iterator[str]:
    """The continuation as text pieces, one per token as it is chosen (the steps' pieces; a character cut short at
    the very end comes last). Closing the iterator stops generation at the next token."""
    yield from stream_pieces(prepare(lab, inputs, **{"top": 0, "keep_logits": False, **kwargs}))


def stream_pieces(gen: Generation) -> Iterator[str]:
    """The text a prepared Generation adds as it runs (`stream`'s pieces; a branch's kept steps are not repeated).
    Closing the iterator stops generation at the next token."""
    sent = sum(len(s.piece) for s in gen.steps)  # the text already there: a branch's kept steps
    for step in run_steps(gen):
        if step.piece:
            sent += len(step.piece)
            yield step.piece
    if gen.text[sent:]:
        yield gen.text[sent:]


def prepare(
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
    """A Generation ready to run (`run_steps`), with everything checked before any token is generated.

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
    SiteFilter(options.sites, options.layers).check(lab.arch)
    resolve(edits, lab.arch)
    if len(ids) + settings.max_new_tokens > lab.arch.max_position:
        raise ValueError(
            f"the prompt is {len(ids):,} tokens and max_new_tokens {settings.max_new_tokens:,}: together over the"
            f" context window of {lab.arch.max_position:,} tokens; shorten the prompt or lower max_new_tokens"
        )
    return Generation(lab, ids, settings, options)


@torch.no_grad()
def run_steps(gen: Generation) -> Iterator[Step]:
    """Run `gen` on from where it is to its end, appending and yielding each Step. The first forward reads the
    prompt and the tokens already chosen; then one token at a time, with the KV cache."""
    from transformers import DynamicCache

    lab, s, o = gen.lab, gen.settings, gen.options
    model, device = lab.model, gen.prompt_ids.device
    keep, edits = SiteFilter(o.sites, o.layers), resolve(o.edits, lab.arch)
    processors = s.processors(len(gen.prompt_ids))
    draws = None if o.seed is None else torch.Generator(device=device).manual_seed(o.seed)
    pieces = Detokenizer(lab.tokenizer)
    for step in gen.steps:  # the steps kept from before (a branch): the detokenizer must know the text so far
        pieces.add(step.token_id)
    chosen = torch.tensor(gen.token_ids, dtype=torch.long, device=device)
    seq = torch.cat([gen.prompt_ids, chosen])[None]  # (1, T): every token so far
    new = seq  # what the next forward reads: everything first, then one token at a time
    cache = DynamicCache(config=model.config)
    lens_fn = (lambda resid: lab.read_out(resid, o.lens)) if o.lens else None
    while len(gen.steps) < s.max_new_tokens and gen.stop_reason != "eos":
        start = cache.get_seq_length()
        positions = torch.arange(start, seq.shape[1], device=device)  # (S,) of the tokens this forward reads
        rec = Recorder(lab.arch, keep, edits, positions, lens=lens_fn, last_only=True)
        stages = qwen2_forward(model, new, rec.wants, cache=cache, all_logits=False)
        logits = run(stages, unchanged if rec.idle else rec)[0, -1].float()  # (V,) next-token logits, as HF reads them
        scores = processors(seq, logits[None].clone())[0] if processors else logits  # (V,) after the processors
        forced, gen.forced_next = gen.forced_next, None
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

    def flush(self) -> str:
        """What is still held back (an incomplete character at the very end)."""
        text = self.tokenizer.decode(self.line, skip_special_tokens=True) if self.line and self.tokenizer else ""
        piece = text[self.sent :]
        self.line, self.sent = [], 0
        return piece
