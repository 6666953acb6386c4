"""What to run on the first GPU: each check printed as one line, to paste into bench/RESULTS.md.

    python bench/gpu_check.py              # on a GPU: random weights in Qwen2-7B-Instruct's shape, bfloat16
    python bench/gpu_check.py --small      # 7B's vocabulary and config, but 2 layers 64 wide: seconds, any machine

Without a GPU it runs --small on the CPU in float32 by itself; tests/test_gpu_check.py runs it so, so that it cannot
rot before a GPU comes. Lines:

  machine    where it ran: device and its name, dtype, torch and transformers, the model's shape
  trace/HF   the lab's every-site trace against transformers (`compare_with_hf`): the largest |difference| of each
             site over the layers, and whether every site lies within the dtype's tolerance
  trace      one every-site trace against one plain HF forward of the same prompt: median time of --rounds
  decode     `lab.generate_steps` against `model.generate`, greedy, exactly --new-tokens tokens: tokens per second,
             and whether the tokens are the same (in bfloat16 two correct paths may part where two logits nearly tie)
  notebooks  every notebook but 08 (which is about the bundled models) on this model saved as a checkpoint with
             Qwen2's real tokenizer, picked by $QWEN2_LAB_MODEL as a user's own, run as CI runs them (CI=true,
             NBVAL_SKIP cells skipped): passed, or the first failure

Exit status 1 when a site is beyond tolerance or a notebook fails.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine_options  # noqa: E402  (puts the repository on sys.path)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SHAPE = "Qwen/Qwen2-7B-Instruct"
SMALL = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)


def build(small: bool, device: str, dtype):
    """A Lab on random weights (torch seed 0, transformers' own initialisation) in 7B's shape, or SMALL's, made
    directly on `device`, with Qwen2's real tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    import qwen2_lab
    from qwen2_lab.arch import family_config

    config = family_config(SHAPE)
    for key, value in (SMALL if small else {}).items():
        setattr(config, key, value)
    config.layer_types = config.layer_types[: config.num_hidden_layers]  # one per layer, or save_pretrained refuses
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    shape = "2-layer 64-wide" if small else "7B"
    return qwen2_lab.Lab(model, qwen2_lab.qwen2_tokenizer(), name=f"random {shape} shape")


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, rounds: int) -> tuple[float, object]:
    """Median seconds of `rounds` calls of fn() (after one warm-up), and its last result."""
    out, times = fn(), []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def machine_line(lab) -> str:
    import torch
    import transformers

    d = lab.device
    name = torch.cuda.get_device_name(d) if d.type == "cuda" else "CPU"
    a = lab.arch
    return (
        f"machine    {d} ({name}), {lab.dtype}, torch {torch.__version__}, transformers {transformers.__version__};"
        f" {lab.name}: {a.n_layers} layers, hidden {a.hidden}, {a.n_heads}/{a.n_kv_heads} heads, vocab {a.vocab}"
    )


def trace_vs_hf(lab, prompt) -> tuple[str, bool]:
    """The largest |difference| of each site (over the layers) between the lab's trace and transformers'."""
    import qwen2_lab

    report = qwen2_lab.compare_with_hf(lab, prompt)
    worst: dict[str, float] = {}
    for row in report.rows:
        site = re.sub(r"^layers\.\d+\.", "", row.site)
        worst[site] = max(worst.get(site, 0.0), row.max_abs_diff)
    sites = ", ".join(f"{s} {d:.2g}" for s, d in worst.items())
    line = f"trace/HF   rtol {report.rtol:g} atol {report.atol:g}; largest |difference| per site: {sites}"
    return f"{line}; all within tolerance: {report.ok}", report.ok


def trace_speed(lab, ids, rounds: int) -> str:
    import torch

    with torch.no_grad():
        hf, _ = timed(lambda: lab.model(ids[None].to(lab.device)).logits, lab.device, rounds)
    lab_s, trace = timed(lambda: lab.trace(ids), lab.device, rounds)
    return (
        f"trace      every site ({len(trace.sites())} tensors, {len(ids)} tokens): {lab_s * 1e3:.1f} ms against"
        f" {hf * 1e3:.1f} ms for one HF forward: {lab_s / hf:.2f}x its time (median of {rounds})"
    )


