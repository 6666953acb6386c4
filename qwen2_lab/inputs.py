"""What the lab accepts as input, turned into token ids: a string, chat messages, or ids.

    a string         tokenized as is (Qwen2 adds no BOS token)
    chat messages    [{"role": ..., "content": ...}], rendered with the tokenizer's ChatML template and the
                     assistant prompt, so the ids end where the model starts its answer; when the last message is
                     the assistant's, it is left open, so the model continues it ("A∩B={" -> the first element)
    token ids        a list of ints or a 1-D tensor (a [1, S] tensor is accepted too)

The lab, generation and the web demo all go through `encode` and `normalize_messages`, so a chat is turned into
tokens the same way everywhere. So do answers (`answer_ids`: a token id or a one-token text, or a pair of them) and
numbers that come from a person (`number`: a slider, a text box, a keyword argument).

Every refusal here is an `InputError` (a ValueError) whose message names the problem and what to give instead: the
library raises it before any compute, and the web demo shows its message as it is.
"""

from __future__ import annotations

import torch


class InputError(ValueError):
    """A request the lab refuses before computing anything; the message says what is wrong and what to do."""


def number(name: str, value, *, low=None, high=None, integer: bool = False, open_low: bool = False):
    """`value` as an int (integer=True) or a float, checked: a number (a numeric string too, as a text box sends it),
    >= low (> low with open_low), <= high. None stays None. Anything else: an InputError naming `name`."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InputError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InputError(f"{name} must be a number, got {value!r}")
    if integer and value != int(value):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    if low is not None and (value < low or (open_low and value == low)):
        raise InputError(f"{name} must be {'>' if open_low else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise InputError(f"{name} must be <= {high:g}, got {value!r}")
    return int(value) if integer else float(value)


def normalize_messages(messages) -> list[dict]:
    """Chat messages as plain {"role", "content": str} dicts.

    Accepts content given as a list of blocks ({"type": "text", "text": ...}, as Gradio 6 sends it) or a dict.
    """
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise InputError(f"each chat message must be a dict with 'role' and 'content', got {m!r}")
        content = m.get("content")
        if isinstance(content, dict):
            content = [content]
        if isinstance(content, (list, tuple)):
            parts = [c.get("text", "") if isinstance(c, dict) else str(c) for c in content]
            content = "".join(p for p in parts if p)
        out.append({"role": m["role"], "content": "" if content is None else str(content)})
    return out


def encode(tokenizer, inputs, vocab: int) -> torch.Tensor:
    """Token ids [S] (int64, on the CPU) for a string, chat messages or ids; ids must lie in 0..vocab-1."""
    if isinstance(inputs, torch.Tensor):
        ids = inputs.flatten() if inputs.dim() == 2 and inputs.shape[0] == 1 else inputs
        if ids.dim() != 1:
            raise InputError(f"token ids must be 1-D (one sequence), got shape {tuple(inputs.shape)}")
        ids = ids.long().cpu()
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, int) for t in inputs):
        ids = torch.tensor(inputs, dtype=torch.long)
    elif isinstance(inputs, (str, list, tuple)):
        if tokenizer is None:
            raise InputError("this Lab has no tokenizer: pass token ids, or Lab(model, tokenizer)")
        text = inputs if isinstance(inputs, str) else chat_text(tokenizer, inputs)
        ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)
    else:
        raise TypeError(f"inputs must be a string, chat messages or token ids, got {type(inputs).__name__}")
    if ids.numel() == 0:
        raise InputError("the input is empty: give at least one token")
    if int(ids.max()) >= vocab or int(ids.min()) < 0:
        raise InputError(f"token ids must lie in 0..{vocab - 1}, got {int(ids.min())}..{int(ids.max())}")
    return ids


def chat_text(tokenizer, messages) -> str:
    """The chat as the model reads it: the tokenizer's chat template with the assistant prompt added, or, when the
    last message is the assistant's, with that message left open for the model to continue."""
    messages = normalize_messages(messages)
    if messages and messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, continue_final_message=True, tokenize=False)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def token_id(tokenizer, token, vocab: int) -> int:
    """A token id from an id, or from a text the tokenizer encodes as exactly one token; checked against the vocab."""
    if isinstance(token, str):
        if tokenizer is None:
            raise InputError("a token given as text needs a tokenizer: pass its id")
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise InputError(f"{token!r} is {len(ids)} tokens ({ids}); give a text that is exactly one token, or an id")
        token = ids[0]
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab:
        raise InputError(f"a token id must be an int in 0..{vocab - 1}, got {token!r}")
    return token


def answer_ids(tokenizer, answer, vocab: int) -> tuple[int, ...]:
    """The token ids of an answer: one token (an id, or a text that is exactly one token) -> (id,); a pair
    (right, wrong) -> (right id, wrong id), read as a logit difference wherever an answer is taken."""
    if isinstance(answer, (list, tuple)):
        if len(answer) != 2:
            raise InputError(f"answer must be a token or (right, wrong): ids or one-token texts, got {answer!r}")
        return token_id(tokenizer, answer[0], vocab), token_id(tokenizer, answer[1], vocab)
    return (token_id(tokenizer, answer, vocab),)


def first_tokens(tokenizer, *texts: str) -> tuple[int, ...]:
    """The first token of each text, as this tokenizer splits it: how an answer is scored in any vocabulary.

    An answer that is one token in one vocabulary may be several in another ("∈B" is one token of the bundled
    models' 1,024 and two of Qwen2's 151,646), so experiments score each answer by its first token. Texts whose first
    tokens coincide could not be told apart that way: that is an error, raised before any compute.
    """
    if tokenizer is None:
        raise ValueError("answers given as text need a tokenizer: pass their token ids")
    firsts = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise ValueError(f"{text!r} has no tokens: give a non-empty text")
        firsts.append(ids[0])
    if len(set(firsts)) < len(firsts):
        pieces = {t: tokenizer.convert_ids_to_tokens(tokenizer.encode(t, add_special_tokens=False)) for t in texts}
        raise ValueError(
            f"these texts begin with the same token, so their first tokens cannot tell them apart: {pieces}"
        )
    return tuple(firsts)


def first_difference(a, b) -> int:
    """The first position where two token sequences differ (ids, lists or 1-D tensors of the same length): the
    position a patching experiment between two prompts that differ in one place is about."""
    a, b = [int(t) for t in a], [int(t) for t in b]
    if len(a) != len(b):
        raise ValueError(f"the two inputs must have the same number of tokens, got {len(a)} and {len(b)}")
    where = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if where is None:
        raise ValueError("the two inputs are the same tokens: nothing differs between them")
    return where
