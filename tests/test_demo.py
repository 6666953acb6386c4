"""The web demo, tested as its users use it: the chat generator on the bundled model, then the app itself, launched
on a free loopback port and driven through `gradio_client` (streaming chat, check_code, bad requests, a client that
leaves mid-stream, more clients than the queue holds). The browser test is tests/test_demo_browser.py.

The bundled model is random (or barely trained), so nothing here depends on what it says: each reply is compared
with transformers' own `generate` on the same chat, and the code checks are fed known-good and known-bad code.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the test server
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))

import app  # noqa: E402  (puts qwen2_lab on the path when it is not installed)
import chat  # noqa: E402
import check  # noqa: E402
import gradio as gr  # noqa: E402
import inside  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import QueueError, Status  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

import qwen2_lab  # noqa: E402

GREEDY = (chat.DEFAULT_SYSTEM_PROMPT, 0.0, 1.0, 0, 48, 1.0)  # system, temperature, top_p, top_k, max new, rep. pen.
PROMPT = check.problem_prompts()["gaokao-2024-set"]["zh"]
GOOD_CODE = """
class Solution:
    def searchRange(self, nums, target):
        import bisect
        lo = bisect.bisect_left(nums, target)
        if lo == len(nums) or nums[lo] != target:
            return [-1, -1]
        return [lo, bisect.bisect_right(nums, target) - 1]
"""
SCAN_CODE = """Here is my answer:
```python
def searchRange(nums, target):
    hits = [i for i, x in enumerate(nums) if x == target]
    return [hits[0], hits[-1]] if hits else [-1, -1]
```"""


@pytest.fixture(scope="module")
def lab():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 1M-parameter model runs many times faster on one thread of a busy machine
    yield qwen2_lab.load("tiny")
    torch.set_num_threads(threads)


def expected_reply(lab, message, history=(), settings=GREEDY) -> str:
    """transformers' own greedy generate on the chat the demo builds: the reference for every streamed reply."""
    system, _, _, _, max_new_tokens, penalty = settings
    messages = chat.conversation(message, list(history), system)
    return lab.generate(messages, do_sample=False, max_new_tokens=max_new_tokens, repetition_penalty=penalty)


def assert_streamed(updates: list[str], reply: str) -> None:
    assert updates, "no update streamed"
    assert updates[-1] == reply
    assert all(b.startswith(a) for a, b in zip(updates, updates[1:])), "each update must extend the one before"


# ---- the chat generator, directly ----------------------------------------------------------------------------


def test_respond_streams_what_generate_says(lab):
    updates = list(chat.respond(lab, PROMPT, [], *GREEDY))
    assert_streamed(updates, expected_reply(lab, PROMPT))
    pieces = list(lab.stream(chat.conversation(PROMPT, [], GREEDY[0]), do_sample=False, max_new_tokens=48))
    assert len(updates) == max(1, len(pieces))  # one update per piece the streamer delivered


@pytest.mark.parametrize("top_k", [0, 20])
def test_sampled_replies_are_what_generate_samples(lab, top_k):
    settings = (None, 0.9, 0.95, top_k, 32, 1.1)
    torch.manual_seed(7)
    reply = list(chat.respond(lab, "1+1=", [], *settings))[-1]
    torch.manual_seed(7)
    kwargs = dict(do_sample=True, temperature=0.9, top_p=0.95, top_k=top_k, max_new_tokens=32, repetition_penalty=1.1)
    assert reply == lab.generate(chat.conversation("1+1=", [], None), **kwargs)


def test_history_in_gradio_blocks_is_the_conversation(lab):
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
    updates = list(chat.respond(lab, "2+2=", history, "Be brief.", 0.0, 1.0, 0, 24, 1.0))
    assert updates[-1] == expected_reply(lab, "2+2=", history, ("Be brief.", 0, 1, 0, 24, 1.0))


