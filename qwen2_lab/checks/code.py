"""Code answers, in this process: find the code and its entry point without running it, then check_code, which runs
it in qwen2_lab.sandbox next to the harness (harness.py) while the judge (judge.py) answers the harness from here.

Every step here is linear in the reply, which is capped at MAX_REPLY characters before any parsing.
"""

from __future__ import annotations

import ast
import re
import textwrap
from functools import cache
from pathlib import Path

from . import harness
from .judge import Judge, draws_for
from .problems import Problem, problem
from .result import CheckResult, Entry, failed, too_long

_PYTHON_TAGS = ("python", "py", "python3")
_SIGNATURE = ("nums", "target")  # LeetCode 34's parameters, after self
_TAG = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """Every ``` fenced block a reader of the rendered reply sees, as (language tag, code), in order: one forward
    scan, so linear in the text.

    A fence opens at ``` followed by an optional tag and the rest of its line, and closes at the next ``` (or the
    end of the text, for a reply cut short). An HTML comment (<!-- ... -->) outside a block is not shown, so blocks
    inside it are skipped. A block indented under a list item loses that indentation, as Markdown renders it.
    """
    blocks, pos = [], 0
    while (start := text.find("```", pos)) >= 0:
        comment = text.find("<!--", pos, start)
        if comment >= 0:
            close = text.find("-->", comment + 4)
            pos = len(text) if close < 0 else close + 3
            continue
        newline = text.find("\n", start + 3)
        if newline < 0:
            break
        tag = _TAG.match(text, start + 3, newline)[1]
        end = text.find("```", newline + 1)
        end = len(text) if end < 0 else end
        blocks.append((tag.lower(), textwrap.dedent(text[newline + 1 : end])))
        pos = end + 3
    return blocks


def extract_code(text: str) -> str | None:
    """The solution's code in a reply (select_code), or None if there is no code."""
    found = select_code(text)
    return found[0] if found else None


def select_code(text: str) -> tuple[str, str] | None:
    """(code, which block) as a person reading the reply would pick it: among the ```python blocks (else the
    unlabelled ones), the last that defines class Solution with searchRange, else the last defining a function
    named like searchRange, else the last with a function of the problem's signature (nums, target), else the last
    that defines anything, else the last. A reply that is plain code is taken whole. None if there is no code."""
    blocks = code_blocks(text)
    group = [i for i, (lang, _) in enumerate(blocks) if lang in _PYTHON_TAGS]
    group = group or [i for i, (lang, _) in enumerate(blocks) if not lang]
    if group:
        trees = {i: _parse(blocks[i][1]) for i in group}
        ranks = (_solves, _names_entry, _has_signature, _defines)
        chosen = next((found for rank in ranks if (found := [i for i in group if rank(trees[i])])), group)
        i = chosen[-1]
        return blocks[i][1].strip("\n"), f"code block {i + 1} of {len(blocks)} (```{blocks[i][0]})"
    if not text.strip() or isinstance(_parse(text), Exception):
        return None
    return text, "the whole reply (plain code)"


def _functions(tree: ast.Module) -> list[ast.FunctionDef]:
    """Top-level functions that take exactly two required positional arguments."""
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and len(node.args.posonlyargs + node.args.args) - len(node.args.defaults) == 2
    ]


def _solves(tree) -> bool:
    return isinstance(tree, ast.Module) and find_entry(tree) == Entry("leetcode", "Solution.searchRange")


def _names_entry(tree) -> bool:
    return isinstance(tree, ast.Module) and any(
        f.name.replace("_", "").lower() == "searchrange" for f in _functions(tree)
    )


def _has_signature(tree) -> bool:
    return isinstance(tree, ast.Module) and any(_params(f) == _SIGNATURE for f in _functions(tree))


def _defines(tree) -> bool:
    """Parses and defines a function or class (or does not parse: the compile error is then the report)."""
    if not isinstance(tree, ast.Module):
        return True
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in tree.body)


