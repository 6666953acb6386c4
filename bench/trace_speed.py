"""How much does looking inside cost? lab.trace against HF's own forward, in time and peak memory.

    python bench/trace_speed.py                    # tiny, tiny-moe and a random model with Qwen2-0.5B's shape, CPU
    python bench/trace_speed.py --models 0.5B --tokens 128 --repeats 5
    python bench/trace_speed.py --models 7B --device cuda --dtype bfloat16     # on a GPU

Times: one process runs the four modes in turn, round after round (so a busy machine slows them alike), and
reports each mode's median over `--repeats` rounds after a warm-up. Memory: each mode runs once more in a fresh
child process, so its peak is its own: peak resident memory (CPU) or peak allocated memory (CUDA) during the call,
above what the loaded model already holds, beside "kept": what the call's result itself holds (HF's logits; the
trace's tensors and logits). Peak minus kept is the forward's own working memory. Rows: HF eager forward (the reference, since the lab keeps attention patterns
as eager does), HF sdpa forward, lab.trace keeping nothing (sites=[]: fused attention, logits only), and lab.trace
keeping every site. Faults: minor page faults per call (median), i.e. pages of fresh memory the call touched; a Lab
on the CPU asks malloc to keep freed memory for reuse (qwen2_lab/allocator.py), QWEN2_LAB_KEEP_FREED_MEMORY=0 to
compare without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import build, machine_options  # noqa: E402

MODES = ["hf_eager", "hf_sdpa", "lab_nothing", "lab_every_site"]
THREADS = 2  # --threads; on a busy machine use 1: spinning OpenMP threads that share cores distort every row


def runner(lab, mode: str, ids):
    import torch

    def run():
        with torch.inference_mode():
            lab.model.set_attn_implementation("sdpa" if mode == "hf_sdpa" else "eager")
            if mode.startswith("hf"):
                return lab.model(input_ids=ids[None], use_cache=False).logits
            return lab.trace(ids, sites=[] if mode == "lab_nothing" else None, max_bytes=float("inf"))

    return run


def setup(model: str, tokens: int, device: str, dtype: str):
    import torch

    if device == "cpu":
        torch.set_num_threads(THREADS)
    lab = build(model, device, dtype, tokenizer=False)
    ids = torch.randint(0, lab.arch.vocab, (tokens,), generator=torch.Generator().manual_seed(0)).to(lab.device)
    return lab, ids


def times(model: str, tokens: int, repeats: int, device: str, dtype: str) -> tuple[dict, dict]:
    """Median seconds per call of each mode, and median minor page faults per call (fresh memory touched)."""
    import resource

    lab, ids = setup(model, tokens, device, dtype)
    runs = {mode: runner(lab, mode, ids) for mode in MODES}
    out, faults = {mode: [] for mode in MODES}, {mode: [] for mode in MODES}
    for round_ in range(repeats + 1):
        for mode, run in runs.items():
            sync(device)
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            run()
            sync(device)
            if round_:  # round 0 is the warm-up
                out[mode].append(time.perf_counter() - t0)
                faults[mode].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {mode: statistics.median(t) for mode, t in out.items()}, {m: statistics.median(f) for m, f in faults.items()}


def memory(model: str, mode: str, tokens: int, device: str, dtype: str) -> dict:
    """Peak memory of one call above the loaded model, and what the result itself holds (the logits, the trace)."""
    lab, ids = setup(model, tokens, device, dtype)
    run = runner(lab, mode, ids)
    run()  # warm-up, then measure from a clean slate
    sync(device)
    base = peak_reset(device)
    kept = run()
    sync(device)
    peak = peak_read(device) - base
    held = kept.nbytes() + kept.logits.numel() * kept.logits.element_size() if mode.startswith("lab") else kept.nbytes
    return {"peak": peak / 2**20, "kept": held / 2**20}


def sync(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_reset(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM, the peak resident set, to the current one
        f.write("5")
    return rss("VmRSS")


def peak_read(device: str) -> int:
    import torch

    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else rss("VmHWM")


def rss(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "tiny-moe", "0.5B"])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    machine_options(ap, dtype="float32", threads=2)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    if args.child:
        print(json.dumps(memory(*args.child, args.tokens, args.device, args.dtype)))
        return

    import os

    keep = os.environ.get("QWEN2_LAB_KEEP_FREED_MEMORY", "1") != "0"
    print(
        f"{args.tokens} tokens, {args.device}, {args.dtype}, {args.threads} threads, median of {args.repeats};"
        f" x = time / HF eager; freed memory kept for reuse: {'yes' if keep else 'no (QWEN2_LAB_KEEP_FREED_MEMORY=0)'}"
    )
    print(f"{'model':<10} {'mode':<16} {'ms':>9} {'x':>6} {'faults':>8} {'peak MiB':>9} {'kept MiB':>9}")
    for model in args.models:
        t, faults = times(model, args.tokens, args.repeats, args.device, args.dtype)
        for mode in MODES:
            cmd = [sys.executable, __file__, "--child", model, mode, "--tokens", str(args.tokens)]
            cmd += ["--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            nan = {"peak": float("nan"), "kept": float("nan")}
            mib = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else nan
            ratio = t[mode] / t["hf_eager"]
            row = f"{model:<10} {mode:<16} {t[mode] * 1e3:9.1f} {ratio:6.2f} {faults[mode]:8.0f}"
            row += f" {mib['peak']:9.1f} {mib['kept']:9.1f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
