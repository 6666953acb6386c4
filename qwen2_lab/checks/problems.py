"""The three problems shown at Qwen2's launch (two 2024 gaokao math questions and LeetCode 34), and LeetCode 34's
test cases.

A Case holds a small input literally, or a large one as parts (runs of one value, arithmetic ranges): the judge
computes any element, and the expected answer, by arithmetic on the parts, and never builds the list. Besides the
fixed cases, random_case draws inputs of any size for each check (judge.Judge), answered by Case.expected().
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    """One LeetCode 34 test: `nums` literally (small) or as parts (large, served one element at a time).

    A part is ("repeat", value, count) or ("range", start, stop, step); parts are concatenated in order.
    """

    target: int
    nums: tuple[int, ...] = ()
    parts: tuple[tuple, ...] = ()

    @property
    def large(self) -> bool:
        """Large cases are the ones where element reads are counted."""
        return bool(self.parts)

    def expected(self) -> list[int]:
        """[first, last] index of target, or [-1, -1]: by definition for literal nums, by arithmetic for parts."""
        if not self.parts:
            hits = [i for i, x in enumerate(self.nums) if x == self.target]
            return [hits[0], hits[-1]] if hits else [-1, -1]
        first = last = -1
        offset = 0
        for kind, *args in self.parts:
            hits = _part_hits(kind, args, self.target)
            if hits:
                first = offset + hits[0] if first < 0 else first
                last = offset + hits[1]
            offset += _part_len(kind, args)
        return [first, last]

    def describe(self) -> str:
        """The input as LeetCode prints it, or as a short Python expression for large inputs."""
        if not self.parts:
            return f"nums = [{','.join(map(str, self.nums))}], target = {self.target}"
        terms = [
            f"[{a[0]}] * {a[1]}" if k == "repeat" else f"list(range({a[0]}, {a[1]}, {a[2]}))" for k, *a in self.parts
        ]
        return f"nums = {' + '.join(terms)}, target = {self.target}  (n = {self.size:,})"

    @property
    def size(self) -> int:
        return sum(_part_len(k, a) for k, *a in self.parts) if self.parts else len(self.nums)

    def values(self, indices: range) -> list[int]:
        """nums[i] for each i in `indices` (each in 0..size-1), by arithmetic on the parts: O(len(indices))."""
        if not self.parts:
            return [self.nums[i] for i in indices]
        return [self._value(i) for i in indices]

    def _value(self, i: int) -> int:
        offset = 0
        for kind, *args in self.parts:
            n = _part_len(kind, args)
            if i < offset + n:
                return args[0] if kind == "repeat" else range(*args)[i - offset]
            offset += n
        raise IndexError(i)

    def varied(self, rng) -> Case:
        """This large case with the same shape and size, its values shifted and its boundaries moved at random
        (by up to 1/16 of a run), so that no answer can be known without reading (judge.draws_for).
        Small cases come back as they are."""
        if not self.parts:
            return self
        shift = rng.randrange(-1_000_000, 1_000_000)
        parts = []
        for kind, *args in self.parts:
            if kind == "repeat":
                parts.append(["repeat", args[0] + shift, args[1]])
            else:  # slide the range down: the target's index moves, and a target above every element stays above
                start, stop, step = args
                slide = rng.randrange(len(range(*args)) // 16 + 1) * step
                parts.append(["range", start + shift - slide, stop + shift - slide, step])
        for a, b in zip(parts, parts[1:]):
            if a[0] == b[0] == "repeat":
                limit = min(a[2], b[2]) // 16
                move = rng.randint(-limit, limit)
                a[2], b[2] = a[2] + move, b[2] - move
        return Case(self.target + shift, parts=tuple(tuple(p) for p in parts))


SERVED_FROM = 1_000  # inputs of at least this many elements are served one read at a time (and reads counted)


def random_case(rng, n: int, hit: bool | None = None) -> Case:
    """A sorted input of n elements drawn at random (runs of equal values with random gaps), and a target that is
    one of its values (hit=True) or absent: below, between or above them (hit=False); hit=None draws which. The
    judge's reference answer is Case.expected()."""
    runs = rng.randint(1, max(1, min(n, 8)))
    cuts = sorted(rng.sample(range(1, n), runs - 1)) if n > 1 and runs > 1 else []
    counts = [b - a for a, b in zip([0, *cuts], [*cuts, n])] if n else []
    value, parts = rng.randrange(-1_000_000, 1_000_000), []
    for count in counts:
        parts.append(("repeat", value, count))
        value += rng.randint(1, 3)
    values = [v for _, v, _ in parts] or [0]
    hit = bool(parts) and (rng.random() < 0.5 if hit is None else hit)
    absent = [values[0] - rng.randint(1, 5), value + 1, *(v + 1 for v in values if v + 1 not in values)]
    target = rng.choice(values) if hit else rng.choice(absent)
    if n < SERVED_FROM:
        return Case(target, tuple(v for _, v, count in parts for _ in range(count)))
    return Case(target, parts=tuple(parts))


