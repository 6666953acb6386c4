"""check_code end to end, in the sandbox: right, slow, wrong, crashing and looping solutions, then solutions that try
to fool the judge, written as an attacker would. The judge lives in this process; none of them may be Accepted."""

import math
import textwrap

import pytest

from qwen2_lab.checks import check_code, problem, read_budget
from qwen2_lab.checks.judge import RANDOM_CASES

LEETCODE = problem("leetcode-34")
# ---------------------------------------------------------------------------------------------------------------
# check_code end to end, in the sandbox
# ---------------------------------------------------------------------------------------------------------------

TOTAL = len(LEETCODE.tests) + RANDOM_CASES  # the fixed tests and those drawn for each check


def LARGE(result) -> list[int]:  # noqa: N802 - 1-based test numbers of the counted cases, in the order drawn
    return [i + 1 for i, c in enumerate(result.cases) if c.large]


def LONG_RUNS(result) -> list[int]:  # noqa: N802 - counted cases whose run of the target is longer than the budget
    return [i + 1 for i, c in enumerate(result.cases) if c.large and _run(c) > read_budget(c.size)]


def SHORT_RUNS(result) -> list[int]:  # noqa: N802 - counted cases that walking outwards reads well within budget
    return [i + 1 for i, c in enumerate(result.cases) if not c.large or _run(c) < read_budget(c.size) - 30]


def _run(case) -> int:
    first, last = case.expected()
    return last - first


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
    assert result.tests_passed == result.tests_total == TOTAL and not result.failures
    assert result.max_reads <= 2 * math.ceil(math.log2(1_000_000)) + 3  # two bisects and one check
    assert result.report.startswith(f"Accepted: {TOTAL}/{TOTAL} tests passed.")
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
    tests = [f.test for f in result.failures]
    if failing == LONG_RUNS:  # walking outwards fails where the run is longer than the budget, never where short
        assert set(LONG_RUNS(result)) <= set(tests) <= set(LARGE(result)) and not set(tests) & set(SHORT_RUNS(result))
    else:
        assert tests == failing(result)
    assert {f.kind for f in result.failures} == {"Not O(log n)"}
    assert result.tests_passed == TOTAL - len(tests)  # every small case is right
    assert result.report.startswith("Not O(log n):") and "binary search" in result.report
    assert any("read more than 200 of the 1,000,000 elements" in f.detail for f in result.failures)


def test_wrong_answer_shows_input_output_expected():
    result = check_code(OFF_BY_ONE, "leetcode-34")
    assert not result.passed and result.failures[0].kind == "Wrong Answer"
    first = result.failures[0]
    assert (
        f"Test {first.test}: Wrong Answer\nInput: {first.input}\nOutput: {first.got}\nExpected: {first.expected}"
        in (result.report)
    )
    example = next(f for f in result.failures if f.input == "nums = [5,7,7,8,8,10], target = 8")
    assert (example.got, example.expected) == ("[3, 5]", "[3, 4]")
    assert result.cases[example.test - 1].nums == (5, 7, 7, 8, 8, 10)


def test_runtime_error_traceback_is_trimmed_to_the_users_code():
    result = check_code(CRASH_ON_EMPTY, "leetcode-34")
    assert not result.passed and [f.kind for f in result.failures] == ["Runtime Error"]
    failure = result.failures[0]
    assert failure.input == "nums = [], target = 0"
    assert 'File "solution.py", line 4, in searchRange' in failure.detail
    assert "IndexError: list index out of range" in failure.detail
    assert "qwen2_lab" not in failure.detail and "main.py" not in failure.detail
    assert result.report.startswith(f"Runtime Error: {TOTAL - 1}/{TOTAL} tests passed.")


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
    example = next(f for f in result.failures if f.input == "nums = [5,7,7,8,8,10], target = 8")
    assert result.failures[0].kind == example.kind == "Wrong Answer" and "Stdout:\ndebug 8" in example.detail
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


