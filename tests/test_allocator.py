"""Repeated traces reuse their memory (qwen2_lab/allocator.py): after the first, a trace faults in almost no fresh
pages, where with glibc's starting thresholds (held fixed) every trace faults in fresh pages again. Run in child
processes: the setting is per process."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, resource, torch
torch.set_num_threads(1)
from tests.helpers import random_lab
lab = random_lab(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                 intermediate_size=1536, vocab_size=1000)
ids, faults = list(range(1, 129)), []
for _ in range(6):
    with torch.no_grad():
        lab.model(torch.tensor([ids]))  # other work in between: HF's own forward, a trace that keeps nothing
    lab.trace(ids, sites=[])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    kept = lab.trace(ids).nbytes() // 4096  # every site, dropped at once
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


# glibc's starting thresholds, held fixed: by default they slide up as mapped blocks are freed, so whether the default
# reuses memory depends on what the process did before (CI saw both); fixed, glibc hands every freed block back.
GLIBC_DEFAULTS = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def faults(keep: str, **malloc_env) -> dict:
    env = {**os.environ, "QWEN2_LAB_KEEP_FREED_MEMORY": keep, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.update(malloc_env)
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_repeated_traces_fault_in_almost_no_fresh_pages():
    kept = faults("1")
    assert max(kept["faults"][1:]) < 0.1 * kept["kept"], kept  # after the first trace: memory reused
    default = faults("0", **GLIBC_DEFAULTS)
    assert min(default["faults"][1:]) > 0.5 * default["kept"], default  # handed back: fresh pages every time


def test_the_setting_is_made_once_and_can_be_turned_off(monkeypatch):
    from qwen2_lab import allocator

    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("QWEN2_LAB_KEEP_FREED_MEMORY", "0")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setenv("QWEN2_LAB_KEEP_FREED_MEMORY", "1")
    assert allocator.keep_freed_memory() is (sys.platform == "linux")
