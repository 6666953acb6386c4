"""The seed's three problems, and checks of a model's replies to them.

At Qwen2's launch (reference/qwen2.md, section 5) the model was shown two 2024 gaokao math questions and LeetCode 34.
Its first LeetCode answer was a bare function that LeetCode's judge rejected (no `class Solution`); fed the error
message back, it repaired its own code. Notebook 07 and the demo replay that loop, so this module gives:

    from qwen2_lab.checks import PROBLEMS, problem, check_answer, check_code
    problem("gaokao-2024-set").prompt_zh                       # the exact prompt of the launch coverage
    check_answer(r"……所以 $A \\cap B = \\{-1, 0\\}$", "gaokao-2024-set").passed  # True
    result = check_code(reply, "leetcode-34")                  # runs in qwen2_lab.sandbox, never in this process
    result.passed, result.style, result.report                 # report reads like LeetCode's feedback

check_answer finds the reply's *final* answer: the last \\boxed{...}; else the latest explicit statement, either an
answer phrase ("答案是", "the answer is") or a problem-specific one ("A∩B = {...}", "交点个数为 6", "6 intersection
points"), so that a correction late in a reply beats an earlier claim; only then the last set literal (or the last
number on the last line). Text is NFKC-normalised first, so full-width ，｛｝６ and LaTeX \\{ \\} \\left\\{ read
like ASCII; small Chinese and English numerals (六, six) count as numbers.

check_code takes the last ```python block of a reply (or the whole text if it is plain code), finds the entry point
by parsing it (`class Solution` with `searchRange`: LeetCode style; otherwise a top-level function of (nums, target)),
and runs it in the sandbox against the problem's tests. The O(log n) demand is checked by passing, on inputs of a
million elements, a list subclass that counts element reads and stops the code past 10·⌈log2 n⌉ of them (200 for
n = 10^6; a binary search needs about 40, a scan up to 10^6). Counted: indexing, slices, iteration (for, list(),
sorted(), sum(), unpacking...), `in`, index(), count(), copy(), ==, +, *, repr() and the bisect module (it reads
through __getitem__). Not counted: C code that reads list memory directly (heapq, json, list.__getitem__(nums, i)).
check_code judges honest attempts: a program that deliberately inspects the harness could fake a pass; the sandbox
still contains whatever it does.

Pure standard library: this file is also copied into the sandbox, where its harness half runs.
"""

from __future__ import annotations

