"""bench/gpu_check.py, the script for the first GPU, runs on the CPU at a small shape: it cannot rot before then."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_small_on_the_cpu():
    cmd = [sys.executable, "bench/gpu_check.py", "--small", "--device", "cpu", "--threads", "1", "--rounds", "1",
           "--new-tokens", "4", "--notebooks", "02_one_layer_by_hand.ipynb"]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = {line.split()[0]: line for line in run.stdout.splitlines() if line.strip()}
    assert list(lines) == ["machine", "trace/HF", "trace", "decode", "notebooks"], run.stdout
    assert "vocab 152064" in lines["machine"] and "torch.float32" in lines["machine"]  # Qwen2-7B's vocabulary
    assert lines["trace/HF"].endswith("all within tolerance: True") and "logits " in lines["trace/HF"]
    assert lines["decode"].endswith("same tokens: True")
    assert lines["notebooks"].startswith("notebooks  1 passed")
