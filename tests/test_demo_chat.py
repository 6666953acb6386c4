"""The web demo's chat panel (demo/lab_demo/chat.py) and its serving: the chat generators on the bundled model,
the examples and the verdict on a reply to one, then the app served on a free loopback port (the `demo_server`
fixture in tests/conftest.py) and driven through `gradio_client` (streaming chat, bad requests, a client that leaves
mid-stream, more clients than the queue holds). The page in a real browser: tests/test_demo_browser.py.

Nothing here depends on what the bundled model says: each reply is compared with transformers' own `generate` on
the same chat.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status
from lab_demo import chat, check, examples
from transformers import GenerationConfig

from qwen2_lab.facts import DEFAULT_SYSTEM_PROMPT
from qwen2_lab.tiny.curriculum import example_prompts
from qwen2_lab.tiny.evaluate import score_range

from .helpers import wait_for, wait_until_still

GREEDY = (DEFAULT_SYSTEM_PROMPT, 0.0, 1.0, 0, 48, 1.0)  # system, temperature, top_p, top_k, max new, rep. penalty

PROMPT = check.problem_prompts()["gaokao-2024-set"]["zh"]


def expected_reply(lab, message, history=(), settings=GREEDY) -> str:
    """transformers' own greedy generate on the chat the demo builds: the reference for every streamed reply."""
    system, _, _, _, max_new_tokens, penalty = settings
    messages = chat.conversation(message, list(history), system)
    return lab.generate(messages, do_sample=False, max_new_tokens=max_new_tokens, repetition_penalty=penalty)


def pieces(lab, message, max_new_tokens=48) -> int:
    """How many pieces `lab.stream` delivers for the greedy reply to `message` (at least one update is sent)."""
    return max(1, sum(1 for _ in lab.stream(chat.conversation(message, [], GREEDY[0]), do_sample=False,
                                            max_new_tokens=max_new_tokens)))  # fmt: skip


def assert_streamed(updates: list[str], reply: str) -> None:
    assert updates, "no update streamed"
    assert updates[-1] == reply
    assert all(b.startswith(a) for a, b in zip(updates, updates[1:])), "each update must extend the one before"


# ---- the chat generators, directly ----------------------------------------------------------------------------


def test_respond_streams_what_generate_says(demo_lab):
    updates = list(chat.respond(demo_lab, PROMPT, [], *GREEDY))
    assert_streamed(updates, expected_reply(demo_lab, PROMPT))
    assert len(updates) == pieces(demo_lab, PROMPT)  # one update per piece the streamer delivered


def test_reply_and_api_turn_grow_the_conversation(demo_lab):
    """The page's chat and the `chat` API put the same streamed reply into the conversation they show or keep."""
    earlier = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]
    history = chat.user_turn(PROMPT, earlier)
    assert history == [*earlier, {"role": "user", "content": PROMPT}]
    reference = list(chat.respond(demo_lab, PROMPT, earlier, *GREEDY))
    chats, gens = zip(*chat.reply(demo_lab, history, *GREEDY))
    assert [c[:-1] for c in chats] == [history] * len(chats) and gens[-1].text == chats[-1][-1]["content"]
    assert [c[-1] for c in chats] == [{"role": "assistant", "content": t} for t in reference]
    turns = list(chat.api_turn(demo_lab, PROMPT, earlier, *GREEDY))
    assert [text for text, _ in turns] == reference and turns[-1][1] == chats[-1]
    assert chat.checked(demo_lab, history, *GREEDY) == history  # checked before the model runs
    with pytest.raises(gr.Error, match="no message to answer"):
        chat.checked(demo_lab, earlier, *GREEDY)
    with pytest.raises(gr.Error, match="temperature must be <= 2"):
        chat.checked(demo_lab, history, None, 5.0, 1.0, 0, 48, 1.0)
    with pytest.raises(gr.Error, match="no message to answer"):
        next(chat.reply(demo_lab, earlier, *GREEDY))
    with pytest.raises(gr.Error, match="empty"):
        chat.user_turn(" ", earlier)


