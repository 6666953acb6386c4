"""The first hour of a new user: `make lab` and `make browser` work as root and as a normal user, the notebooks'
exercises leave a blank and check it (with a hidden solution that CI runs), and the bundled models load quietly."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import qwen2_lab

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
EXERCISE_NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if "check_exercise(" in p.read_text())


# --- the notebooks' exercises ------------------------------------------------------------------------------------------


def cells(path):
    return [(c["cell_type"], "".join(c["source"]), c) for c in json.loads(path.read_text())["cells"]]


def test_every_notebook_with_an_exercise_is_checked():
    assert {p.name[:2] for p in EXERCISE_NOTEBOOKS} >= {"00", "01", "02", "03", "04", "05", "06", "07", "08", "09"}


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.name[:2])
def test_exercise_leaves_a_blank_and_hides_a_checked_solution(path):
    nb = cells(path)
    blanks = [i for i, (kind, src, _) in enumerate(nb) if kind == "code" and "answer = None  # your code here" in src]
    assert len(blanks) == 1, f"{path.name}: one exercise cell with `answer = None  # your code here`"
    i = blanks[0]
    visible = nb[i][1]
    assert "def test(" in visible and visible.rstrip().rstrip(";").endswith("check_exercise(answer, test)")
    assert not nb[i][2]["metadata"].get("jupyter", {}).get("source_hidden")
    kind, solution, cell = nb[i + 1]
    assert kind == "code" and cell["metadata"] == {"jupyter": {"source_hidden": True}, "tags": ["solution"]}
    assert solution.startswith("#"), "JupyterLab shows a collapsed cell's first line: a comment, not the answer"
    assert "solution = " in solution and "answer" not in solution.split("\n", 1)[1], (
        "the learner's `answer` stays theirs"
    )
    lines = [line for line in solution.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[-1] == "check_solution(solution, test)", "CI runs the test on the solution, silently"
    assert "check_exercise" not in solution and "print(" not in solution and "display(" not in solution, (
        "Run All runs the solution right under the blank: it must say nothing (no Correct., no value)"
    )
    assert not cell["outputs"], "the saved notebook must not show the solution's output"


# --- make ------------------------------------------------------------------------------------------------------------


def fake_bin(tmp_path, uid, apt_exit=None):
    """A PATH with no chromium, an `id` that answers `uid`, and optionally an apt-get that fails with `apt_exit`."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    if apt_exit is not None:
        (bin_ / "apt-get").write_text(f'#!/bin/sh\necho "E: Could not open lock file" >&2\nexit {apt_exit}\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    return str(bin_)


def make(*args, path=None):
    env = {"PATH": path} if path else None
    return subprocess.run([MAKE, "-s", "-C", str(ROOT), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(not MAKE, reason="needs make")
def test_make_browser_without_root_or_apt_says_the_browser_test_will_be_skipped(tmp_path):
    """A normal user, or a machine without apt-get: no install attempted, a clear line, and make goes on (exit 0)."""
    for uid in (1000, 0):  # 0: root on a machine without apt-get (macOS)
        run = make("browser", path=fake_bin(tmp_path / str(uid), uid))
        assert run.returncode == 0, run.stderr
        assert "the browser test will be skipped" in run.stdout


@pytest.mark.skipif(not MAKE, reason="needs make")
def test_make_browser_survives_a_failing_apt_get(tmp_path):
    run = make("browser", path=fake_bin(tmp_path, 0, apt_exit=100))
    assert run.returncode == 0, run.stderr
    assert "installing chromium chromium-driver fonts-noto-cjk" in run.stdout
    assert "could not install them; the browser test will be skipped" in run.stdout


@pytest.mark.skipif(not MAKE, reason="needs make")
def test_make_lab_is_rooted_at_the_repository_opens_00_and_takes_flags(tmp_path):
    for uid, root_flag in ((0, True), (1000, False)):
        run = make(
            "-n", "-o", "setup", "lab", "JUPYTER_ARGS=--no-browser --port 8899", path=fake_bin(tmp_path / str(uid), uid)
        )
        assert run.returncode == 0, run.stderr
        (line,) = [x for x in run.stdout.replace("\\\n", " ").splitlines() if "jupyter lab" in x]
        assert f'--ServerApp.root_dir="{ROOT}"' in line
        assert "--LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb" in line
        assert ("--allow-root" in line) == root_flag
        assert line.rstrip().endswith("--no-browser --port 8899")


# --- loading ---------------------------------------------------------------------------------------------------------


def test_bundled_models_load_without_a_progress_bar_and_real_folders_keep_theirs(tmp_path, tiny, capfd):
    from transformers.utils import logging as hf_logging

    qwen2_lab.load("tiny")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # as it was before

    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    capfd.readouterr()
    qwen2_lab.load(str(tmp_path / "m"))  # a folder stands for a real checkpoint: its bar stays
    assert "Loading weights" in capfd.readouterr().err

    hf_logging.disable_progress_bar()  # a user who turned them off keeps them off
    try:
        qwen2_lab.load(str(tmp_path / "m"))
        assert "Loading weights" not in capfd.readouterr().err and not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