def _params(function: ast.FunctionDef) -> tuple[str, ...]:
    """The names of its required positional parameters."""
    names = [a.arg for a in function.args.posonlyargs + function.args.args]
    return tuple(names[: len(names) - len(function.args.defaults)])


def _parse(code: str) -> ast.Module | Exception | None:
    """ast.parse, with every way it can fail on hostile text (deep nesting, huge literals) turned into a value."""
    try:
        return ast.parse(code, "solution.py")
    except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as exc:
        return exc


def find_entry(tree: ast.Module) -> Entry | None:
    """class Solution with searchRange wins; else, among top-level functions of two required positional parameters:
    one named like searchRange, else one with "range" in its name, else one of the problem's signature (nums,
    target) that no other function calls (helpers are called), else one nobody calls, else the last one."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Solution":
            if any(isinstance(f, ast.FunctionDef) and f.name == "searchRange" for f in node.body):
                return Entry("leetcode", "Solution.searchRange")
    functions = _functions(tree)
    called = {
        node.func.id
        for function in tree.body
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id != function.name
    }
    for prefer in (
        lambda f: f.name.replace("_", "").lower() == "searchrange",
        lambda f: "range" in f.name.lower(),
        lambda f: _params(f) == _SIGNATURE and f.name not in called,
        lambda f: f.name not in called,
        bool,
    ):
        if chosen := [f.name for f in functions if prefer(f)]:
            return Entry("function", chosen[-1])
    return None


@cache
def _harness_source() -> str:
    return Path(harness.__file__).read_text(encoding="utf-8")


def check_code(text_or_code: str, problem_id: str, *, timeout: float = 10.0, strict: bool = True) -> CheckResult:
    """Run the Python in a reply against the problem's tests in the sandbox; report like LeetCode's judge.

    Never raises for a reply (a str): whatever the reply or the program does becomes the result. strict (the
    default): run nothing unless the sandbox has every required layer (qwen2_lab.sandbox.REQUIRED_LAYERS), raising
    qwen2_lab.sandbox.SandboxUnavailable otherwise; strict=False runs with whatever layers this machine gives.
    """
    from ..sandbox import CHANNEL_IN, CHANNEL_OUT, run_python

    prob = problem(problem_id)
    if prob.kind != "code":
        raise ValueError(f"{problem_id} is a math problem: use check_answer(text, {problem_id!r})")
    found = _precheck(text_or_code, prob)
    if isinstance(found, CheckResult):
        return found
    code, entry, where = found
    judge = Judge(prob, entry, draws_for(code), source=where)
    main = _harness_source() + f"\nmain({entry.style!r}, {entry.name!r}, {CHANNEL_IN}, {CHANNEL_OUT})\n"
    run = run_python(
        main,
        files={"solution.py": code},
        timeout=timeout,
        max_output=64_000,
        serve=judge.serve,
        strict=strict,
        on_start=judge.attach,
    )
    return judge.verdict(run)


def _precheck(text: str, prob: Problem) -> tuple[str, Entry, str] | CheckResult:
    """Find the code and its entry point without running it; a CheckResult explaining why not, if that fails."""
    if not isinstance(text, str):
        raise TypeError(f"check_code wants the reply text or code as a str, got {type(text).__name__}")
    if refused := too_long(text, prob.id):
        return refused
    found = select_code(text)
    if found is None:
        return failed(prob.id, "No Code", "No Python code found: put the solution in a ```python block.")
    code, where = found
    tree = _parse(code)
    if isinstance(tree, Exception):
        line = f"Line {tree.lineno}: " if getattr(tree, "lineno", None) else ""
        error = f"{line}{type(tree).__name__}: {getattr(tree, 'msg', tree)}"
        return failed(prob.id, "Compile Error", f"{error}\nJudged: {where}.")
    entry = find_entry(tree)
    if entry is None:
        return failed(
            prob.id,
            "No Entry Point",
            "Found neither class Solution with a method searchRange nor a top-level function taking (nums, target). "
            "LeetCode expects:\nclass Solution:\n    def searchRange(self, nums: List[int], target: int) -> List[int]:"
            f"\nJudged: {where}.",
        )
    return code, entry, where
