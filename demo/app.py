"""Qwen2 Lab's web demo: chat with Qwen2, check its answers to the Qwen2 launch's problems, look inside.

    python demo/app.py                                   # the model qwen2_lab.load() picks (or $QWEN2_LAB_MODEL)
    python demo/app.py --model Qwen/Qwen2-0.5B-Instruct --device cuda --port 7860
    python demo/app.py --model tiny-moe --share          # the bundled toy MoE, with a public share link

QwenLM's own web_demo.py streams a chat and nothing else. This one also has sampling settings, examples that fit the
model that runs, answers checked against known results (math) or run against tests in a sandbox (code), the failure
sent back for the model to repair, the reply token by token with how sure the model was of each and what it weighed
instead (continue from any token with another: `tokens`), the reply drawn from inside by the notebooks' own figures
from what it recorded while generating (`inside`), and the last answer regenerated with one thing changed inside the
model (`whatif`). Serving: one bounded queue, one generation at a time per model, stable API names `chat`,
`check_code` and `check_answer`. Built from Gradio's public components and events only: a `gr.Chatbot` and a textbox
whose submit adds the user's message, then streams the reply (`chat.reply`), whose Generation the session keeps.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules below, also when this file is imported from elsewhere
    sys.path.insert(0, str(HERE))
try:
    import qwen2_lab  # pip-installed, or copied next to this file in a Space
except ImportError:  # a clone that was not pip-installed: the package sits one folder up
    sys.path.insert(0, str(HERE.parent))
    import qwen2_lab

import chat  # noqa: E402
import check  # noqa: E402
import gradio as gr  # noqa: E402
import inside  # noqa: E402
import tokens  # noqa: E402
import whatif  # noqa: E402

from qwen2_lab import viz  # noqa: E402
from qwen2_lab.arch import count  # noqa: E402
from qwen2_lab.facts import DEFAULT_SYSTEM_PROMPT  # noqa: E402
from qwen2_lab.loading import BUNDLED  # noqa: E402
from qwen2_lab.tiny.curriculum import example_prompts  # noqa: E402
from qwen2_lab.tiny.evaluate import score_range  # noqa: E402

MODEL_GROUP = "model"  # the concurrency group of everything that runs the model: one at a time
QUEUE_SIZE = 16
GPU_SECONDS = 120  # ZeroGPU's allotment per call: a long reply on a large model
PRIVATE = dict(api_visibility="private")  # the page's own events: not API endpoints


def unlisted(name: str) -> dict:
    """A page event that a client may call by name (gradio_client, `api_name="/name"`) in its own session, but that
    the API page does not list: it follows the page's components, which may change."""
    return dict(api_name=name, api_visibility="undocumented")


try:  # On a Hugging Face ZeroGPU Space, a GPU is attached only inside functions marked like this.
    import spaces

    on_gpu = spaces.GPU(duration=GPU_SECONDS)
except ImportError:  # anywhere else: a no-op

    def on_gpu(fn):
        return fn


MORE_EXAMPLES = [
    ("What is 17 × 24? Show the steps.", "Arithmetic"),
    ("用三句话解释什么是分组查询注意力（GQA）。", "GQA (中文)"),
    ("Write a Python function that returns the n-th Fibonacci number in O(log n) time.", "Fast Fibonacci"),
]


# ---- what runs, and what the page says about it --------------------------------------------------------------


def is_bundled(lab) -> bool:
    return lab.name in BUNDLED


def examples(lab) -> list[tuple[str, str]]:
    """The chat's examples as (prompt, label): what the running model can be asked.

    A bundled model: the launch's gaokao set question and held-out problems of the four kinds it was trained on,
    in Chinese and English. A real model: the Qwen2 launch's three problems in both languages, then a few more.
    """
    if is_bundled(lab):
        return example_prompts()
    launch = [
        (prompt, f"{pid} ({'中文' if lang == 'zh' else 'English'})")
        for pid, by_lang in check.problem_prompts().items()
        for lang, prompt in by_lang.items()
    ]
    return launch + MORE_EXAMPLES


def banner(lab) -> str:
    """The line above everything: which model runs, which examples the chat offers and why."""
    if is_bundled(lab):
        return (
            f"**The bundled model `{lab.name}` runs here** ({count(lab.arch.total_params)} parameters, on the CPU in"
            " seconds): a small Qwen2 trained on four kinds of problems (set intersection, LeetCode 34 on short"
            " lists, addition and subtraction, and the gaokao set filter) in Chinese and English. On held-out"
            f" problems of those kinds it answers {score_range(lab.name)} right, depending on the kind (its model card"
            " has the table). The examples are problems of those kinds it never saw in training, and the Qwen2"
            " launch's gaokao set question; other questions are beyond it. To talk to a real Qwen2, start the demo"
            " with `python demo/app.py --model Qwen/Qwen2-0.5B-Instruct` (or any Qwen2 hub id or local folder), or"
            " set `QWEN2_LAB_MODEL`."
        )
    return (
        f"**`{lab.name}` runs here.** The examples are the three problems Qwen2 was launched with (two 2024 gaokao"
        " math questions and LeetCode 34, in Chinese and English), whose answers the demo checks, and a few more."
    )