@pytest.mark.parametrize("top_k", [0, 20])
def test_sampled_replies_are_what_generate_samples_with_the_replys_seed(demo_lab, top_k):
    """A sampled reply draws from a generator seeded with a seed drawn for it from torch's global generator (so
    What if can draw the same again): the lab's generate with that seed samples the same reply."""
    settings = (None, 2.0, 1.0, top_k, 32, 1.1)  # hot: the bundled model's sure answers become a gamble
    kwargs = dict(do_sample=True, temperature=2.0, top_p=1.0, top_k=top_k, max_new_tokens=32, repetition_penalty=1.1)
    replies = set()
    for seed in (7, 8, 9):
        torch.manual_seed(seed)
        reply = list(chat.respond(demo_lab, "1+1=", [], *settings))[-1]
        torch.manual_seed(seed)
        drawn = chat.draw_seed()
        assert reply == demo_lab.generate(chat.conversation("1+1=", [], None), seed=drawn, **kwargs)
        replies.add(reply)
    assert len(replies) > 1, "three seeds drew the same reply: the test cannot tell the seed is used"


def test_history_in_gradio_blocks_is_the_conversation(demo_lab):
    history = [
        {"role": "user", "content": [{"type": "text", "text": "1+1="}]},
        {"role": "assistant", "content": [{"type": "text", "text": "2"}], "metadata": None},
    ]
    messages = chat.conversation("2+2=", history, "Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1="},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+2="},
    ]
    assert chat.conversation("hi", [], "  ")[0] == {"role": "user", "content": "hi"}  # no system: the template's
    updates = list(chat.respond(demo_lab, "2+2=", history, "Be brief.", 0.0, 1.0, 0, 24, 1.0))
    assert updates[-1] == expected_reply(demo_lab, "2+2=", history, ("Be brief.", 0, 1, 0, 24, 1.0))


def test_settings_start_at_the_models_generation_config(demo_lab):
    gc, defaults = demo_lab.model.generation_config, chat.default_settings(demo_lab)
    assert (defaults.temperature == 0) == (not gc.do_sample)  # temperature 0 stands for greedy
    assert defaults.max_new_tokens == min(gc.max_new_tokens or 1024, chat.max_new_tokens_limit(demo_lab))
    qwen2_instruct = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    fake = SimpleNamespace(model=SimpleNamespace(generation_config=qwen2_instruct), arch=demo_lab.arch)
    assert chat.default_settings(fake) == chat.Settings(0.7, 0.8, 20, 1024, 1.05)


def test_generation_kwargs_sample_only_when_asked(demo_lab):
    assert chat.generation_kwargs(demo_lab, 0, 0.8, 20, 64, 1.1) == dict(
        max_new_tokens=64, repetition_penalty=1.1, do_sample=False
    )
    assert chat.generation_kwargs(demo_lab, 0.7, 0.8, 20.0, 64.0, 1.05) == dict(
        max_new_tokens=64, repetition_penalty=1.05, do_sample=True, temperature=0.7, top_p=0.8, top_k=20
    )


@pytest.mark.parametrize(
    "message, settings, match",
    [
        ("", GREEDY, "empty"),
        ("  \n ", GREEDY, "empty"),
        ("x" * (chat.MAX_MESSAGE_CHARS + 1), GREEDY, "at most 16,000"),
        ("1 " * 4000, GREEDY[:4] + ("{limit}", 1.0), "context window of {window:,}"),
        ("hi", (None, -1.0, 1.0, 0, 48, 1.0), "temperature must be >= 0"),
        ("hi", (None, "hot", 1.0, 0, 48, 1.0), "temperature must be a number"),
        ("hi", (None, float("nan"), 1.0, 0, 48, 1.0), "temperature"),
        ("hi", (None, 0.7, 0.0, 0, 48, 1.0), "top_p must be >= 0.01"),
        ("hi", (None, 0.7, 1.0, 2.5, 48, 1.0), "top_k must be a whole number"),
        ("hi", (None, 0.7, 1.0, 0, 0, 1.0), "max_new_tokens must be >= 1"),
        ("hi", (None, 0.7, 1.0, 0, "{limit+1}", 1.0), "max_new_tokens must be <= {limit}"),
        ("hi", (None, 0.7, 1.0, 0, 48, None), "repetition_penalty must be a number"),
    ],
)
def test_bad_requests_get_a_clear_message(demo_lab, message, settings, match):
    limit, window = chat.max_new_tokens_limit(demo_lab), demo_lab.arch.max_position
    settings = tuple(
        {"{limit}": limit, "{limit+1}": limit + 1}.get(s, s) if isinstance(s, str) else s for s in settings
    )
    with pytest.raises(gr.Error, match=match.format(limit=limit, window=window)):
        next(chat.respond(demo_lab, message, [], *settings))