def test_settings_start_at_the_models_generation_config(lab):
    gc, defaults = lab.model.generation_config, chat.default_settings(lab)
    assert (defaults.temperature == 0) == (not gc.do_sample)  # temperature 0 stands for greedy
    assert defaults.max_new_tokens == min(gc.max_new_tokens or 1024, chat.max_new_tokens_limit(lab))
    qwen2_instruct = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    fake = SimpleNamespace(model=SimpleNamespace(generation_config=qwen2_instruct), arch=lab.arch)
    assert chat.default_settings(fake) == chat.Settings(0.7, 0.8, 20, 1024, 1.05)


def test_generation_kwargs_sample_only_when_asked(lab):
    assert chat.generation_kwargs(lab, 0, 0.8, 20, 64, 1.1) == dict(
        max_new_tokens=64, repetition_penalty=1.1, do_sample=False
    )
    assert chat.generation_kwargs(lab, 0.7, 0.8, 20.0, 64.0, 1.05) == dict(
        max_new_tokens=64, repetition_penalty=1.05, do_sample=True, temperature=0.7, top_p=0.8, top_k=20
    )


@pytest.mark.parametrize(
    "message, settings, match",
    [
        ("", GREEDY, "empty"),
        ("  \n ", GREEDY, "empty"),
        ("x" * (chat.MAX_MESSAGE_CHARS + 1), GREEDY, "at most 16,000"),
        ("1 " * 4000, GREEDY[:4] + ("{limit}", 1.0), "context window of {window:,}"),
        ("hi", (None, -1.0, 1.0, 0, 48, 1.0), "temperature must lie between"),
        ("hi", (None, "hot", 1.0, 0, 48, 1.0), "temperature must be a number"),
        ("hi", (None, float("nan"), 1.0, 0, 48, 1.0), "temperature"),
        ("hi", (None, 0.7, 0.0, 0, 48, 1.0), "top_p must lie between"),
        ("hi", (None, 0.7, 1.0, 2.5, 48, 1.0), "top_k must be a whole number"),
        ("hi", (None, 0.7, 1.0, 0, 0, 1.0), "max_new_tokens must lie between 1 and {limit}"),
        ("hi", (None, 0.7, 1.0, 0, 48, None), "repetition_penalty must be a number"),
    ],
)
def test_bad_requests_get_a_clear_message(lab, message, settings, match):
    limit, window = chat.max_new_tokens_limit(lab), lab.arch.max_position
    settings = tuple(limit if s == "{limit}" else s for s in settings)
    with pytest.raises(gr.Error, match=match.format(limit=limit, window=window)):
        next(chat.respond(lab, message, [], *settings))


def test_stopping_the_reply_stops_generation(lab, monkeypatch):
    """What the stop button and a client that leaves do: close the generator. HF generate must stop too."""
    calls = []
    forward = lab.model.forward
    monkeypatch.setattr(lab.model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    monkeypatch.setattr(lab.model.generation_config, "min_new_tokens", 1000)  # no early end-of-turn
    threads = threading.active_count()
    reply = chat.respond(lab, "hi", [], None, 0.0, 1.0, 0, 1000, 1.0)
    next(reply)
    reply.close()  # returns once the generation thread has stopped
    done = len(calls)
    time.sleep(0.2)
    assert len(calls) == done < 1000, "generate went on after the reader left"
    assert threading.active_count() == threads


# ---- the pieces of the Check panel and Look inside ------------------------------------------------------------


def test_problem_is_found_in_the_chat_and_kept_across_the_repair_turn():
    ask = check.problem_prompts()["leetcode-34"]["en"]
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Please solve this:\n" + ask}]},
        {"role": "assistant", "content": SCAN_CODE},
        {"role": "user", "content": check.failure_message("Wrong Answer")},
        {"role": "assistant", "content": GOOD_CODE},
    ]
    assert check.find_problem(history) == "leetcode-34"
    assert check.last_reply(history) == GOOD_CODE
    assert check.find_problem(history[:1] + [{"role": "user", "content": "hello"}]) == "leetcode-34"
    assert check.find_problem([{"role": "user", "content": "hello"}]) is None


