"""Qwen2's facts, written once (qwen2_lab/facts.py): the chat template and special tokens are the ones the real
tokenizer and the bundled checkpoints carry."""

import pytest

from qwen2_lab import facts, qwen2_tokenizer
from qwen2_lab.loading import bundled_path


@pytest.fixture(scope="module")
def tok():
    return qwen2_tokenizer()


@pytest.mark.parametrize("kind", ["tiny", "tiny-moe"])
def test_the_bundled_checkpoints_carry_the_same_chat_template_and_special_tokens(kind):
    from transformers import AutoTokenizer

    bundled = AutoTokenizer.from_pretrained(bundled_path(kind))
    turns = [{"role": "user", "content": "1+1=?"}, {"role": "assistant", "content": "2"}]
    assert bundled.apply_chat_template(turns, tokenize=False) == facts.chatml(turns, False)
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert len(bundled.encode(token, add_special_tokens=False)) == 1, token


def test_chatml_renders_the_template_as_the_tokenizer_does(tok):
    """facts.chatml (used where no tokenizer exists yet, as when training the bundled models) is the same template."""
    turns = [{"role": "user", "content": "A={1,2}, B={2}. A∩B=?"}, {"role": "assistant", "content": "{2}"}]
    for messages in (turns, [{"role": "system", "content": "Be brief."}] + turns):
        for prompt in (True, False):
            assert facts.chatml(messages, prompt) == tok.apply_chat_template(
                messages, add_generation_prompt=prompt, tokenize=False
            )
