"""The last reply, token by token: each token coloured by how sure the model was of it; click one to see its
alternatives, and continue the reply from there with one of them.

The page keeps the reply's `Generation` (qwen2_lab/generate.py) in the session. Each of its steps recorded the
chosen token's probability under the raw distribution (softmax of the logits) and under the one the token was drawn
from (after repetition penalty, temperature, top-k and top-p), and the best `TOP` candidates of both. No [V]-sized
logits and no KV cache are kept: continuing from token k (`Generation.branch`) reads the prompt and the k tokens kept
in one forward pass, then generates on, token by token.
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from qwen2_lab import viz

from . import chat, inside
from .chat import TOP
from .serving import PRIVATE, QUICK, refusals, refused, unlisted

BINS = [(0.9, "90% or more"), (0.5, "50 to 90%"), (0.2, "20 to 50%"), (0.0, "under 20%")]  # (lowest p, label)
COLORS = {"90% or more": "#d9ef8b", "50 to 90%": "#fee08b", "20 to 50%": "#fdae61", "under 20%": "#f46d43"}
HINT = "Click a token of the reply to see the tokens the model weighed there."


def confidence_bin(p: float) -> str:
    """The colour class of a token chosen with probability p."""
    return next(label for lowest, label in BINS if p >= lowest)


def shown_text(step) -> str:
    """What a token adds to the reply as the confidence view writes it: its piece of text, with each line break
    shown as ⏎ (the view draws one span per token, and a bare line break would draw none, nothing to click); an
    end-of-turn (or other special) token, which adds none, as itself; '' for the first bytes of a character that the
    next token ends."""
    if step.piece or "\ufffd" in step.token:
        return step.piece.replace("\n", "⏎")
    return step.token


def confidence(gen) -> list[tuple[str, str]] | None:
    """The reply as a gr.HighlightedText value: one (text, colour class) per token, in order, so that the index a
    click reports is the token's step."""
    if gen is None or not gen.steps:
        return None
    return [(shown_text(step), confidence_bin(step.prob)) for step in gen.steps]


def settings_words(gen) -> str:
    s = gen.settings
    if not s.do_sample:
        chosen = "greedy decoding"
    else:
        chosen = f"sampling at temperature {s.temperature:g}, top-k {s.top_k}, top-p {s.top_p:g}"
    if s.repetition_penalty not in (None, 1.0):
        chosen += f", repetition penalty {s.repetition_penalty:g}"
    return chosen


def details(gen, step: int) -> tuple[str, list[tuple[str, int]], int]:
    """What clicking token `step` shows: a note on it, its alternatives as (label, token id) choices, best first by
    raw probability, and the one offered first (the best that is not the chosen token)."""
    s = gen.steps[step]
    text = {c.id: c.text for c in s.top + s.processed_top} | {s.token_id: s.token}
    raw = {c.id: c.prob for c in s.top} | {s.token_id: s.prob}  # what was recorded: the top candidates' and its own
    after = {c.id: c.prob for c in s.processed_top} | {s.token_id: s.processed_prob}
    ids = sorted(text, key=lambda i: -raw.get(i, -1.0))

    def label(i: int) -> str:
        p, q = (f"{d[i]:.1%}" if i in d else f"below the top {TOP}" for d in (raw, after))
        return f"{text[i]!r}: {p} raw, {q} after the sampling settings" + (" (chosen)" if i == s.token_id else "")

    note = (
        f"**Token {step}**, {s.token!r}: probability {s.prob:.1%} under the model's raw distribution,"
        f" {s.processed_prob:.1%} under the one it was {'drawn' if gen.settings.do_sample else 'chosen'} from"
        f" ({settings_words(gen)}); entropy {s.entropy:.2f} bits."
        + (" You chose this token (the reply was continued from here)." if s.forced else "")
        + f"\n\nIts {len(ids)} best candidates are below: pick one and continue the reply from here with it."
    )
    others = [i for i in ids if i != s.token_id]
    return note, [(label(i), i) for i in ids], (others[0] if others else s.token_id)


