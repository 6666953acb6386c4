"""The three problems shown at Qwen2's launch, and checks of a model's replies to them.

At Qwen2's launch (June 2024) the model was shown two 2024 gaokao math questions and LeetCode 34. Its first
LeetCode answer was a bare function that LeetCode's judge rejected (no `class Solution`); fed the error message
back, it repaired its own code. Notebook 07 and the demo replay that loop, so this module gives:

    from qwen2_lab.checks import PROBLEMS, problem, check_answer, check_code
    problem("gaokao-2024-set").prompt_zh                       # the exact prompt of the launch coverage
    check_answer(r"……所以 $A \\cap B = \\{-1, 0\\}$", "gaokao-2024-set").passed  # True
    result = check_code(reply, "leetcode-34")                  # runs in qwen2_lab.sandbox, never in this process
    result.passed, result.style, result.report                 # report reads like LeetCode's feedback

check_answer reads the reply's *final claim* as a person would (read_claim): the last \\boxed{...}; else the latest
claim made with an answer phrase ("答案是", "the answer is"), a problem-specific one ("A∩B = {...}", "交点个数为 6",
"6 intersection points") or a conclusion ("so the intersection is", "因此交集为", "in total, 6", "只有4个"), leaving
out claims the writer negates ("is not 6; it is 4"), takes back right after ("6？不对") or quotes as a mistake;
only then the last set literal (or the last number on the last line). Numbers inside an interval ([0, 2π]) are no
answer. A claim that hedges between two values ("6 or 4") gets the verdict "Hedged", never "Correct". Text is
NFKC-normalised first, so full-width ，｛｝６ and LaTeX \\{ \\} \\left\\{ read like ASCII; small Chinese and
English numerals (六, six) count as numbers.

check_code judges the code a reader sees (select_code): fenced blocks in HTML comments are hidden, a block indented
under a list item is dedented, and the block defining class Solution with searchRange wins, else one defining a
function named like searchRange, else one with the signature (nums, target); the report names the block. The entry
point (find_entry) is `class Solution` with `searchRange` (LeetCode style), else that function (a helper it calls is
not the entry). The judge stays in this process: the sandboxed harness asks it for one test at a time and never sees
an expected answer. The tests: 26 fixed ones and 10 drawn at random for each code (one
size in each tenth of 2..10^6 on a log scale, half of them with the target present), in an order drawn
for each code, each compared with the judge's own answer. An input of 1,000 elements or more reaches the solution as
a read-only list of which every element read is a request to the judge: the judge counts the reads and stops them
past 10·⌈log2 n⌉ (200 for n = 10^6), and reads the run's CPU clock around the call: more than 4x the CPU per read
of its reference binary search (run in the sandbox before the solution loads) times the call's reads, plus 4 ms, is
Not O(log n) too, so work without reads (a list of n indices) is caught. A run the sandbox ended (timeout, memory,
output, a thread still running) is never Accepted. Nothing the solution prints, writes or patches reaches the
verdict. check_code runs in strict mode by default: without every required sandbox layer it raises
qwen2_lab.sandbox.SandboxUnavailable and runs nothing.

Both checks cap a reply at MAX_REPLY characters before parsing it, parse in linear time, and return a result for
any str reply instead of raising (tests/test_checks_fuzz.py feeds them random and adversarial replies).

Where each piece lives (pure standard library throughout):

    problems.py   Problem, Case, PROBLEMS, problem(): the three problems and LeetCode 34's test cases
    result.py     CheckResult, Failure, Entry: what a check returns; failure_message: the repair request
    answers.py    extract_answer, check_answer and the parsing of math replies
    code.py       select_code, extract_code, find_entry, check_code: from a reply to a sandboxed run
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
