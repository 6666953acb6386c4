"""The chat: a Gradio conversation in, the Lab's reply out, streamed piece by piece.

A reply is a `Generation` (qwen2_lab/generate.py): the lab's own forward with a KV cache, one recorded step per
token. `request` checks what a user or an API client sent and turns Gradio's messages into the chat the model sees;
`start` prepares the reply's Generation (nothing runs yet) and `stream_text` runs it, yielding the growing text.
`respond` (the `chat` API endpoint, through `api_turn`) and `reply` (the page's chat, which also hands back the
Generation for the confidence view, Look inside and What if) are those pieces put together. Every refusal is a
`gr.Error` whose message names the problem and says what to do instead, so a bad request costs one message, never
the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import gradio as gr
import torch

from qwen2_lab import generate
from qwen2_lab.inputs import normalize_messages

MAX_MESSAGE_CHARS = 16_000  # one message; longer pastes are refused before any tokenizing
MAX_NEW_TOKENS_CAP = 4096  # the slider's end; the context window may cut it lower
LIMITS = {  # name: (lowest, highest) accepted; the sliders span the same ranges
    "temperature": (0.0, 2.0),
    "top_p": (0.01, 1.0),
    "top_k": (0, 200),
    "repetition_penalty": (1.0, 2.0),
}


@dataclass(frozen=True)
class Settings:
    """The sampling settings the sliders start at. temperature 0 means greedy decoding."""

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    repetition_penalty: float


def default_settings(lab) -> Settings:
    """The model's own generation config, as slider values (Qwen2-Instruct: 0.7 / 0.8 / 20 / 1.05, sampling on)."""
    gc = lab.model.generation_config
    sampling = bool(gc.do_sample)
    return Settings(
        temperature=float(gc.temperature if sampling and gc.temperature is not None else (0.7 if sampling else 0.0)),
        top_p=float(gc.top_p or 1.0),
        top_k=int(gc.top_k or 0),
        max_new_tokens=min(int(gc.max_new_tokens or 1024), max_new_tokens_limit(lab)),
        repetition_penalty=float(gc.repetition_penalty or 1.0),
    )


