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

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import gradio as gr
import torch

from qwen2_lab import generate
from qwen2_lab.facts import DEFAULT_SYSTEM_PROMPT
from qwen2_lab.inputs import InputError, normalize_messages, number

from . import examples, inside
from .page import ready
from .serving import MODEL_GROUP, PRIVATE, QUICK, on_gpu, refusals, refused, unlisted

TOP = 5  # candidates recorded per token: the alternatives a click on a token shows (tokens.py)
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


def setting(name: str, value, low, high, integer: bool = False):
    """One sampling setting from the page or a client, within the page's bounds (`qwen2_lab.inputs.number`; None is
    refused too: every setting is needed)."""
    if value is None:
        raise InputError(f"{name} must be a number, got None")
    return number(name, value, low=low, high=high, integer=integer)


def generation_kwargs(lab, temperature, top_p, top_k, max_new_tokens, repetition_penalty) -> dict:
    """Validated keyword arguments for the lab's generation (named as HF `generate` names them). Sampling settings
    are passed only when sampling."""
    temperature, top_p, top_k, repetition_penalty = (
        setting(name, value, *LIMITS[name], integer=name == "top_k")
        for name, value in zip(LIMITS, (temperature, top_p, top_k, repetition_penalty))
    )
    max_new_tokens = setting("max_new_tokens", max_new_tokens, 1, max_new_tokens_limit(lab), integer=True)
    kwargs = dict(max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)
    if temperature == 0:  # greedy: the same reply every time, so the sampling knobs are left out
        return dict(kwargs, do_sample=False)
    return dict(kwargs, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k)


