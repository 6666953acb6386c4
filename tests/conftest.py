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
