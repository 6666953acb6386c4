"""`Lab`: one loaded Qwen2 model, opened up.

    lab = qwen2_lab.load("tiny")
    lab.arch                                   # the shape, in plain numbers
    trace = lab.trace("1+1=", sites=["layers.*.attn.pattern"])
    for stage in lab.step("1+1="): ...         # every stage, one at a time
    lab.generate([{"role": "user", "content": "Hi"}], max_new_tokens=20)

Inputs everywhere: a string (tokenized as is: Qwen2 adds no BOS), chat messages (role/content dicts, rendered with
the chat template and the assistant prompt), or token ids (a list or a 1-D tensor).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import NamedTuple

import torch

from .arch import arch_of
from .facts import MODEL_TYPES
from .forward import everything, qwen2_forward, rms_norm
from .inputs import encode
from .trace import EXPLAIN, SiteFilter, Trace, estimate_bytes, split_site

DEFAULT_TRACE_LIMIT = 4 * 2**30  # bytes a trace may keep before lab.trace asks for sites= or layers=


class Stage(NamedTuple):
    """One stage of the forward pass, as `lab.step` yields it. `tensor` has no batch dimension."""

    site: str
    layer: int | None
    tensor: torch.Tensor
    why: str

    def __repr__(self) -> str:
        return f"{self.site:<28} {str(list(self.tensor.shape)):<18} {self.why}"


class Lab:
    """Wraps an HF `Qwen2ForCausalLM` or `Qwen2MoeForCausalLM`; `tokenizer` may be None when inputs are token ids."""

    def __init__(self, model, tokenizer=None, *, name: str | None = None):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in MODEL_TYPES or not hasattr(model, "lm_head"):
            raise TypeError(
                f"Lab wraps a Qwen2ForCausalLM or Qwen2MoeForCausalLM, got {type(model).__name__}"
                f" (model_type {model_type!r}); load one with qwen2_lab.load(...) or transformers' from_pretrained"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or model.config._name_or_path or model_type
        self.arch = arch_of(model.config, self.name)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def __repr__(self) -> str:
        return f"Lab({self.name!r}, {self.arch.model_type}, {self.arch.total_params / 1e6:,.1f}M params, {self.dtype}, {self.device})"

    # ---- inputs ------------------------------------------------------------------------------------------------

    def encode(self, inputs) -> torch.Tensor:
        """Token ids [S] for a string, chat messages or ids (see qwen2_lab/inputs.py), on the model's device."""
        return encode(self.tokenizer, inputs, self.arch.vocab).to(self.device)

    def tokens(self, ids) -> list[str]:
        """Each token as text (its own bytes decoded; '�' for a piece of a multi-byte character)."""
        ids = [int(i) for i in ids]
        if self.tokenizer is None:
            return [str(i) for i in ids]
        return [self.tokenizer.decode([i]) for i in ids]

    # ---- looking inside ----------------------------------------------------------------------------------------

    @torch.no_grad()  # not inference_mode: kept tensors stay ordinary tensors, usable with the weights afterwards
    def trace(
        self, inputs, sites=None, layers=None, *, lens: int = 0, to_cpu: bool = False, max_bytes: float | None = None
    ) -> Trace:
        """Run the step-by-step forward, keeping only the sites asked for.

        sites: glob patterns over site names ("layers.*.attn.pattern", "*.moe.*"); None keeps every site.
        layers: the layers to keep sites of; None keeps all. to_cpu: move kept tensors to the CPU as they come.
        lens: also read the top `lens` tokens out of every layer's residual (the logit lens): trace.lens_ids and
          trace.lens_probs, [layers, S, lens].
        max_bytes: refuse (before running) a trace that would keep more than this; default 4 GiB.
        """
        ids = self.encode(inputs)
        keep = SiteFilter(sites, layers)
        keep.check(self.arch)
        limit = DEFAULT_TRACE_LIMIT if max_bytes is None else max_bytes
        need = estimate_bytes(self.arch, len(ids), keep.wants, self.model.dtype.itemsize)
        if need > limit:
            raise MemoryError(
                f"this trace would keep {need / 2**30:.1f} GiB ({len(ids)} tokens, {self.arch.n_layers} layers):"
                f" ask for less with sites=[...] and layers=[...], or raise max_bytes (now {limit / 2**30:.1f} GiB)"
            )
        store, logits, lens_top = {}, None, []
        for site, t in qwen2_forward(self.model, ids, keep.wants):
            if site == "logits":
                logits = _keep(t, to_cpu)
            if keep.wants(site):
                store[site] = logits if site == "logits" else _keep(t, to_cpu)
            if lens and site.endswith(".resid_post"):
                lens_top.append(self.read_out(t[0], lens))
        trace = Trace(token_ids=ids.cpu(), tokens=self.tokens(ids), arch=self.arch, logits=logits, store=store)
        if lens:
            trace.lens_probs = torch.stack([p for p, _ in lens_top]).to(logits.device)  # (L, S, lens)
            trace.lens_ids = torch.stack([i for _, i in lens_top]).to(logits.device)  # (L, S, lens)
            if self.tokenizer is not None:
                unique = trace.lens_ids.unique().tolist()
                trace.lens_text = dict(zip(unique, self.tokens(unique)))
        return trace

    def read_out(self, resid: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """The logit lens: a residual [S, H] read as if it were the last layer's (final norm, lm_head, softmax).

        Returns the top-k probabilities and token ids, [S, k] each.
        """
        logits = self.model.lm_head(rms_norm(resid, self.model.model.norm))  # (S, V)
        return torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)

    def step(self, inputs) -> Iterator[Stage]:
        """Yield every stage of the forward pass in order, each with its site, layer, tensor and one-line meaning."""
        ids = self.encode(inputs)
        with torch.no_grad():
            for site, t in qwen2_forward(self.model, ids, everything):
                layer, name = split_site(site)
                yield Stage(site, layer, t[0], EXPLAIN[name])

    # ---- generating --------------------------------------------------------------------------------------------

    def generate(self, inputs, **generation_kwargs) -> str:
        """The model's continuation as text (HF `generate`; its kwargs pass through)."""
        return "".join(self.stream(inputs, _streaming=False, **generation_kwargs))

    def stream(self, inputs, _streaming: bool = True, **generation_kwargs) -> Iterator[str]:
        """Yield the continuation in text pieces as HF `generate` produces them.

        Closing the iterator early (a client that leaves) stops generation at the next token.
        """
        from transformers import StoppingCriteria, StoppingCriteriaList

        if self.tokenizer is None:
            raise ValueError("generating text needs a tokenizer: Lab(model, tokenizer)")
        ids = self.encode(inputs)[None]  # (1, S)
        kwargs = dict(max_new_tokens=256) if self.model.generation_config.max_new_tokens is None else {}
        kwargs.update(generation_kwargs)
        if not _streaming:
            with torch.inference_mode():
                out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            yield self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            return

        stop = threading.Event()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer = TokenStreamer(self.tokenizer, timeout=600)
        kwargs["stopping_criteria"] = StoppingCriteriaList([_Stop(), *kwargs.get("stopping_criteria", [])])
        failure = []

        def run():
            try:
                with torch.inference_mode():
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kwargs)
            except Exception as e:  # surfaced in the caller's thread below
                failure.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            stop.set()
            thread.join()
        if failure:
            raise failure[0]


