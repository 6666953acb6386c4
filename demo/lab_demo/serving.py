"""How the page serves requests: one generation at a time per model, ZeroGPU where there is one, and the one place
where a request the lab refuses becomes a message on the page.

The library refuses a bad request with `qwen2_lab.inputs.InputError` (a ValueError) before any compute; `refusals`
turns it into a `gr.Error` with the same message and no traceback on the server's console (a visitor's typo is not
a server fault). The demo never re-checks what the library checks.
"""

from __future__ import annotations

import functools
import inspect

import gradio as gr

from qwen2_lab.inputs import InputError

MODEL_GROUP = "model"  # the concurrency group of everything that runs the model: one at a time
GPU_SECONDS = 120  # ZeroGPU's allotment per call: a long reply on a large model
PRIVATE = dict(api_visibility="private")  # the page's own events: not API endpoints
QUICK = dict(concurrency_limit=None, **PRIVATE)  # queued (so that a refusal shows its message), never waiting

try:  # On a Hugging Face ZeroGPU Space, a GPU is attached only inside functions marked like this.
    import spaces

    on_gpu = spaces.GPU(duration=GPU_SECONDS)
except ImportError:  # anywhere else: a no-op

    def on_gpu(fn):
        return fn


def refused(message: str) -> gr.Error:
    """A refusal as the page shows it: the message alone, no traceback on the server's console."""
    return gr.Error(message, print_exception=False)


def refusals(fn):
    """`fn` (a function or a generator function) with the lab's InputError shown on the page as its message."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except InputError as e:
                raise refused(str(e)) from None

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            raise refused(str(e)) from None

    return call


def unlisted(name: str) -> dict:
    """A page event that a client may call by name (gradio_client, `api_name="/name"`) in its own session, but that
    the API page does not list: it follows the page's components, which may change."""
    return dict(api_name=name, api_visibility="undocumented")


def on_model(trigger, fn, inputs, outputs, **kwargs):
    """An event that runs the model. All of them (the page's chat, the `chat` API, Look inside, What if) share one
    concurrency group, so one generation runs at a time per model, whoever asks; the others wait in the queue."""
    return trigger(on_gpu(refusals(fn)), inputs, outputs, concurrency_id=MODEL_GROUP, concurrency_limit=1, **kwargs)
