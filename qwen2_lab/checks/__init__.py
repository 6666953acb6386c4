"""The three problems shown at Qwen2's launch, and checks of a model's replies to them.

At Qwen2's launch (June 2024) the model was shown two 2024 gaokao math questions and LeetCode 34. Its first
LeetCode answer was a bare function that LeetCode's judge rejected (no `class Solution`); fed the error message
back, it repaired its own code. Notebook 07 and the demo replay that loop, so this module gives:

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
and runs it in the sandbox. The judge stays in this process: the sandboxed harness asks it for one test at a time,
and never sees an expected answer. A large test (a million elements, its values and boundaries drawn at random for
each code) reaches the solution as a read-only list of which every element read is a request to the judge: the
judge counts the reads and stops them past 10·⌈log2 n⌉ (200 for n = 10^6; a binary search needs about 40, a scan
up to 10^6), so there is no uncounted way to read. A run the sandbox ended (timeout, memory, output, a thread still
running) is never Accepted. Nothing the solution prints, writes or patches reaches the verdict.

Both checks cap a reply at MAX_REPLY characters before parsing it, parse in linear time, and return a result for
any str reply instead of raising (tests/test_checks_fuzz.py feeds them random and adversarial replies).

Where each piece lives (pure standard library throughout):

    problems.py   Problem, Case, PROBLEMS, problem(): the three problems and LeetCode 34's test cases
    result.py     CheckResult, Failure, Entry: what a check returns; failure_message: the repair request
    answers.py    extract_answer, check_answer and the parsing of math replies
    code.py       extract_code, find_entry, check_code: from a reply to a sandboxed run
    harness.py    what runs inside the sandbox next to the solution (its main.py): asks, calls, reports back
    judge.py      Judge: serves the tests and the reads, counts them, and writes the verdict and the report
"""

from .answers import check_answer, extract_answer, read_claim
from .code import check_code, extract_code, find_entry, select_code
from .judge import READS_PER_LOG2, Judge, read_budget
from .problems import PROBLEMS, Case, Problem, problem
from .result import MAX_REPLY, CheckResult, Entry, Failure, failure_message

__all__ = [
    "MAX_REPLY",
    "PROBLEMS",
    "READS_PER_LOG2",
    "Case",
    "CheckResult",
    "Entry",
    "Failure",
    "Judge",
    "Problem",
    "check_answer",
    "check_code",
    "extract_answer",
    "extract_code",
    "failure_message",
    "find_entry",
    "problem",
    "read_budget",
    "read_claim",
    "select_code",
]
