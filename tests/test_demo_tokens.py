"""The web demo's token panel (demo/lab_demo/tokens.py): the reply token by token, a clicked token's alternatives,
the reply continued from a token; and the page's own events called by name through `gradio_client` on the served
app. Each result is compared with the lab's own generation run directly (`Generation.branch`, `generate_steps`).
"""

from __future__ import annotations

import gradio as gr
import pytest
from gradio_client.exceptions import AppError
from lab_demo import chat, inside, tokens

from qwen2_lab import edits

from .helpers import GREEDY_24 as GREEDY
from .helpers import QUESTION, SAMPLED, as_chatbot, content, direct, other_token, page_reply


def test_each_token_is_coloured_by_its_probability(demo_lab):
    _, gen = page_reply(demo_lab)
    value = tokens.confidence(gen)
    assert [label for _, label in value] == [tokens.confidence_bin(s.prob) for s in gen.steps]
    assert "".join(text for text, _ in value) == gen.text.replace("\n", "⏎") + "".join(
        s.token for s in gen.steps if s.token_id in gen.settings.eos
    )  # the text with its line breaks shown (a bare one would draw no span to click), the end of turn as itself
    assert "\n" in gen.text and not any("\n" in text for text, _ in value)
    assert tokens.confidence_bin(0.95) == "90% or more" and tokens.confidence_bin(0.1) == "under 20%"
    assert set(tokens.COLORS) == {label for _, label in tokens.BINS}
    assert tokens.confidence(None) is None


def test_a_clicked_token_shows_its_alternatives_raw_and_after_the_sampling_settings(demo_lab):
    _, gen = page_reply(demo_lab, settings=SAMPLED)
    k = min(3, len(gen.steps) - 1)
    step = gen.steps[k]
    note, choices, offered = tokens.details(gen, k)
    ids = [i for _, i in choices]
    assert set(ids) == {c.id for c in step.top} | {c.id for c in step.processed_top} | {step.token_id}
    assert offered != step.token_id and offered in ids
    best = step.top[0]
    assert f"{best.text!r}: {best.prob:.1%} raw" in choices[0][0]  # best first, by raw probability
    assert f"{step.processed_prob:.1%} under the one it was drawn from" in note and "temperature 0.9" in note


def test_continue_from_a_token_is_the_branch_of_the_reply(demo_lab):
    history, gen = page_reply(demo_lab)
    k = len(gen.steps) // 2
    token = other_token(gen.steps[k])
    updates = list(tokens.continue_reply(gen, k, token, history))
    chats, forks = zip(*updates)
    fork = forks[-1]
    assert fork.token_ids[:k] == gen.token_ids[:k] and fork.token_ids[k] == token and fork.steps[k].forced
    branch = gen.branch(k, token)
    assert fork.token_ids == branch.token_ids and chats[-1][-1]["content"] == branch.text
    assert all(c[:-1] == history[:-1] for c in chats)  # the reply is replaced in place
    assert inside.recorded_layer(fork) == inside.recorded_layer(gen)  # the branch records what the reply did
    for args, match in [
        ((None, k, token, history), "no reply to continue"),
        ((gen, None, token, history), "Click a token"),
        ((gen, k, None, history), "Pick the token"),
        ((gen, len(gen.steps), token, history), "out of range"),
        ((gen, k, demo_lab.arch.vocab, history), "token id must be"),
        ((gen, k, token, history[:-1]), "does not end with the reply"),
    ]:
        with pytest.raises(gr.Error, match=match):
            next(tokens.continue_reply(*args))


def test_the_pages_events_by_name_continue_what_if_and_look_inside(demo_client, demo_server, demo_lab):
    """One session, as the page runs it: a recorded reply, continued from a token, changed by What if, and looked
    inside without a forward pass. The page's events are callable by name but not listed (tests/test_demo.py:
    test_api_names_are_stable)."""
    demo_client.reset_session()
    asked = as_chatbot([{"role": "user", "content": QUESTION}])
    history = demo_client.predict(asked, True, *GREEDY, api_name="/reply")
    gen = direct(demo_lab, top=chat.TOP)
    assert content(history[-1]) == gen.text
    k = len(gen.steps) // 2
    token = other_token(gen.steps[k])
    branch = gen.branch(k, token)
    assert branch.token_ids[:k] == gen.token_ids[:k] and branch.token_ids[k] == token
    continued = demo_client.predict(k, token, history, api_name="/continue_reply")
    assert content(continued[-1]) == branch.text and continued[:-1] == history[:-1]

    before, after, note = demo_client.predict("head", 1, 2, 10_000, api_name="/what_if")
    assert before == branch.text  # the session's last reply is the branch now
    edited = direct(demo_lab, edits=edits.zero_heads(1, [2]))
    assert after == edited.text and edits.zero_heads(1, [2]).label in note

    start = demo_server.lab.forwards
    *plots, note = demo_client.predict(continued, inside.default_layer(demo_lab.arch), inside.AUTO, inside.WINDOW,
                                       0, None, api_name="/look_inside")  # fmt: skip
    assert demo_server.lab.forwards == start and "no forward pass ran" in note
    *plots, note = demo_client.predict(continued, 0, inside.AUTO, inside.WINDOW, 0, None, api_name="/look_inside")
    assert demo_server.lab.forwards == start + 1 and "so the conversation was traced" in note

    with pytest.raises(AppError, match=r"query heads \[99\] out of range"):
        demo_client.predict("head", 1, 99, 10_000, api_name="/what_if")
    demo_client.reset_session()  # a new session has no reply: nothing to continue or change
    with pytest.raises(AppError, match="no reply to continue"):
        demo_client.predict(k, token, history, api_name="/continue_reply")
    with pytest.raises(AppError, match="no answer to change"):
        demo_client.predict("head", 1, 2, 10_000, api_name="/what_if")