# ---------------------------------------------------------------------------------------------------------------
# Attacks on the verdict: each passes a read-counting judge that lives inside the solution's process
# ---------------------------------------------------------------------------------------------------------------

SCAN = """
    hits = [i for i in range(len(nums)) if read(nums, i) == target]
    return [hits[0], hits[-1]] if hits else [-1, -1]
"""


def attack(code: str, **kwargs):
    result = check_code(textwrap.dedent(code), "leetcode-34", **kwargs)
    assert not result.passed, result.report
    assert not result.report.startswith("Accepted")
    return result


def test_c_level_list_methods_called_unbound_read_nothing():
    """list.__getitem__ reads a list's memory directly: the large inputs are not lists, so there is nothing to read."""
    result = attack("def searchRange(nums, target):\n    read = list.__getitem__\n" + SCAN)
    assert {f.test for f in result.failures} >= set(LARGE(result))


def test_mutating_the_input_is_counted():
    """A pop() loop: each pop reads an element, served and counted by the judge."""
    result = attack(
        """
        def searchRange(nums, target):
            first = last = -1
            i = len(nums) - 1
            while nums:
                if nums.pop() == target:
                    last = i if last < 0 else last
                    first = i
                i -= 1
            return [first, last]
        """
    )
    assert {f.kind for f in result.failures} == {"Not O(log n)"}


def test_the_callers_frame_holds_no_list():
    """Walk up the stack for an uncounted copy of the input: the harness never has one."""
    attack(
        """
        import sys

        def searchRange(nums, target):
            frame = sys._getframe(1)
            while frame:
                for value in list(frame.f_locals.values()):
                    if type(value) is list and len(value) == len(nums) and len(nums) > 1000:
                        nums = value
                frame = frame.f_back
            if len(nums) > 1000 and type(nums) is not list:
                return [0, 0]
            hits = [i for i, x in enumerate(nums) if x == target]
            return [hits[0], hits[-1]] if hits else [-1, -1]
        """
    )


def test_patching_the_counter_or_the_class_changes_nothing():
    result = attack(
        """
        def searchRange(nums, target):
            for name, value in (("reads", -10**9), ("budget", 10**9), ("__class__", list)):
                try:
                    setattr(nums, name, value)
                except (AttributeError, TypeError):
                    pass
            hits = [i for i, x in enumerate(nums) if x == target]
            return [hits[0], hits[-1]] if hits else [-1, -1]
        """
    )
    assert {f.kind for f in result.failures} == {"Not O(log n)"}


def test_the_work_dir_holds_no_tests_and_forged_records_on_stdout_count_for_nothing():
    """Read the tests and the harness's marker from the work dir, print records with the right answers, exit."""
    attack(
        """
        import json, os, re
        files = {}
        for name in os.listdir("."):
            try:
                files[name] = open(name).read()
            except OSError:
                pass
        marker = re.findall(r"run_harness\\('([0-9a-f]+)'\\)", files.get("main.py", ""))

        def expected(case):
            nums = list(case["nums"])
            for kind, *a in case["parts"]:
                nums += [a[0]] * a[1] if kind == "repeat" else list(range(*a))
            hits = [i for i, x in enumerate(nums) if x == case["target"]]
            return [hits[0], hits[-1]] if hits else [-1, -1]

        for i, case in enumerate(json.loads(files.get("cases.json", "[]"))):
            record = {"case": i, "got": expected(case), "reads": 1, "stdout": ""}
            os.write(1, f"{marker[0]} {json.dumps(record)}\\n".encode())  # past any redirection of sys.stdout
        os._exit(0)

        def searchRange(nums, target):
            return [-1, -1]
        """
    )


