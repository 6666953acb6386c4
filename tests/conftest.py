"""Fixtures the tests share: the bundled models, loaded once per session."""

import os
import threading
import time
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread: the tests' models are small, and their matrices are not worth sharing out; on the 2-core machine
# with anything else running, two threads made test_experiments.py and test_real_shapes.py 2.5 to 6 times slower
# (15.7 s against 39 to 95 s, measured back to back).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    import qwen2_lab

    return qwen2_lab.load("tiny")


@pytest.fixture(scope="session")
def tiny_moe():
    import qwen2_lab

    return qwen2_lab.load("tiny-moe")


# ---- the web demo (tests/test_demo.py, tests/test_demo_browser.py) ------------------------------------------------

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a test server
DEMO_QUEUE_SIZE = 2  # requests that may wait behind the one running: small, so a test can fill the queue


class GatedLab:
    """A Lab that counts the model's forward passes and the replies begun, makes each reply wait at a gate (open
    unless a test closes it), and can make each forward `delay` seconds slower (a larger model's pace: the tiny one
    outruns any client). Everything else is the Lab's own.

    `count_forward` is a forward pre-hook on `embed_tokens`, which runs once per forward in HF's path and the lab's.
    A forward that reads more than one token reads a whole prompt: the first forward of a generation (a reply
    begun; each later one reads one token) or a trace (Look inside, What if's divergence), which run only when a
    test asks for them, and none of those tests closes the gate.
    """

    def __init__(self, lab):
        self.lab, self.gate, self.replies, self.forwards, self.delay = lab, threading.Event(), 0, 0, 0.0
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.lab, name)

    def count_forward(self, module, args):  # a forward pre-hook on embed_tokens: args[0] is the ids (B, S)
        self.forwards += 1
        if args[0].shape[-1] > 1:
            self.replies += 1
            assert self.gate.wait(timeout=60), "the test never opened the gate"
        time.sleep(self.delay)


def one_thread(name: str):
    """A bundled model on one torch thread while a module's tests use it: a 1M-parameter model runs many times faster
    so on a busy machine."""
    import qwen2_lab

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield qwen2_lab.load(name)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo_lab():
    """The bundled `tiny`, on one thread."""
    yield from one_thread("tiny")


@pytest.fixture(scope="module")
def moe_lab():
    """The bundled `tiny-moe`, on one thread."""
    yield from one_thread("tiny-moe")


@pytest.fixture(scope="module")
def demo_server(demo_lab):
    """The demo app on a free loopback port, serving a `GatedLab` over `demo_lab`: SimpleNamespace(url, lab,
    queue_size), with a queue of two, so that a test can fill it."""
    import app

    gated = GatedLab(demo_lab)
    hook = demo_lab.model.model.embed_tokens.register_forward_pre_hook(gated.count_forward)  # once per forward
    demo = app.build_app(gated, queue_size=DEMO_QUEUE_SIZE)
    try:
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
        yield SimpleNamespace(url=url, lab=gated, queue_size=DEMO_QUEUE_SIZE)
    finally:
        demo.close()
        hook.remove()


@pytest.fixture(scope="module")
def demo_client(demo_server):
    """A gradio_client Client of the demo server."""
    from gradio_client import Client

    client = Client(demo_server.url, verbose=False)
    yield client
    client.close()


# ---- figures: traces of the bundled models, and a headless browser ------------------------------------------------

FIGURE_TEXT = "The cat  sat.\nThe <|im_start|> cat"  # repeated tokens, a double space, a newline, markup


@pytest.fixture(scope="session")
def tiny_trace(tiny):
    """Every site of `tiny` on FIGURE_TEXT, with the logit lens (top 5)."""
    return tiny.trace(FIGURE_TEXT, lens=5)


@pytest.fixture(scope="session")
def tiny_moe_trace(tiny_moe):
    """Every site of `tiny-moe` on FIGURE_TEXT, with the logit lens (top 5)."""
    return tiny_moe.trace(FIGURE_TEXT, lens=5)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """A headless chromium driven by selenium (window 1280x1400), shared by the browser tests; they skip, saying
    how to install it, where chromium, chromedriver or selenium is missing."""
    from tests.helpers import start_chromium

    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


# ---- a small random model, dense and MoE: the experiments' tests (patching, attribution) -----------------------------


@pytest.fixture(scope="module", params=["dense", "moe"])
def small_lab(request):
    """A 3-layer random Qwen2 (and Qwen2-MoE) in float32: each test using it runs on both."""
    from tests.helpers import random_lab

    return random_lab(moe=request.param == "moe", num_hidden_layers=3)


# ---- the sandbox: the layers this machine gives a run --------------------------------------------------------------


@pytest.fixture(scope="session")
def sandbox_layers() -> tuple[str, ...]:
    """The layers this machine gives a sandboxed run (probed once): "seccomp", "landlock-v4", "netns", ..."""
    from qwen2_lab.sandbox import run_python

    result = run_python("pass", timeout=10)
    assert result.ok, result.summary
    return result.layers
