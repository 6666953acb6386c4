"""What runs inside the sandbox, next to the solution: load it, ask the judge for each test, call the entry point.

This file is the sandboxed program's main.py (check_code appends one call to `main`), so it imports nothing from
this package. It holds no test data and decides nothing: it asks the judge, which runs in the server, for the next
test; a small test comes back as its list, a large one only as its length, and `ServedList` then turns every
element the solution reads into one request that the judge answers and counts. The outcome of each test goes back
as one more request. The solution runs in this same process and can rewrite any of this: that is why nothing here
is trusted.
"""

import collections.abc
import contextlib
import json
import operator
import os
import sys


class ReadsStopped(BaseException):
    """The judge stopped serving elements (over the O(log n) budget); `except Exception` cannot hide it."""


class JudgeChannel:
    """The channel to the judge: one request line out, one reply line back."""

    def __init__(self, replies_fd: int, requests_fd: int):
        self.requests_fd = requests_fd
        self.replies = os.fdopen(replies_fd, "rb", buffering=65536)

    def ask(self, request: str) -> str:
        os.write(self.requests_fd, request.encode() + b"\n")
        reply = self.replies.readline()
        if not reply.endswith(b"\n"):
            raise SystemExit("the judge closed the channel")
        return reply[:-1].decode()


_READ_ONLY = (
    "nums is read-only in the large tests: its elements are served one at a time by the judge, which counts the "
    "reads. Copy what you need (nums[:] reads every element)."
)


class ServedList(collections.abc.Sequence):
    """A read-only list of n elements held by the judge, outside this process. len() is free; each element read
    (indexing, slices, iteration, `in`, index(), count(), ==, +, *, repr(), bisect...) is one request, counted there.
    pop() and pop(0) read one element and shrink the view, like list.pop on the ends."""

    __slots__ = ("_ask", "_lo", "_hi")

    def __init__(self, ask, n: int):
        self._ask, self._lo, self._hi = ask, 0, n

    def __len__(self) -> int:
        return self._hi - self._lo

    def _read(self, request: str) -> list[int]:
        reply = self._ask(request)
        if reply == "stop":
            raise ReadsStopped("over the read budget")
        return [int(v) for v in reply.split()[1:]]

    def __getitem__(self, index):
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if not range(start, stop, step):
                return []
            return self._read(f"slice {self._lo + start} {self._lo + stop} {step}")
        i = operator.index(index)
        if not -n <= i < n:
            raise IndexError("list index out of range")
        return self._read(f"get {self._lo + i % n}")[0]

    def pop(self, index: int = -1) -> int:
        n = len(self)
        if n == 0:
            raise IndexError("pop from empty list")
        if index not in (0, -1, n - 1):
            raise TypeError("only pop(), pop(-1) and pop(0) here. " + _READ_ONLY)
        value = self[index]
        if index == 0:
            self._lo += 1
        else:
            self._hi -= 1
        return value

    def _refuse(self, *args, **kwargs):
        raise TypeError(_READ_ONLY)

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = remove = reverse = clear = _refuse

    def sort(self, *args, **kwargs) -> None:
        values = self[:]  # reads every element, like any sort
        if sorted(values, *args, **kwargs) != values:
            raise TypeError(_READ_ONLY)

    def copy(self) -> list:
        return self[:]

    def __eq__(self, other):
        if isinstance(other, (list, ServedList)) and len(other) != len(self):
            return False
        return self[:] == (other[:] if isinstance(other, ServedList) else other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __add__(self, other):
        return self[:] + other

    def __radd__(self, other):
        return other + self[:]

    def __mul__(self, k):
        return self[:] * k

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return repr(self[:])


class CappedText:
    """A stdout stand-in that keeps the first `cap` characters the code under test prints."""

    def __init__(self, cap: int = 2000):
        self.cap, self.parts, self.size = cap, [], 0

    def write(self, s: str) -> int:
        if self.size < self.cap:
            self.parts.append(str(s)[: self.cap - self.size])
            self.size += len(self.parts[-1])
        return len(s)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts)


def user_traceback(exc: BaseException, filename: str = "solution.py") -> str:
    """The traceback with only the frames of the user's file, like LeetCode shows it."""
    import traceback

    report = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    report.stack = traceback.StackSummary.from_list([f for f in report.stack if f.filename == filename])
    text = "".join(report.format())
    return text if len(text) <= 3000 else text[:1500] + "\n[...]\n" + text[-1500:]


def leetcode_namespace() -> dict:
    """What LeetCode's Python judge has in scope before your code: typing's names and the usual modules."""
    import bisect
    import functools
    import heapq
    import itertools
    import math
    import typing

    namespace = {name: getattr(typing, name) for name in typing.__all__}
    namespace.update(bisect=bisect, collections=collections, functools=functools, heapq=heapq)
    namespace.update(itertools=itertools, math=math, __name__="solution")
    return namespace


def outcome(func, nums, target) -> list:
    """Call the entry point: ["answer", [a, b]], ["output", repr], ["error", traceback] or ["stopped", None]."""
    try:
        got = func(nums, target)
    except ReadsStopped:
        return ["stopped", None]
    except BaseException as exc:  # noqa: BLE001 - whatever the code raises is the report
        return ["error", user_traceback(exc)]
    if isinstance(got, (list, tuple)) and len(got) == 2 and all(type(x) is int for x in got):
        return ["answer", list(got)]
    import reprlib

    return ["output", reprlib.Repr().repr(got)]


def reference(judge: JudgeChannel) -> None:
    """The judge's yardstick, run before solution.py is loaded (so none of its code has run yet): two binary searches
    on a served input. The judge reads their CPU time per read from the kernel and bounds every call's work by it."""
    import bisect

    _, target, n = judge.ask("reference").split(" ")
    nums, target = ServedList(judge.ask, int(n)), int(target)
    lo = bisect.bisect_left(nums, target)
    answer = [lo, bisect.bisect_right(nums, target, lo) - 1] if lo < len(nums) and nums[lo] == target else [-1, -1]
    judge.ask("result " + json.dumps(["answer", answer, ""]))


def load_solution() -> dict:
    """Run solution.py as the module `solution` (registered in sys.modules, so dataclasses, pickling and
    typing.get_type_hints find it), with LeetCode's names in scope; its namespace."""
    import types

    module = types.ModuleType("solution")
    module.__dict__.update(leetcode_namespace(), __file__="solution.py")
    sys.modules["solution"] = module
    with open("solution.py", encoding="utf-8") as f:
        exec(compile(f.read(), "solution.py", "exec"), module.__dict__)
    return module.__dict__


def main(style: str, name: str, replies_fd: int, requests_fd: int) -> None:
    """Run the reference, load solution.py, then for each test the judge hands out: call the entry point, send back
    what happened."""
    judge = JudgeChannel(replies_fd, requests_fd)
    reference(judge)
    try:
        with contextlib.redirect_stdout(CappedText()):
            namespace = load_solution()
            func = namespace["Solution"]().searchRange if style == "leetcode" else namespace[name]
    except BaseException as exc:  # noqa: BLE001
        judge.ask("failed " + json.dumps(user_traceback(exc)))
        return
    while (test := judge.ask("next")) != "end":
        kind, target, data = test.split(" ", 2)
        nums = json.loads(data) if kind == "small" else ServedList(judge.ask, int(data))
        printed = CappedText()
        with contextlib.redirect_stdout(printed):
            result = outcome(func, nums, int(target))
        judge.ask("result " + json.dumps([*result, printed.getvalue()]))
    sys.stdout.flush()