def test_memorising_the_public_tests_does_not_pass_the_large_ones():
    """The large inputs are drawn afresh for each check: an answer needs reads."""
    public = {(c.target, c.size): c.expected() for c in LEETCODE.tests if c.large}
    result = attack(
        f"""
        PUBLIC = {public!r}

        def searchRange(nums, target):
            if len(nums) > 1000:
                return PUBLIC.get((target, len(nums)), [-1, -1])  # zero reads
            hits = [i for i, x in enumerate(nums) if x == target]
            return [hits[0], hits[-1]] if hits else [-1, -1]
        """
    )
    assert {f.kind for f in result.failures} == {"Wrong Answer"}
    assert result.failures[0].test in LARGE(result)


def test_a_thread_left_running_after_a_correct_answer_is_never_accepted():
    result = attack(
        BISECT_LEETCODE.replace(
            "class Solution:",
            "import threading\n\ndef spin():\n    while True:\n        pass\n\n"
            "threading.Thread(target=spin).start()\n\nclass Solution:",  # spins forever, allocating nothing
        ),
        timeout=2.0,
    )
    # Every answer was right, but the run never ended. The spinning thread also burns CPU during the calls on served
    # inputs, which the judge's work budget counts (the whole process's CPU, so work cannot hide in a thread).
    # On a loaded machine the spinning thread can also slow a test past the run's time limit: then the run ends
    # there, with Time Limit Exceeded at that test. Either way it is never Accepted and never a wrong answer.
    assert not result.passed
    assert {f.kind for f in result.failures} <= {"Not O(log n)", "Time Limit Exceeded"}
    assert all(result.cases[f.test - 1].large for f in result.failures if f.kind == "Not O(log n)")
    assert result.failures[-1].kind == "Time Limit Exceeded"
    if result.failures[-1].test == 0:  # every test ran in time: only the thread was left, after the last one
        assert result.tests_passed + len(result.failures) - 1 == result.tests_total
        assert "After the last test: Time Limit Exceeded" in result.report and "a thread" in result.report


@pytest.mark.parametrize(
    "forgery",
    [
        'os.write(4, b\'result ["answer", [0, 0], ""]\\n\')',  # a result before any test was handed out
        "os.write(4, b'next\\n'); os.read(3, 99); os.write(4, b'next\\n')",  # skip a test
        "os.write(4, b'result ' + b'[' * 10000 + b'\\n')",  # JSON that makes json.loads recurse
        "os.write(4, b'get ' + b'9' * 20000 + b'\\n')",  # a request over the size cap
        "os.write(4, b'\\xff\\xfe garbage\\n')",  # not UTF-8
        "[os.write(4, b'next\\n') for _ in range(100000)]",  # a flood, replies left unread
        "os.close(3); os.close(4)",  # cut the channel
    ],
    ids=["early-result", "skip-test", "deep-json", "huge-request", "bad-utf8", "flood", "closed-channel"],
)
def test_talking_to_the_judge_directly_ends_the_run_and_never_raises_here(forgery):
    result = attack(
        f"import os\ntry:\n    {forgery}\nexcept OSError:\n    pass\n" + BARE_BINARY_SEARCH.strip("`python\n")
    )
    assert result.failures[0].kind == "Runtime Error"
    assert result.tests_passed == 0


def test_rewriting_the_harness_cannot_hide_reads():
    """The harness runs in the solution's process: rewrite its stop exception and its reporting, then scan."""
    result = attack(
        """
        import __main__

        class Harmless(Exception):
            pass

        __main__.ReadsStopped = Harmless
        real = __main__.outcome
        __main__.outcome = lambda func, nums, target: ["answer", real(func, nums, target)[1] or [0, 0]][:2]

        def searchRange(nums, target):
            hits = []
            for i in range(len(nums)):
                try:
                    if nums[i] == target:
                        hits.append(i)
                except Exception:
                    break
            return [hits[0], hits[-1]] if hits else [-1, -1]
        """
    )
    assert any(f.kind == "Not O(log n)" for f in result.failures) or result.failures[0].kind == "Runtime Error"


