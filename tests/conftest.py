"""Fixtures the tests share: the bundled models, loaded once per session."""

import os

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