class TokenStreamer:
    """Text pieces as `generate` produces tokens, one per token (HF's TextIteratorStreamer waits for a space).

    Only an incomplete UTF-8 character (decoded as '\ufffd') is held back until its next byte arrives. The prompt,
    passed first by `generate`, is skipped; special tokens are left out. Iterate from another thread.
    """

    def __init__(self, tokenizer, timeout: float | None = None):
        import queue

        self.tokenizer, self.timeout = tokenizer, timeout
        self.pieces: queue.Queue = queue.Queue()
        self.line: list[int] = []  # the tokens of the current line, decoded together so merges across tokens hold
        self.sent = 0  # characters of the current line already sent
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate passes the prompt first
            self.prompt_seen = True
            return
        self.line += value.flatten().tolist()
        text = self.tokenizer.decode(self.line, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half a character: wait for the rest of its bytes
            return
        if text[self.sent :]:
            self.pieces.put(text[self.sent :])
        self.sent = len(text)
        if text.endswith("\n"):  # start a new line: decoding stays cheap however long the answer
            self.line, self.sent = [], 0

    def end(self) -> None:
        text = self.tokenizer.decode(self.line, skip_special_tokens=True) if self.line else ""
        if text[self.sent :]:
            self.pieces.put(text[self.sent :])
        self.line, self.sent = [], 0
        self.pieces.put(None)

    def __iter__(self):
        while (piece := self.pieces.get(timeout=self.timeout)) is not None:
            yield piece


def _keep(t: torch.Tensor, to_cpu: bool) -> torch.Tensor:
    t = t[0].detach()  # drop the batch dimension
    return t.to("cpu") if to_cpu else t
