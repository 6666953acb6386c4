"""How long does a full trace take to save and load, and how large is its file?

    python bench/save_speed.py                     # a random model with Qwen2-0.5B's shape, 128 tokens, CPU
    python bench/save_speed.py --models 0.5B --tokens 128 --repeats 3 --folder /tmp

Traces every site of every layer (and the logits) once, then, `--repeats` times each: trace.save(path) (one
safetensors file, written to a temporary name and renamed), Trace.load(path) of everything, and a partial load of
one layer's attention pattern (which reads only that tensor from the file). Reports the median of each, the file's
size and the trace's bytes in memory. Loading maps the file: tensors are read from it when first touched,
so the load is also timed with every value read (a sum over each tensor; the file is in the page cache, just
written). The file goes to --folder (default: a temporary folder), deleted after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import build, machine_options, use_threads  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="0.5B")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--folder", default=None)
    machine_options(p)
    a = p.parse_args()
    threads = use_threads(a.threads)
    from qwen2_lab import Trace

    for model in a.models.split(","):
        lab = build(model, a.device, a.dtype, tokenizer=False)
        ids = list(range(1000, 1000 + a.tokens))
        trace = lab.trace(ids, to_cpu=True)
        with tempfile.TemporaryDirectory(dir=a.folder) as folder:
            path = Path(folder) / "trace.safetensors"
            save, _ = timed(lambda: trace.save(path), a.repeats)  # noqa: B023
            load, back = timed(lambda: Trace.load(path), a.repeats)  # noqa: B023
            touch = lambda t: sum(float(x.float().sum()) for x in [*t.store.values(), t.logits])  # noqa: E731
            read, _ = timed(lambda: touch(Trace.load(path)), a.repeats)  # noqa: B023
            one, _ = timed(lambda: Trace.load(path, sites="layers.12.attn.pattern"), a.repeats)  # noqa: B023
            size = path.stat().st_size
        assert back.sites() == trace.sites()
        print(f"{lab.name}, {a.tokens} tokens, {lab.dtype}, {len(trace.sites())} sites, {threads} threads:"
              f" in memory {trace.nbytes() / 2**20:,.0f} MiB + logits {trace.logits.nbytes / 2**20:,.0f} MiB;"
              f" file {size / 2**20:,.0f} MiB; save {save:.2f} s, load all {load:.2f} s"
              f" (and reading every value {read:.2f} s),"
              f" load one site {one:.3f} s (median of {a.repeats})")  # fmt: skip


if __name__ == "__main__":
    main()
