"""What a check returns: CheckResult, and Failure for one failed test of check_code."""

from __future__ import annotations

from dataclasses import dataclass


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


def failure_message(report: str) -> str:
    """The next user turn after a failed check, as at Qwen2's launch: the judge's report and a request to fix it.

    The web demo's "Send the failure back" and notebook 07 both send exactly this.
    """
    return (
        "Your code did not pass the tests. Here is the report:\n\n"
        f"```text\n{report.strip()}\n```\n\n"
        "Please fix the code and give the complete corrected solution."
    )
