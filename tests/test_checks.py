"""The seed's problems and the checks of a model's replies: known answers recomputed from the mathematics, answer
extraction on replies that must pass and replies that must fail, the read counter in this process, and check_code
end to end in the sandbox on right, slow, wrong, crashing, looping and hostile solutions."""

import bisect
import math
import pathlib
import textwrap

import pytest

from qwen2_lab.checks import (
    PROBLEMS,
    Case,
    ReadBudgetExceeded,
    ReadCounter,
    build_nums,
    check_answer,
    check_code,
    extract_answer,
    extract_code,
    find_entry,
    problem,
    read_budget,
)

REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "qwen2.md"
LEETCODE = problem("leetcode-34")


# ---------------------------------------------------------------------------------------------------------------
# The problems
# ---------------------------------------------------------------------------------------------------------------


def test_registry_and_clear_error_for_unknown_ids():
    assert list(PROBLEMS) == ["gaokao-2024-set", "gaokao-2024-sin", "leetcode-34"]
    for pid, prob in PROBLEMS.items():
        assert problem(pid) is prob and prob.id == pid
        assert prob.prompt_zh and prob.prompt_en and prob.note and prob.title
    with pytest.raises(ValueError, match="unknown problem 'leetcode-1'; known problems: gaokao-2024-set"):
        problem("leetcode-1")


@pytest.mark.skipif(not REFERENCE.exists(), reason="the shared reference notes are not in this checkout")
def test_chinese_prompts_are_exactly_the_launch_prompts():
    text = REFERENCE.read_text(encoding="utf-8")
    for prob in PROBLEMS.values():
        assert f"`{prob.prompt_zh}`" in text, prob.id


def test_set_answer_is_recomputed_from_the_definition():
    b = [-3, -1, 0, 2, 3]
    assert frozenset(x for x in b if -5 < x**3 < 5) == problem("gaokao-2024-set").answer


def test_sine_answer_is_recomputed_by_counting_sign_changes():
    """Roots of sin x - 2 sin(3x - π/6) on [0, 2π]: sign changes on a fine grid, with no tangency in between."""

    def f(x):
        return math.sin(x) - 2 * math.sin(3 * x - math.pi / 6)

    n = 200_000
    xs = [2 * math.pi * i / n for i in range(n + 1)]
    ys = [f(x) for x in xs]
    assert ys[0] != 0 and ys[-1] != 0
    crossings = sum(1 for a, b in zip(ys, ys[1:]) if a * b < 0)
    # a double root would touch zero without a sign change: |f| never gets near 0 away from the crossings
    near_zero = [i for i, y in enumerate(ys) if abs(y) < 1e-3]
    assert all(any(abs(i - j) < 50 for j in range(len(ys) - 1) if ys[j] * ys[j + 1] < 0) for i in near_zero[::25])
    assert crossings == problem("gaokao-2024-sin").answer


def test_leetcode_cases_agree_with_bisect_and_with_leetcodes_examples():
    examples = {((5, 7, 7, 8, 8, 10), 8): [3, 4], ((5, 7, 7, 8, 8, 10), 6): [-1, -1], ((), 0): [-1, -1]}
    for (nums, target), answer in examples.items():
        assert Case(target, nums).expected() == answer
    for case in LEETCODE.tests:
        nums = build_nums([list(p) for p in case.parts]) if case.large else list(case.nums)
        assert nums == sorted(nums) and len(nums) == case.size
        lo, hi = bisect.bisect_left(nums, case.target), bisect.bisect_right(nums, case.target)
        assert case.expected() == ([lo, hi - 1] if lo < hi else [-1, -1]), case.describe()


