"""The web demo, tested as its users use it: the chat generators on the bundled model, the Check panel and Look
inside, then the app itself, served on a free loopback port (the `demo_server` fixture in tests/conftest.py) and
driven through `gradio_client` (streaming chat, the check endpoints, bad requests, a client that leaves mid-stream,
more clients than the queue holds). The page in a real browser: tests/test_demo_browser.py.

Nothing here depends on what the bundled model says: each reply is compared with transformers' own `generate` on
the same chat, and the code checks are fed known-good and known-bad code.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import app
import chat
import check
import gradio as gr
import inside
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status
from transformers import GenerationConfig

import qwen2_lab
from qwen2_lab import viz
from qwen2_lab.facts import DEFAULT_SYSTEM_PROMPT
from qwen2_lab.tiny.curriculum import example_prompts
from qwen2_lab.tiny.evaluate import score_range

from .helpers import wait_for, wait_until_still

GREEDY = (DEFAULT_SYSTEM_PROMPT, 0.0, 1.0, 0, 48, 1.0)  # system, temperature, top_p, top_k, max new, rep. penalty
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
    with pytest.raises(gr.Error, match="temperature must lie between"):
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
        ("hi", (None, -1.0, 1.0, 0, 48, 1.0), "temperature must lie between"),
        ("hi", (None, "hot", 1.0, 0, 48, 1.0), "temperature must be a number"),
        ("hi", (None, float("nan"), 1.0, 0, 48, 1.0), "temperature"),
        ("hi", (None, 0.7, 0.0, 0, 48, 1.0), "top_p must lie between"),
        ("hi", (None, 0.7, 1.0, 2.5, 48, 1.0), "top_k must be a whole number"),
        ("hi", (None, 0.7, 1.0, 0, 0, 1.0), "max_new_tokens must lie between 1 and {limit}"),
        ("hi", (None, 0.7, 1.0, 0, 48, None), "repetition_penalty must be a number"),
    ],
)
def test_bad_requests_get_a_clear_message(demo_lab, message, settings, match):
    limit, window = chat.max_new_tokens_limit(demo_lab), demo_lab.arch.max_position
    settings = tuple(limit if s == "{limit}" else s for s in settings)
    with pytest.raises(gr.Error, match=match.format(limit=limit, window=window)):
        next(chat.respond(demo_lab, message, [], *settings))


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


# ---- the Check panel, Look inside, the banner -------------------------------------------------------------------


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
    report, failure = check.check_last(history, check.AUTO)
    assert "**Failed** (leetcode-34)" in report and "O(log n)" in failure  # a scan reads every element
    assert failure in check.failure_message(failure)
    report, failure = check.check_last(history[:1] + [{"role": "assistant", "content": GOOD_CODE}], check.AUTO)
    assert "**Passed**" in report and failure == ""
    # math is checked as soon as the reply is complete; code waits for the button
    math = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "所以 A∩B = {-1, 0}"}]
    assert check.auto_check(math, check.AUTO)[0].startswith("**Passed** (gaokao-2024-set)")
    assert "press *Check" in check.auto_check(history, check.AUTO)[0]
    assert check.auto_check(history[:1], check.AUTO) == (check.WAITING, "")  # no reply yet


def test_the_default_head_is_the_one_with_most_structure_in_the_window():
    """Three heads on 6 positions: even causal attention, all weight on the first token (an attention sink), and
    each query on the token before it. The last has the most structure; the sink none, since key 0 is set aside."""
    S = 6
    even = torch.tril(torch.ones(S, S)) / torch.arange(1, S + 1)[:, None]
    sink = torch.zeros(S, S)
    sink[:, 0] = 1
    previous = torch.zeros(S, S)
    previous[0, 0] = 1
    previous[torch.arange(1, S), torch.arange(S - 1)] = 1  # query i reads key i - 1
    pattern = torch.stack([even, sink, previous])  # (3, S, S)
    head, scores = inside.default_head(pattern, range(S))
    assert head == 2 and torch.equal(scores, viz.head_structure(pattern, range(S))) and scores[1] == 0
    assert inside.default_head(pattern, range(3, 6))[0] == 2  # a window: queries and keys 3..5 only
    assert inside.default_head(pattern, [0])[0] == 0  # the first token alone: nothing to compare, no error


def test_shown_positions_end_where_asked():
    assert inside.shown_positions(100, 24, 0) == (range(76, 100), 0)
    assert inside.shown_positions(100, 24, 10) == (range(66, 90), 10)
    assert inside.shown_positions(10, 24, 0) == (range(0, 10), 0)
    assert inside.shown_positions(10, 24, 50) == (range(0, 1), 9)  # further back than the chat: its first token


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_look_inside_opens_on_a_middle_layer_the_last_tokens_and_the_most_structured_head(name):
    lab = qwen2_lab.load(name)
    arch = lab.arch
    history = [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}, {"role": "assistant", "content": "2"}]
    layer = inside.default_layer(arch)
    assert 0 < layer < arch.n_layers - 1 and (layer in arch.moe_layers or not arch.is_moe)
    attention, lens, routing, note = inside.look_inside(lab, history, layer, system_prompt="Be brief.")
    ids = lab.encode([{"role": "system", "content": "Be brief."}, *history])  # the chat with the system prompt it had
    assert len(ids) > inside.WINDOW
    pattern = lab.trace(ids, sites=[f"layers.{layer}.attn.pattern"])[f"layers.{layer}.attn.pattern"]
    last = range(len(ids) - inside.WINDOW, len(ids))
    head, _ = inside.default_head(pattern, last)
    group = head // arch.group_size
    assert len(attention.data) == arch.group_size  # that head's KV group, one heatmap per query head
    for h, trace in zip(range(group * arch.group_size, (group + 1) * arch.group_size), attention.data):
        assert torch.equal(torch.tensor(np.asarray(trace.z)), pattern[h][-inside.WINDOW :, -inside.WINDOW :])
    assert np.asarray(lens.data[0].z).shape == (arch.n_layers, inside.WINDOW)
    assert (routing is not None) == arch.is_moe
    assert f"conversation's {len(ids)} tokens" in note and f"head {head} (KV group {group})" in note
    titles = [f.layout.title.text + f.layout.title.subtitle.text for f in (attention, lens)]  # notes: the subtitle
    assert "positions=" not in note + "".join(titles)  # no Python hints


def test_look_inside_controls(demo_lab):
    arch = demo_lab.arch
    history = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "2"}]
    attention, lens, _, note = inside.look_inside(demo_lab, history, 0, group=1, window=8, back=5)
    n = len(inside.conversation_ids(demo_lab, history)[0])
    assert [t.name for t in attention.data] == [f"head {h}" for h in range(arch.group_size, 2 * arch.group_size)]
    assert [int(p) for p in lens.data[0].y] == list(range(n - 13, n - 5))  # the lens: a row per position
    assert "ending 5 tokens before the last" in note
    for kwargs, match in [
        (dict(layer=arch.n_layers), f"layer must lie in 0..{arch.n_layers - 1}"),
        (dict(layer=0, group=arch.n_kv_heads), "KV group must lie in"),
        (dict(layer=0, window=0), "window must lie in"),
        (dict(layer="x"), "layer must be a whole number"),
    ]:
        with pytest.raises(gr.Error, match=match):
            inside.look_inside(demo_lab, history, **kwargs)
    with pytest.raises(gr.Error, match="nothing to look at"):
        inside.look_inside(demo_lab, [], 0)


def test_examples_and_banner_follow_the_model_that_runs(demo_lab):
    assert app.examples(demo_lab) == example_prompts()  # bundled: the kinds of problems it was trained on
    banner = app.banner(demo_lab)
    assert "bundled model `tiny`" in banner and "four kinds of problems" in banner
    assert "--model Qwen/Qwen2-0.5B-Instruct" in banner  # and how to run a real one
    assert f"answers {score_range('tiny')} right" in banner  # the model card's measured numbers
    real = SimpleNamespace(name="Qwen/Qwen2-7B-Instruct", arch=demo_lab.arch)
    launch = [(p, label) for p, label in app.examples(real) if label.split(" ")[0] in check.problem_prompts()]
    assert {p for p, _ in launch} == {p for by_lang in check.problem_prompts().values() for p in by_lang.values()}
    assert "three problems Qwen2 was launched with" in app.banner(real) and "bundled" not in app.banner(real)


def test_model_card(demo_lab):
    card = app.model_card(demo_lab)
    assert "`tiny` (bundled toy model)" in card and "`cpu`" in card and "`float32`" in card
    assert app.count(demo_lab.arch.total_params) in card


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


def test_check_code_reports_pass_and_fail(demo_client):
    good = demo_client.predict(GOOD_CODE, "leetcode-34", api_name="/check_code")
    assert good["passed"] is True and "LeetCode style" in good["report"]
    scan = demo_client.predict(SCAN_CODE, "leetcode-34", api_name="/check_code")
    assert scan["passed"] is False and "bare function" in scan["report"] and "O(log n)" in scan["report"]
    broken = demo_client.predict("def searchRange(nums, target):\n    return nums[10**9]", "leetcode-34",
                                 api_name="/check_code")  # fmt: skip
    assert broken["passed"] is False and "IndexError" in broken["report"]
    with pytest.raises(AppError, match="not a code problem"):
        demo_client.predict(GOOD_CODE, "gaokao-2024-set", api_name="/check_code")
    math = demo_client.predict("答案是 {-1, 0}", "gaokao-2024-set", api_name="/check_answer")
    assert math["passed"] is True
    assert demo_client.predict("答案是 {-1, 0}", api_name="/check_answer")["problem"] == "gaokao-2024-set"
    with pytest.raises(AppError, match="not a math problem"):
        demo_client.predict("{-1, 0}", "leetcode-34", api_name="/check_answer")


def test_bad_requests_leave_the_server_serving(demo_client, demo_lab):
    for args, match in [
        (("",), "empty"),
        (("hi", "", 5.0), "temperature must lie between 0.0 and 2.0"),
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
