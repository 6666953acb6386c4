"""Sampling settings: the model's generation config, the caller's arguments, and bad values refused before any
forward."""

import pytest

MSGS = [{"role": "user", "content": "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?"}]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0), "temperature must be > 0"),
        (dict(top_p=1.5), "top_p must be <= 1"),
        (dict(top_k=-3), "top_k must be >= 0"),
        (dict(top_k=2.5), "top_k must be a whole number"),
        (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
        (dict(repetition_penalty="high"), "repetition_penalty must be a number"),
        (dict(num_beams=4), "unknown generation argument"),
        (dict(max_new_tokens=10_000), "context window"),
        (dict(sites=["layers.9.attn.z"]), "matches no site"),
    ],
)
def test_bad_settings_are_refused_before_any_forward(tiny, kwargs, message):
    forwards = []
    handle = tiny.model.model.embed_tokens.register_forward_hook(lambda *a: forwards.append(1))
    try:
        with pytest.raises((ValueError, TypeError), match=message):
            tiny.generate_steps(MSGS, **kwargs)
    finally:
        handle.remove()
    assert not forwards