import ast
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------------------------
# The problems
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One LeetCode 34 test: `nums` literally (small) or as parts built in the sandbox (large).

    A part is ("repeat", value, count) or ("range", start, stop, step); parts are concatenated in order.
    """

    target: int
    nums: tuple[int, ...] = ()
    parts: tuple[tuple, ...] = ()

    @property
    def large(self) -> bool:
        """Large cases are the ones where element reads are counted."""
        return bool(self.parts)

    def expected(self) -> list[int]:
        """[first, last] index of target, or [-1, -1]: by definition for literal nums, by arithmetic for parts."""
        if not self.parts:
            hits = [i for i, x in enumerate(self.nums) if x == self.target]
            return [hits[0], hits[-1]] if hits else [-1, -1]
        first = last = -1
        offset = 0
        for kind, *args in self.parts:
            hits = _part_hits(kind, args, self.target)
            if hits:
                first = offset + hits[0] if first < 0 else first
                last = offset + hits[1]
            offset += _part_len(kind, args)
        return [first, last]

    def describe(self) -> str:
        """The input as LeetCode prints it, or as a short Python expression for large inputs."""
        if not self.parts:
            return f"nums = [{','.join(map(str, self.nums))}], target = {self.target}"
        terms = [
            f"[{a[0]}] * {a[1]}" if k == "repeat" else f"list(range({a[0]}, {a[1]}, {a[2]}))" for k, *a in self.parts
        ]
        return f"nums = {' + '.join(terms)}, target = {self.target}  (n = {self.size:,})"

    @property
    def size(self) -> int:
        return sum(_part_len(k, a) for k, *a in self.parts) if self.parts else len(self.nums)


def _part_len(kind: str, args: list) -> int:
    return args[1] if kind == "repeat" else len(range(*args))


def _part_hits(kind: str, args: list, target: int) -> tuple[int, int] | None:
    """(first, last) index of target inside one part, or None."""
    if kind == "repeat":
        value, count = args
        return (0, count - 1) if value == target and count else None
    r = range(*args)
    return (r.index(target),) * 2 if target in r else None


def build_nums(parts: list) -> list[int]:
    """Materialise parts into the list the code under test receives."""
    nums: list[int] = []
    for kind, *args in parts:
        nums += [args[0]] * args[1] if kind == "repeat" else list(range(*args))
    return nums


@dataclass(frozen=True)
class Problem:
    """A seed problem: kind "set" or "count" (math, checked by check_answer) or "code" (checked by check_code)."""

    id: str
    kind: str
    title: str
    prompt_zh: str
    prompt_en: str
    answer: frozenset | int | None
    note: str
    tests: tuple[Case, ...] = field(default=(), repr=False)


_N = 1_000_000
_LEETCODE_34_CASES = (
    Case(8, (5, 7, 7, 8, 8, 10)),  # LeetCode's three examples
    Case(6, (5, 7, 7, 8, 8, 10)),
    Case(0, ()),
    Case(1, (1,)),
    Case(0, (1,)),
    Case(2, (1,)),
    Case(2, (2, 2)),
    Case(1, (1, 3)),
    Case(3, (1, 3)),
    Case(2, (1, 3)),
    Case(2, (1, 1, 2, 2, 3, 3)),
    Case(4, (4, 4, 4, 4, 4)),
    Case(5, (4, 4, 4)),
    Case(3, (4, 4, 4)),
    Case(-3, (-5, -3, -3, 0, 2)),
    Case(1, (1, 1, 2, 3, 3)),
    Case(3, (1, 1, 2, 3, 3)),
    Case(0, tuple(range(10))),
    Case(9, tuple(range(10))),
    Case(7, parts=(("repeat", 7, _N),)),  # all equal: finding one hit then walking outwards reads every element
    Case(1, parts=(("repeat", 1, _N // 2), ("repeat", 2, _N // 2))),
    Case(2, parts=(("repeat", 1, _N // 2), ("repeat", 2, _N // 2))),
    Case(5, parts=(("repeat", 0, _N // 4), ("repeat", 5, _N // 2), ("repeat", 9, _N // 4))),
    Case(_N + 1, parts=(("range", 0, 2 * _N, 2),)),  # absent, inside the range: `in` and scans read everything
    Case(2 * _N, parts=(("range", 0, 2 * _N, 2),)),  # above every element
    Case(777_776, parts=(("range", 0, 2 * _N, 2),)),  # one hit
)

PROBLEMS: dict[str, Problem] = {
    p.id: p
    for p in (
        Problem(
            id="gaokao-2024-set",
            kind="set",
            title="2024 gaokao math: a set intersection",
            prompt_zh="已知集合A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=()",
            prompt_en="Given the sets A = {x | -5 < x^3 < 5} and B = {-3, -1, 0, 2, 3}, find A∩B.",
            answer=frozenset({-1, 0}),
            note="A = (-∛5, ∛5) ≈ (-1.71, 1.71): of B only -1 and 0 lie inside (2³ = 8 > 5, (-3)³ = -27 < -5).",
        ),
        Problem(
            id="gaokao-2024-sin",
            kind="count",
            title="2024 gaokao math: intersections of two sine curves",
            prompt_zh="当x∈[0, 2π]时，曲线y=sinx与y=2sin(3x-π/6)的交点个数为？",
            prompt_en="For x ∈ [0, 2π], how many intersection points do the curves y = sin x and y = 2sin(3x - π/6) have?",
            answer=6,
            note="y = 2sin(3x-π/6) has period 2π/3, so it runs three full periods on [0, 2π], and each period crosses "
            "y = sin x twice: 6. Llama-3-70B-Instruct got this one wrong at Qwen2's launch.",
        ),
        Problem(
            id="leetcode-34",
            kind="code",
            title="LeetCode 34 (medium): Find First and Last Position of Element in Sorted Array",
            prompt_zh="给你一个按照非递减顺序排列的整数数组nums，和一个目标值target。请你找出给定目标值在数组中的开始位置"
            "和结束位置。如果数组中不存在目标值 target，返回 [-1, -1]。你必须设计并实现时间复杂度为 O(log n) 的算法解决此问题。",
            prompt_en="Given an array of integers nums sorted in non-decreasing order, find the starting and ending "
            "position of a given target value. If target is not found in the array, return [-1, -1]. You must write "
            "an algorithm with O(log n) runtime complexity.",
            answer=None,
            note="Two binary searches: the first index with nums[i] >= target and the first with nums[i] > target "
            "(bisect_left, bisect_right). Qwen2's first answer was a bare function; LeetCode wants class Solution "
            "with searchRange(self, nums, target).",
            tests=_LEETCODE_34_CASES,
        ),
    )
}


def problem(problem_id: str) -> Problem:
    """The problem with this id; a clear error naming the known ids otherwise."""
    try:
        return PROBLEMS[problem_id]
    except (KeyError, TypeError):
        raise ValueError(f"unknown problem {problem_id!r}; known problems: {', '.join(PROBLEMS)}") from None


@dataclass(frozen=True)
class Failure:
    """One failed test of check_code, in LeetCode's words (kind: "Wrong Answer", "Runtime Error", ...)."""

    test: int  # 1-based, as in the report
    kind: str
    input: str
    expected: str = ""
    got: str = ""
    detail: str = ""  # a traceback trimmed to the user's code, or an explanation