def model_card(lab) -> str:
    """Which model runs, where, in what precision, and its shape (the same `Arch` summary the notebooks print)."""
    a = lab.arch
    rows = [
        ("model", f"`{lab.name}`" + (" (bundled toy model)" if is_bundled(lab) else "")),
        ("device", f"`{lab.device}`"),
        ("dtype", f"`{str(lab.dtype).removeprefix('torch.')}`"),
        ("parameters", f"{count(a.total_params)} ({count(a.non_embedding_params)} non-embedding)"),
        ("context window", f"{a.max_position:,} tokens"),
    ]
    if a.is_moe:
        rows.append(("active per token", f"{count(a.active_params)} (top-{a.top_k} of {a.n_experts} experts)"))
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"{table}\n\n```text\n{a}\n```"


# ---- the page: one builder per part ----------------------------------------------------------------------------


@dataclass
class ChatUI:
    """The Chat tab's components that events read and write."""

    chatbot: gr.Chatbot
    textbox: gr.Textbox
    settings: list  # system prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty
    record: gr.Checkbox  # record each reply for Look inside
    problem: gr.Dropdown
    check_btn: gr.Button
    send_btn: gr.Button
    report: gr.Markdown
    failure: gr.State  # the report of the last failed code check, ready to send back
    gen: gr.State  # the Generation of the chat's last reply (None when the chat does not end with one)
    tokens: TokensUI


@dataclass
class TokensUI:
    """The last reply token by token: the coloured reply, the clicked token, its alternatives, continue."""

    confidence: gr.HighlightedText
    step: gr.Number  # the clicked token's step
    note: gr.Markdown
    candidates: gr.Plot  # the clicked token's candidates, raw against after the sampling settings
    alternatives: gr.Radio
    token: gr.Number  # the token picked among the alternatives: what continue reads (a client may send any id)
    continue_btn: gr.Button

    @property
    def outputs(self) -> list:
        return [self.confidence, self.step, self.note, self.candidates, self.alternatives]


def on_model(trigger, fn, inputs, outputs, **kwargs):
    """An event that runs the model. All of them (the page's chat, the `chat` API, Look inside) share one concurrency
    group, so one generation runs at a time per model, whoever asks; the others wait in the queue."""
    return trigger(on_gpu(fn), inputs, outputs, concurrency_id=MODEL_GROUP, concurrency_limit=1, **kwargs)


