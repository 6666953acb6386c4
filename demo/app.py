"""Qwen2 Lab's web demo: chat with Qwen2, check its answers to the seed's gaokao and LeetCode problems, look inside.

    python demo/app.py                                   # the model qwen2_lab.load() picks (or $QWEN2_LAB_MODEL)
    python demo/app.py --model Qwen/Qwen2-0.5B-Instruct --device cuda --port 7860
    python demo/app.py --model tiny-moe --share          # the bundled toy MoE, with a public share link

QwenLM's own web_demo.py streams a chat and nothing else. This one also has sampling settings, the seed's prompts
as examples, answers checked against known results (math) or run against tests in a sandbox (code), the failure
sent back for the model to repair, and the conversation drawn from inside by the notebooks' own figures.
Serving: one bounded queue, one generation at a time per model, stable API names `chat` and `check_code`.
"""

from __future__ import annotations

import argparse
import sys
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

from qwen2_lab.arch import count  # noqa: E402
from qwen2_lab.loading import BUNDLED  # noqa: E402

MODEL_GROUP = "model"  # the concurrency group of everything that runs the model: one at a time
QUEUE_SIZE = 16
GPU_SECONDS = 120  # ZeroGPU's allotment per call: a long reply on a large model

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


def setting(*args, **kwargs) -> gr.Slider:
    """A slider whose value reaches the chat function unchecked, so that `chat.generation_kwargs` checks it and names
    a bad one. (Slider's own check answers an API client's "hot" for temperature with an anonymous server error.)"""
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: payload  # on the instance: a Slider subclass would make Gradio write a .pyi
    return slider


def examples() -> tuple[list[list[str]], list[str]]:
    """The chat's examples and their labels: the seed's three problems in Chinese and English, then a few more."""
    prompts, labels = [], []
    for pid, by_lang in check.problem_prompts().items():
        for lang, prompt in by_lang.items():
            prompts.append([prompt])
            labels.append(f"{pid} ({'中文' if lang == 'zh' else 'English'})")
    for prompt, label in MORE_EXAMPLES:
        prompts.append([prompt])
        labels.append(label)
    return prompts, labels


def is_toy(lab) -> bool:
    return lab.name in BUNDLED


def banner(lab) -> str:
    """The plain warning shown above everything while a bundled toy model runs; empty for a real model."""
    if not is_toy(lab):
        return ""
    return (
        f"**This is the bundled toy model `{lab.name}`** ({count(lab.arch.total_params)} parameters): it shows how"
        " the demo works, and its answers are not meant to be right. To talk to a real Qwen2, start the demo with"
        " `python demo/app.py --model Qwen/Qwen2-0.5B-Instruct` (or any Qwen2 hub id or local folder), or set"
        " `QWEN2_LAB_MODEL`."
    )


def model_card(lab) -> str:
    """Which model runs, where, in what precision, and its shape (the same `Arch` summary the notebooks print)."""
    a = lab.arch
    rows = [
        ("model", f"`{lab.name}`" + (" (bundled toy model)" if is_toy(lab) else "")),
        ("device", f"`{lab.device}`"),
        ("dtype", f"`{str(lab.dtype).removeprefix('torch.')}`"),
        ("parameters", f"{count(a.total_params)} ({count(a.non_embedding_params)} non-embedding)"),
        ("context window", f"{a.max_position:,} tokens"),
    ]
    if a.is_moe:
        rows.append(("active per token", f"{count(a.active_params)} (top-{a.top_k} of {a.n_experts} experts)"))
    table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"{banner(lab)}\n\n{table}\n\n```text\n{a}\n```"


