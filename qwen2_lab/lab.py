"""`Lab`: one loaded Qwen2 model, opened up.

    lab = qwen2_lab.load("tiny")
    lab.arch                                   # the shape, in plain numbers
    trace = lab.trace("1+1=", sites=["layers.*.attn.pattern"])
    for stage in lab.stages("1+1="): ...       # every stage, one at a time
    lab.trace("1+1=", edits=edits.zero_heads(1, [0]))           # the same, with a change made on the way
    gen = lab.generate_steps([{"role": "user", "content": "Hi"}], max_new_tokens=20)   # every token's choice
    gen = lab.generation(chat)                 # the same, checked but not run: gen.stream(), gen.run(), gen.finish()

Inputs everywhere: a string (tokenized as is: Qwen2 adds no BOS), chat messages (role/content dicts, rendered with
the chat template and the assistant prompt), or token ids (a list or a 1-D tensor): see qwen2_lab/inputs.py.
The Lab is the place to trace and walk the stages; generation lives in qwen2_lab/generate.py (a `Generation` owns
its life: run, stream, branch, redo; `generation`, `generate_steps`, `generate` and `stream` here make one), the
ready-made edits in qwen2_lab/edits.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from .allocator import keep_freed_memory
from .arch import arch_of
from .facts import MODEL_TYPES
from .forward import everything, lens_top, qwen2_forward, run
from .generate import Generation, start
from .inputs import encode
from .recorder import Recorder, resolve
from .trace import EXPLAIN, SiteFilter, Trace, estimate_bytes, split_site

DEFAULT_TRACE_LIMIT = 4 * 2**30  # bytes a trace may keep before lab.trace asks for sites= or layers=


class Stage(NamedTuple):
    """One stage of the forward pass, as `lab.stages` yields it. `tensor` has no batch dimension."""

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
        if self.device.type == "cpu":
            keep_freed_memory()  # repeated traces reuse their memory instead of faulting in fresh pages
        self.tokenizer = tokenizer
        self.name = name or model.config.name_or_path or model_type
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
        self,
        inputs,
        sites=None,
        layers=None,
        *,
        edits=None,
        lens: int = 0,
        to_cpu: bool = False,
        max_bytes: float | None = None,
    ) -> Trace:
        """Run the step-by-step forward, keeping only the sites asked for.

        sites: glob patterns over site names ("layers.*.attn.pattern", "*.moe.*"); None keeps every site.
        layers: the layers to keep sites of; None keeps all. to_cpu: move kept tensors to the CPU as they come.
        edits: changes to make on the way (qwen2_lab/edits.py): an Edit, a list of them, or {site: function};
          the trace then holds the edited run, and trace.edits says what was changed where.
        lens: also read the top `lens` tokens out of every layer's residual (the logit lens): trace.lens_ids and
          trace.lens_probs, [layers, S, lens].
        max_bytes: refuse (before running) a trace that would keep more than this; default 4 GiB.
        """
        ids = self.encode(inputs)
        keep = SiteFilter(sites, layers)
        keep.check(self.arch)
        resolved = resolve(edits, self.arch)
        limit = DEFAULT_TRACE_LIMIT if max_bytes is None else max_bytes
        need = estimate_bytes(self.arch, len(ids), keep.wants, self.model.dtype.itemsize)
        if need > limit:
            raise MemoryError(
                f"this trace would keep {need / 2**30:.1f} GiB ({len(ids)} tokens, {self.arch.n_layers} layers):"
                f" ask for less with sites=[...] and layers=[...], or raise max_bytes (now {limit / 2**30:.1f} GiB)"
            )
        positions = torch.arange(len(ids), device=ids.device)
        lens_fn = (lambda resid: lens_top(self.model, resid, lens)) if lens else None
        rec = Recorder(self.arch, keep, resolved, positions, read_lens=lens_fn, to_cpu=to_cpu)
        logits = run(qwen2_forward(self.model, ids[None], rec.wants), rec)[0].detach()  # (S, V)
        logits = logits.to("cpu") if to_cpu else logits
        store = {site: (logits if site == "logits" else t) for site, t in rec.store.items()}
        trace = Trace(ids.cpu(), self.tokens(ids), self.arch, logits, store, edits=rec.applied)
        if lens:
            trace.lens_probs = torch.stack([p for p, _ in rec.lens_out]).to(logits.device)  # (L, S, lens)
            trace.lens_ids = torch.stack([i for _, i in rec.lens_out]).to(logits.device)  # (L, S, lens)
            if self.tokenizer is not None:
                unique = trace.lens_ids.unique().tolist()
                trace.lens_text = dict(zip(unique, self.tokens(unique)))
        return trace

    def stages(self, inputs, *, edits=None) -> Iterator[Stage]:
        """Yield every stage of the forward pass in order, each with its site, layer, tensor and one-line meaning.

        With `edits`, each stage shows the tensor the forward goes on with (after the edit at that site)."""
        ids = self.encode(inputs)
        rec = Recorder(self.arch, SiteFilter([]), resolve(edits, self.arch), torch.arange(len(ids), device=ids.device))
        with torch.no_grad():
            stages = qwen2_forward(self.model, ids[None], everything)
            site, t = next(stages)
            while True:
                t = rec(site, t)
                layer, name = split_site(site)
                yield Stage(site, layer, t[0], EXPLAIN[name])
                try:
                    site, t = stages.send(t)
                except StopIteration:
                    return

    # ---- generating: qwen2_lab/generate.py ---------------------------------------------------------------------

    def generation(self, inputs, **kwargs) -> Generation:
        """A Generation of `inputs`, checked but not run yet: `gen.stream()` yields its text as it comes, `gen.run()`
        its steps, `gen.finish()` runs it to the end. Arguments: see `qwen2_lab.generate.start`."""
        return start(self, inputs, **kwargs)

    def generate_steps(self, inputs, **kwargs) -> Generation:
        """Generate on the lab's own forward with a KV cache, recording every new token's choice: a finished
        `Generation` (its steps, text, branch, redo). Arguments: see `qwen2_lab.generate.start`."""
        return start(self, inputs, **kwargs).finish()

    def generate(self, inputs, **kwargs) -> str:
        """The model's continuation as text (greedy or sampled as the model's generation config says; the same
        keyword arguments as `generate_steps`)."""
        return self.generate_steps(inputs, top=0, **kwargs).text

    def stream(self, inputs, **kwargs) -> Iterator[str]:
        """Yield the continuation in text pieces, one per token as it is chosen (half a UTF-8 character is held
        back until its other bytes come). Closing the iterator early stops generation at the next token."""
        return start(self, inputs, **{"top": 0, "keep_logits": False, **kwargs}).stream()