def test_leetcode_cases_cover_the_edges():
    sizes = [c.size for c in LEETCODE.tests]
    expected = [c.expected() for c in LEETCODE.tests]
    assert 0 in sizes and 1 in sizes and max(sizes) >= 1_000_000
    assert [-1, -1] in expected  # absent
    assert any(c.size > 1 and e == [0, c.size - 1] for c, e in zip(LEETCODE.tests, expected))  # all equal
    assert any(e[0] == 0 and e[1] < c.size - 1 for c, e in zip(LEETCODE.tests, expected))  # at the start
    assert any(e[0] > 0 and e[1] == c.size - 1 for c, e in zip(LEETCODE.tests, expected))  # at the end
    large = [(c, e) for c, e in zip(LEETCODE.tests, expected) if c.large]
    assert any(e[1] - e[0] + 1 >= c.size // 2 for c, e in large)  # a long run: walking outwards is O(n)
    assert any(e == [-1, -1] for _, e in large)  # absent: `in` and scans read everything


# ---------------------------------------------------------------------------------------------------------------
# Math answers
# ---------------------------------------------------------------------------------------------------------------

SET = "gaokao-2024-set"
SIN = "gaokao-2024-sin"


@pytest.mark.parametrize(
    "pid, reply, passed, got",
    [
        (SET, r"由 -5<x^3<5 得 -∛5<x<∛5，所以 A∩B=\{-1,0\}。", True, {-1, 0}),
        (SET, r"The answer is $\boxed{\{-1, 0\}}$.", True, {-1, 0}),
        (SET, r"$$A \cap B = \left\{ 0, -1 \right\}$$", True, {-1, 0}),
        (SET, "所以 A∩B＝｛－1，0｝", True, {-1, 0}),
        (SET, "答案是：{0,-1}", True, {-1, 0}),
        (SET, "Checking B = {-3,-1,0,2,3} element by element gives {-1, 0}", True, {-1, 0}),
        (SET, r"\boxed{-1, 0}", True, {-1, 0}),
        (SET, "B = {-3,-1,0,2,3}, and 2^3 = 8 < 5 is false... so A ∩ B = {-1, 0, 2}", False, {-1, 0, 2}),
        (SET, "答案是 {-1,0,2}。不对，2 不满足，重新计算：A∩B = {-1, 0}", True, {-1, 0}),
        (SET, "The answer is {-1, 0}. Wait: 0^3 = 0, fine; -3 too? No. Final: A∩B = {-3, -1, 0}", False, {-3, -1, 0}),
        (SET, "A∩B = ∅", False, set()),
        (SET, "A = {x | -5 < x^3 < 5} is an interval, so I cannot say.", False, None),
        (SET, "", False, None),
        (SIN, "因此交点个数为6。", True, 6),
        (SIN, "两条曲线在[0,2π]上共有六个交点。", True, 6),
        (SIN, r"所以答案为 $\boxed{6}$", True, 6),
        (SIN, "Each of the 3 periods gives 2 crossings, so the curves intersect 6 times.", True, 6),
        (SIN, "The answer is six.", True, 6),
        (SIN, "There are 6 intersection points in total.", True, 6),
        (SIN, "最终答案：C. 6", True, 6),
        (
            SIN,
            "The period is 2π/3, so one might guess 6 intersections; counting carefully: 4 intersection points.",
            False,
            4,
        ),
        (SIN, "3x - π/6 runs over 6 half-periods... the number of intersection points is 8", False, 8),
        (SIN, "交点个数为 6？错了，应该是 4 个交点。", False, 4),
        (SIN, "y = 2sin(3x-π/6) has period 2π/3", False, None),
    ],
)
def test_check_answer(pid, reply, passed, got):
    result = check_answer(reply, pid)
    assert result.passed is passed, result.report
    assert result.got == (frozenset(got) if isinstance(got, set) else got)
    assert result.expected == problem(pid).answer
    assert result.report.startswith("Correct" if passed else ("Wrong" if got is not None else "No final answer"))


def test_check_answer_reports_where_the_answer_came_from():
    assert extract_answer(r"So \boxed{6}.", SIN) == (6, "\\boxed{…}")
    assert extract_answer("因此交点个数为6。", SIN) == (6, '"交点个数为"')
    result = check_answer("so A∩B = {-1, 0, 2}", SET)
    assert result.report == 'Wrong: the final answer is {-1, 0, 2} (from "A∩B ="); the known answer is {-1, 0}.'


def test_check_answer_refuses_code_problems_and_unknown_ids():
    with pytest.raises(ValueError, match="code problem: use check_code"):
        check_answer("[3, 4]", "leetcode-34")
    with pytest.raises(ValueError, match="unknown problem"):
        check_answer("6", "gaokao-2025")
    with pytest.raises(ValueError, match="math problem: use check_answer"):
        check_code("def f(nums, target): pass", SET)


# ---------------------------------------------------------------------------------------------------------------
# The read counter (in this process, on trusted code)
# ---------------------------------------------------------------------------------------------------------------

N = 1 << 12


def counted(n=N, budget=10**9):
    return ReadCounter(range(0, 2 * n, 2), budget)


@pytest.mark.parametrize(
    "name, use, reads",
    [
        ("index", lambda x: x[5], lambda n: 1),
        ("slice", lambda x: x[10:20], lambda n: 10),
        ("reverse slice", lambda x: x[::-1], lambda n: n),
        ("for loop", lambda x: [v for v in x], lambda n: n),
        ("list()", list, lambda n: n),
        ("sorted()", sorted, lambda n: n),
        ("sum()", sum, lambda n: n),
        ("unpacking", lambda x: [*x], lambda n: n),
        ("reversed()", lambda x: list(reversed(x)), lambda n: n),
        ("in, present", lambda x: 20 in x, lambda n: 11),
        ("in, absent", lambda x: 3 in x, lambda n: n),
        ("index()", lambda x: x.index(20), lambda n: 11),
        ("count()", lambda x: x.count(20), lambda n: n),
        ("copy()", lambda x: x.copy(), lambda n: n),
        ("==", lambda x: x == list(range(0, 2 * len(x), 2)), lambda n: n),
        ("== other length", lambda x: x == [], lambda n: 0),
        ("+", lambda x: x + [1], lambda n: n),
        ("repr()", repr, lambda n: n),
        ("len()", len, lambda n: 0),
    ],
)
def test_read_counter_counts_every_read_path(name, use, reads):
    x = counted()
    use(x)
    assert x.reads == reads(N), name


def test_read_counter_counts_the_bisect_module():
    x = counted()
    assert bisect.bisect_left(x, 2 * 777) == 777 and bisect.bisect_right(x, 2 * 777) == 778
    assert 0 < x.reads <= 2 * (math.ceil(math.log2(N)) + 1)


def test_read_counter_stops_code_past_its_budget_even_through_except_exception():
    x = counted(budget=read_budget(N))
    with pytest.raises(ReadBudgetExceeded):
        try:
            sum(x)
        except Exception:  # noqa: BLE001 - model code often does this; the budget must still stop it
            pass
    assert x.reads == read_budget(N) + 1
    assert read_budget(1_000_000) == 200 and read_budget(1) == 10


# ---------------------------------------------------------------------------------------------------------------
# Code extraction and entry points (no running)
# ---------------------------------------------------------------------------------------------------------------


def test_extract_code_takes_the_last_defining_python_block():
    reply = "First try:\n```python\ndef a(nums, target):\n    return 1\n```\nBetter:\n```py\ndef b(nums, target):\n    return 2\n```\nUsage:\n```python\nprint(b([1], 1))\n```\n"
    assert extract_code(reply) == "def b(nums, target):\n    return 2"
    assert extract_code("```\nclass Solution:\n    pass\n```") == "class Solution:\n    pass"
    assert extract_code("def f(nums, target):\n    return [-1, -1]\n").startswith("def f")
    assert extract_code("Use binary search twice.") is None
    assert extract_code("") is None


def test_find_entry_prefers_leetcode_style_then_the_named_function():
    import ast

    def entry(code):
        e = find_entry(ast.parse(textwrap.dedent(code)))
        return e and (e.style, e.name)

    assert entry("class Solution:\n    def searchRange(self, nums, target): pass") == (
        "leetcode",
        "Solution.searchRange",
    )
    assert entry(
        "def lower(nums, target): pass\ndef search_range(nums, target): pass\ndef upper(nums, target): pass"
    ) == (
        "function",
        "search_range",
    )
    assert entry("def first(nums, target): pass\ndef find_range(nums, target): pass") == ("function", "find_range")
    assert entry("def helper(nums, target): pass\ndef main(nums, target, lo=0): pass") == ("function", "main")
    assert entry("def f(nums): pass\nclass Solution:\n    def other(self, nums, target): pass") is None


# ---------------------------------------------------------------------------------------------------------------
# check_code end to end, in the sandbox
# ---------------------------------------------------------------------------------------------------------------

LARGE = [i + 1 for i, c in enumerate(LEETCODE.tests) if c.large]  # 1-based test numbers of the counted cases
LONG_RUNS = [i + 1 for i, c in enumerate(LEETCODE.tests) if c.large and c.expected()[1] - c.expected()[0] > 1000]

BISECT_LEETCODE = """Here is an O(log n) solution:

```python
class Solution:
    def searchRange(self, nums: List[int], target: int) -> List[int]:
        lo = bisect.bisect_left(nums, target)
        if lo == len(nums) or nums[lo] != target:
            return [-1, -1]
        return [lo, bisect.bisect_right(nums, target) - 1]
```

Example:

```python
print(Solution().searchRange([5, 7, 7, 8, 8, 10], 8))  # [3, 4]
```
"""

BARE_BINARY_SEARCH = """```python
def searchRange(nums, target):
    def first(strict):
        lo, hi = 0, len(nums)
        while lo < hi:
            mid = (lo + hi) // 2
            if nums[mid] < target or (strict and nums[mid] == target):
                lo = mid + 1
            else:
                hi = mid
        return lo
    a = first(False)
    if a == len(nums) or nums[a] != target:
        return [-1, -1]
    return [a, first(True) - 1]
```"""

LINEAR_SCAN = """
def searchRange(nums, target):
    hits = [i for i, x in enumerate(nums) if x == target]
    return [hits[0], hits[-1]] if hits else [-1, -1]
"""

FIND_THEN_EXPAND = """
def searchRange(nums, target):
    i = bisect.bisect_left(nums, target)
    if i == len(nums) or nums[i] != target:
        return [-1, -1]
    j = i
    while j + 1 < len(nums) and nums[j + 1] == target:
        j += 1
    return [i, j]
"""

IN_AND_INDEX = """
class Solution:
    def searchRange(self, nums, target):
        if target not in nums:
            return [-1, -1]
        return [nums.index(target), len(nums) - 1 - nums[::-1].index(target)]
"""

OFF_BY_ONE = """
class Solution:
    def searchRange(self, nums, target):
        lo = bisect.bisect_left(nums, target)
        if lo == len(nums) or nums[lo] != target:
            return [-1, -1]
        return [lo, bisect.bisect_right(nums, target)]
"""

CRASH_ON_EMPTY = """
class Solution:
    def searchRange(self, nums, target):
        if nums[-1] < target or nums[0] > target:
            return [-1, -1]
        lo = bisect.bisect_left(nums, target)
        if nums[lo] != target:
            return [-1, -1]
        return [lo, bisect.bisect_right(nums, target) - 1]
"""


def test_accepts_leetcode_style_and_confirms_log_n():
    result = check_code(BISECT_LEETCODE, "leetcode-34")
    assert result.passed, result.report
    assert (result.style, result.entry) == ("leetcode", "Solution.searchRange")
    assert result.tests_passed == result.tests_total == len(LEETCODE.tests) and not result.failures
    assert result.max_reads <= 2 * math.ceil(math.log2(1_000_000)) + 3  # two bisects and one check
    assert result.report.startswith(f"Accepted: {len(LEETCODE.tests)}/{len(LEETCODE.tests)} tests passed.")
    assert "LeetCode style: class Solution" in result.report and "O(log n): at most" in result.report


def test_bare_function_passes_but_the_report_says_leetcode_wants_a_class():
    """Qwen2's first answer at launch: a bare function. It works; LeetCode's judge would not find it."""
    result = check_code(BARE_BINARY_SEARCH, "leetcode-34")
    assert result.passed, result.report
    assert (result.style, result.entry) == ("function", "searchRange")
    assert "A bare function searchRange(nums, target)" in result.report
    assert "wrap it in class Solution" in result.report


@pytest.mark.parametrize(
    "code, failing",
    [(LINEAR_SCAN, LARGE), (FIND_THEN_EXPAND, LONG_RUNS), (IN_AND_INDEX, LARGE)],
    ids=["linear-scan", "bisect-then-walk-outwards", "in-index-reverse-slice"],
)
def test_correct_but_linear_code_fails_the_log_n_demand(code, failing):
    result = check_code(code, "leetcode-34")
    assert not result.passed
    assert [f.test for f in result.failures] == failing
    assert {f.kind for f in result.failures} == {"Not O(log n)"}
    assert result.tests_passed == len(LEETCODE.tests) - len(failing)  # every small case is right
    assert result.report.startswith("Not O(log n):") and "binary search" in result.report
    assert "read more than 200 of the 1,000,000 elements" in result.report


def test_wrong_answer_shows_input_output_expected():
    result = check_code(OFF_BY_ONE, "leetcode-34")
    assert not result.passed and result.failures[0].kind == "Wrong Answer"
    first = result.failures[0]
    assert (first.test, first.got, first.expected) == (1, "[3, 5]", "[3, 4]")
    assert (
        "Test 1: Wrong Answer\nInput: nums = [5,7,7,8,8,10], target = 8\nOutput: [3, 5]\nExpected: [3, 4]"
        in result.report
    )


def test_runtime_error_traceback_is_trimmed_to_the_users_code():
    result = check_code(CRASH_ON_EMPTY, "leetcode-34")
    assert not result.passed and [f.kind for f in result.failures] == ["Runtime Error"]
    failure = result.failures[0]
    assert failure.input == "nums = [], target = 0"
    assert 'File "solution.py", line 4, in searchRange' in failure.detail
    assert "IndexError: list index out of range" in failure.detail
    assert "qwen2_lab" not in failure.detail and "main.py" not in failure.detail
    assert result.report.startswith(f"Runtime Error: {len(LEETCODE.tests) - 1}/{len(LEETCODE.tests)} tests passed.")


def test_infinite_loop_is_time_limit_exceeded():
    result = check_code("def searchRange(nums, target):\n    while True:\n        pass\n", "leetcode-34", timeout=1.5)
    assert not result.passed
    assert [(f.test, f.kind) for f in result.failures] == [(1, "Time Limit Exceeded")]
    assert "wall-clock timeout" in result.sandbox


def test_compile_errors_missing_code_and_missing_entry_are_reported_without_running():
    syntax = check_code("```python\ndef searchRange(nums, target)\n    return [-1, -1]\n```", "leetcode-34")
    assert not syntax.passed and syntax.report.startswith("Compile Error\nLine 1: SyntaxError")
    assert not syntax.sandbox  # never ran
    none = check_code("Use two binary searches.", "leetcode-34")
    assert none.report.startswith("No Code")
    no_entry = check_code("```python\ndef search(nums):\n    return 0\n```", "leetcode-34")
    assert no_entry.report.startswith("No Entry Point") and "class Solution" in no_entry.report


def test_prints_in_the_solution_do_not_confuse_the_judge():
    code = OFF_BY_ONE.replace("lo = bisect", "print('debug', target)\n        lo = bisect")
    result = check_code(code, "leetcode-34")
    assert result.failures[0].kind == "Wrong Answer" and "Stdout:\ndebug 8" in result.failures[0].detail
    assert check_code(
        BISECT_LEETCODE.replace("lo = bisect", "print(nums[:3])\n        lo = bisect"), "leetcode-34"
    ).passed


def test_hostile_solution_is_contained_and_reported():
    code = "import os\nSECRET = open('/etc/passwd').read()\ndef searchRange(nums, target):\n    return [-1, -1]\n"
    result = check_code(code, "leetcode-34")
    assert not result.passed and result.failures[0].kind == "Runtime Error"
    assert "failed before any test ran" in result.failures[0].detail
    assert "PermissionError: sandbox: open '/etc/passwd'" in result.failures[0].detail
    assert "root:" not in result.report