@dataclass(frozen=True)
class CheckResult:
    """Outcome of check_answer or check_code. `report` is for people (and for the model, in the demo)."""

    passed: bool
    report: str
    problem_id: str
    expected: object = None  # math: the known answer
    got: object = None  # math: the extracted final answer, None if none was found
    how: str = ""  # math: where the final answer was found
    style: str | None = None  # code: "leetcode" or "function"
    entry: str = ""  # code: "Solution.searchRange" or the function's name
    failures: tuple[Failure, ...] = ()
    tests_passed: int = 0
    tests_total: int = 0
    max_reads: int | None = None  # code: most element reads in one call on a large input
    sandbox: str = ""  # code: the sandbox run's one-line summary


# ---------------------------------------------------------------------------------------------------------------
# Math answers
# ---------------------------------------------------------------------------------------------------------------

_LATEX = [
    (r"\\left\s*\\\{|\\\{|\\lbrace\b", "{"),
    (r"\\right\s*\\\}|\\\}|\\rbrace\b", "}"),
    (r"\\cap\b", "∩"),
    (r"\\(?:emptyset|varnothing)\b", "∅"),
    (r"\\text\s*\{([^{}]*)\}|\\mathrm\s*\{([^{}]*)\}", r"\1\2"),
    (r"\\[,;:! ]|\\q?quad\b|\$|\*\*", " "),
    ("[−﹣–]", "-"),
]
_ZH_DIGITS = dict(zip("零一二两三四五六七八九", (0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9)))
_EN_NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()
_NUMBER = (
    r"(?<![A-Za-z0-9_.^/\\])\d+(?![0-9]|\.[0-9]|[A-Za-zπ/^])"
    r"|(?<![零一二两三四五六七八九十第])[零一二两三四五六七八九十]+(?=个|$|[\s,.;:!?)，。；、])"
    rf"|\b(?:{'|'.join(_EN_NUMBERS)})\b"
)
_ANSWER_PHRASES = (
    r"答案\s*(?:是|为|應為|应为|:)|最终答案|最后答案|the\s+(?:final\s+)?answer\s+is|final\s+answer\s*:?|answer\s*:"
)
_ANCHORS = {
    "set": [r"A\s*∩\s*B\s*(?:=|是|为|:|equals)"],
    "count": [
        r"交点\s*的?\s*(?:个数|数目|数量|总数)?\s*(?:共|一共|总共)?\s*(?:是|为|有|=|:)",
        rf"(?P<v>{_NUMBER})\s*个\s*交点",
        r"number\s+of\s+(?:intersection\s+points|intersections|points\s+of\s+intersection)\s*(?:is|=|:|equals)",
        rf"(?P<v>{_NUMBER})\s+(?:distinct\s+)?(?:intersection\s+points|points\s+of\s+intersection|intersections)",
        rf"intersect\w*\s+(?:at\s+)?(?:exactly\s+)?(?P<v>{_NUMBER})\s+(?:times|points)",
    ],
}