def test_check_last_reply_and_send_back_text():
    ask = check.problem_prompts()["leetcode-34"]["zh"]
    history = [{"role": "user", "content": ask}, {"role": "assistant", "content": SCAN_CODE}]
    report, failure = app.check_last(history, check.AUTO)
    assert "**Failed** (leetcode-34)" in report and "O(log n)" in failure  # a scan reads every element
    assert failure in check.failure_message(failure)
    report, failure = app.check_last(history[:1] + [{"role": "assistant", "content": GOOD_CODE}], check.AUTO)
    assert "**Passed**" in report and failure == ""
    # math is checked as soon as the reply is complete; code waits for the button
    math = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "所以 A∩B = {-1, 0}"}]
    assert app.auto_check(math, check.AUTO)[0].startswith("**Passed** (gaokao-2024-set)")
    assert "press *Check" in app.auto_check(history, check.AUTO)[0]


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_look_inside_draws_the_conversation(name):
    lab = qwen2_lab.load(name)
    history = [{"role": "user", "content": [{"type": "text", "text": "1+1="}]}, {"role": "assistant", "content": "2"}]
    layer = lab.arch.moe_layers[0] if lab.arch.is_moe else 1
    attention, lens, routing, note = inside.look_inside(lab, history, layer, system_prompt="Be brief.")
    ids = lab.encode([{"role": "system", "content": "Be brief."}, *history])  # the chat with the system prompt it had
    trace = lab.trace(ids, sites=[f"layers.{layer}.attn.pattern"])
    z = torch.tensor(np.asarray(attention.data[0].z))  # head 0, on the figure's window of the last T positions
    T = z.shape[0]
    assert torch.equal(z, trace[f"layers.{layer}.attn.pattern"][0][-T:, -T:])
    assert len(attention.data) == lab.arch.n_heads and f"Traced {len(ids)} tokens" in note
    assert np.asarray(lens.data[0].z).shape[0] == lab.arch.n_layers
    assert (routing is not None) == lab.arch.is_moe
    with pytest.raises(gr.Error, match="nothing to look at"):
        inside.look_inside(lab, [], 0)
    with pytest.raises(gr.Error, match="layer must lie in 0..3"):
        inside.look_inside(lab, history, 4)


def test_model_card_and_toy_banner(lab):
    card = app.model_card(lab)
    assert "`tiny` (bundled toy model)" in card and "`cpu`" in card and "`float32`" in card
    assert app.count(lab.arch.total_params) in card
    assert "--model Qwen/Qwen2-0.5B-Instruct" in app.banner(lab)
    real = SimpleNamespace(name="Qwen/Qwen2-7B-Instruct", arch=lab.arch)
    assert app.banner(real) == ""


# ---- the app, served and driven through gradio_client ---------------------------------------------------------


class Gated:
    """A Lab whose replies wait at a gate (open unless a test closes it), that counts its forward passes and can
    make each take `delay` seconds longer (a larger model's pace: the tiny one outruns any client)."""

    def __init__(self, lab):
        self.lab, self.gate, self.forwards, self.delay = lab, threading.Event(), 0, 0.0
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.lab, name)

    def stream(self, inputs, **kwargs):
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        yield from self.lab.stream(inputs, **kwargs)


QUEUE_SIZE = 2


@pytest.fixture(scope="module")
def served(lab):
    gated = Gated(lab)
    forward = lab.model.forward

    def counted(*args, **kwargs):
        gated.forwards += 1
        time.sleep(gated.delay)
        return forward(*args, **kwargs)

    lab.model.forward = counted
    demo = app.build_app(gated, queue_size=QUEUE_SIZE)
    try:
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
        client = Client(url, verbose=False)
        yield SimpleNamespace(url=url, client=client, lab=gated, demo=demo)
        client.close()
    finally:
        demo.close()
        del lab.model.forward


