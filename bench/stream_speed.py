"""Does streaming cost speed? The demo's chat path against plain `model.generate`, in tokens per second.

    python bench/stream_speed.py                         # tiny and a random model with Qwen2-0.5B's shape, CPU
    python bench/stream_speed.py --threads 1 --http      # on a shared 2-core machine
    python bench/stream_speed.py --models tiny --threads 1 --page   # and the page's chat, recording for Look inside
    python bench/stream_speed.py --models 0.5B --new-tokens 128 --repeats 7
    python bench/stream_speed.py --models 1.5B --device cuda --dtype bfloat16 --http

Rows, all greedy on the same chat prompt (the Qwen2 launch's LeetCode 34 prompt) and the same model:
  generate      `model.generate(input_ids)` in the calling thread, the whole reply at once (the reference)
  demo stream   `chat.respond`, the function behind the demo's chat and its `chat` API: the request checked, then
                `lab.stream` (the lab's own forward with HF's KV cache, a piece per token) with every growing reply
                yielded
  demo http     (--http) the same, served by the demo app and read through `gradio_client` over loopback
  page top-5    (--page) `chat.reply`, the page's chat: the same, and each token's top-5 candidates recorded
  page record   (--page) the same, and what Look inside draws after the reply: one layer's attention, its MoE
                routing, and the logit lens of every layer
Every reply is exactly --new-tokens long: the model's generation config gets min_new_tokens = max_new_tokens, so an
end-of-turn token cannot stop one row early, and the streamed text is asserted equal to generate's. The rows
alternate within each repeat, after one warm-up of each, so drift in a shared machine's load hits all of them
alike; the table shows medians. The aim is demo stream / generate >= 0.95.

On a busy CPU pass --threads 1: threads that share cores with other jobs spin and wait, and distort every row. The
http row runs client, server and model in one process, so it also counts the client's own work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "demo"), str(ROOT)]  # the demo (app.py, its lab_demo package), and qwen2_lab from a clone
from common import build, machine_options, use_threads  # noqa: E402


def measure(lab, new_tokens: int, repeats: int, http: bool, page: bool = False) -> dict[str, list[float]]:
    """Seconds per reply for each row, `repeats` times each after one warm-up."""
    import torch
    from lab_demo import chat
    from lab_demo.check import problem_prompts

    from qwen2_lab.facts import DEFAULT_SYSTEM_PROMPT

    prompt = problem_prompts()["leetcode-34"]["zh"]
    settings = (DEFAULT_SYSTEM_PROMPT, 0.0, 1.0, 0, new_tokens, 1.0)  # greedy, no repetition penalty
    lab.model.generation_config.min_new_tokens = new_tokens  # every row makes exactly new_tokens tokens
    ids = lab.encode(chat.conversation(prompt, [], DEFAULT_SYSTEM_PROMPT))[None]  # (1, S)

    def sync():
        if lab.device.type == "cuda":
            torch.cuda.synchronize()

    def generate() -> str:
        with torch.inference_mode():
            out = lab.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=new_tokens, repetition_penalty=1.0)  # fmt: skip
        sync()
        assert out.shape[1] - ids.shape[1] == new_tokens, "generate stopped early"
        return lab.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    def stream() -> str:
        last = deque(chat.respond(lab, prompt, [], *settings), maxlen=1)  # read every update, keep the final one
        sync()
        return last[0]

    def reply(**options) -> str:
        last = deque(chat.reply(lab, [{"role": "user", "content": prompt}], *settings, **options), maxlen=1)
        sync()
        return last[0][0][-1]["content"]

    rows = {"generate": generate, "demo stream": stream}
    if page:
        from lab_demo import inside

        rows["page top-5"] = lambda: reply(top=chat.TOP)
        rows["page record"] = lambda: reply(top=chat.TOP, **inside.record_options(lab.arch))
    client = server = None
    if http:
        import app
        from gradio_client import Client

        server = app.build_app(lab)
        _, url, _ = server.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        client = Client(url, verbose=False)
        rows["demo http"] = lambda: client.predict(prompt, *settings, api_name="/chat")
    try:
        reference = generate()
        for name, fn in rows.items():  # warm-up, and the same text from every path
            assert fn() == reference, f"{name} gave a different reply than generate"
        times = {name: [] for name in rows}
        for _ in range(repeats):
            for name, fn in rows.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        return times
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "0.5B"], help="tiny, tiny-moe, 0.5B, 1.5B, 7B, a hub id")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    machine_options(p)
    p.add_argument("--http", action="store_true", help="also time the served app through gradio_client")
    p.add_argument("--page", action="store_true", help="also time the page's chat, with and without its record")
    args = p.parse_args(argv)
    threads = use_threads(args.threads)
    print(f"{args.new_tokens} new tokens, greedy; median of {args.repeats} after a warm-up; device {args.device},"
          f" torch threads {threads}")  # fmt: skip
    header = f"{'model':<20} {'path':<12} {'tokens/s':>10} {'s/reply':>9} {'vs generate':>12}"
    lines = [header, "-" * len(header)]
    for model in args.models:
        lab = build(model, args.device, args.dtype)
        times = measure(lab, args.new_tokens, args.repeats, args.http, args.page)
        base = statistics.median(times["generate"])
        for name, ts in times.items():
            median = statistics.median(ts)
            lines.append(
                f"{lab.name:<20} {name:<12} {args.new_tokens / median:>10.1f} {median:>9.3f} {base / median:>11.3f}x"
            )
        del lab
    print("\n".join(lines))


if __name__ == "__main__":
    main()