def _normalise(text: str) -> str:
    """NFKC (full-width ，｛｝６ → ,{}6), then LaTeX set braces, ∩, ∅, minus signs and markup to plain text."""
    text = unicodedata.normalize("NFKC", text)
    for pattern, repl in _LATEX:
        text = re.sub(pattern, repl, text)
    return text


def _to_int(token: str) -> int | None:
    """'6', '六', '十二', 'six' -> int; None for anything else."""
    token = token.strip().lower()
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token in _EN_NUMBERS:
        return _EN_NUMBERS.index(token)
    if re.fullmatch(r"[零一二两三四五六七八九]", token):
        return _ZH_DIGITS[token]
    if m := re.fullmatch(r"([一二三四五六七八九]?)十([一二三四五六七八九]?)", token):
        return _ZH_DIGITS.get(m[1], 1) * 10 + _ZH_DIGITS.get(m[2], 0)
    return None


def _parse_elements(content: str) -> frozenset | None:
    """'-1, 0' -> frozenset({-1, 0}); None unless every element is an integer (so {x|...} is not a set literal)."""
    items = [item.strip() for item in re.split(r"[,、;]", content)]
    if not all(re.fullmatch(r"-?\s*\d+", item) for item in items):
        return None
    return frozenset(int(item.replace(" ", "")) for item in items)


def _values(kind: str, text: str) -> list[object]:
    """Every candidate answer of this kind in `text`, in order: integer sets (or ∅) for "set", counts for "count"."""
    if kind == "count":
        return [v for m in re.finditer(_NUMBER, text, re.IGNORECASE) if (v := _to_int(m[0])) is not None]
    found = []
    for m in re.finditer(r"\{([^{}]*)\}|∅|空集", text):
        value = frozenset() if m[1] is None else _parse_elements(m[1])
        if value is not None:
            found.append(value)
    return found


def _boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...}, braces matched, in order."""
    contents = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        contents.append(text[m.end() : i - 1])
    return contents


def extract_answer(text: str, problem_id: str) -> tuple[object, str]:
    """The reply's final answer and where it was found: (value, how); (None, "") when there is none.

    The last \\boxed{} wins; else the latest explicit statement (an answer phrase or a problem-specific one, so a
    correction later in the reply beats an earlier claim); else the last set literal / the last line's number.
    """
    prob = problem(problem_id)
    if prob.kind == "code":
        raise ValueError(f"{problem_id} is a code problem: use check_code(text, {problem_id!r})")
    text = _normalise(text)
    for content in reversed(_boxed(text)):
        values = _values(prob.kind, content)
        if not values and prob.kind == "set":
            values = [v] if (v := _parse_elements(content.split("=")[-1].strip(" {}"))) is not None else []
        if values:
            return values[-1], "\\boxed{…}"
    statements = []  # (position, value, phrase): "答案是 …", "the answer is …", "A∩B = …", "6 个交点" …
    for pattern in [_ANSWER_PHRASES, *_ANCHORS[prob.kind]]:
        for m in re.finditer(pattern, text, re.IGNORECASE):
            window = m["v"] if "v" in m.re.groupindex else re.split(r"。|\.\s", text[m.end() : m.end() + 160])[0]
            if values := _values(prob.kind, window):
                statements.append((m.start(), values[0], m[0].strip()))
    if statements:
        _, value, phrase = max(statements, key=lambda s: s[0])
        return value, f'"{phrase}"'
    if prob.kind == "set" and (values := _values("set", text)):
        return values[-1], "the last set in the reply"
    last_line = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "")
    if prob.kind == "count" and (values := _values("count", last_line)):
        return values[-1], "the last number on the last line"
    return None, ""


def _show(value: object) -> str:
    """{-1, 0} for sets (sorted), plain str otherwise."""
    if isinstance(value, frozenset):
        return "{" + ", ".join(map(str, sorted(value))) + "}" if value else "∅"
    return str(value)


def check_answer(text: str, problem_id: str) -> CheckResult:
    """Extract the final answer of a model's reply to a math problem and compare it with the known answer."""
    prob = problem(problem_id)
    got, how = extract_answer(text, problem_id)
    expected = _show(prob.answer)
    if got is None:
        looked = "\\boxed{…}, 答案是… / the answer is …, " + (
            '"A∩B = {…}" and set literals like {-1, 0}'
            if prob.kind == "set"
            else '"交点个数为 N", "N intersection points"'
        )
        report = f"No final answer found (looked for {looked}). Expected {expected}."
    elif got == prob.answer:
        report = f"Correct: the final answer {_show(got)} (from {how}) matches the known answer {expected}."
    else:
        report = f"Wrong: the final answer is {_show(got)} (from {how}); the known answer is {expected}."
    return CheckResult(got == prob.answer, report, problem_id, expected=prob.answer, got=got, how=how)