def wait_for(condition, seconds: float = 30, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_until_still(read, seconds: float = 30, still: float = 0.5, what: str = "a value to settle"):
    """Poll read() until it has not changed for `still` seconds."""
    deadline, last, since = time.monotonic() + seconds, read(), time.monotonic()
    while time.monotonic() - since < still:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
        if (now := read()) != last:
            last, since = now, time.monotonic()


def ask(client, message, *settings):
    """One chat turn through the API in a new conversation (the `chat` endpoint keeps each session's history)."""
    client.reset_session()
    return client.predict(message, *(settings or GREEDY), api_name="/chat")


def test_api_names_are_stable(served):
    endpoints = served.client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/chat", "/check_code", "/check_answer"} <= set(endpoints)
    names = [p["parameter_name"] for p in endpoints["/chat"]["parameters"]]
    assert names == [
        "message",
        "system_prompt",
        "temperature",
        "top_p",
        "top_k",
        "max_new_tokens",
        "repetition_penalty",
    ]


def test_chat_streams_through_the_api(served, lab):
    served.client.reset_session()
    job = served.client.submit(PROMPT, *GREEDY, api_name="/chat")
    reply = job.result(timeout=60)
    assert_streamed(job.outputs(), expected_reply(lab, PROMPT))
    assert reply == job.outputs()[-1]
    pieces = list(lab.stream(chat.conversation(PROMPT, [], GREEDY[0]), do_sample=False, max_new_tokens=48))
    assert len(job.outputs()) == max(1, len(pieces))  # every piece reached the client as its own update


def test_chat_api_keeps_the_conversation_of_a_session(served, lab):
    first = ask(served.client, "1+1=")
    second = served.client.predict("2+2=", *GREEDY, api_name="/chat")
    history = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": first}]
    assert second == expected_reply(lab, "2+2=", history)


def test_check_code_reports_pass_and_fail(served):
    good = served.client.predict(GOOD_CODE, "leetcode-34", api_name="/check_code")
    assert good["passed"] is True and "LeetCode style" in good["report"]
    scan = served.client.predict(SCAN_CODE, "leetcode-34", api_name="/check_code")
    assert scan["passed"] is False and "bare function" in scan["report"] and "O(log n)" in scan["report"]
    broken = served.client.predict("def searchRange(nums, target):\n    return nums[10**9]", "leetcode-34",
                                   api_name="/check_code")  # fmt: skip
    assert broken["passed"] is False and "IndexError" in broken["report"]
    with pytest.raises(AppError, match="not a code problem"):
        served.client.predict(GOOD_CODE, "gaokao-2024-set", api_name="/check_code")
    math = served.client.predict("答案是 {-1, 0}", "gaokao-2024-set", api_name="/check_answer")
    assert math["passed"] is True


def test_bad_requests_leave_the_server_serving(served, lab):
    for args, match in [
        (("",), "empty"),
        (("hi", "", 5.0), "temperature must lie between 0.0 and 2.0"),
        (("hi", "", "hot"), "temperature must be a number"),
        (("hi", "", 0.7, 1.0, 0, None), "max_new_tokens must be a number"),
        (("x" * (chat.MAX_MESSAGE_CHARS + 1),), "16,000"),
    ]:
        with pytest.raises(AppError, match=match):
            served.client.predict(*args, api_name="/chat")
    assert ask(served.client, "hi") == expected_reply(lab, "hi")


@pytest.fixture
def long_slow_replies(served, lab, monkeypatch):
    """Replies of 1000 tokens at 5 ms each, unless something stops them; yields a message whose reply streams often.

    Closing the demo's generator can only happen between two streamed pieces, and TextIteratorStreamer delivers a
    piece at each space, newline or CJK character: the message is the one (of a few) whose reply has the most.
    """
    candidates = ["hi", "1+1=", "Hello, how are you?"]
    pieces = {
        m: sum(
            1
            for _ in lab.stream(chat.conversation(m, [], None), do_sample=False, max_new_tokens=100, min_new_tokens=100)
        )
        for m in candidates
    }
    message = max(candidates, key=pieces.get)
    assert pieces[message] >= 10, f"the model's replies stream too rarely to test stopping: {pieces}"
    monkeypatch.setattr(lab.model.generation_config, "min_new_tokens", 1000)  # no early end-of-turn
    monkeypatch.setattr(served.lab, "delay", 0.005)
    served.client.reset_session()
    yield message
    monkeypatch.undo()


def generated_after(gated, leave) -> int:
    """Forward passes run from a request until generation settles, when `leave()` walks away mid-stream."""
    start = gated.forwards
    leave()
    wait_until_still(lambda: gated.forwards, what="generation to stop")
    return gated.forwards - start


def test_a_client_that_cancels_mid_stream_stops_its_generation(served, lab, long_slow_replies):
    def leave():
        job = served.client.submit(long_slow_replies, None, 0.0, 1.0, 0, 1000, 1.0, api_name="/chat")
        wait_for(lambda: len(job.outputs()) >= 2, what="the first streamed updates")
        job.cancel()

    assert generated_after(served.lab, leave) < 500, "the generation ran on with nobody reading"
    served.lab.delay, lab.model.generation_config.min_new_tokens = 0, None  # back to normal (the fixture restores)
    assert ask(served.client, "hi", None, 0.0, 1.0, 0, 8, 1.0) is not None  # and the server serves the next one


def test_a_client_that_hangs_up_mid_stream_stops_its_generation(served, lab, long_slow_replies):
    import httpx

    def leave():
        api = served.url.rstrip("/") + "/gradio_api/call/chat"
        event = httpx.post(api, json={"data": [long_slow_replies, None, 0.0, 1.0, 0, 1000, 1.0]}, timeout=10).json()[
            "event_id"
        ]
        with httpx.stream("GET", f"{api}/{event}", timeout=10) as events:
            lines = events.iter_lines()
            for _ in range(3):
                next(lines)  # the first messages, then the connection drops

    assert generated_after(served.lab, leave) < 500, "the generation ran on with nobody reading"
    served.lab.delay, lab.model.generation_config.min_new_tokens = 0, None  # back to normal (the fixture restores)
    assert ask(served.client, "hi", None, 0.0, 1.0, 0, 8, 1.0) is not None


def test_concurrent_clients_are_served_or_told_the_queue_is_full(served, lab):
    """One generation at a time: with the first one held at the gate, QUEUE_SIZE more wait and the rest are refused."""
    with ThreadPoolExecutor(6) as pool:
        clients = list(pool.map(lambda _: Client(served.url, verbose=False), range(6)))
    served.lab.gate.clear()
    try:
        first = clients[0].submit("hi", *GREEDY, api_name="/chat")
        wait_for(lambda: first.status().code == Status.PROCESSING, what="the first request to start")
        others = [c.submit("hi", *GREEDY, api_name="/chat") for c in clients[1:]]
        wait_for(lambda: all(j.status().code in (Status.IN_QUEUE, Status.QUEUE_FULL) or j.done() for j in others),
                 what="each request to be queued or refused")  # fmt: skip
    finally:
        served.lab.gate.set()
    served_, refused = 0, 0
    for job in [first, *others]:
        try:
            assert job.result(timeout=60) == expected_reply(lab, "hi")
            served_ += 1
        except QueueError:
            refused += 1
    assert (served_, refused) == (1 + QUEUE_SIZE, len(others) - QUEUE_SIZE)
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(Client.close, clients))  # each waits up to 1 s for its heartbeat thread


def test_every_model_event_shares_one_concurrency_group(served):
    """The UI's chat, the `chat` API, the repair turn and Look inside: one generation at a time per model."""
    model_fns = {"_submit_fn", "respond", "send_back", "look"}
    groups = {(fn.concurrency_id, fn.concurrency_limit) for fn in served.demo.fns.values() if fn.name in model_fns}
    assert groups == {(app.MODEL_GROUP, 1)}
