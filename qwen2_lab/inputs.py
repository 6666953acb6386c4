"""What the lab accepts as input, turned into token ids: a string, chat messages, or ids.

    a string         tokenized as is (Qwen2 adds no BOS token)
    chat messages    [{"role": ..., "content": ...}], rendered with the tokenizer's ChatML template and the
                     assistant prompt, so the ids end where the model starts its answer
    token ids        a list of ints or a 1-D tensor (a [1, S] tensor is accepted too)

The lab, generation and the web demo all go through `encode` and `normalize_messages`, so a chat is turned into
tokens the same way everywhere.
"""

from __future__ import annotations

import torch


def normalize_messages(messages) -> list[dict]:
    """Chat messages as plain {"role", "content": str} dicts.

    Accepts content given as a list of blocks ({"type": "text", "text": ...}, as Gradio 6 sends it) or a dict.
    """
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError(f"each chat message must be a dict with 'role' and 'content', got {m!r}")
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
            raise ValueError(f"token ids must be 1-D (one sequence), got shape {tuple(inputs.shape)}")
        ids = ids.long().cpu()
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, int) for t in inputs):
        ids = torch.tensor(inputs, dtype=torch.long)
    elif isinstance(inputs, (str, list, tuple)):
        if tokenizer is None:
            raise ValueError("this Lab has no tokenizer: pass token ids, or Lab(model, tokenizer)")
        text = inputs if isinstance(inputs, str) else chat_text(tokenizer, inputs)
        ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)
    else:
        raise TypeError(f"inputs must be a string, chat messages or token ids, got {type(inputs).__name__}")
    if ids.numel() == 0:
        raise ValueError("the input is empty: give at least one token")
    if int(ids.max()) >= vocab or int(ids.min()) < 0:
        raise ValueError(f"token ids must lie in 0..{vocab - 1}, got {int(ids.min())}..{int(ids.max())}")
    return ids


def chat_text(tokenizer, messages) -> str:
    """The chat as the model reads it: the tokenizer's chat template with the assistant prompt added."""
    return tokenizer.apply_chat_template(normalize_messages(messages), add_generation_prompt=True, tokenize=False)


def token_id(tokenizer, token, vocab: int) -> int:
    """A token id from an id, or from a text the tokenizer encodes as exactly one token; checked against the vocab."""
    if isinstance(token, str):
        if tokenizer is None:
            raise ValueError("a token given as text needs a tokenizer: pass its id")
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{token!r} is {len(ids)} tokens ({ids}); give a text that is exactly one token, or an id")
        token = ids[0]
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab:
        raise ValueError(f"a token id must be an int in 0..{vocab - 1}, got {token!r}")
    return token
