"""Fixtures the tests share: the bundled models, loaded once per session."""

import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny():
    import qwen2_lab

    return qwen2_lab.load("tiny")


@pytest.fixture(scope="session")
def tiny_moe():
    import qwen2_lab

    return qwen2_lab.load("tiny-moe")


# ---- the web demo (tests/test_demo.py, tests/test_demo_browser.py) ------------------------------------------------

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
sys.path.insert(0, str(DEMO_DIR))  # the demo's modules (app, chat, check, inside) import as the demo imports them
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a test server
DEMO_QUEUE_SIZE = 2  # requests that may wait behind the one running: small, so a test can fill the queue


class GatedLab:
    """A Lab whose replies wait at a gate (open unless a test closes it), that counts the replies begun and the
    model's forward passes, and can make each forward `delay` seconds slower (a larger model's pace: the tiny one
    outruns any client). Everything else is the Lab's own."""

    def __init__(self, lab):
        self.lab, self.gate, self.replies, self.forwards, self.delay = lab, threading.Event(), 0, 0, 0.0
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.lab, name)

    def stream(self, inputs, **kwargs):
        self.replies += 1
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        yield from self.lab.stream(inputs, **kwargs)

    def count_forward(self, module, args):  # a forward pre-hook
        self.forwards += 1
        time.sleep(self.delay)


@pytest.fixture(scope="module")
def demo_lab():
    """The bundled `tiny`, on one thread: a 1M-parameter model runs many times faster so on a busy machine."""
    import qwen2_lab

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield qwen2_lab.load("tiny")
    torch.set_num_threads(threads)


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
