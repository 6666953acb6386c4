"""What the notebooks call (qwen2_lab/notebook.py): the exercise checks, silent hidden solutions, and the setup cell."""

import pytest

from qwen2_lab.notebook import WrongAnswer, check_exercise, check_solution


def is_seven(n):
    assert n == 7, f"not {n}: count again"


def test_check_exercise_says_not_answered_yet(capsys):
    assert check_exercise(None, is_seven) is False
    assert check_exercise(..., is_seven) is False
    assert capsys.readouterr().out.count("Not answered yet") == 2


def test_check_exercise_accepts_a_right_answer(capsys):
    assert check_exercise(7, is_seven) is True
    assert capsys.readouterr().out == "Correct.\n"


def test_check_exercise_turns_a_wrong_answer_into_its_hint():
    with pytest.raises(WrongAnswer, match="Not yet: not 6: count again"):
        check_exercise(6, is_seven)
    with pytest.raises(AssertionError, match="Not yet: that is not it"):  # an assert without a message
        check_exercise(6, lambda n: (_ for _ in ()).throw(AssertionError()))
    with pytest.raises(WrongAnswer, match="checking 'seven' failed with TypeError"):  # an answer of the wrong kind
        check_exercise("seven", lambda n: n + 1)


def test_a_wrong_answer_shows_its_hint_alone_in_a_notebook(capsys):
    """IPython renders a WrongAnswer as its hint and one line on what to do, not a traceback through the check."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell()
    shell.run_cell(  # the test defined in the shell, as a notebook does (pytest would rewrite an imported one's asserts)
        "from qwen2_lab.notebook import check_exercise\ndef is_seven(n):\n    assert n == 7, f'not {n}: count again'"
    )
    capsys.readouterr()
    result = shell.run_cell("check_exercise(6, is_seven);")
    assert isinstance(result.error_in_exec, WrongAnswer)
    shown = capsys.readouterr()
    lines = [line for line in (shown.out + shown.err).splitlines() if line.strip()]
    assert len(lines) <= 2 and "Not yet: not 6: count again" in lines[0], lines
    assert "Traceback" not in shown.out + shown.err and "notebook.py" not in shown.out + shown.err


def test_check_solution_is_silent_and_raises_on_a_wrong_solution(capsys):
    """The hidden solution cell says nothing (Run All runs it right under the blank) but fails CI when wrong."""

    def chatty(n):
        print(f"you said {n}")  # what a test prints (a value, a report) would give the answer away
        is_seven(n)

    check_solution(7, chatty)
    assert capsys.readouterr().out == ""
    with pytest.raises(AssertionError, match="the hidden solution fails the exercise's test.*not 6: count again"):
        check_solution(6, chatty)
    with pytest.raises(ValueError, match="gives no solution"):
        check_solution(None, chatty)


def test_notebook_setup_runs_a_bundled_model_on_one_thread(monkeypatch, capsys):
    """A toy model gains nothing from threads and loses much when other work shares the cores (see setup)."""
    import torch

    from qwen2_lab.notebook import setup

    monkeypatch.delenv("QWEN2_LAB_MODEL", raising=False)
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    try:
        torch.set_num_threads(2)
        lab = setup()
        assert lab.name == "tiny" and torch.get_num_threads() == 1
        assert "model tiny on cpu in torch.float32, 1 torch thread;" in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)


def test_notebook_setup_loads_in_the_dtype_qwen2_lab_dtype_names(monkeypatch, capsys):
    """QWEN2_LAB_DTYPE=bfloat16 runs the notebooks in a GPU's dtype anywhere (their comparisons use its tolerance)."""
    import torch

    from qwen2_lab.notebook import setup

    monkeypatch.delenv("QWEN2_LAB_MODEL", raising=False)
    monkeypatch.setenv("QWEN2_LAB_DTYPE", "bfloat16")
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    try:
        assert setup().dtype == torch.bfloat16 and "in torch.bfloat16" in capsys.readouterr().out
        assert setup(dtype="float32").dtype == torch.float32  # an explicit dtype wins
    finally:
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