def random_cases(rng, count: int, largest: int = 1_000_000) -> list[Case]:
    """`count` inputs, one drawn in each of `count` equal slices of 2..largest on a log scale (so every order of
    magnitude between the edge cases and the largest input is tried), half of them with the target present, which
    half drawn at random: a solution wrong only for some sizes, or only when the target is there, meets it."""
    low, high = math.log10(2), math.log10(largest)
    width = (high - low) / count
    hits = [i < count // 2 for i in range(count)]
    rng.shuffle(hits)
    sizes = [min(largest, round(10 ** rng.uniform(low + i * width, low + (i + 1) * width))) for i in range(count)]
    return [random_case(rng, n, hit) for n, hit in zip(sizes, hits)]


def _part_len(kind: str, args: list) -> int:
    return args[1] if kind == "repeat" else len(range(*args))


def _part_hits(kind: str, args: list, target: int) -> tuple[int, int] | None:
    """(first, last) index of target inside one part, or None."""
    if kind == "repeat":
        value, count = args
        return (0, count - 1) if value == target and count else None
    r = range(*args)
    return (r.index(target),) * 2 if target in r else None


@dataclass(frozen=True)
class Problem:
    """A problem of the launch: kind "set" or "count" (math, checked by check_answer) or "code" (by check_code)."""

    id: str
    kind: str
    title: str
    prompt_zh: str
    prompt_en: str
    answer: frozenset | int | None
    note: str
    tests: tuple[Case, ...] = field(default=(), repr=False)


_N = 1_000_000
_LEETCODE_34_CASES = (
    Case(8, (5, 7, 7, 8, 8, 10)),  # LeetCode's three examples
    Case(6, (5, 7, 7, 8, 8, 10)),
    Case(0, ()),
    Case(1, (1,)),
    Case(0, (1,)),
    Case(2, (1,)),
    Case(2, (2, 2)),
    Case(1, (1, 3)),
    Case(3, (1, 3)),
    Case(2, (1, 3)),
    Case(2, (1, 1, 2, 2, 3, 3)),
    Case(4, (4, 4, 4, 4, 4)),
    Case(5, (4, 4, 4)),
    Case(3, (4, 4, 4)),
    Case(-3, (-5, -3, -3, 0, 2)),
    Case(1, (1, 1, 2, 3, 3)),
    Case(3, (1, 1, 2, 3, 3)),
    Case(0, tuple(range(10))),
    Case(9, tuple(range(10))),
    Case(7, parts=(("repeat", 7, _N),)),  # all equal: finding one hit then walking outwards reads every element
    Case(1, parts=(("repeat", 1, _N // 2), ("repeat", 2, _N // 2))),
    Case(2, parts=(("repeat", 1, _N // 2), ("repeat", 2, _N // 2))),
    Case(5, parts=(("repeat", 0, _N // 4), ("repeat", 5, _N // 2), ("repeat", 9, _N // 4))),
    Case(_N + 1, parts=(("range", 0, 2 * _N, 2),)),  # absent, inside the range: `in` and scans read everything
    Case(2 * _N, parts=(("range", 0, 2 * _N, 2),)),  # above every element
    Case(777_776, parts=(("range", 0, 2 * _N, 2),)),  # one hit
)

PROBLEMS: dict[str, Problem] = {
    p.id: p
    for p in (
        Problem(
            id="gaokao-2024-set",
            kind="set",
            title="2024 gaokao math: a set intersection",
            prompt_zh="已知集合A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=()",
            prompt_en="Given the sets A = {x | -5 < x^3 < 5} and B = {-3, -1, 0, 2, 3}, find A∩B.",
            answer=frozenset({-1, 0}),
            note="A = (-∛5, ∛5) ≈ (-1.71, 1.71): of B only -1 and 0 lie inside (2³ = 8 > 5, (-3)³ = -27 < -5).",
        ),
        Problem(
            id="gaokao-2024-sin",
            kind="count",
            title="2024 gaokao math: intersections of two sine curves",
            prompt_zh="当x∈[0, 2π]时，曲线y=sinx与y=2sin(3x-π/6)的交点个数为？",
            prompt_en="For x ∈ [0, 2π], how many intersection points do the curves y = sin x and y = 2sin(3x - π/6) have?",
            answer=6,
            note="y = 2sin(3x-π/6) has period 2π/3, so it runs three full periods on [0, 2π], and each period crosses "
            "y = sin x twice: 6. Llama-3-70B-Instruct got this one wrong at Qwen2's launch.",
        ),
        Problem(
            id="leetcode-34",
            kind="code",
            title="LeetCode 34 (medium): Find First and Last Position of Element in Sorted Array",
            prompt_zh="给你一个按照非递减顺序排列的整数数组nums，和一个目标值target。请你找出给定目标值在数组中的开始位置"
            "和结束位置。如果数组中不存在目标值 target，返回 [-1, -1]。你必须设计并实现时间复杂度为 O(log n) 的算法解决此问题。",
            prompt_en="Given an array of integers nums sorted in non-decreasing order, find the starting and ending "
            "position of a given target value. If target is not found in the array, return [-1, -1]. You must write "
            "an algorithm with O(log n) runtime complexity.",
            answer=None,
            note="Two binary searches: the first index with nums[i] >= target and the first with nums[i] > target "
            "(bisect_left, bisect_right). Qwen2's first answer was a bare function; LeetCode wants class Solution "
            "with searchRange(self, nums, target).",
            tests=_LEETCODE_34_CASES,
        ),
    )
}


def problem(problem_id: str) -> Problem:
    """The problem with this id; a clear error naming the known ids otherwise."""
    try:
        return PROBLEMS[problem_id]
    except (KeyError, TypeError):
        raise ValueError(f"unknown problem {problem_id!r}; known problems: {', '.join(PROBLEMS)}") from None