def test_a_refused_request_is_a_page_message_without_a_traceback(demo_lab):
    """The library's InputError (here: a setting out of the page's bounds) reaches the page as its message alone:
    a gr.Error that Gradio does not print with a traceback on the server's console."""
    with pytest.raises(gr.Error, match="temperature must be <= 2") as refused:
        next(chat.respond(demo_lab, "hi", [], None, 5.0, 1.0, 0, 8, 1.0))
    assert refused.value.print_exception is False
    with pytest.raises(gr.Error, match="The message is empty") as refused:
        chat.user_turn(" ", [])
    assert refused.value.print_exception is False


@pytest.mark.parametrize(
    "start",
    [
        lambda lab, settings: chat.respond(lab, "hi", [], *settings),
        lambda lab, settings: chat.reply(lab, [{"role": "user", "content": "hi"}], *settings),
        lambda lab, settings: chat.api_turn(lab, "hi", [], *settings),
    ],
    ids=["respond", "reply", "api_turn"],
)
def test_stopping_the_reply_stops_generation(demo_lab, monkeypatch, start):
    """What the stop button and a client that leaves do: close the generator. Generation must stop too, through
    every layer of generators between Gradio and the Lab's stream."""
    calls = []
    hook = demo_lab.model.model.embed_tokens.register_forward_pre_hook(lambda module, args: calls.append(1))
    monkeypatch.setattr(demo_lab.model.generation_config, "min_new_tokens", 1000)  # no early end-of-turn
    threads = threading.active_count()
    try:
        reply = start(demo_lab, (None, 0.0, 1.0, 0, 1000, 1.0))
        next(reply)
        reply.close()  # returns once the generation thread has stopped
        done = len(calls)
        time.sleep(0.2)
    finally:
        hook.remove()
    assert 0 < len(calls) == done < 1000, "generation went on after the reader left"
    assert threading.active_count() == threads


def test_examples_and_banner_follow_the_model_that_runs(demo_lab):
    shown = examples.examples(demo_lab)  # read from the checkpoint's examples.json
    assert [(e["prompt"], e["label"]) for e in shown] == example_prompts()  # bundled: the kinds it was trained on
    assert all(e["answer"] for e in shown)  # each with its answer, to check the reply against
    banner = examples.banner(demo_lab)
    assert "bundled model `tiny`" in banner and "four kinds of problems" in banner
    assert "--model Qwen/Qwen2-0.5B-Instruct" in banner  # and how to run a real one
    assert f"answers {score_range('tiny')} right" in banner  # the model card's measured numbers
    real = SimpleNamespace(name="Qwen/Qwen2-7B-Instruct", arch=demo_lab.arch)
    launch = [e["prompt"] for e in examples.examples(real) if e["label"].split(" ")[0] in check.problem_prompts()]
    assert set(launch) == {p for by_lang in check.problem_prompts().values() for p in by_lang.values()}
    assert "three problems Qwen2 was launched with" in examples.banner(real) and "bundled" not in examples.banner(real)