# ---------------------------------------------------------------------------------------------------------------
# Code: extraction and entry point (in this process, without running anything)
# ---------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------
# Code: the harness. Everything in this section runs inside the sandbox, in a copy of this file.
# ---------------------------------------------------------------------------------------------------------------

READS_PER_LOG2 = 10  # the O(log n) budget: 10 reads per bit of n (two binary searches need about 2)


def read_budget(n: int) -> int:
    """Element reads allowed in one call on n elements: 10·⌈log2 n⌉ (200 for a million)."""
    return READS_PER_LOG2 * max(1, math.ceil(math.log2(max(n, 2))))


class ReadBudgetExceeded(BaseException):
    """Raised inside the code under test once it has read too much (BaseException: `except Exception` can't hide it)."""


class ReadCounter(list):
    """A list that counts how many elements are read from it and stops the reader past `budget` reads.

    Every read path that Python code or the bisect module can take goes through __getitem__ or __iter__ here;
    the methods that C would otherwise serve straight from the list's memory are redefined in terms of those.
    """

    def __init__(self, items, budget: int):
        super().__init__(items)
        self.reads = 0
        self.budget = budget

    def _count(self, k: int) -> None:
        self.reads += k
        if self.reads > self.budget:
            raise ReadBudgetExceeded(self.reads)

    def __getitem__(self, index):
        value = list.__getitem__(self, index)
        self._count(len(value) if isinstance(index, slice) else 1)
        return value

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __reversed__(self):
        for i in range(len(self) - 1, -1, -1):
            yield self[i]

    def _all(self) -> list:
        return [x for x in self]  # n reads

    def __contains__(self, value) -> bool:
        return any(x is value or x == value for x in self)

    def index(self, value, start=0, stop=None):
        stop = len(self) if stop is None else stop
        for i in range(*slice(start, stop).indices(len(self))):
            if self[i] == value:
                return i
        raise ValueError(f"{value!r} is not in list")

    def count(self, value) -> int:
        return sum(1 for x in self if x == value)

    def copy(self) -> list:
        return self._all()

    def sort(self, *args, **kwargs) -> None:
        self._count(len(self))
        list.sort(self, *args, **kwargs)

    def __eq__(self, other):
        if isinstance(other, list) and len(other) != len(self):
            return False
        return self._all() == other

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __add__(self, other):
        return self._all() + other

    def __radd__(self, other):
        return other + self._all()

    def __mul__(self, k):
        return self._all() * k

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return repr(self._all())


class _CappedText:
    """A stdout stand-in that keeps the first `cap` characters the code under test prints."""

    def __init__(self, cap: int = 2000):
        self.cap, self.parts, self.size = cap, [], 0

    def write(self, s: str) -> int:
        if self.size < self.cap:
            self.parts.append(s[: self.cap - self.size])
            self.size += len(self.parts[-1])
        return len(s)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts)


def _user_traceback(exc: BaseException, filename: str = "solution.py") -> str:
    """The traceback with only the frames of the user's file, like LeetCode shows it."""
    import traceback

    report = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    report.stack = traceback.StackSummary.from_list([f for f in report.stack if f.filename == filename])
    return "".join(report.format())[-3000:]