def test_control_characters_and_fake_verdicts_in_output_reach_no_one():
    result = attack(
        r"""
        def searchRange(nums, target):
            print("\x1b[2J\x1b[HAccepted: 26/26 tests passed.\r\x07\u202e")
            raise ValueError("\x1b]0;owned\x07\nAccepted: 26/26 tests passed.")
        """
    )
    assert result.report.startswith(f"Runtime Error: 0/{TOTAL} tests passed.")
    assert not any(c in result.report for c in "\x1b\x07\r\u202e")


def test_the_large_tests_are_drawn_per_code_and_repeat_for_the_same_code():
    """The same code gets the same report in one process (the demo's Check button twice); any change, new draws."""
    first, again = check_code(LINEAR_SCAN, "leetcode-34"), check_code(LINEAR_SCAN, "leetcode-34")
    changed = check_code(LINEAR_SCAN + "# changed\n", "leetcode-34")
    assert first.report == again.report
    assert [f.input for f in changed.failures] != [f.input for f in first.failures]
    assert [f.test for f in changed.failures] == LARGE(changed)
    assert [f.test for f in first.failures] == LARGE(first)
    assert [c.describe() for c in changed.cases] != [c.describe() for c in first.cases]  # a new draw and order


def test_a_long_non_ascii_error_and_output_still_reach_the_report():
    result = attack(
        """
        def searchRange(nums, target):
            print("输出" * 5000)
            raise ValueError("错误\\x00" * 5000)
        """
    )
    first = result.failures[0]
    assert (
        first.kind == "Runtime Error" and "ValueError: 错误错误" in first.detail and "Stdout:\n输出输出" in first.detail
    )
    assert "\x00" not in first.detail and "[...]" in first.detail  # cleaned, and cut in the middle


# ---------------------------------------------------------------------------------------------------------------
# Work without reads, sizes between the edges, replayed answers, hidden blocks, and correct solutions to accept
# ---------------------------------------------------------------------------------------------------------------


def test_linear_work_without_reading_elements_is_not_log_n():
    """An index list of n entries searched with a key function: ~40 reads, but O(n) work. The judge bounds the CPU
    time of each call by its reference binary search's, measured by the kernel in the same run."""
    result = attack(
        """
        import bisect
        class Solution:
            def searchRange(self, nums, target):
                index = list(range(len(nums)))
                lo = bisect.bisect_left(index, target, key=nums.__getitem__)
                if lo == len(nums) or nums[lo] != target:
                    return [-1, -1]
                return [lo, bisect.bisect_right(index, target, key=nums.__getitem__) - 1]
        """
    )
    million = {i + 1 for i, c in enumerate(result.cases) if c.size == 1_000_000}
    assert million and million <= {f.test for f in result.failures if f.kind == "Not O(log n)"}
    assert "ms of CPU" in result.report and result.max_reads <= 2 * 20 + 3  # few reads: only the work gave it away
    assert "reference binary search" in result.report


def test_a_solution_wrong_only_between_the_edge_sizes_fails():
    result = attack(
        BISECT_LEETCODE.replace(
            "lo = bisect", "if 11 <= len(nums) < 999_000:\n            return [-1, -1]\n        lo = bisect"
        )
    )
    assert {f.kind for f in result.failures} == {"Wrong Answer"}
    assert all(11 <= result.cases[f.test - 1].size < 999_000 for f in result.failures)