def decode_speed(lab, ids, new_tokens: int, rounds: int) -> str:
    lab.model.generation_config.min_new_tokens = new_tokens  # every reply exactly new_tokens long
    greedy = dict(max_new_tokens=new_tokens, do_sample=False)
    hf_s, hf = timed(lambda: lab.model.generate(ids[None].to(lab.device), **greedy), lab.device, rounds)
    lab_s, gen = timed(lambda: lab.generate_steps(ids, **greedy), lab.device, rounds)
    same = hf[0, len(ids) :].tolist() == gen.token_ids
    return (
        f"decode     {new_tokens} greedy tokens: lab.generate_steps {new_tokens / lab_s:.1f} tokens/s, model.generate"
        f" {new_tokens / hf_s:.1f} tokens/s: {hf_s / lab_s:.2f}x its speed; same tokens: {same}"
    )


def notebooks_line(lab, names: list[str], folder: Path) -> tuple[str, bool]:
    """Save the model as a checkpoint, free it, and run the notebooks on it in one kernel."""
    import gc

    import torch

    from tests.helpers import run_notebook, save_checkpoint, start_kernel

    save_checkpoint(lab.model, folder)
    device = lab.device
    lab.model.to("meta")  # the notebooks load their own copy: free this one's memory first
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    threads = {"OMP_NUM_THREADS": "1"} if device.type == "cpu" else {}  # a small model on a CPU: one thread
    # as CI runs them: on a model not trained on 09's problems, CI=true measures a couple of them, not a hundred
    km, kc = start_kernel(NOTEBOOKS, HF_HUB_OFFLINE="1", CI="true", **threads)
    start, failure = time.perf_counter(), None
    try:
        for name in names:
            if failure := run_notebook(kc, NOTEBOOKS / name, folder):
                break
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    took = time.perf_counter() - start
    if failure:
        return f"notebooks  FAILED after {took:.0f} s: " + " | ".join(failure.splitlines()[:1] + failure.splitlines()[-1:]), False  # fmt: skip
    return f"notebooks  {len(names)} passed on the saved checkpoint in {took:.0f} s: {', '.join(n[:2] for n in names)}", True  # fmt: skip


def main(argv=None) -> int:
    import torch

    from qwen2_lab.checks import PROBLEMS
    from qwen2_lab.loading import pick_device

    default_notebooks = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("08"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    machine_options(parser, dtype="auto")
    parser.set_defaults(device="auto")  # cuda when there is one
    parser.add_argument("--small", action="store_true", help="2 layers, 64 wide (automatic without a GPU)")
    parser.add_argument("--new-tokens", type=int, default=None, help="decode length (64; 16 with --small)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--notebooks", nargs="*", default=default_notebooks, help="file names under notebooks/")
    args = parser.parse_args(argv)

    device = torch.device(pick_device(args.device))
    small = args.small or device.type == "cpu"
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else torch.bfloat16 if device.type == "cuda" else torch.float32  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    lab = build(small, device, dtype)
    ids = lab.encode([{"role": "user", "content": PROBLEMS["leetcode-34"].prompt_zh}])  # the launch's LeetCode 34
    print(machine_line(lab), flush=True)
    line, ok = trace_vs_hf(lab, ids)
    print(line, flush=True)
    print(trace_speed(lab, ids, args.rounds), flush=True)
    print(decode_speed(lab, ids, args.new_tokens or (16 if small else 64), args.rounds), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        line, notebooks_ok = notebooks_line(lab, args.notebooks, Path(folder) / "random-qwen2-7b-shape")
    print(line, flush=True)
    return 0 if ok and notebooks_ok else 1


if __name__ == "__main__":
    sys.exit(main())