def max_new_tokens_limit(lab) -> int:
    """The most new tokens the slider offers: the cap, or less when the context window is smaller."""
    return max(1, min(MAX_NEW_TOKENS_CAP, lab.arch.max_position // 2))


def generation_kwargs(lab, temperature, top_p, top_k, max_new_tokens, repetition_penalty) -> dict:
    """Validated keyword arguments for the lab's generation (named as HF `generate` names them). Sampling settings
    are passed only when sampling."""
    temperature = _number("temperature", temperature)
    top_p = _number("top_p", top_p)
    top_k = _number("top_k", top_k, integer=True)
    repetition_penalty = _number("repetition_penalty", repetition_penalty)
    limit = max_new_tokens_limit(lab)
    max_new_tokens = _number("max_new_tokens", max_new_tokens, integer=True, bounds=(1, limit))
    kwargs = dict(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)
    if temperature == 0:  # greedy: the same reply every time, so the sampling knobs are left out
        return dict(kwargs, do_sample=False)
    return dict(kwargs, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)


def _number(name: str, value, *, integer: bool = False, bounds: tuple | None = None):
    lo, hi = bounds or LIMITS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number from {lo} to {hi}, got {value!r}") from None
    if not lo <= number <= hi or number != number:  # the second test catches NaN
        raise gr.Error(f"{name} must lie between {lo} and {hi}, got {value!r}")
    if integer and number != int(number):
        raise gr.Error(f"{name} must be a whole number, got {value!r}")
    return int(number) if integer else number


def message_text(message) -> str:
    """The text of a user's message (a string, or Gradio's content blocks), refused when empty or too long."""
    text = normalize_messages([{"role": "user", "content": message}])[0]["content"]
    if not text.strip():
        raise gr.Error("The message is empty: type a question, or click one of the examples.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise gr.Error(
            f"The message is {len(text):,} characters; this demo takes at most {MAX_MESSAGE_CHARS:,} per message."
            " Shorten it or send it in parts."
        )
    return text


def conversation(message, history, system_prompt: str | None) -> list[dict]:
    """The chat the model sees: the system prompt, the earlier turns, and the new message, as plain dicts.

    `history` is Gradio's list of {"role", "content"} messages (content may be a list of blocks).
    """
    text = message_text(message)
    try:
        earlier = [m for m in normalize_messages(history or []) if m["role"] in ("user", "assistant")]
    except ValueError as e:
        raise gr.Error(f"The chat history is malformed: {e}") from None
    system = [{"role": "system", "content": system_prompt}] if system_prompt and system_prompt.strip() else []
    return system + earlier + [{"role": "user", "content": text}]


def check_fits(lab, messages: list[dict], max_new_tokens: int) -> int:
    """The prompt's length in tokens; refuses a chat that, with the reply, would not fit the context window."""
    n = len(lab.encode(messages))
    window = lab.arch.max_position
    if n + max_new_tokens > window:
        raise gr.Error(
            f"The conversation is {n:,} tokens and the reply may take {max_new_tokens:,} more: together over"
            f" {lab.name}'s context window of {window:,} tokens. Clear the chat (or lower max new tokens) and ask again."
        )
    return n


def draw_seed() -> int:
    """The random seed of a sampled reply, drawn from torch's global generator (so `torch.manual_seed` fixes it).
    The reply's draws come from a generator seeded with it, so What if can regenerate with the same draws."""
    return int(torch.randint(0, 2**31 - 1, ()))


def start(lab, messages: list[dict], kwargs: dict, **record) -> generate.Generation:
    """The reply to `messages` as a Generation, prepared but not run: seeded when sampling, no [V] logits kept per
    step, and only what `record` asks for (the page: top=, and sites=/lens= for Look inside; the API: nothing)."""
    seed = draw_seed() if kwargs.get("do_sample") else None
    return lab.generation(messages, **kwargs, seed=seed, keep_logits=False, **{"top": 0, **record})


def stream_text(gen: generate.Generation) -> Iterator[str]:
    """Run `gen` and yield its text so far, one more piece per token (a branch starts from the text it keeps).

    When the caller stops early (stop button, a client that left), closing this generator closes the generation's
    stream, which stops at the next token instead of running on with nobody reading. (`respond`, `reply` and
    `api_turn` pass the close on the same way.)
    """
    text, grown = "".join(step.piece for step in gen.steps), False
    with closing(gen.stream()) as pieces:
        for piece in pieces:
            text, grown = text + piece, True
            yield text
    if not grown:
        yield text  # the model ended at once (an end-of-turn token first): still one reply, maybe empty


def request(
    lab, message, history, system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty
) -> tuple[list[dict], dict]:
    """The request checked: (the chat the model sees, keyword arguments for generate), or a gr.Error naming what is
    wrong. Nothing runs the model."""
    kwargs = generation_kwargs(lab, temperature, top_p, top_k, max_new_tokens, repetition_penalty)
    messages = conversation(message, history, system_prompt)
    check_fits(lab, messages, kwargs["max_new_tokens"])
    return messages, kwargs


def respond(lab, message, history, *settings) -> Iterator[str]:
    """Check the request, then stream the reply: each yield is the reply so far, one more piece each time.

    settings: system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty.
    """
    messages, kwargs = request(lab, message, history, *settings)
    yield from stream_text(start(lab, messages, kwargs))


def user_turn(message, history) -> list[dict]:
    """The chat with the user's message added at its end (checked first: an empty or too long one is refused)."""
    return [*(history or []), {"role": "user", "content": message_text(message)}]


def last_turn(history) -> tuple[list, dict]:
    """(the earlier messages, the user's message at the end of the chat), or a gr.Error when there is none."""
    history = list(history or [])
    if not history or history[-1].get("role") != "user":
        raise gr.Error("There is no message to answer: type one, or click one of the examples.")
    return history[:-1], history[-1]


def checked(lab, history, *settings) -> list[dict]:
    """`history` (ending with the user's message) once the request it makes is checked, before the model runs."""
    earlier, last = last_turn(history)
    request(lab, last["content"], earlier, *settings)
    return history


def reply(lab, history, *settings, **record) -> Iterator[tuple[list[dict], generate.Generation]]:
    """The page's chat: `history` ends with the user's message; yields (`history` with the model's reply growing at
    its end, the reply's Generation).

    settings: as `respond` takes them. record: what the Generation records (see `start`).
    """
    history = list(history or [])
    earlier, last = last_turn(history)
    messages, kwargs = request(lab, last["content"], earlier, *settings)
    yield from grow(history, start(lab, messages, kwargs, **record))


def grow(history: list, gen: generate.Generation) -> Iterator[tuple[list[dict], generate.Generation]]:
    """Run `gen`, yielding (`history` with its text growing as the last, assistant, message; gen)."""
    with closing(stream_text(gen)) as texts:  # closed at once when we are
        for text in texts:
            yield [*history, {"role": "assistant", "content": text}], gen


def api_turn(lab, message, history, *settings) -> Iterator[tuple[str, list[dict]]]:
    """The `chat` API: a client's message answered in its session's conversation. Yields (reply so far, the
    conversation with it), so a client reads the growing reply and its next message continues the conversation."""
    with closing(reply(lab, user_turn(message, history), *settings)) as chats:
        for chat, _ in chats:
            yield chat[-1]["content"], chat
