"""Inputs: strings, chat messages (with or without an open assistant message) and ids become the same token ids
everywhere."""

import pytest
import torch

from qwen2_lab.facts import chatml
from qwen2_lab.inputs import first_difference, first_tokens, normalize_messages, token_id

ASK = [{"role": "user", "content": "A={3,5,7,9}, B={1,3,4,8}. What is A∩B?"}]


def test_chat_messages_get_the_template_and_the_assistant_prompt(tiny):
    assert tiny.tokenizer.decode(tiny.encode(ASK)) == chatml(ASK)


def test_a_last_assistant_message_is_left_open_for_the_model_to_continue(tiny):
    ids = tiny.encode(ASK + [{"role": "assistant", "content": "A∩B={"}])
    assert tiny.tokenizer.decode(ids) == chatml(ASK) + "A∩B={"
    torch.testing.assert_close(ids, tiny.encode(chatml(ASK) + "A∩B={"))


def test_gradio_content_blocks_are_plain_text():
    blocks = [{"role": "user", "content": [{"type": "text", "text": "A="}, {"type": "text", "text": "{1}"}]}]
    assert normalize_messages(blocks) == [{"role": "user", "content": "A={1}"}]
    with pytest.raises(ValueError, match="'role' and 'content'"):
        normalize_messages(["hello"])


def test_token_ids_from_ids_or_one_token_texts(tiny):
    assert token_id(tiny.tokenizer, "3", tiny.arch.vocab) == tiny.tokenizer.encode("3")[0]
    assert token_id(None, 7, 10) == 7
    for bad, message in [(10, "0..9"), (True, "0..9"), ("", "0 tokens"), ("A={1,2}", "exactly one token")]:
        with pytest.raises(ValueError, match=message):
            token_id(tiny.tokenizer if isinstance(bad, str) else None, bad, 10 if not isinstance(bad, str) else 640)


def test_numbers_from_a_person_are_checked_in_one_place():
    from qwen2_lab.inputs import InputError, number

    assert number("top_k", "20", low=0, integer=True) == 20 and number("t", 0.5, low=0, open_low=True) == 0.5
    assert number("x", None, low=0) is None
    for value, message in [("abc", "must be a number"), (float("nan"), "must be a number"), (True, "must be a number"),
                           (2.5, "whole number"), (0, "must be > 0"), (3, "must be <= 2")]:  # fmt: skip
        with pytest.raises(InputError, match=message):
            number("x", value, low=0, high=2, open_low=True, integer=message == "whole number")
    assert issubclass(InputError, ValueError)  # callers that catch ValueError keep working


def test_an_answer_is_a_token_or_a_pair_of_ids_or_one_token_texts(tiny):
    from qwen2_lab.inputs import InputError, answer_ids

    v = tiny.arch.vocab
    assert answer_ids(tiny.tokenizer, 7, v) == (7,) and answer_ids(tiny.tokenizer, (7, 9), v) == (7, 9)
    three = tiny.tokenizer.encode("3", add_special_tokens=False)[0]
    assert answer_ids(tiny.tokenizer, ("3", 9), v) == (three, 9)
    with pytest.raises(InputError, match="token or \\(right, wrong\\)"):
        answer_ids(tiny.tokenizer, (1, 2, 3), v)
    with pytest.raises(InputError, match="exactly one token"):
        answer_ids(tiny.tokenizer, "A∩B={", v)


def test_first_tokens_score_an_answer_by_its_first_token_in_any_vocabulary(tiny):
    from qwen2_lab import qwen2_tokenizer

    real = qwen2_tokenizer()
    for tokenizer in (tiny.tokenizer, real):
        right, wrong = first_tokens(tokenizer, "∈B", "∉B")
        assert right == tokenizer.encode("∈B", add_special_tokens=False)[0]
        assert wrong == tokenizer.encode("∉B", add_special_tokens=False)[0]
    assert len(real.encode("∈B", add_special_tokens=False)) == 2  # two tokens of Qwen2's vocabulary, one of tiny's
    assert len(tiny.tokenizer.encode("∈B", add_special_tokens=False)) == 1
    with pytest.raises(ValueError, match="begin with the same token"):
        first_tokens(real, "∈B", "∈C")
    with pytest.raises(ValueError, match="no tokens"):
        first_tokens(real, "")


def test_first_difference_is_the_first_position_where_two_inputs_differ(tiny):
    clean = tiny.encode("A={3,5,7,9}, B={1,3,4,8}")
    corrupted = tiny.encode("A={3,5,7,9}, B={1,5,4,8}")
    where = first_difference(clean, corrupted)
    assert torch.equal(clean[:where], corrupted[:where]) and clean[where] != corrupted[where]
    assert first_difference([1, 2, 3], [1, 2, 4]) == 2
    with pytest.raises(ValueError, match="same number of tokens"):
        first_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="nothing differs"):
        first_difference([1, 2], [1, 2])
