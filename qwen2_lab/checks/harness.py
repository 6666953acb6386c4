"""What runs inside the sandbox: build the inputs, count element reads against the O(log n) budget, call the code.

Pure standard library and no imports from this package: check_code copies this file into the sandbox's work dir
as qwen2_lab_checks.py, and the sandbox runs `qwen2_lab_checks.run_harness(nonce)`, which prints one JSON line per
test case. ReadCounter, read_budget and build_nums are also used (and tested) in this process.
"""

from __future__ import annotations

import json
import math


def build_nums(parts: list) -> list[int]:
    """Materialise parts into the list the code under test receives."""
    nums: list[int] = []
    for kind, *args in parts:
        nums += [args[0]] * args[1] if kind == "repeat" else list(range(*args))
    return nums


READS_PER_LOG2 = 10  # the O(log n) budget: 10 reads per bit of n (two binary searches need about 2)


def read_budget(n: int) -> int:
    """Element reads allowed in one call on n elements: 10·⌈log2 n⌉ (200 for a million)."""
    return READS_PER_LOG2 * max(1, math.ceil(math.log2(max(n, 2))))


class ReadBudgetExceeded(BaseException):
    """Raised inside the code under test once it has read too much (BaseException: `except Exception` can't hide it)."""


class ReadCounter(list):
    """A list that counts how many elements are read from it and stops the reader past `budget` reads.

    Every read path that Python code or the bisect module can take goes through __getitem__ or __iter__ here;
    the methods that C would otherwise serve straight from the list's memory are redefined in terms of those.
    """

    def __init__(self, items, budget: int):
        super().__init__(items)
        self.reads = 0
        self.budget = budget

    def _count(self, k: int) -> None:
        self.reads += k
        if self.reads > self.budget:
            raise ReadBudgetExceeded(self.reads)

    def __getitem__(self, index):
        value = list.__getitem__(self, index)
        self._count(len(value) if isinstance(index, slice) else 1)
        return value

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __reversed__(self):
        for i in range(len(self) - 1, -1, -1):
            yield self[i]

    def _all(self) -> list:
        return [x for x in self]  # n reads

    def __contains__(self, value) -> bool:
        return any(x is value or x == value for x in self)

    def index(self, value, start=0, stop=None):
        stop = len(self) if stop is None else stop
        for i in range(*slice(start, stop).indices(len(self))):
            if self[i] == value:
                return i
        raise ValueError(f"{value!r} is not in list")

    def count(self, value) -> int:
        return sum(1 for x in self if x == value)

    def copy(self) -> list:
        return self._all()

    def sort(self, *args, **kwargs) -> None:
        self._count(len(self))
        list.sort(self, *args, **kwargs)

    def __eq__(self, other):
        if isinstance(other, list) and len(other) != len(self):
            return False
        return self._all() == other

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __add__(self, other):
        return self._all() + other

    def __radd__(self, other):
        return other + self._all()

    def __mul__(self, k):
        return self._all() * k

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return repr(self._all())


class _CappedText:
    """A stdout stand-in that keeps the first `cap` characters the code under test prints."""

    def __init__(self, cap: int = 2000):
        self.cap, self.parts, self.size = cap, [], 0

    def write(self, s: str) -> int:
        if self.size < self.cap:
            self.parts.append(s[: self.cap - self.size])
            self.size += len(self.parts[-1])
        return len(s)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts)


def _user_traceback(exc: BaseException, filename: str = "solution.py") -> str:
    """The traceback with only the frames of the user's file, like LeetCode shows it."""
    import traceback

    report = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    report.stack = traceback.StackSummary.from_list([f for f in report.stack if f.filename == filename])
    return "".join(report.format())[-3000:]


def _leetcode_namespace() -> dict:
    """What LeetCode's Python judge has in scope before your code: typing's names and the usual modules."""
    import bisect
    import collections
    import functools
    import heapq
    import itertools
    import typing

    namespace = {name: getattr(typing, name) for name in typing.__all__}
    namespace.update(bisect=bisect, collections=collections, functools=functools, heapq=heapq)
    namespace.update(itertools=itertools, math=math, __name__="solution")
    return namespace


def _jsonable(value) -> object:
    """A result as JSON: a list of ints stays a list; anything else becomes a short repr."""
    if isinstance(value, (list, tuple)) and len(value) <= 16 and all(type(x) is int for x in value):
        return list(value)
    import reprlib

    return {"repr": reprlib.Repr().repr(list.__getitem__(value, slice(None)) if isinstance(value, list) else value)}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def run_harness(nonce: str) -> None:
    """Sandbox entry: load solution.py, call the entry point on every case of cases.json, one JSON line per case."""
    import contextlib
    import sys

    def emit(record: dict) -> None:
        sys.__stdout__.write(f"{nonce} {json.dumps(record)}\n")
        sys.__stdout__.flush()

    entry, cases = json.loads(_read("entry.json")), json.loads(_read("cases.json"))
    namespace = _leetcode_namespace()
    try:
        with contextlib.redirect_stdout(_CappedText()):
            exec(compile(_read("solution.py"), "solution.py", "exec"), namespace)
            func = namespace["Solution"]().searchRange if entry["style"] == "leetcode" else namespace[entry["name"]]
    except BaseException as exc:  # noqa: BLE001 - whatever the code raises is the report
        emit({"load_error": _user_traceback(exc)})
        return
    for i, case in enumerate(cases):
        nums = build_nums(case["parts"]) if case["parts"] else list(case["nums"])
        arg = ReadCounter(nums, read_budget(len(nums))) if case["parts"] else nums
        printed = _CappedText()
        record: dict = {"case": i}
        try:
            with contextlib.redirect_stdout(printed):
                record["got"] = _jsonable(func(arg, case["target"]))
        except ReadBudgetExceeded:
            record["over_budget"] = True
        except BaseException as exc:  # noqa: BLE001
            record["error"] = _user_traceback(exc)
        if isinstance(arg, ReadCounter):
            record["reads"] = arg.reads
        emit(record | {"stdout": printed.getvalue()})