def checked_fork(gen, step, token, history):
    """`gen` continued from token `step` with `token` instead, checked and not run yet (`Generation.branch(..., finish=False)`); or a
    gr.Error saying what is missing. `history` must end with gen's reply."""
    if gen is None or not gen.steps:
        raise refused("There is no reply to continue: chat first, then click a token of the reply.")
    if not history or history[-1].get("role") != "assistant":
        raise refused("The chat does not end with the reply to continue: ask again, then click one of its tokens.")
    if step is None:
        raise refused("Click a token of the reply first: the reply continues from the token you click.")
    if token is None:
        raise refused("Pick the token to continue with, among the alternatives shown.")
    try:
        return gen.branch(int(step), int(token), finish=False)
    except (IndexError, ValueError, TypeError) as e:
        raise refused(f"Cannot continue from token {step!r} with token id {token!r}: {e}") from None


@refusals
def continue_reply(gen, step, token, history) -> Iterator[tuple[list[dict], object]]:
    """The chat's last reply generated again from token `step` on, with `token` there: the tokens before it kept,
    the rest generated anew with the same settings. Yields (the chat with the new reply growing in place of the
    old, the new Generation)."""
    fork = checked_fork(gen, step, token, history)
    yield from chat.grow(list(history[:-1]), fork)


# ---- the panel ------------------------------------------------------------------------------------------------


def build(lab, page) -> None:
    """The reply with each token coloured by its probability; under it, what a clicked token weighed, and continue
    the reply from there with another token (a turn like any other: `page.answer`)."""
    with gr.Accordion("The last reply, token by token: how sure the model was", open=False, elem_id="tokens-panel"):
        confidence_view = gr.HighlightedText(
            label="Each token coloured by its probability (raw, when it was chosen); click one", elem_id="confidence",
            color_map=COLORS, show_legend=True, combine_adjacent=False, interactive=False,
        )  # fmt: skip
        note = gr.Markdown(HINT, elem_id="token-note")
        candidates = gr.Plot(show_label=False, elem_id="token-candidates")
        alternatives = gr.Radio([], label="Continue with", elem_id="alternatives")
        continue_btn = gr.Button("Continue from here with this token", elem_id="continue-btn")
    step, token = gr.Number(visible=False, precision=0), gr.Number(visible=False, precision=0)
    outputs = [confidence_view, step, note, candidates, alternatives]

    def pick(gen, clicked: gr.SelectData):
        if gen is None or not 0 <= clicked.index < len(gen.steps):
            raise refused("That reply is gone: ask again, then click a token of the new reply.")
        words, choices, offered = details(gen, clicked.index)
        figure = inside.fit_width(viz.candidates(gen, clicked.index))
        return clicked.index, words, figure, gr.Radio(choices=choices, value=offered)

    def from_token(gen, step, token, history):
        checked_fork(gen, step, token, history)
        return history

    continued = [page.gen, step, token, page.chatbot]
    page.answer(continue_btn.click(from_token, continued, page.turn, **QUICK), continue_reply, continued,
                **unlisted("continue_reply"))  # fmt: skip
    page.on_turn(lambda: (None, HINT), None, [confidence_view, note], queue=False)  # (the clicked step stays)
    page.after_reply(shown, page.gen, outputs, queue=False)
    page.chatbot.undo(lambda: shown(None), None, outputs, queue=False, **PRIVATE)
    page.chatbot.clear(lambda: shown(None), None, outputs, queue=False, **PRIVATE)
    confidence_view.select(pick, page.gen, [step, note, candidates, alternatives], **QUICK)
    alternatives.change(lambda token: token, alternatives, token, queue=False, **PRIVATE)


def shown(gen) -> tuple:
    """The panel for the reply `gen` (None: empty), before any token is clicked."""
    return confidence(gen), None, HINT, None, gr.Radio(choices=[], value=None)