def _leetcode_namespace() -> dict:
    """What LeetCode's Python judge has in scope before your code: typing's names and the usual modules."""
    import bisect
    import collections
    import functools
    import heapq
    import itertools
    import typing

    namespace = {name: getattr(typing, name) for name in typing.__all__}
    namespace.update(bisect=bisect, collections=collections, functools=functools, heapq=heapq)
    namespace.update(itertools=itertools, math=math, __name__="solution")
    return namespace


def _jsonable(value) -> object:
    """A result as JSON: a list of ints stays a list; anything else becomes a short repr."""
    if isinstance(value, (list, tuple)) and len(value) <= 16 and all(type(x) is int for x in value):
        return list(value)
    import reprlib

    return {"repr": reprlib.Repr().repr(list.__getitem__(value, slice(None)) if isinstance(value, list) else value)}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def run_harness(nonce: str) -> None:
    """Sandbox entry: load solution.py, call the entry point on every case of cases.json, one JSON line per case."""
    import contextlib
    import sys

    def emit(record: dict) -> None:
        sys.__stdout__.write(f"{nonce} {json.dumps(record)}\n")
        sys.__stdout__.flush()

    entry, cases = json.loads(_read("entry.json")), json.loads(_read("cases.json"))
    namespace = _leetcode_namespace()
    try:
        with contextlib.redirect_stdout(_CappedText()):
            exec(compile(_read("solution.py"), "solution.py", "exec"), namespace)
            func = namespace["Solution"]().searchRange if entry["style"] == "leetcode" else namespace[entry["name"]]
    except BaseException as exc:  # noqa: BLE001 - whatever the code raises is the report
        emit({"load_error": _user_traceback(exc)})
        return
    for i, case in enumerate(cases):
        nums = build_nums(case["parts"]) if case["parts"] else list(case["nums"])
        arg = ReadCounter(nums, read_budget(len(nums))) if case["parts"] else nums
        printed = _CappedText()
        record: dict = {"case": i}
        try:
            with contextlib.redirect_stdout(printed):
                record["got"] = _jsonable(func(arg, case["target"]))
        except ReadBudgetExceeded:
            record["over_budget"] = True
        except BaseException as exc:  # noqa: BLE001
            record["error"] = _user_traceback(exc)
        if isinstance(arg, ReadCounter):
            record["reads"] = arg.reads
        emit(record | {"stdout": printed.getvalue()})


# ---------------------------------------------------------------------------------------------------------------
# Code: running and judging (back in this process)
# ---------------------------------------------------------------------------------------------------------------


def check_code(text_or_code: str, problem_id: str, *, timeout: float = 10.0) -> CheckResult:
    """Run the Python in a reply against the problem's tests in the sandbox; report like LeetCode's judge."""
    import os
    import secrets

    from .sandbox import run_python

    prob = problem(problem_id)
    if prob.kind != "code":
        raise ValueError(f"{problem_id} is a math problem: use check_answer(text, {problem_id!r})")
    result = _precheck(text_or_code, prob)
    if isinstance(result, CheckResult):
        return result
    code, entry = result
    nonce = secrets.token_hex(8)
    cases = [{"nums": list(c.nums), "parts": [list(p) for p in c.parts], "target": c.target} for c in prob.tests]
    harness = _read(os.path.abspath(__file__))
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


def _judge(prob: Problem, entry: Entry, records: list[dict], run) -> CheckResult:
    """Compare the harness's records with the expected results; build the failures and the report."""
    by_case = {r["case"]: r for r in records if "case" in r}
    load_error = next((r["load_error"] for r in records if "load_error" in r), None)
    failures: list[Failure] = []
    passed, max_reads, missing_kind = 0, None, None
    for i, case in enumerate(prob.tests):
        record = by_case.get(i)
        expected = str(case.expected())
        if record is None:
            if missing_kind is None:
                missing_kind = _missing_kind(run, load_error)
                failures.append(
                    Failure(i + 1, missing_kind, case.describe(), expected, detail=_missing_detail(run, load_error))
                )
            continue
        if case.large and "reads" in record and not record.get("over_budget"):
            max_reads = max(max_reads or 0, record["reads"])
        failure = _case_failure(i + 1, case, record, expected)
        if failure:
            failures.append(failure)
        else:
            passed += 1
    result = dict(style=entry.style, entry=entry.name, failures=tuple(failures), tests_passed=passed)
    result |= dict(tests_total=len(prob.tests), max_reads=max_reads, sandbox=run.summary)
    report = _report(entry, failures, passed, len(prob.tests), max_reads, prob.tests)
    return CheckResult(not failures, report, prob.id, **result)


