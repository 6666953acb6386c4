"""The page's shared parts: the components more than one panel reads, and the life of a turn.

A turn starts in one of several ways (a message, an example, retry, a failure sent back, a reply continued from a
token): each is a quick event that checks the request and writes the chat to show into `turn` (a refusal shows its
message and leaves the chat as it was: that event's only output is the hidden `turn`, so Gradio's error mark lands
on no visible component). `Page.answer` then shows the chat, streams the reply into it with the model (the session
keeps the reply's Generation in `gen`) and runs what each panel asked to run after a reply (`after_reply`) or when a
new turn shows (`on_turn`: e.g. Look inside clearing figures that no longer match).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr

from .serving import PRIVATE, on_model


def busy() -> gr.Textbox:
    """The textbox while the model answers: cleared, locked, its send button turned into a stop button."""
    return gr.Textbox(value="", interactive=False, submit_btn=False, stop_btn=True)


def ready() -> gr.Textbox:
    return gr.Textbox(interactive=True, submit_btn=True, stop_btn=False)


@dataclass
class Page:
    """What the panels share. The chat panel fills in its components; the others read them and hook onto turns."""

    lab: object
    chatbot: gr.Chatbot | None = None
    textbox: gr.Textbox | None = None
    settings: list = field(default_factory=list)  # system prompt, temperature, top_p, top_k, max new, rep. penalty
    record: gr.Checkbox | None = None  # record each reply for Look inside
    gen: gr.State | None = None  # the Generation of the chat's last reply (None when the chat does not end with one)
    turn: gr.State | None = None  # the chat to show when a checked turn starts
    stream_reply: object = None  # (chat, record, *settings) -> yields (chat, Generation): the page's reply
    checked_turn: object = None  # (message, chat, *settings) -> the chat with the message added, checked
    replies: list = field(default_factory=list)  # each way a reply ends (event dependencies)
    shown: list = field(default_factory=list)  # each way a new turn shows
    hooks: dict = field(default_factory=lambda: {"reply": [], "turn": []})

    def answer(self, started, stream, inputs, **api):
        """After the checked event `started` (whose output is `turn`): show the chat, stream the reply with `stream`
        (yielding (chat, Generation)), then everything panels hooked on. Returns the reply's event, to cancel."""
        shown = started.success(lambda chat: (busy(), chat), self.turn, [self.textbox, self.chatbot], queue=False,
                                **PRIVATE)  # fmt: skip
        replied = on_model(shown.success, stream, inputs, [self.chatbot, self.gen], **(api or PRIVATE))
        replied.then(ready, None, self.textbox, queue=False, **PRIVATE)
        self._attach("turn", shown)
        self._attach("reply", replied)
        return replied

    def after_reply(self, fn, inputs, outputs, **kwargs):
        """Run `fn` after every reply (after those started so far and those started later)."""
        self._hook("reply", (fn, inputs, outputs, kwargs))

    def on_turn(self, fn, inputs, outputs, **kwargs):
        """Run `fn` as each new turn shows, before the model answers."""
        self._hook("turn", (fn, inputs, outputs, kwargs))

    def _hook(self, when: str, hook: tuple):
        self.hooks[when].append(hook)
        for event in self.replies if when == "reply" else self.shown:
            self._then(event, hook)

    def _attach(self, when: str, event):
        (self.replies if when == "reply" else self.shown).append(event)
        for hook in self.hooks[when]:
            self._then(event, hook)

    @staticmethod
    def _then(event, hook: tuple):
        fn, inputs, outputs, kwargs = hook
        event.then(fn, inputs, outputs, **{**PRIVATE, **kwargs})
