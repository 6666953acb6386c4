"""Code answers, in this process: find the code and its entry point without running it, then check_code, which runs
it in qwen2_lab.sandbox next to the harness (harness.py) while the judge (judge.py) answers the harness from here.

Every step here is linear in the reply, which is capped at MAX_REPLY characters before any parsing.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from . import harness
from .judge import Judge, draws_for
from .problems import Problem, problem
from .result import CheckResult, Entry, failed, too_long

_PYTHON_TAGS = ("python", "py", "python3")
_DEFINES = re.compile(r"^[ \t]*(?:def|class)\s", re.MULTILINE)
_TAG = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Every ``` fenced block as (language tag, code), in order: one forward scan, so linear in the text.

    A fence opens at ``` followed by an optional tag and the rest of its line, and closes at the next ``` (or the
    end of the text, for a reply cut short).
    """
    blocks, pos = [], 0
    while (start := text.find("```", pos)) >= 0:
        newline = text.find("\n", start + 3)
        if newline < 0:
            break
        tag = _TAG.match(text, start + 3, newline)[1]
        end = text.find("```", newline + 1)
        end = len(text) if end < 0 else end
        blocks.append((tag.lower(), text[newline + 1 : end]))
        pos = end + 3
    return blocks


def extract_code(text: str) -> str | None:
    """The Python in a reply: the last ```python block that defines something (else the last python block, else the
    last unlabelled block), or the whole text if it parses as Python. None if there is no code."""
    blocks = code_blocks(text)
    python = [code for lang, code in blocks if lang in _PYTHON_TAGS]
    defining = [code for code in python if _DEFINES.search(code)]
    plain = [code for lang, code in blocks if not lang]
    for group in (defining, python, plain):
        if group:
            return group[-1].strip("\n")
    if not text.strip() or isinstance(_parse(text), Exception):
        return None
    return text


def _parse(code: str) -> ast.Module | Exception | None:
    """ast.parse, with every way it can fail on hostile text (deep nesting, huge literals) turned into a value."""
    try:
        return ast.parse(code, "solution.py")
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as exc:
        return exc


def find_entry(tree: ast.Module) -> Entry | None:
    """class Solution with searchRange wins; else the top-level function of two positional parameters that is named
    like searchRange, else one with "range" in its name, else the last one defined (helpers usually come first)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Solution":
            if any(isinstance(f, ast.FunctionDef) and f.name == "searchRange" for f in node.body):
                return Entry("leetcode", "Solution.searchRange")
    functions = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and len(node.args.posonlyargs + node.args.args) - len(node.args.defaults) == 2
    ]
    for prefer in (lambda n: n.replace("_", "").lower() == "searchrange", lambda n: "range" in n.lower(), bool):
        if chosen := [name for name in functions if prefer(name)]:
            return Entry("function", chosen[-1])
    return None


@cache
def _harness_source() -> str:
    return Path(harness.__file__).read_text(encoding="utf-8")


def check_code(text_or_code: str, problem_id: str, *, timeout: float = 10.0) -> CheckResult:
    """Run the Python in a reply against the problem's tests in the sandbox; report like LeetCode's judge.

    Never raises for a reply (a str): whatever the reply or the program does becomes the result.
    """
    from ..sandbox import CHANNEL_IN, CHANNEL_OUT, run_python

    prob = problem(problem_id)
    if prob.kind != "code":
        raise ValueError(f"{problem_id} is a math problem: use check_answer(text, {problem_id!r})")
    found = _precheck(text_or_code, prob)
    if isinstance(found, CheckResult):
        return found
    code, entry = found
    judge = Judge(prob, entry, draws_for(code))
    main = _harness_source() + f"\nmain({entry.style!r}, {entry.name!r}, {CHANNEL_IN}, {CHANNEL_OUT})\n"
    run = run_python(main, files={"solution.py": code}, timeout=timeout, max_output=64_000, serve=judge.serve)
    return judge.verdict(run)


def _precheck(text: str, prob: Problem) -> tuple[str, Entry] | CheckResult:
    """Find the code and its entry point without running it; a CheckResult explaining why not, if that fails."""
    if not isinstance(text, str):
        raise TypeError(f"check_code wants the reply text or code as a str, got {type(text).__name__}")
    if refused := too_long(text, prob.id):
        return refused
    code = extract_code(text)
    if code is None:
        return failed(prob.id, "No Code", "No Python code found: put the solution in a ```python block.")
    tree = _parse(code)
    if isinstance(tree, Exception):
        line = f"Line {tree.lineno}: " if getattr(tree, "lineno", None) else ""
        return failed(prob.id, "Compile Error", f"{line}{type(tree).__name__}: {getattr(tree, 'msg', tree)}")
    entry = find_entry(tree)
    if entry is None:
        return failed(
            prob.id,
            "No Entry Point",
            "Found neither class Solution with a method searchRange nor a top-level function taking (nums, target). "
            "LeetCode expects:\nclass Solution:\n    def searchRange(self, nums: List[int], target: int) -> List[int]:",
        )
    return code, entry
