"""Code answers, in this process: find the code and its entry point without running it, then check_code, which
runs it in qwen2_lab.sandbox through the harness (harness.py) and hands the records to the judge (judge.py)."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from . import harness as harness_module
from .harness import _read
from .judge import _judge
from .problems import Problem, problem
from .result import CheckResult

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_MAX_CODE = 100_000


def extract_code(text: str) -> str | None:
    """The Python in a reply: the last ```python block that defines something (else the last python block, else the
    last unlabelled block), or the whole text if it parses as Python. None if there is no code."""
    blocks = [(m[1].lower(), m[2]) for m in _FENCE.finditer(text)]
    python = [code for lang, code in blocks if lang in ("python", "py", "python3")]
    defining = [code for code in python if re.search(r"^\s*(def|class)\s", code, re.MULTILINE)]
    plain = [code for lang, code in blocks if not lang]
    for group in (defining, python, plain):
        if group:
            return group[-1].strip("\n")
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    return text if text.strip() else None


@dataclass(frozen=True)
class Entry:
    """Where the harness calls in: style "leetcode" (Solution().searchRange) or "function" (a top-level def)."""

    style: str
    name: str


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


def check_code(text_or_code: str, problem_id: str, *, timeout: float = 10.0) -> CheckResult:
    """Run the Python in a reply against the problem's tests in the sandbox; report like LeetCode's judge."""
    import os
    import secrets

    from ..sandbox import run_python

    prob = problem(problem_id)
    if prob.kind != "code":
        raise ValueError(f"{problem_id} is a math problem: use check_answer(text, {problem_id!r})")
    result = _precheck(text_or_code, prob)
    if isinstance(result, CheckResult):
        return result
    code, entry = result
    nonce = secrets.token_hex(8)
    cases = [{"nums": list(c.nums), "parts": [list(p) for p in c.parts], "target": c.target} for c in prob.tests]
    harness = _read(os.path.abspath(harness_module.__file__))  # runs in the sandbox as qwen2_lab_checks.py
    run = run_python(
        f"import qwen2_lab_checks\nqwen2_lab_checks.run_harness({nonce!r})\n",
        files={
            "qwen2_lab_checks.py": harness,
            "solution.py": code,
            "entry.json": json.dumps({"style": entry.style, "name": entry.name}),
            "cases.json": json.dumps(cases),
        },
        timeout=timeout,
        max_output=400_000,
    )
    records = [json.loads(line[len(nonce) + 1 :]) for line in run.stdout.splitlines() if line.startswith(nonce + " ")]
    return _judge(prob, entry, records, run)


def _precheck(text: str, prob: Problem) -> tuple[str, Entry] | CheckResult:
    """Find the code and its entry point without running it; a CheckResult explaining why not, if that fails."""

    def fail(kind: str, detail: str, style: str | None = None) -> CheckResult:
        return CheckResult(False, f"{kind}\n{detail}", prob.id, style=style)

    if not isinstance(text, str):
        raise TypeError(f"check_code wants the reply text or code as a str, got {type(text).__name__}")
    code = extract_code(text)
    if code is None:
        return fail("No Code", "No Python code found: put the solution in a ```python block.")
    if len(code) > _MAX_CODE:
        return fail("Compile Error", f"The code is {len(code):,} characters long; the limit is {_MAX_CODE:,}.")
    try:
        tree = ast.parse(code, "solution.py")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        line = f"Line {exc.lineno}: " if getattr(exc, "lineno", None) else ""
        return fail("Compile Error", f"{line}{type(exc).__name__}: {getattr(exc, 'msg', exc)}")
    entry = find_entry(tree)
    if entry is None:
        return fail(
            "No Entry Point",
            "Found neither class Solution with a method searchRange nor a top-level function taking (nums, target). "
            "LeetCode expects:\nclass Solution:\n    def searchRange(self, nums: List[int], target: int) -> List[int]:",
        )
    return code, entry