def test_a_reply_to_an_example_gets_a_verdict(demo_lab):
    """Every example whose answer can be checked is checked: a bundled example against its shipped answer, a launch
    math problem by qwen2_lab.checks; the code problem points to the code check; other replies get none."""
    for example in examples.examples(demo_lab):
        history = [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example["answer"]}]
        assert examples.verdict(demo_lab, history).startswith("✅ **Right**"), example["label"]
        history[-1]["content"] = example["answer"].rsplit("\n", 1)[0] + "\nA∩B={99}"
        wrong = examples.verdict(demo_lab, history)
        assert wrong.startswith("❌ **Wrong**") and example["answer"].splitlines()[-1] in wrong
    assert examples.verdict(demo_lab, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]) == ""
    assert examples.verdict(demo_lab, [{"role": "user", "content": example["prompt"]}]) == ""  # no reply yet
    real = SimpleNamespace(name="Qwen/Qwen2-7B-Instruct", arch=demo_lab.arch)
    math = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "所以 A∩B = {-1, 0}"}]
    assert examples.verdict(real, math).startswith("✅ **Right** (gaokao-2024-set)")
    math[-1]["content"] = "所以 A∩B = {-4, 4}"
    assert examples.verdict(real, math).startswith("❌ **Wrong** (gaokao-2024-set)")
    code = [{"role": "user", "content": check.problem_prompts()["leetcode-34"]["en"]}, math[-1]]
    assert "is a code problem" in examples.verdict(real, code)


# ---- the app, served and driven through gradio_client ---------------------------------------------------------


def ask(client, message, *settings):
    """One chat turn through the API in a new conversation (the `chat` endpoint keeps each session's history)."""
    client.reset_session()
    return client.predict(message, *(settings or GREEDY), api_name="/chat")


