"""Judging, back in this process: compare the harness's records with the expected answers and write a report that
reads like LeetCode's feedback (Wrong Answer, Runtime Error, Not O(log n), Time Limit Exceeded...)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .harness import READS_PER_LOG2, read_budget
from .problems import Case, Problem
from .result import CheckResult, Failure

if TYPE_CHECKING:
    from .code import Entry


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