def _case_failure(test: int, case: Case, record: dict, expected: str) -> Failure | None:
    """The failure for one finished case, or None when it passed."""
    shown = case.describe()
    printed = f"\nStdout:\n{record['stdout']}" if record.get("stdout") else ""
    if "error" in record:
        return Failure(test, "Runtime Error", shown, expected, detail=record["error"].rstrip() + printed)
    if record.get("over_budget"):
        n, budget = case.size, read_budget(case.size)
        detail = (
            f"Your code read more than {budget} of the {n:,} elements (O(log n) budget: {READS_PER_LOG2}·⌈log2 n⌉ = "
            f"{budget}; two binary searches read about {2 * math.ceil(math.log2(n))})."
        )
        return Failure(test, "Not O(log n)", shown, expected, detail=detail)
    got = record.get("got")
    if got != case.expected():
        got_text = got["repr"] if isinstance(got, dict) else str(got)
        return Failure(test, "Wrong Answer", shown, expected, got=got_text, detail=printed.strip())
    return None


_LINEAR_HINT = (
    "Hint: scanning, `in`, index(), count(), slicing, copying, or walking outwards from one hit are O(n); "
    "find both ends with binary search (bisect_left / bisect_right)."
)


def _missing_kind(run, load_error: str | None) -> str:
    """Why the harness produced no record for a case: the sandbox's verdict in LeetCode's words."""
    if load_error:
        return "Runtime Error"
    if run.timed_out:
        return "Time Limit Exceeded"
    if run.truncated:
        return "Output Limit Exceeded"
    if run.killed_reason and "memory" in run.killed_reason:
        return "Memory Limit Exceeded"
    return "Runtime Error"


def _missing_detail(run, load_error: str | None) -> str:
    if load_error:
        return "Your code failed before any test ran:\n" + load_error.rstrip()
    tail = "\n".join(run.stderr.strip().splitlines()[-8:])
    return f"The run stopped during this test ({run.summary})." + (f"\n{tail}" if tail and not run.timed_out else "")


def _report(entry: Entry, failures: list[Failure], passed: int, total: int, max_reads, cases) -> str:
    """LeetCode-like feedback: verdict, what was found, up to three failed tests with input/output/expected."""
    found = (
        "LeetCode style: class Solution, method searchRange(self, nums, target)."
        if entry.style == "leetcode"
        else f"A bare function {entry.name}(nums, target). Accepted here, but LeetCode's judge calls "
        "Solution().searchRange(nums, target): wrap it in class Solution to submit it there."
    )
    n = max(c.size for c in cases)
    if not failures:
        lines = [f"Accepted: {passed}/{total} tests passed.", f"Found: {found}"]
        if max_reads is not None:
            lines.append(
                f"O(log n): at most {max_reads} element reads per call on n = {n:,} (budget {read_budget(n)})."
            )
        return "\n".join(lines)
    lines = [f"{failures[0].kind}: {passed}/{total} tests passed.", f"Found: {found}"]
    for failure in failures[:3]:
        lines += ["", f"Test {failure.test}: {failure.kind}", f"Input: {failure.input}"]
        if failure.kind == "Wrong Answer":
            lines += [f"Output: {failure.got}", f"Expected: {failure.expected}"]
        if failure.detail:
            lines.append(failure.detail)
    if len(failures) > 3:
        lines += ["", f"... and {len(failures) - 3} more failed tests."]
    if any(f.kind == "Not O(log n)" for f in failures):
        lines += ["", _LINEAR_HINT]
    return "\n".join(lines)