def test_api_names_are_stable(demo_client, demo_lab):
    endpoints = demo_client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(endpoints) == {"/chat", "/check_code", "/check_answer"}  # the page's own events are not endpoints
    parameters = endpoints["/chat"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == [
        "message",
        "system_prompt",
        "temperature",
        "top_p",
        "top_k",
        "max_new_tokens",
        "repetition_penalty",
    ]
    defaults = chat.default_settings(demo_lab)
    assert [p["parameter_default"] for p in parameters[1:]] == [
        DEFAULT_SYSTEM_PROMPT,
        defaults.temperature,
        defaults.top_p,
        defaults.top_k,
        defaults.max_new_tokens,
        defaults.repetition_penalty,
    ]
    assert [p["parameter_name"] for p in endpoints["/check_code"]["parameters"]] == ["text", "problem_id"]


def test_chat_streams_through_the_api(demo_client, demo_lab):
    demo_client.reset_session()
    job = demo_client.submit(PROMPT, *GREEDY, api_name="/chat")
    reply = job.result(timeout=60)
    assert_streamed(job.outputs(), expected_reply(demo_lab, PROMPT))
    assert reply == job.outputs()[-1]
    assert len(job.outputs()) == pieces(demo_lab, PROMPT)  # every piece reached the client as its own update


def test_chat_api_keeps_the_conversation_of_a_session(demo_client, demo_lab):
    first = ask(demo_client, "1+1=")
    second = demo_client.predict("2+2=", *GREEDY, api_name="/chat")
    history = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": first}]
    assert second == expected_reply(demo_lab, "2+2=", history)
    demo_client.reset_session()
    assert demo_client.predict("2+2=", *GREEDY, api_name="/chat") == expected_reply(demo_lab, "2+2=")


def test_bad_requests_leave_the_server_serving(demo_client, demo_lab):
    for args, match in [
        (("",), "empty"),
        (("hi", "", 5.0), "temperature must be <= 2"),
        (("hi", "", "hot"), "temperature must be a number"),
        (("hi", "", 0.7, 1.0, 0, None), "max_new_tokens must be a number"),
        (("x" * (chat.MAX_MESSAGE_CHARS + 1),), "16,000"),
    ]:
        with pytest.raises(AppError, match=match):
            demo_client.predict(*args, api_name="/chat")
    assert ask(demo_client, "hi") == expected_reply(demo_lab, "hi")


@pytest.fixture
def long_slow_replies(demo_server, demo_client, demo_lab, monkeypatch):
    """Replies of 1000 tokens at 5 ms each, unless something stops them; yields a message whose reply streams often.

    Closing the demo's generator can only happen between two streamed pieces, and TextIteratorStreamer delivers a
    piece at each space, newline or CJK character: the message is the one (of a few) whose reply has the most.
    """
    candidates = ["hi", "1+1=", "Hello, how are you?"]
    counts = {m: pieces(demo_lab, m, max_new_tokens=100) for m in candidates}
    message = max(candidates, key=counts.get)
    assert counts[message] >= 10, f"the model's replies stream too rarely to test stopping: {counts}"
    monkeypatch.setattr(demo_lab.model.generation_config, "min_new_tokens", 1000)  # no early end-of-turn
    monkeypatch.setattr(demo_server.lab, "delay", 0.005)
    demo_client.reset_session()
    yield message
    monkeypatch.undo()


def generated_after(gated, leave) -> int:
    """Forward passes run from a request until generation settles, when `leave()` walks away mid-stream."""
    start = gated.forwards
    leave()
    wait_until_still(lambda: gated.forwards, what="generation to stop")
    return gated.forwards - start


def serves_the_next_one(demo_server, demo_client, demo_lab) -> bool:
    demo_server.lab.delay, demo_lab.model.generation_config.min_new_tokens = 0, None  # (the fixture restores)
    return ask(demo_client, "hi", None, 0.0, 1.0, 0, 8, 1.0) is not None


def test_a_client_that_cancels_mid_stream_stops_its_generation(demo_server, demo_client, demo_lab, long_slow_replies):
    def leave():
        job = demo_client.submit(long_slow_replies, None, 0.0, 1.0, 0, 1000, 1.0, api_name="/chat")
        wait_for(lambda: len(job.outputs()) >= 2, what="the first streamed updates")
        job.cancel()

    assert generated_after(demo_server.lab, leave) < 500, "the generation ran on with nobody reading"
    assert serves_the_next_one(demo_server, demo_client, demo_lab)


def test_a_client_that_hangs_up_mid_stream_stops_its_generation(demo_server, demo_client, demo_lab, long_slow_replies):
    import httpx

    def leave():
        api = demo_server.url.rstrip("/") + "/gradio_api/call/chat"
        data = [long_slow_replies, None, 0.0, 1.0, 0, 1000, 1.0]
        event = httpx.post(api, json={"data": data}, timeout=10).json()["event_id"]
        with httpx.stream("GET", f"{api}/{event}", timeout=10) as events:
            lines = events.iter_lines()
            for _ in range(3):
                next(lines)  # the first messages, then the connection drops

    assert generated_after(demo_server.lab, leave) < 500, "the generation ran on with nobody reading"
    assert serves_the_next_one(demo_server, demo_client, demo_lab)


def test_concurrent_clients_are_served_or_told_the_queue_is_full(demo_server, demo_lab):
    """One generation at a time: with the first one held at the gate, the queue's worth wait and the rest are
    refused. (The page and the API sharing that one generation: tests/test_demo_browser.py.)"""
    with ThreadPoolExecutor(6) as pool:
        clients = list(pool.map(lambda _: Client(demo_server.url, verbose=False), range(6)))
    demo_server.lab.gate.clear()
    try:
        first = clients[0].submit("hi", *GREEDY, api_name="/chat")
        wait_for(lambda: first.status().code == Status.PROCESSING, what="the first request to start")
        others = [c.submit("hi", *GREEDY, api_name="/chat") for c in clients[1:]]
        wait_for(lambda: all(j.status().code in (Status.IN_QUEUE, Status.QUEUE_FULL) or j.done() for j in others),
                 what="each request to be queued or refused")  # fmt: skip
    finally:
        demo_server.lab.gate.set()
    served, refused = 0, 0
    for job in [first, *others]:
        try:
            assert job.result(timeout=60) == expected_reply(demo_lab, "hi")
            served += 1
        except QueueError:
            refused += 1
    assert (served, refused) == (1 + demo_server.queue_size, len(others) - demo_server.queue_size)
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(Client.close, clients))  # each waits up to 1 s for its heartbeat thread
