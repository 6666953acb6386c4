"""What a check returns: CheckResult, Failure for one failed test of check_code, Entry for where the judge calls
in; failure_message, the repair request; and the cap on what a check reads."""

from __future__ import annotations

from dataclasses import dataclass

from ..sandbox.text import clean_text

MAX_REPLY = 100_000  # characters of a reply that a check reads; a longer reply is refused before any parsing


@dataclass(frozen=True)
class Failure:
    """One failed test of check_code, in LeetCode's words (kind: "Wrong Answer", "Runtime Error", ...).

    test is 1-based, as in the report; 0 for a failure after the last test (the program did not end normally).
    """

    test: int
    kind: str
    input: str
    expected: str = ""
    got: str = ""
    detail: str = ""  # a traceback trimmed to the user's code, or an explanation


@dataclass(frozen=True)
class Entry:
    """Where the judge calls in: style "leetcode" (Solution().searchRange) or "function" (a top-level def)."""

    style: str
    name: str


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
    max_reads: int | None = None  # code: most element reads in one call on a large input, counted by the judge
    sandbox: str = ""  # code: the sandbox run's one-line summary
    cases: tuple = ()  # code: the tests run, in the order drawn for this check (problems.Case); test k is cases[k-1]


def failed(problem_id: str, kind: str, detail: str, **fields) -> CheckResult:
    """A failed check that never ran anything: "Kind" on the first line of the report, the detail below."""
    return CheckResult(False, clean_text(f"{kind}\n{detail}"), problem_id, **fields)


def too_long(text: str, problem_id: str) -> CheckResult | None:
    """The refusal of a reply longer than MAX_REPLY, or None: checked before any parsing, so time stays bounded."""
    if len(text) <= MAX_REPLY:
        return None
    return failed(
        problem_id, "Reply Too Long", f"The reply is {len(text):,} characters; checks read at most {MAX_REPLY:,}."
    )


def failure_message(report: str) -> str:
    """The next user turn after a failed check, as at Qwen2's launch: the judge's report and a request to fix it.

    The web demo's "Send the failure back" and notebook 07 both send exactly this. The report sits in a code fence
    longer than any run of backticks in it (CommonMark closes a fence only with one at least as long), so nothing the
    program printed can end the block and speak as the user.
    """
    report = clean_text(report).strip()
    fence = "`" * max(3, longest_run(report, "`") + 1)  # no line of the report can close a longer fence
    return (
        "Your code did not pass the tests. Here is the report:\n\n"
        f"{fence}text\n{report}\n{fence}\n\n"
        "Please fix the code and give the complete corrected solution."
    )


def longest_run(text: str, char: str) -> int:
    """Length of the longest run of `char` in `text` (0 if none): one pass."""
    best = run = 0
    for c in text:
        run = run + 1 if c == char else 0
        best = max(best, run)
    return best
