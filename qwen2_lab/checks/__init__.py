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

Where each piece lives (pure standard library throughout):

    problems.py   Problem, Case, PROBLEMS, problem(): the three problems and LeetCode 34's test cases
    result.py     CheckResult, Failure: what a check returns; failure_message: the repair request
    answers.py    extract_answer, check_answer and the parsing of math replies
    code.py       extract_code, find_entry, check_code: from a reply to a sandboxed run
    harness.py    ReadCounter, read_budget, run_harness: what runs inside the sandbox (copied there as a file)
    judge.py      the harness's records against the expected answers, and the LeetCode-style report
"""

from .answers import check_answer, extract_answer
from .code import Entry, check_code, extract_code, find_entry
from .harness import READS_PER_LOG2, ReadBudgetExceeded, ReadCounter, build_nums, read_budget, run_harness
from .problems import PROBLEMS, Case, Problem, problem
from .result import CheckResult, Failure, failure_message

__all__ = [
    "PROBLEMS",
    "READS_PER_LOG2",
    "Case",
    "CheckResult",
    "Entry",
    "Failure",
    "Problem",
    "ReadBudgetExceeded",
    "ReadCounter",
    "build_nums",
    "check_answer",
    "check_code",
    "extract_answer",
    "extract_code",
    "failure_message",
    "find_entry",
    "problem",
    "read_budget",
    "run_harness",
]