def build_app(lab, *, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """The demo's Blocks for one loaded `Lab`, queued and ready to launch."""
    with gr.Blocks(title="Qwen2 Lab", fill_width=True) as demo:  # full width: the figures need it
        gr.Markdown(f"# Qwen2 Lab: chat with `{lab.name}`, check its answers, look inside")
        gr.Markdown(banner(lab), elem_id="model-banner")
        with gr.Tab("Chat"):
            ui = chat_tab(lab)
        with gr.Tab("Look inside"):
            inside_tab(lab, ui)
        with gr.Tab("What if"):
            what_if_tab(lab, ui)
        with gr.Tab("Model card"):
            gr.Markdown(model_card(lab), elem_id="model-card")
        wire_chat(lab, ui)
        api_endpoints(lab, ui)
    return demo.queue(max_size=queue_size, default_concurrency_limit=1)


def chat_tab(lab) -> ChatUI:
    """The chat with its examples and settings, the reply token by token, and the Check panel."""
    chatbot = gr.Chatbot(
        label=lab.name, height=420, elem_id="chatbot",
        examples=[{"text": prompt, "display_text": label} for prompt, label in examples(lab)],
    )  # fmt: skip
    textbox = gr.Textbox(
        placeholder="Ask anything, or click an example", show_label=False, elem_id="chat-input",
        max_length=chat.MAX_MESSAGE_CHARS, submit_btn=True, stop_btn=False,
    )  # fmt: skip
    with gr.Accordion("Settings: system prompt and sampling", open=False):
        settings = settings_controls(lab)
        record = gr.Checkbox(
            inside.record_by_default(lab.arch), elem_id="record-box",
            label="Record each new token for Look inside (its attention in one layer, its routing there, the logit lens)",
            info=f"The logit lens adds about {inside.lens_cost(lab.arch):.1f} forward passes' work per token on this"
            " model. Off: Look inside traces the conversation instead.",
        )  # fmt: skip
    with gr.Accordion("The last reply, token by token: how sure the model was", open=False, elem_id="tokens-panel"):
        token_view = tokens_panel()
    with gr.Group():
        with gr.Row():
            problem = gr.Dropdown(
                [("Find it in the chat", check.AUTO)] + [(pid, pid) for pid in check.problem_prompts()],
                value=check.AUTO, label="Problem to check against", scale=2,
            )  # fmt: skip
            check_btn = gr.Button("Check the last reply", elem_id="check-btn", variant="primary", scale=1)
            send_btn = gr.Button("Send the failure back", elem_id="send-back-btn", scale=1)
        report = gr.Markdown(check.WAITING, elem_id="check-report")
    return ChatUI(
        chatbot, textbox, settings, record, problem, check_btn, send_btn, report, gr.State(""), gr.State(), token_view
    )


def tokens_panel() -> TokensUI:
    """The reply with each token coloured by its probability; under it, what a clicked token weighed."""
    confidence = gr.HighlightedText(
        label="Each token coloured by its probability (raw, when it was chosen); click one", elem_id="confidence",
        color_map=tokens.COLORS, show_legend=True, combine_adjacent=False, interactive=False,
    )  # fmt: skip
    note = gr.Markdown(tokens.HINT, elem_id="token-note")
    candidates = gr.Plot(show_label=False, elem_id="token-candidates")
    alternatives = gr.Radio([], label="Continue with", elem_id="alternatives")
    continue_btn = gr.Button("Continue from here with this token", elem_id="continue-btn")
    hidden = dict(visible=False, precision=0)
    return TokensUI(confidence, gr.Number(**hidden), note, candidates, alternatives, gr.Number(**hidden), continue_btn)


def settings_controls(lab) -> list:
    """The system prompt and the sampling sliders, starting at the model's own generation config."""
    defaults = chat.default_settings(lab)
    lo, hi = chat.LIMITS, chat.max_new_tokens_limit(lab)
    return [
        gr.Textbox(DEFAULT_SYSTEM_PROMPT, label="System prompt", lines=2),
        gr.Slider(*lo["temperature"], defaults.temperature, step=0.05, label="Temperature (0 = greedy)"),
        gr.Slider(*lo["top_p"], defaults.top_p, step=0.01, label="Top-p"),
        gr.Slider(*lo["top_k"], defaults.top_k, step=1, label="Top-k (0 = off)"),
        gr.Slider(1, hi, defaults.max_new_tokens, step=1, label="Max new tokens"),
        gr.Slider(*lo["repetition_penalty"], defaults.repetition_penalty, step=0.01, label="Repetition penalty"),
    ]


def busy() -> gr.Textbox:
    """The textbox while the model answers: cleared, locked, its send button turned into a stop button."""
    return gr.Textbox(value="", interactive=False, submit_btn=False, stop_btn=True)


def ready() -> gr.Textbox:
    return gr.Textbox(interactive=True, submit_btn=True, stop_btn=False)


def shown_tokens(gen) -> tuple:
    """The token panel for the reply `gen` (None: empty), before any token is clicked."""
    return tokens.confidence(gen), None, tokens.HINT, None, gr.Radio(choices=[], value=None)


def wire_chat(lab, ui: ChatUI) -> None:
    """Five ways to start a turn (send a message, click an example, retry, send a failure back, continue the reply
    from a clicked token). Each checks the request (`chat.checked`, `tokens.checked_fork`) and writes the chat to
    show into `turn`; then the chat shows it, one model event streams the answer into it (and the session keeps the
    reply's Generation in `ui.gen`), the math is checked and the token panel shows the new reply.

    A refused request (an empty message, a chat too long for the context window, nothing to send back) shows its
    message and leaves the chat as it was: the check's only output is the hidden `turn`, so Gradio's error mark lands
    on no visible component.
    """
    turn, view = gr.State(), ui.tokens

    def answer(started, stream, inputs, **api):
        shown = started.success(  # (the panel's clicked token stays: the continue event reads it)
            lambda chat: (busy(), chat, None, tokens.HINT), turn, [ui.textbox, ui.chatbot, view.confidence, view.note],
            queue=False, **PRIVATE,
        )  # fmt: skip
        replied = on_model(shown.success, stream, inputs, [ui.chatbot, ui.gen], **(api or PRIVATE))
        replied.then(check.auto_check, [ui.chatbot, ui.problem], [ui.report, ui.failure], **PRIVATE)
        replied.then(shown_tokens, ui.gen, view.outputs, queue=False, **PRIVATE)
        replied.then(ready, None, ui.textbox, queue=False, **PRIVATE)
        return replied

    def stream_reply(history, record, *settings):
        options = dict(top=tokens.TOP, **(inside.record_options(lab.arch) if record else {}))
        yield from chat.reply(lab, history, *settings, **options)

    def send(message, history, *settings):
        return chat.checked(lab, chat.user_turn(message, history), *settings)

    def start_example(example: gr.SelectData, *settings):
        return chat.checked(lab, chat.user_turn(example.value["text"], []), *settings)

    def retry(last: gr.RetryData, history, *settings):
        return chat.checked(lab, history[: last.index + 1], *settings)  # up to the user's message asked again

    def send_back(failure, history, *settings):
        if not failure:
            raise gr.Error("There is no failed check to send back: check a reply to a code problem first.")
        return chat.checked(lab, chat.user_turn(check.failure_message(failure), history), *settings)

    def from_token(gen, step, token, history):
        tokens.checked_fork(gen, step, token, history)
        return history

    def undo(last: gr.UndoData, history):
        return history[: last.index], chat.message_text(history[last.index]["content"]), None  # the message to edit

    quick = dict(concurrency_limit=None, **PRIVATE)  # queued, so that a refusal shows its message
    reply_inputs = [ui.chatbot, ui.record, *ui.settings]
    continued = [ui.gen, view.step, view.token, ui.chatbot]
    replies = [
        answer(ui.textbox.submit(send, [ui.textbox, ui.chatbot, *ui.settings], turn, **quick), stream_reply,
               reply_inputs, **unlisted("reply")),
        answer(ui.chatbot.example_select(start_example, ui.settings, turn, **quick), stream_reply, reply_inputs),
        answer(ui.chatbot.retry(retry, [ui.chatbot, *ui.settings], turn, **quick), stream_reply, reply_inputs),
        answer(ui.send_btn.click(send_back, [ui.failure, ui.chatbot, *ui.settings], turn, **quick), stream_reply,
               reply_inputs),
        answer(view.continue_btn.click(from_token, continued, turn, **quick), tokens.continue_reply, continued,
               **unlisted("continue_reply")),
    ]  # fmt: skip
    ui.textbox.stop(ready, None, ui.textbox, cancels=replies, queue=False, **PRIVATE)
    undone = ui.chatbot.undo(undo, [ui.chatbot], [ui.chatbot, ui.textbox, ui.gen], queue=False, **PRIVATE)
    undone.then(shown_tokens, ui.gen, view.outputs, queue=False, **PRIVATE)
    ui.chatbot.clear(lambda: (check.WAITING, "", None, *shown_tokens(None)), None,
                     [ui.report, ui.failure, ui.gen, *view.outputs], queue=False, **PRIVATE)  # fmt: skip
    ui.check_btn.click(check.check_last, [ui.chatbot, ui.problem], [ui.report, ui.failure], **PRIVATE)

    def pick(gen, clicked: gr.SelectData):
        if gen is None or not 0 <= clicked.index < len(gen.steps):
            raise gr.Error("That reply is gone: ask again, then click a token of the new reply.")
        note, choices, offered = tokens.details(gen, clicked.index)
        figure = inside.fit_width(viz.candidates(gen, clicked.index))
        return clicked.index, note, figure, gr.Radio(choices=choices, value=offered)

    view.confidence.select(pick, ui.gen, [view.step, view.note, view.candidates, view.alternatives], **quick)
    view.alternatives.change(lambda token: token, view.alternatives, view.token, queue=False, **PRIVATE)


def inside_tab(lab, ui: ChatUI) -> None:
    """Look inside the conversation: layer, KV group and position window as controls; figures at full width."""
    arch = lab.arch
    gr.Markdown(
        "The chat's last reply drawn from what it recorded while it was generated (its new tokens' attention in one"
        " layer, their logit lens, their MoE routing), with the same `qwen2_lab.viz` figures as the notebooks; for"
        " another layer, or when the reply was not recorded, the conversation is traced once through the lab's"
        f" step-by-step forward. It opens on a middle layer and the last {inside.WINDOW} tokens."
    )
    with gr.Row():
        layer = gr.Slider(0, arch.n_layers - 1, inside.default_layer(arch), step=1, label="Layer", elem_id="look-layer")
        group = gr.Dropdown(
            inside.group_choices(arch), value=inside.AUTO, label="KV group (its query heads are drawn)",
            info="auto: every group for a recorded reply; the most structured head's group for a traced conversation",
        )  # fmt: skip
        window = gr.Slider(1, inside.MAX_WINDOW, inside.WINDOW, step=1, label="Positions shown", elem_id="look-window")
        back = gr.Slider(0, inside.MAX_LOOK_TOKENS - 1, 0, step=1, label="Window ends this many tokens before the last")
    look_btn = gr.Button("Look inside the conversation", elem_id="look-btn", variant="primary")
    note = gr.Markdown(elem_id="look-note")
    figures = [
        gr.Plot(label="Attention, by the KV head the query heads share", elem_id="attention-plot"),
        gr.Plot(label="Logit lens: each layer's best guess for the next token", elem_id="lens-plot"),
        gr.Plot(label="MoE routing", visible=arch.is_moe, elem_id="routing-plot"),
    ]

    def look(history, gen, layer, group, window, back, system_prompt):
        return inside.look_inside(lab, history, layer, group, window, back, system_prompt, gen=gen)

    controls = [ui.chatbot, ui.gen, layer, group, window, back, ui.settings[0]]
    on_model(look_btn.click, look, controls, [*figures, note], **unlisted("look_inside"))


def what_if_tab(lab, ui: ChatUI) -> None:
    """What if: the chat's last answer regenerated with one change inside the model, beside the answer it gave."""
    arch = lab.arch
    gr.Markdown(
        "Change one thing inside the model and regenerate the chat's last answer with it: the same prompt and"
        " settings (greedy, or the same random seed when sampling). Both answers are shown, with the first token where"
        " they part and how its probability changed."
    )
    with gr.Row():
        kind = gr.Dropdown(whatif.kind_choices(arch), value="head", label="Change", elem_id="what-if-kind", scale=2)
        layer = gr.Number(inside.default_layer(arch), precision=0, label=f"Layer (0-{arch.n_layers - 1})",
                          elem_id="what-if-layer")  # fmt: skip
        which = gr.Number(0, precision=0, label=whatif.which_label(arch), elem_id="what-if-which")
        theta = gr.Number(whatif.THETA, label=f"RoPE theta (this model's: {arch.rope_theta:,.0f})")
    run_btn = gr.Button("Regenerate the last answer with this change", elem_id="what-if-btn", variant="primary")
    note = gr.Markdown(elem_id="what-if-note")
    with gr.Row():
        before = gr.Textbox(label="The last answer", lines=6, interactive=False, elem_id="what-if-before")
        after = gr.Textbox(label="With the change", lines=6, interactive=False, elem_id="what-if-after")
    on_model(run_btn.click, whatif.what_if, [ui.gen, kind, layer, which, theta], [before, after, note],
             **unlisted("what_if"))  # fmt: skip


def api_endpoints(lab, ui: ChatUI) -> None:
    """The stable API: `chat` (a streamed reply, in a conversation kept per client session), `check_code` and
    `check_answer`.

    `chat` takes the message and the page's settings, in the page's order. Its values reach `chat.api_turn` as sent
    (preprocess=False), so that a bad setting is answered by `chat.generation_kwargs`, which names it.
    """

    def chat_api(message, history, system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty):
        """Answer `message` in this session's conversation; the reply streams as it grows."""
        settings = (system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty)
        yield from chat.api_turn(lab, message, history, *settings)

    conversation, reply = gr.State([]), gr.Textbox(visible=False)
    on_model(
        gr.Button(visible=False).click, chat_api, [ui.textbox, conversation, *ui.settings], [reply, conversation],
        api_name="chat", preprocess=False,
    )  # fmt: skip
    gr.api(check.check_code_endpoint, api_name="check_code")
    gr.api(check.check_answer_endpoint, api_name="check_answer")


# ---- the command line ------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default=None, help="hub id, local folder, 'tiny' or 'tiny-moe' (default: as load())")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ... (default: auto)")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32 (default: auto)")
    p.add_argument("--host", default=None, help="address to listen on (default: 127.0.0.1, or $GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--queue-size", type=int, default=QUEUE_SIZE, help=f"requests that may wait (default {QUEUE_SIZE})")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lab = qwen2_lab.load(args.model, device=args.device, dtype=args.dtype)
    print(lab)
    demo = build_app(lab, queue_size=args.queue_size)
    # quiet: Gradio's own banner tells a user to set share=True in launch(); this script's flag is --share
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, quiet=True, prevent_thread_lock=True)
    print(f"Qwen2 Lab's demo is running on {demo.local_url}")
    print(f"public link: {demo.share_url}" if args.share else "for a public link, start it with --share")
    demo.block_thread()


if __name__ == "__main__":
    main()