def build_app(lab, *, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """The demo's Blocks for one loaded `Lab`, queued and ready to launch."""
    defaults = chat.default_settings(lab)
    lo, hi = chat.LIMITS, chat.max_new_tokens_limit(lab)
    settings = [
        gr.Textbox(chat.DEFAULT_SYSTEM_PROMPT, label="System prompt", lines=2, render=False),
        setting(*lo["temperature"], defaults.temperature, step=0.05, label="Temperature (0 = greedy)", render=False),
        setting(*lo["top_p"], defaults.top_p, step=0.01, label="Top-p", render=False),
        setting(*lo["top_k"], defaults.top_k, step=1, label="Top-k (0 = off)", render=False),
        setting(1, hi, defaults.max_new_tokens, step=1, label="Max new tokens", render=False),
        setting(*lo["repetition_penalty"], defaults.repetition_penalty, step=0.01, label="Repetition penalty", render=False),
    ]  # fmt: skip

    @on_gpu
    def respond(message, history, system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty):
        yield from chat.respond(
            lab, message, history, system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty
        )

    @on_gpu
    def send_back(failure, history, system_prompt, temperature, top_p, top_k, max_new_tokens, repetition_penalty):
        """The failing report as the user's next message, and the model's streamed repair."""
        if not failure:
            raise gr.Error("There is no failed check to send back: check a reply to a code problem first.")
        message = check.failure_message(failure)
        history = list(history or []) + [{"role": "user", "content": message}]
        yield history
        for text in chat.respond(lab, message, history[:-1], system_prompt, temperature, top_p, top_k,
                                 max_new_tokens, repetition_penalty):  # fmt: skip
            yield history + [{"role": "assistant", "content": text}]

    @on_gpu
    def look(history, layer, groups, system_prompt):
        return inside.look_inside(lab, history, layer, groups, system_prompt)

    prompts, labels = examples()
    with gr.Blocks(title="Qwen2 Lab") as demo:
        gr.Markdown(f"# Qwen2 Lab: chat with `{lab.name}`, check its answers, look inside")
        if is_toy(lab):
            gr.Markdown(banner(lab), elem_id="toy-banner")
        with gr.Tab("Chat"):
            chat_ui = gr.ChatInterface(
                respond,
                chatbot=gr.Chatbot(label=lab.name, height=420, elem_id="chatbot"),
                textbox=gr.Textbox(
                    placeholder="Ask anything, or click an example",
                    elem_id="chat-input",
                    max_length=chat.MAX_MESSAGE_CHARS,
                    submit_btn=True,
                    stop_btn=True,
                ),
                additional_inputs=settings,
                additional_inputs_accordion=gr.Accordion(
                    "Settings: system prompt and sampling", open=False, render=False
                ),
                examples=prompts,
                example_labels=labels,
                cache_examples=False,  # Spaces would otherwise generate every example at start-up
                api_name="chat",
                concurrency_limit=1,
                fill_height=False,
            )
            with gr.Group():
                with gr.Row():
                    problem = gr.Dropdown(
                        [("Find it in the chat", check.AUTO)] + [(pid, pid) for pid in check.problem_prompts()],
                        value=check.AUTO, label="Problem to check against", scale=2,
                    )  # fmt: skip
                    check_btn = gr.Button("Check the last reply", elem_id="check-btn", variant="primary", scale=1)
                    send_btn = gr.Button("Send the failure back", elem_id="send-back-btn", scale=1)
                report = gr.Markdown("Math answers are checked as soon as the model finishes; press *Check* for code.",
                                     elem_id="check-report")  # fmt: skip
            failure = gr.State("")  # the report of the last failed code check, ready to send back
        with gr.Tab("Look inside"):
            gr.Markdown(
                "The current conversation, traced once through the Lab's step-by-step forward and drawn with the"
                " same `qwen2_lab.viz` figures as the notebooks."
            )
            with gr.Row():
                first = lab.arch.moe_layers[0] if lab.arch.is_moe else 0
                layer = gr.Slider(0, lab.arch.n_layers - 1, first, step=1, label="Layer", scale=3)
                kv_groups = gr.Dropdown(
                    list(range(lab.arch.n_kv_heads)), value=inside.default_groups(lab.arch), multiselect=True,
                    label=f"KV groups to draw ({lab.arch.group_size} query heads each)", scale=2,
                )  # fmt: skip
                look_btn = gr.Button("Look inside the conversation", elem_id="look-btn", scale=1)
            note = gr.Markdown()
            attention_plot = gr.Plot(label="Attention heads, grouped by the KV head they share")
            lens_plot = gr.Plot(label="Logit lens: each layer's best guess for the next token")
            routing_plot = gr.Plot(label="MoE routing", visible=lab.arch.is_moe)
        with gr.Tab("Model card"):
            gr.Markdown(model_card(lab), elem_id="model-card")

        history = chat_ui.chatbot_value  # the conversation, updated each time a reply is complete
        history.change(auto_check, [history, problem], [report, failure], api_visibility="undocumented")
        check_btn.click(check_last, [history, problem], [report, failure], api_visibility="undocumented")
        send_btn.click(
            send_back, [failure, history, *settings], [chat_ui.chatbot],
            concurrency_id=MODEL_GROUP, concurrency_limit=1, api_visibility="undocumented",
        ).then(
            lambda h: (h, h), [chat_ui.chatbot], [chat_ui.chatbot_state, chat_ui.chatbot_value],
            api_visibility="undocumented", queue=False,
        )  # fmt: skip
        look_btn.click(
            look, [history, layer, kv_groups, settings[0]], [attention_plot, lens_plot, routing_plot, note],
            concurrency_id=MODEL_GROUP, concurrency_limit=1, api_visibility="undocumented",
        )  # fmt: skip
        gr.api(check_code, api_name="check_code")
        gr.api(check_answer, api_name="check_answer")

    share_model_group(demo, respond)
    announce_history_changes(demo, history)
    return demo.queue(max_size=queue_size, default_concurrency_limit=1)


def share_model_group(demo: gr.Blocks, chat_fn) -> None:
    """Put the ChatInterface's events (UI submit, retry, examples, the `chat` API) in the model's concurrency group.

    ChatInterface gives its UI event and its API event separate groups, each limited to 1, so a browser and an API
    client could otherwise generate at the same time; one group makes it one generation per model, whoever asks.
    """
    for block_fn in demo.fns.values():
        if getattr(block_fn.fn, "__wrapped__", None) is chat_fn:
            block_fn.concurrency_id, block_fn.concurrency_limit = MODEL_GROUP, 1


def announce_history_changes(demo: gr.Blocks, history: gr.State) -> None:
    """Let `history.change` fire when ChatInterface stores a finished conversation.

    ChatInterface copies the chatbot into `chatbot_value` with unqueued events, and the Gradio 6 frontend dispatches
    a State's change event only for queued ones; queued, the copy (a trivial function) triggers the auto-check.
    """
    for block_fn in demo.fns.values():
        if any(block is history for block in block_fn.outputs):
            block_fn.queue = True


def check_code(text: str, problem_id: str = "leetcode-34") -> dict:
    """Run the code in `text` (a whole reply, or bare Python) against a code problem's tests, in the sandbox.

    Returns {"problem", "passed", "report"}.
    """
    if problem_id not in check.problem_prompts() or not check.is_code(problem_id):
        codes = [p for p in check.problem_prompts() if check.is_code(p)]
        raise gr.Error(f"{problem_id!r} is not a code problem; the code problems are {codes}")
    result = check.check(text, problem_id)
    return {"problem": problem_id, "passed": bool(result.passed), "report": result.report}


def check_answer(text: str, problem_id: str = "gaokao-2024-set") -> dict:
    """Extract the final answer from `text` and compare it with a math problem's known answer.

    Returns {"problem", "passed", "report"}.
    """
    if problem_id not in check.problem_prompts() or check.is_code(problem_id):
        maths = [p for p in check.problem_prompts() if not check.is_code(p)]
        raise gr.Error(f"{problem_id!r} is not a math problem; the math problems are {maths}")
    result = check.check(text, problem_id)
    return {"problem": problem_id, "passed": bool(result.passed), "report": result.report}


def check_last(history, problem_id):
    """The Check button: the last reply checked against the chosen (or detected) problem. Returns (report, failure)."""
    pid = check.find_problem(history) if problem_id == check.AUTO else problem_id
    reply = check.last_reply(history)
    if pid is None:
        return "No known problem in this chat: click one of the seed's examples, or choose the problem above.", ""
    if reply is None:
        return f"The model has not answered {pid} yet.", ""
    result = check.check(reply, pid)
    failed_code = check.is_code(pid) and not result.passed
    return check.report_markdown(result, pid), result.report if failed_code else ""


def auto_check(history, problem_id):
    """After every complete reply: math is checked at once; code waits for the Check button (it runs programs)."""
    pid = check.find_problem(history) if problem_id == check.AUTO else problem_id
    if pid is None or check.last_reply(history) is None:
        return "Math answers are checked as soon as the model finishes; press *Check* for code.", ""
    if check.is_code(pid):
        return f"This chat is about the code problem **{pid}**: press *Check the last reply* to run its tests.", ""
    return check_last(history, pid)


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
    build_app(lab, queue_size=args.queue_size).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