@pytest.mark.parametrize("seed", range(3))
def test_every_draw_tries_each_order_of_magnitude_with_the_target_present_and_absent(seed):
    """One drawn size in each tenth of 2..10^6 on a log scale, half with the target present, whatever the draw: a
    solution wrong only between the edge sizes, or only on hits, cannot pass by luck (a check once Accepted such a
    solution when every mid-sized draw happened to have no hit)."""
    import random

    from qwen2_lab.checks.problems import random_cases

    for rng in (random.Random(f"{seed}-{i}") for i in range(300)):
        cases = random_cases(rng, RANDOM_CASES)
        edges = [2 * (1_000_000 / 2) ** (i / RANDOM_CASES) for i in range(RANDOM_CASES + 1)]
        for i, case in enumerate(cases):
            assert math.floor(edges[i]) <= case.size <= math.ceil(edges[i + 1]), (i, [c.size for c in cases])
        hits = [c.expected() != [-1, -1] for c in cases]
        assert sum(hits) == RANDOM_CASES // 2
        assert any(h for c, h in zip(cases, hits) if 11 <= c.size < 999_000)


def test_answers_replayed_in_the_fixed_order_fail():
    """The tests come in an order drawn for each check: answers replayed in the listed order do not line up."""
    answers = [c.expected() for c in LEETCODE.tests if not c.large]
    result = attack(
        f"""
        ANSWERS = iter({answers!r})
        def searchRange(nums, target):
            return next(ANSWERS, [-1, -1])
        """
    )
    assert any(f.kind == "Wrong Answer" for f in result.failures)
    assert [c.describe() for c in result.cases[:5]] != [c.describe() for c in LEETCODE.tests[:5]]


def test_the_code_judged_is_the_code_a_reader_sees():
    linear = textwrap.indent(LINEAR_SCAN.strip(), "")
    reply = (
        f"```python\n{linear}\n```\n<!--\n```python\n{BISECT_LEETCODE.split('```python')[1].split('```')[0]}```\n-->"
    )
    result = attack(reply)
    assert result.entry == "searchRange" and "Judged: code block 1 of 1 (```python)." in result.report
    assert any(f.kind == "Not O(log n)" for f in result.failures)


@pytest.mark.parametrize(
    "reply",
    [
        "```python\nfrom dataclasses import dataclass\n\n@dataclass\nclass Span:\n    lo: int\n    hi: int\n\n"
        "class Solution:\n    def searchRange(self, nums, target):\n        lo = bisect.bisect_left(nums, target)\n"
        "        if lo == len(nums) or nums[lo] != target:\n            return [-1, -1]\n"
        "        s = Span(lo, bisect.bisect_right(nums, target) - 1)\n        return [s.lo, s.hi]\n```",
        "Steps:\n\n1. Use bisect twice:\n\n   ```python\n   import bisect\n   def searchRange(nums, target):\n"
        "       lo = bisect.bisect_left(nums, target)\n       if lo == len(nums) or nums[lo] != target:\n"
        "           return [-1, -1]\n       return [lo, bisect.bisect_right(nums, target) - 1]\n   ```\n",
        BISECT_LEETCODE + "\nCheck it:\n```python\ndef check(nums, target):\n"
        "    print(Solution().searchRange(nums, target))\n\ncheck([5, 7, 7, 8, 8, 10], 8)\n```\n",
        BISECT_LEETCODE + "\n```python\ndef test():\n    assert Solution().searchRange([1], 1) == [0, 0]\n```\n",
        "```python\ndef solve(nums, target):\n    lo = bound(nums, target)\n    if lo == len(nums) or nums[lo] != target:\n"
        "        return [-1, -1]\n    return [lo, bound(nums, target + 1) - 1]\n\ndef bound(nums, target):\n"
        "    lo, hi = 0, len(nums)\n    while lo < hi:\n        mid = (lo + hi) // 2\n"
        "        if nums[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid\n    return lo\n```",
    ],
    ids=["dataclass-helper", "fence-under-a-list-item", "trailing-check-block", "trailing-test-block", "helper-after"],
)
def test_correct_solutions_a_person_would_accept_are_accepted(reply):
    result = check_code(reply, "leetcode-34")
    assert result.passed, result.report
    assert "Judged: code block" in result.report and "How this was judged" in result.report
