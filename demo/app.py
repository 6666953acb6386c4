"""Qwen2 Lab's web demo: chat with Qwen2, check its answers to the Qwen2 launch's problems, look inside.

    python demo/app.py                                   # the model qwen2_lab.load() picks (or $QWEN2_LAB_MODEL)
    python demo/app.py --model Qwen/Qwen2-0.5B-Instruct --device cuda --port 7860
    python demo/app.py --model tiny-moe --share          # the bundled toy MoE, with a public share link

QwenLM's own web_demo.py streams a chat and nothing else. This one also has sampling settings, examples that fit the
model that runs with their answers checked, code checked in a sandbox (the model's, or yours) and the failure sent
back for the model to repair, the reply token by token, the reply drawn from inside by the notebooks' own figures,
and the last answer regenerated with one thing changed inside the model. Each part is a panel of the `lab_demo`
package (next to this file) that builds and wires itself with `build(lab, page)`; this file lays out the tabs and
launches. Serving: one bounded queue, one generation at a time per model, stable API names `chat`, `check_code`
and `check_answer`.
"""

from __future__ import annotations

import argparse

import gradio as gr
from lab_demo import card, chat, check, examples, inside, tokens, whatif
from lab_demo.page import Page

import qwen2_lab

QUEUE_SIZE = 16


def build_app(lab, *, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """The demo's Blocks for one loaded `Lab`, queued and ready to launch."""
    page = Page(lab)
    with gr.Blocks(title="Qwen2 Lab", fill_width=True) as demo:  # full width: the figures need it
        gr.Markdown(f"# Qwen2 Lab: chat with `{lab.name}`, check its answers, look inside")
        gr.Markdown(examples.banner(lab), elem_id="model-banner")
        with gr.Tab("Chat"):
            chat.build(lab, page)
            tokens.build(lab, page)
            check.build(lab, page)
        with gr.Tab("Look inside") as look:
            inside.build(lab, page, opened=look)
        with gr.Tab("What if"):
            whatif.build(lab, page)
        with gr.Tab("Model card"):
            card.build(lab, page)
        gr.api(check.check_code_endpoint, api_name="check_code")
        gr.api(check.check_answer_endpoint, api_name="check_answer")
    return demo.queue(max_size=queue_size, default_concurrency_limit=1)


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
