"""The trusted judge, in this process: it hands the sandboxed harness one test at a time, serves the large inputs one
element per request (counting the reads and stopping them at the budget), keeps the expected answers to itself,
and turns what came back, and how the run ended, into a verdict and a report that reads like LeetCode's.

Everything the sandbox sends is untrusted: the judge answers only the questions of its protocol, in order, and a
request out of place ends the run. Nothing the program prints, writes or patches reaches the verdict: the read
counts live here, the expected answers never leave, and a run that the sandbox ended is never Accepted.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import secrets
from dataclasses import dataclass

from ..sandbox.text import clean_text
from .problems import Case, Problem, random_case, random_cases
from .result import CheckResult, Entry, Failure

READS_PER_LOG2 = 10  # the O(log n) budget: 10 reads per bit of n (two binary searches need about 2)
RANDOM_CASES = 10  # inputs drawn at random for each check, one per slice of 2..10^6 on a log scale, half
# with the target present (problems.random_cases)
# The work budget of one call on a served input, in CPU seconds of the run (the kernel's clock, read from here):
# CPU_FACTOR x the reference binary search's CPU per read x the reads of the call (at least the reference's), plus
# CPU_SLACK. Building a list of n = 10^6 indices costs about 25 ms on the 2-core machine; a binary search about 1.
CPU_FACTOR, CPU_SLACK = 4, 0.004
_DRAW_KEY = secrets.token_bytes(32)  # this process's secret behind the large tests' random draws
_INT = re.compile(r"-?[0-9]{1,12}")
_KINDS = {"answer": list, "output": str, "error": str, "stopped": type(None)}


def draws_for(code: str) -> random.Random:
    """The random draws of the large tests for this code: the same code gets the same tests (and the same report)
    within this process; any change to the code, or another process, gets new ones; the code cannot predict them."""
    return random.Random(hashlib.sha256(_DRAW_KEY + code.encode("utf-8", "surrogatepass")).digest())


def read_budget(n: int) -> int:
    """Element reads allowed in one call on n elements: 10·⌈log2 n⌉ (200 for a million)."""
    return READS_PER_LOG2 * max(1, math.ceil(math.log2(max(n, 2))))


@dataclass(frozen=True)
class Outcome:
    """What the harness said one test did, with the reads the judge counted while it ran."""

    kind: str  # "answer" (a pair of ints), "output" (anything else, as a repr), "error" (a traceback), "stopped"
    value: object
    stdout: str
    reads: int
    over: bool  # the judge stopped serving reads: over the budget
    cpu: float | None = None  # CPU seconds the run spent on this test (served inputs, where the clock is known)


class Judge:
    """One check of one solution. `serve` answers the sandboxed harness; `verdict` reads the finished run.

    The protocol, one request line and one reply line each:
        reference        -> "large TARGET N": first of all, before the solution is loaded, the harness's own binary
                            search runs on it; its CPU time per read sets the work budget (answered with result)
        next             -> "small TARGET [json nums]", "large TARGET N", or "end" after the last test
        get I            -> "ok VALUE", or "stop" once the test's reads pass the budget
        slice A B STEP   -> "ok V1 V2 ...", or "stop"
        result [json]    -> "ok": [kind, value, printed text] for the test just handed out
        failed [json]    -> "ok": the solution did not load (a traceback)
    """

    def __init__(self, prob: Problem, entry: Entry, rng: random.Random | None = None, source: str = ""):
        rng = rng or random.SystemRandom()  # check_code passes draws_for(code)
        self.prob, self.entry, self.source = prob, entry, source
        drawn = random_cases(rng, RANDOM_CASES)
        self.cases = [case.varied(rng) for case in prob.tests] + drawn
        rng.shuffle(self.cases)  # an order no solution can know, so none can replay answers in order
        self.reference_case = random_case(rng, 1_000_000)
        self.current, self.reads, self.over = -1, 0, False
        self.outcomes: dict[int, Outcome] = {}
        self.reference: Outcome | None = None
        self.load_error: str | None = None
        self.violation: str | None = None
        self.run, self.cpu_start, self.reference_open = None, None, False

    def attach(self, confined) -> None:
        """run_python's on_start: the run's ConfinedProcess, whose CPU clock bounds the work of each call."""
        self.run = confined

    def _cpu(self) -> float | None:
        return self.run.cpu_seconds() if self.run is not None else None

    # ---- serving, while the program runs ------------------------------------------------------------------------

    def serve(self, request: str) -> str | None:
        """The reply to one request; None (ending the run) for anything outside the protocol."""
        op, _, rest = request.partition(" ")
        handler = {"next": self._next, "get": self._get, "slice": self._slice, "reference": self._reference}.get(op)
        handler = handler or {"result": self._result, "failed": self._failed}.get(op)
        try:
            reply = handler(rest) if handler and self.violation is None else None
        except (ValueError, TypeError, RecursionError, OverflowError):
            reply = None
        if reply is None and self.violation is None:
            self.violation = f"a request outside the judge's protocol: {clean_text(request[:60])!r}"
        return reply

    def _open_case(self) -> Case | None:
        """The test handed out and not answered yet (the reference run is test -1), if any."""
        if self.current == -1 and self.reference_open and self.reference is None:
            return self.reference_case
        if 0 <= self.current < len(self.cases) and self.current not in self.outcomes:
            return self.cases[self.current]
        return None

    def _reference(self, rest: str) -> str | None:
        if rest or self.current != -1 or self.reference_open or self.load_error:
            return None
        self.reference_open, self.cpu_start = True, self._cpu()
        return f"large {self.reference_case.target} {self.reference_case.size}"

    def _next(self, rest: str) -> str | None:
        if rest or self._open_case() is not None or self.load_error or self.current >= len(self.cases):
            return None
        if self.reference is None:
            return None  # the reference run comes first
        self.current, self.reads, self.over = self.current + 1, 0, False
        if self.current == len(self.cases):
            return "end"
        case = self.cases[self.current]
        self.cpu_start = self._cpu() if case.large else None
        return f"large {case.target} {case.size}" if case.large else f"small {case.target} {json.dumps(case.nums)}"

    def _get(self, rest: str) -> str | None:
        (i,) = _ints(rest, 1)
        return self._serve_reads(range(i, i + 1))

    def _slice(self, rest: str) -> str | None:
        start, stop, step = _ints(rest, 3)
        return self._serve_reads(range(start, stop, step)) if step else None

    def _serve_reads(self, indices: range) -> str | None:
        """Count the reads, stop past the budget, else serve the values (computed, never stored as a list)."""
        case = self._open_case()
        if case is None or not case.large or not indices or not 0 <= min(indices[0], indices[-1]):
            return None
        if max(indices[0], indices[-1]) >= case.size:
            return None
        if self.over:
            return "stop"
        self.reads += len(indices)
        if self.reads > read_budget(case.size):
            self.over = True
            return "stop"
        return "ok " + " ".join(map(str, case.values(indices)))

    def _result(self, rest: str) -> str | None:
        kind, value, stdout = json.loads(rest)
        if self._open_case() is None or kind not in _KINDS or not isinstance(value, _KINDS[kind]):
            return None
        if not isinstance(stdout, str) or (kind == "answer" and not _is_pair(value)):
            return None
        value = clean_text(value[:3100]) if isinstance(value, str) else value
        cpu = (now - self.cpu_start) if self.cpu_start is not None and (now := self._cpu()) is not None else None
        outcome = Outcome(kind, value, clean_text(stdout[:2000]), self.reads, self.over, cpu)
        if self.current == -1:  # the harness's own binary search: it must be right and within the read budget
            if outcome.over or value != self.reference_case.expected():
                return None
            self.reference, self.reads = outcome, 0
        else:
            self.outcomes[self.current] = outcome
        return "ok"

    def _failed(self, rest: str) -> str | None:
        error = json.loads(rest)
        if self.current != -1 or self.reference is None or self.load_error is not None or not isinstance(error, str):
            return None
        self.load_error = clean_text(error[-3000:]) or "(no traceback)"
        return "ok"

    # ---- the verdict, after the run ------------------------------------------------------------------------------

    def verdict(self, run) -> CheckResult:
        """Compare the outcomes with the expected answers, account for how the run ended; build the report."""
        failures: list[Failure] = []
        passed, max_reads, missing = 0, None, False
        for i, case in enumerate(self.cases):
            outcome = self.outcomes.get(i)
            if outcome is None:
                if not missing:
                    failures.append(Failure(i + 1, self._missing_kind(run), case.describe(), **self._missing(run)))
                missing = True
                continue
            if case.large and not outcome.over:
                max_reads = max(max_reads or 0, outcome.reads)
            failure = _case_failure(i + 1, case, outcome) or self._work_failure(i + 1, case, outcome)
            if failure:
                failures.append(failure)
            else:
                passed += 1
        if not missing and not run.ok:
            failures.append(_after_the_last_test(run, self._missing_kind(run), self.violation))
        fields = dict(style=self.entry.style, entry=self.entry.name, failures=tuple(failures), tests_passed=passed)
        fields |= dict(tests_total=len(self.cases), max_reads=max_reads, sandbox=run.summary, cases=tuple(self.cases))
        report = _report(self.entry, failures, passed, len(self.cases), max_reads, self.cases, self.source)
        report = clean_text(report + "\n\n" + self._how_decided())
        return CheckResult(not failures, report, self.prob.id, **fields)

    def cpu_budget(self, reads: int) -> float | None:
        """CPU seconds allowed for a call that made `reads` reads: CPU_FACTOR x the reference's CPU per read x
        max(reads, the reference's reads) + CPU_SLACK. None when the run's CPU clock could not be read."""
        ref = self.reference
        if ref is None or ref.cpu is None or not ref.reads:
            return None
        return CPU_FACTOR * ref.cpu / ref.reads * max(reads, ref.reads) + CPU_SLACK

    def _work_failure(self, test: int, case: Case, outcome: Outcome) -> Failure | None:
        """Not O(log n) by work: a call on a served input that used more CPU than its budget, whatever it read."""
        budget = self.cpu_budget(outcome.reads) if case.large and outcome.cpu is not None else None
        if budget is None or outcome.cpu <= budget:
            return None
        detail = (
            f"Your code read only {outcome.reads} elements, but used {outcome.cpu * 1000:.1f} ms of CPU on n = "
            f"{case.size:,} (budget {budget * 1000:.1f} ms: {CPU_FACTOR}x the judge's reference binary search per "
            f"read, plus {CPU_SLACK * 1000:g} ms). Work that grows with n, such as building a list of n indices, "
            "is O(n) even without reading elements."
        )
        return Failure(test, "Not O(log n)", case.describe(), str(case.expected()), detail=detail)

    def _how_decided(self) -> str:
        """How correctness and complexity were decided, for the report."""
        small = sum(not c.large for c in self.cases)
        sizes = sorted(c.size for c in self.cases)
        lines = [
            f"How this was judged: {len(self.cases)} tests in an order drawn for this check ({small} small ones "
            f"given as lists, {len(self.cases) - small} served one element per read), sizes {sizes[0]} to "
            f"{sizes[-1]:,}, {RANDOM_CASES} of them drawn at random; each answer compared with the judge's own.",
            f"Complexity: element reads counted by the judge (budget {READS_PER_LOG2}·⌈log2 n⌉ per call)",
        ]
        ref = self.reference
        if ref is not None and ref.cpu is not None and ref.reads:
            lines[-1] += (
                ", and the CPU time of each call on a served input, read from the kernel's clock of the run "
                f"(budget: {CPU_FACTOR}x the CPU per read of the judge's reference binary search in the same run, "
                f"times the call's reads, plus {CPU_SLACK * 1000:g} ms)."
            )
        else:
            lines[-1] += "; CPU time per call was not measured (no CPU clock of the run on this machine)."
        return "\n".join(lines)

    def _missing_kind(self, run) -> str:
        """Why a test has no outcome (or the run did not end well): the sandbox's verdict in LeetCode's words."""
        if self.load_error or self.violation:
            return "Runtime Error"
        if run.timed_out:
            return "Time Limit Exceeded"
        if run.truncated:
            return "Output Limit Exceeded"
        if run.killed_reason and "memory" in run.killed_reason:
            return "Memory Limit Exceeded"
        return "Runtime Error"

    def _missing(self, run) -> dict:
        if self.load_error:
            return dict(detail="Your code failed before any test ran:\n" + self.load_error.rstrip())
        if self.violation:
            return dict(detail=f"The run was stopped: {self.violation}. Only the judge's harness talks to the judge.")
        tail = "\n".join(run.stderr.strip().splitlines()[-8:])
        detail = f"The run stopped during this test ({run.summary})."
        return dict(detail=detail + (f"\n{tail}" if tail and not run.timed_out else ""))


def _ints(text: str, count: int) -> list[int]:
    """Exactly `count` plain decimal integers separated by single spaces, else ValueError."""
    parts = text.split(" ")
    if len(parts) != count or not all(_INT.fullmatch(p) for p in parts):
        raise ValueError(text[:40])
    return [int(p) for p in parts]


def _is_pair(value: list) -> bool:
    return len(value) == 2 and all(type(x) is int and abs(x) < 1 << 62 for x in value)


def _case_failure(test: int, case: Case, outcome: Outcome) -> Failure | None:
    """The failure for one test that reported an outcome, or None when it passed."""
    shown, expected = case.describe(), str(case.expected())
    printed = f"\nStdout:\n{outcome.stdout}" if outcome.stdout else ""
    if outcome.over:
        n, budget = case.size, read_budget(case.size)
        detail = (
            f"Your code read more than {budget} of the {n:,} elements (O(log n) budget: {READS_PER_LOG2}·⌈log2 n⌉ = "
            f"{budget}; two binary searches read about {2 * math.ceil(math.log2(n))})."
        )
        return Failure(test, "Not O(log n)", shown, expected, detail=detail)
    if outcome.kind == "error":
        return Failure(test, "Runtime Error", shown, expected, detail=outcome.value.rstrip() + printed)
    if outcome.kind == "stopped":
        detail = "The run said the judge stopped its reads, but the judge never did." + printed
        return Failure(test, "Runtime Error", shown, expected, detail=detail)
    if outcome.value != case.expected():
        got = str(outcome.value) if outcome.kind == "answer" else outcome.value[:300]
        return Failure(test, "Wrong Answer", shown, expected, got=got, detail=printed.strip())
    return None


def _after_the_last_test(run, kind: str, violation: str | None) -> Failure:
    """Every test returned, but the sandbox ended the run or it exited badly: never Accepted."""
    detail = f"Every test returned, but the program did not end normally ({run.summary})."
    if violation:
        detail = f"Every test returned, then the run was stopped: {violation}."
    elif run.timed_out:
        detail += " Something kept it running after the last test: a thread, or code at exit."
    return Failure(0, kind, "", detail=detail)


_LINEAR_HINT = (
    "How reads are counted: the judge serves a large input one element per request and counts each, whatever "
    "reads it: indexing, slices, iteration, `in`, index(), count(), copies, ==, repr(), bisect.\n"
    "Hint: scanning, `in`, index(), count(), slicing, copying, or walking outwards from one hit are O(n); "
    "find both ends with binary search (bisect_left / bisect_right)."
)


def _report(entry: Entry, failures: list[Failure], passed: int, total: int, max_reads, cases, source="") -> str:
    """LeetCode-like feedback: verdict, what was found, up to three failed tests with input/output/expected."""
    found = (
        "LeetCode style: class Solution, method searchRange(self, nums, target)."
        if entry.style == "leetcode"
        else f"A bare function {entry.name}(nums, target). Accepted here, but LeetCode's judge calls "
        "Solution().searchRange(nums, target): wrap it in class Solution to submit it there."
    )
    found += f" Judged: {source}." if source else ""
    n = max(c.size for c in cases)
    if not failures:
        lines = [f"Accepted: {passed}/{total} tests passed.", f"Found: {found}"]
        if max_reads is not None:
            lines.append(
                f"O(log n): at most {max_reads} element reads per call on n = {n:,} (budget {read_budget(n)}), "
                "counted by the judge, which served each element your code read, one request each."
            )
        return "\n".join(lines)
    lines = [f"{failures[0].kind}: {passed}/{total} tests passed.", f"Found: {found}"]
    shown = failures[:3] + [f for f in failures[3:] if f.test == 0]  # how the run ended is always shown
    for failure in shown:
        if failure.test == 0:
            lines += ["", f"After the last test: {failure.kind}"]
        else:
            lines += ["", f"Test {failure.test}: {failure.kind}", f"Input: {failure.input}"]
        if failure.kind == "Wrong Answer":
            lines += [f"Output: {failure.got}", f"Expected: {failure.expected}"]
        if failure.detail:
            lines.append(failure.detail)
    if len(failures) > len(shown):
        lines += ["", f"... and {len(failures) - len(shown)} more failed tests."]
    if any(f.kind == "Not O(log n)" for f in failures):
        lines += ["", _LINEAR_HINT]
    return "\n".join(lines)
