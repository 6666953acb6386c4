"""The README stays true: its site table is the code's, and its commands exist."""

import json
import re
from pathlib import Path

from qwen2_lab.loading import bundled_path
from qwen2_lab.trace import site_table

ROOT = Path(__file__).parent.parent


def test_readme_site_table_is_the_code_table():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| site | shape | what it is |")
    end = readme.index("<!-- end site table -->")
    assert readme[start:end].strip() == site_table(), "regenerate it: python -m qwen2_lab.trace"


def test_readme_make_targets_exist():
    readme = (ROOT / "README.md").read_text()
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M))
    for used in re.findall(r"`make (\w+)", readme) + re.findall(r"^make (\w+)", readme, re.M):
        assert used in targets, used
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_python_snippets_run():
    """Every ```python block of the README runs as written (except those that load a hub model)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    runnable = [b for b in blocks if 'load("Qwen/' not in b]
    assert len(runnable) >= 3
    for block in runnable:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_states_the_bundled_models_measured_scores():
    """The README's table of the bundled models' held-out scores is their model cards' (training.json's) numbers."""
    from qwen2_lab.tiny.curriculum import TASK_LABELS
    from qwen2_lab.tiny.evaluate import score_range, shipped_scores

    readme = (ROOT / "README.md").read_text()
    tiny, moe = shipped_scores("tiny"), shipped_scores("tiny-moe")
    for task, label in TASK_LABELS.items():
        assert f"| {label} | {100 * tiny[task]:.1f}% | {100 * moe[task]:.1f}% |" in readme, task
    guide = (ROOT / "notebooks" / "README.md").read_text()
    assert f"{score_range('tiny')} (`tiny`) and {score_range('tiny-moe')} (`tiny-moe`)" in guide
    runs = [json.loads((bundled_path(k) / "training.json").read_text()) for k in ("tiny", "tiny-moe")]
    minutes = " and ".join(f"{run['cpu_seconds'] / 60:.0f}" for run in runs)
    assert f"({minutes} minutes of one CPU core" in readme, "the README's training time is the cards'"
