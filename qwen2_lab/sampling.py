"""How the next token is chosen from the logits, exactly as transformers' `generate` chooses it.

The settings are the model's generation config overridden by the caller's keyword arguments, with HF's defaults
for what neither sets; bad values are refused before any token is generated. HF's own logits processors turn the
raw logits into scores: repetition penalty and min_new_tokens first, then, when sampling, temperature, top-k, top-p
and min-p, in that order. Greedy decoding takes the highest score; sampling draws from softmax(scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .inputs import InputError, number

DEFAULT_MAX_NEW_TOKENS = 256  # when the model's generation config sets none
# What HF generate uses for a setting that neither the caller nor the model's generation config sets (transformers'
# GenerationConfig documentation): sampling, when on, keeps the 50 best tokens unless told otherwise.
HF_DEFAULTS = dict(do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0)
SAMPLING_KNOBS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")
LENGTH_KNOBS = ("max_new_tokens", "min_new_tokens")


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: the model's generation config, overridden by the caller's keyword arguments."""

    do_sample: bool
    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None
    repetition_penalty: float | None
    max_new_tokens: int
    min_new_tokens: int | None
    eos: tuple[int, ...]

    def processors(self, prompt_length: int):
        """HF's logits processors for these settings, in the order HF `generate` applies them."""
        from transformers import (
            LogitsProcessorList,
            MinNewTokensLengthLogitsProcessor,
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        out = LogitsProcessorList()
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            out.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.min_new_tokens and self.eos:
            out.append(MinNewTokensLengthLogitsProcessor(prompt_length, self.min_new_tokens, list(self.eos)))
        if self.do_sample:
            if self.temperature is not None and self.temperature != 1.0:
                out.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                out.append(TopKLogitsWarper(self.top_k))
            if self.top_p is not None and self.top_p < 1.0:
                out.append(TopPLogitsWarper(self.top_p))
            if self.min_p is not None:
                out.append(MinPLogitsWarper(self.min_p))
        return out


def sampling(model, **kwargs) -> Sampling:
    """The settings `generate` would use: the model's generation config, then `kwargs`; bad values refused here,
    before any token is generated."""
    unknown = set(kwargs) - set(SAMPLING_KNOBS) - set(LENGTH_KNOBS)
    if unknown:
        raise InputError(
            f"unknown generation argument(s) {sorted(unknown)}: the lab takes {', '.join(SAMPLING_KNOBS + LENGTH_KNOBS)}"
        )
    gc = model.generation_config
    value = {name: kwargs.get(name, getattr(gc, name, None)) for name in SAMPLING_KNOBS + LENGTH_KNOBS}
    value = {name: HF_DEFAULTS.get(name) if v is None else v for name, v in value.items()}
    eos = gc.eos_token_id
    eos = () if eos is None else tuple([eos] if isinstance(eos, int) else eos)
    s = Sampling(
        do_sample=bool(value["do_sample"]),
        temperature=number("temperature", value["temperature"], low=0, open_low=True),
        top_k=number("top_k", value["top_k"], low=0, integer=True),
        top_p=number("top_p", value["top_p"], low=0, high=1, open_low=True),
        min_p=number("min_p", value["min_p"], low=0, high=1),
        repetition_penalty=number("repetition_penalty", value["repetition_penalty"], low=0, open_low=True),
        max_new_tokens=number(
            "max_new_tokens", _or(value["max_new_tokens"], DEFAULT_MAX_NEW_TOKENS), low=1, integer=True
        ),
        min_new_tokens=number("min_new_tokens", value["min_new_tokens"], low=0, integer=True),
        eos=eos,
    )
    return s


def _or(value, default):
    return default if value is None else value


def choose(scores: torch.Tensor, do_sample: bool, draws: torch.Generator | None) -> int:
    """HF's choice: the highest score (greedy), or a draw from softmax(scores) (sampling)."""
    if not do_sample:
        return int(torch.argmax(scores))
    return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=draws))