def message_text(message) -> str:
    """The text of a user's message (a string, or Gradio's content blocks), refused when empty or too long."""
    text = normalize_messages([{"role": "user", "content": message}])[0]["content"]
    if not text.strip():
        raise refused("The message is empty: type a question, or click one of the examples.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise refused(
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
        raise refused(f"The chat history is malformed: {e}") from None
    system = [{"role": "system", "content": system_prompt}] if system_prompt and system_prompt.strip() else []
    return system + earlier + [{"role": "user", "content": text}]


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


@refusals
def request(lab, message, history, *settings, **record) -> generate.Generation:
    """The reply to `message` after `history`, checked (the settings, the message, the context window: the lab
    refuses a chat that would not fit with the reply) and not run yet; a refusal is a gr.Error naming the problem.

    settings: system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty.
    """
    system_prompt, *sampling = settings
    kwargs = generation_kwargs(lab, *sampling)
    return start(lab, conversation(message, history, system_prompt), kwargs, **record)


@refusals
def respond(lab, message, history, *settings) -> Iterator[str]:
    """Check the request, then stream the reply: each yield is the reply so far, one more piece each time."""
    yield from stream_text(request(lab, message, history, *settings))


def user_turn(message, history) -> list[dict]:
    """The chat with the user's message added at its end (checked first: an empty or too long one is refused)."""
    return [*(history or []), {"role": "user", "content": message_text(message)}]


def last_turn(history) -> tuple[list, dict]:
    """(the earlier messages, the user's message at the end of the chat), or a gr.Error when there is none."""
    history = list(history or [])
    if not history or history[-1].get("role") != "user":
        raise refused("There is no message to answer: type one, or click one of the examples.")
    return history[:-1], history[-1]


def checked(lab, history, *settings) -> list[dict]:
    """`history` (ending with the user's message) once the request it makes is checked, before the model runs."""
    earlier, last = last_turn(history)
    request(lab, last["content"], earlier, *settings)
    return history


@refusals
def reply(lab, history, *settings, **record) -> Iterator[tuple[list[dict], generate.Generation]]:
    """The page's chat: `history` ends with the user's message; yields (`history` with the model's reply growing at
    its end, the reply's Generation). record: what the Generation records (see `start`)."""
    history = list(history or [])
    earlier, last = last_turn(history)
    yield from grow(history, request(lab, last["content"], earlier, *settings, **record))


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


# ---- the panel: the chat, its settings and the verdict under it; the `/chat` API on the same path ------------------


def build(lab, page) -> None:
    """The chat with its examples (each button shows its prompt), the verdict on a reply to an example right under
    it, the message box, the settings; and the events that start a turn from a message, an example or retry."""
    shown = [{"text": e["prompt"], "display_text": f"{e['label']}: {e['prompt']}"} for e in examples.examples(lab)]
    page.chatbot = gr.Chatbot(label=lab.name, height=360, elem_id="chatbot", examples=shown)
    verdict = gr.Markdown(elem_id="verdict")
    page.textbox = gr.Textbox(
        placeholder="Ask anything, or click an example", show_label=False, elem_id="chat-input",
        max_length=MAX_MESSAGE_CHARS, submit_btn=True, stop_btn=False,
    )  # fmt: skip
    with gr.Accordion("Settings: system prompt and sampling", open=False):
        page.settings = settings_controls(lab)
        page.record = record_box(lab.arch)
    page.gen, page.turn = gr.State(), gr.State()
    wire(lab, page)
    page.on_turn(lambda: "", None, verdict, queue=False)
    page.after_reply(lambda history: examples.verdict(lab, history), page.chatbot, verdict, queue=False)
    api(lab, page)


def settings_controls(lab) -> list:
    """The system prompt and the sampling sliders, starting at the model's own generation config."""
    defaults = default_settings(lab)
    lo = LIMITS
    return [
        gr.Textbox(DEFAULT_SYSTEM_PROMPT, label="System prompt", lines=2),
        gr.Slider(*lo["temperature"], defaults.temperature, step=0.05, label="Temperature (0 = greedy)"),
        gr.Slider(*lo["top_p"], defaults.top_p, step=0.01, label="Top-p"),
        gr.Slider(*lo["top_k"], defaults.top_k, step=1, label="Top-k (0 = off)"),
        gr.Slider(1, max_new_tokens_limit(lab), defaults.max_new_tokens, step=1, label="Max new tokens"),
        gr.Slider(*lo["repetition_penalty"], defaults.repetition_penalty, step=0.01, label="Repetition penalty"),
    ]


def record_box(arch) -> gr.Checkbox:
    return gr.Checkbox(
        inside.record_by_default(arch), elem_id="record-box",
        label="Record each new token for Look inside (its attention in one layer, its routing there, the logit lens)",
        info=f"The logit lens adds about {inside.lens_cost(arch):.1f} forward passes' work per token on this"
        " model. Off: Look inside traces the conversation instead.",
    )  # fmt: skip


def wire(lab, page) -> None:
    """Send, click an example, retry (each checked first, then answered by `page.answer`); stop, undo."""

    def stream_reply(history, record, *settings):
        options = dict(top=TOP, **(inside.record_options(lab.arch) if record else {}))
        yield from reply(lab, history, *settings, **options)

    def send(message, history, *settings):
        return checked(lab, user_turn(message, history), *settings)

    page.checked_turn = send  # the chat with a message added, checked: for panels that start a turn with a message

    def start_example(example: gr.SelectData, *settings):
        return checked(lab, user_turn(example.value["text"], []), *settings)

    def retry(last: gr.RetryData, history, *settings):
        return checked(lab, history[: last.index + 1], *settings)  # up to the user's message asked again

    def undo(last: gr.UndoData, history):
        return history[: last.index], message_text(history[last.index]["content"]), None  # the message to edit

    page.stream_reply = stream_reply
    inputs = [page.chatbot, page.record, *page.settings]
    page.answer(page.textbox.submit(send, [page.textbox, page.chatbot, *page.settings], page.turn, **QUICK),
                stream_reply, inputs, **unlisted("reply"))  # fmt: skip
    page.answer(page.chatbot.example_select(start_example, page.settings, page.turn, **QUICK), stream_reply, inputs)
    page.answer(page.chatbot.retry(retry, [page.chatbot, *page.settings], page.turn, **QUICK), stream_reply, inputs)
    page.textbox.stop(ready, None, page.textbox, cancels=page.replies, queue=False, **PRIVATE)
    page.chatbot.undo(undo, [page.chatbot], [page.chatbot, page.textbox, page.gen], queue=False, **PRIVATE)
    page.chatbot.clear(lambda: None, None, page.gen, queue=False, **PRIVATE)


CONVERSATIONS = 1024  # the `/chat` API keeps the conversations of this many client sessions, the latest used


def api(lab, page) -> None:
    """The `chat` API: a streamed reply, in a conversation kept per client session, on the page's own path (`reply`,
    in the model's concurrency group), with the page's settings as defaults. Values reach `api_turn` as sent, so a
    bad setting is answered by the check that names it."""
    d, kept = default_settings(lab), OrderedDict()

    def chat(message: str, request: gr.Request, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
             temperature: float = d.temperature, top_p: float = d.top_p, top_k: int = d.top_k,
             max_new_tokens: int = d.max_new_tokens, repetition_penalty: float = d.repetition_penalty) -> str:  # fmt: skip
        """Answer `message` in this session's conversation; the reply streams as it grows."""
        settings = (system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty)
        session = request.session_hash
        for text, conversation_so_far in api_turn(lab, message, kept.get(session, []), *settings):
            kept[session] = conversation_so_far  # kept as it grows: a client that stops keeps what it read
            kept.move_to_end(session)
            yield text
        while len(kept) > CONVERSATIONS:
            kept.popitem(last=False)

    gr.api(on_gpu(refusals(chat)), api_name="chat", concurrency_id=MODEL_GROUP, concurrency_limit=1)
