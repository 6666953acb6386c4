"""The synthetic gaokao-style curriculum the bundled `tiny` and `tiny-moe` are trained on.

Four small tasks, each a short question (Chinese or English, dozens of phrasings per language, punctuation and
spacing as people type them) and an exact answer that shows its work on every line but the last:

    intersection   已知集合A={2,-15,7}，B={7, 2}，则A∩B=
                   ->  2∈B,-15∉B,7∈B
                       A∩B={2,7}
    search_range   LeetCode 34: nums=[-3,5,5,9]，target=5
                   ->  target=5:0:-3<1:5=2:5=3:9>
                       [1,2]                                       ([-1,-1] when absent)
    arithmetic     计算：48-327=
                   ->  48-327:8-7-0=1,4-2-0=2,0-3-0=7,0-0-1=9
                       -(327-48):7-8-0=9,2-4-1=7,3-0-1=2,0-0-0=0
                       -279
    gaokao_filter  已知集合A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=
                   ->  -3:-5>-27<5✗,-1:-5<-1<5✓,0:-5<0<5✓,2:-5<8>5✗,3:-5<27>5✗
                       A∩B={-1,0}

and a fifth with many right answers, so that sampling has a real choice to make (ANY_ELEMENT):

    any_element    Name any element of A={3,5,7,9}.  ->  7       (an element drawn at random each time: any is right)

The ranges: set elements from -20 to 20, 1 to 8 per set, sorted or not; sorted lists of 1 to 12 integers from -20 to
50; operands of 1 to 4 digits, negative differences included; B of 3 to 6 integers from -6 to 6 against x^3, x^2,
|x| or 2x+1 bounded on one side or two (bounds from -32 to 32), strictly or not. The answer's last line is the final answer (`final`).

Why the work: a 4-layer model trained for minutes on two CPU cores learns a procedure in which every token depends on
a few others found by one lookup (is this number also in B? which digit is next?), not an answer that needs many
(the next common element, a carry looked ahead, the count of elements before the target). So the intersection and
the filter walk through the set, marking each element (the filter writes the value of the condition's expression
between its bounds, each with the relation that holds); arithmetic goes in columns from the units up with the carry
(or borrow) as each column's third operand, always four columns (five for a sum) so that every problem has the same
columns, and a difference whose last column still borrows is negative, so it is worked again the other way round;
the search walks the list with its indices until it passes the target. Both restate what they work on first (the
expression, the target), so that the work reads it from a fixed place, whatever words the question used.

The phrasings: ten written whole per language and task (TEMPLATES), of which the last two are held out, and many more
made of a statement of the numbers followed by a question (STATEMENTS x QUESTIONS, and WHOLE): `trained_templates`.

Generalisation is measured on three held-out splits (`held_out`), none ever trained on: new numbers in the trained
phrasings ("numbers"), two phrasings per language and task that training never uses, nor their telling words
(HELD_OUT_WORDS) ("phrasing"), and the corners of the number ranges that training never draws ("corner",
`is_corner`). The launch's own gaokao question and the examples in the README stay out of training too
(`RESERVED_PROMPTS`). A `Problem` keeps its numbers (`key`), so the
answer is computed from them (`solve`), never written by hand, and a held-out problem is excluded in every phrasing.
Everything is seeded: the same seed gives the same problems, in the same order, on every machine (`random.Random`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

TASKS = ("intersection", "search_range", "arithmetic", "gaokao_filter")
HELD_OUT_SEED = 10_007  # the held-out problems come from their own streams, one per task
HELD_OUT_MAX = 1000  # held-out problems set aside per task: evaluations may use any first n <= this
VALIDATION_SEED = 20_011  # the validation problems (for choosing between runs) come from their own streams
HELD_OUT_SPLITS = ("numbers", "phrasing", "corner", "numbers")  # the cycle each task's held-out stream follows
HELD_OUT_TEMPLATES = 2  # the last phrasings of each list, per language and task, are never trained on
VALUES = range(-20, 21)  # set elements
SEARCH_VALUES = range(-20, 51)  # LeetCode 34's list values and targets
FILTER_VALUES = range(-6, 7)  # the gaokao filter's B


@dataclass(frozen=True)
class Problem:
    """One question. `key` is the task and its numbers: two problems with the same key are the same problem.

    split: "train", or the held-out split it belongs to ("numbers", "phrasing", "corner", "reserved").
    """

    task: str
    lang: str  # "zh" or "en"
    prompt: str  # the user's message
    answer: str  # the assistant's message; its final answer is `final(answer)`
    key: tuple
    split: str = "train"

    def messages(self, with_answer: bool = False) -> list[dict]:
        """Chat messages for the chat template (the default system prompt is added by the template)."""
        msgs = [{"role": "user", "content": self.prompt}]
        return msgs + [{"role": "assistant", "content": self.answer}] if with_answer else msgs

    def is_correct(self, reply: str) -> bool:
        """Exact match of the final answer in `reply` with the one computed from the problem; for any_element, any
        element of the set is right."""
        if self.task == "any_element":
            return final(reply) in {str(v) for v in self.key[1]}
        return final(reply) == final(self.answer)


# ---- formatting --------------------------------------------------------------------------------------------------


def fmt_set(xs, sep: str = ",") -> str:
    """{3,9} as the gaokao writes it; the empty set as ∅."""
    return "{" + sep.join(map(str, xs)) + "}" if len(xs) else "∅"


def fmt_list(xs, sep: str = ",") -> str:
    """[1,2,2,4], LeetCode style."""
    return "[" + sep.join(map(str, xs)) + "]"


def final(text: str) -> str:
    """The final answer of a reply: its last line, without spaces and without a leading `A∩B=`."""
    lines = text.strip().splitlines() or [""]
    last = lines[-1].replace(" ", "")
    return last.split("=", 1)[1] if last.startswith("A∩B=") else last


# ---- the worked answers -----------------------------------------------------------------------------------------


def membership_walk(a, b) -> str:
    """Each element of A, in A's order, marked ∈B or ∉B: `2∈B,-15∉B,7∈B`."""
    return ",".join(f"{v}{'∈' if v in b else '∉'}B" for v in a)


def search_walk(nums, target: int) -> str:
    """The worked search: index:value and <, = or > against the target, stopping after the first value above it."""
    steps = []
    for i, v in enumerate(nums):
        steps.append(f"{i}:{v}{'<' if v < target else '=' if v == target else '>'}")
        if v > target:
            break
    return "".join(steps)


WIDTH = 4  # arithmetic works in 4 columns (a sum in 5): the same columns whatever the operands' lengths


def width_of(x: int, y: int) -> int:
    return max(WIDTH, len(str(x)), len(str(y)))


def columns(x: int, op: str, y: int) -> tuple[str, int]:
    """Column arithmetic of x op y (x, y >= 0) from the units up, one `a+b+carry=digit` (or `a-b-borrow=digit`) per
    digit of the operands padded to WIDTH digits, and for a sum always one more, `0+0+carry=carry`. Returns the text
    and the borrow out of the last column (1: the difference is negative)."""
    width = width_of(x, y)
    xs, ys = f"{x:0{width}d}"[::-1], f"{y:0{width}d}"[::-1]  # digits, units first
    cols, c = [], 0
    for a, b in zip(map(int, xs), map(int, ys)):
        v = a + b + c if op == "+" else a - b - c
        cols.append(f"{a}{op}{b}{op}{c}={v % 10}")
        c = int(v >= 10) if op == "+" else int(v < 0)
    if op == "+":
        cols.append(f"0+0+{c}={c}")
        c = 0
    return ",".join(cols), c


def arithmetic_work(x: int, op: str, y: int) -> str:
    """The expression restated, then its columns; for a negative difference, a second pass on -(y-x) (the first pass's
    last column still borrows). Every difference has 4 columns and every sum 5, whatever the operands' lengths, so
    the work never depends on how long each is (a model that wrote one column per digit of the longer operand, and a
    carry column only when a sum carried out, failed the pairs of lengths it had not seen together, such as 4 digits
    plus 4; one that restated the operands padded, 0048-0327, misread them in phrasings it had not seen)."""
    text, borrow = columns(x, op, y)
    text = f"{x}{op}{y}:" + text
    if borrow:
        text += f"\n-({y}-{x}):" + columns(y, "-", x)[0]
    return text


FUNCS = {"x^3": lambda v: v**3, "x^2": lambda v: v**2, "|x|": abs, "2x+1": lambda v: 2 * v + 1}


def cond_text(f: str, lo, lo_strict: bool, hi, hi_strict: bool) -> str:
    """The condition as the gaokao writes it: -5<x^3<5, x^2≤10, |x|>1, -3≤2x+1<7."""
    if lo is not None and hi is not None:
        return f"{lo}{'<' if lo_strict else '≤'}{f}{'<' if hi_strict else '≤'}{hi}"
    if hi is not None:
        return f"{f}{'<' if hi_strict else '≤'}{hi}"
    return f"{f}{'>' if lo_strict else '≥'}{lo}"


def satisfies(key: tuple, v: int) -> bool:
    """Whether v satisfies the filter's condition."""
    _, f, lo, lo_strict, hi, hi_strict, _ = key
    y = FUNCS[f](v)
    above = lo is None or (lo < y if lo_strict else lo <= y)
    below = hi is None or (y < hi if hi_strict else y <= hi)
    return above and below


def relation(a: int, b: int) -> str:
    return "<" if a < b else "=" if a == b else ">"


def filter_step(key: tuple, v: int) -> str:
    """One element of B checked: the expression's value between the condition's bounds, each with the relation that
    holds (<, = or >), then ✓ or ✗. For -5<x^3<5: `-1:-5<-1<5✓`, `2:-5<8>5✗`; for x^2≤10: `4:16>10✗`."""
    _, f, lo, _, hi, _, _ = key
    y = FUNCS[f](v)
    if lo is not None and hi is not None:
        chain = f"{lo}{relation(lo, y)}{y}{relation(y, hi)}{hi}"
    else:
        chain = f"{y}{relation(y, hi if lo is None else lo)}{hi if lo is None else lo}"
    return f"{v}:{chain}{'✓' if satisfies(key, v) else '✗'}"


def filter_walk(key: tuple) -> str:
    """Each element of B, in B's order, checked against the condition (`filter_step`)."""
    return ",".join(filter_step(key, v) for v in key[6])


def solve(key: tuple):
    """The exact answer of a problem, computed from its numbers (a set, a [first,last] pair or an integer)."""
    task = key[0]
    if task == "intersection":
        return [v for v in key[1] if v in key[2]]  # in A's order (sorted when A is)
    if task == "search_range":
        nums, t = key[1], key[2]
        return [nums.index(t), len(nums) - 1 - nums[::-1].index(t)] if t in nums else [-1, -1]
    if task == "arithmetic":
        _, x, op, y = key
        return x + y if op == "+" else x - y
    if task == "gaokao_filter":
        return [v for v in key[6] if satisfies(key, v)]
    raise ValueError(f"unknown task {task!r}: one of {TASKS}")


def worked_answer(key: tuple) -> str:
    """The assistant's answer: the work, then the final answer on the last line."""
    task = key[0]
    if task == "intersection":
        return membership_walk(key[1], key[2]) + "\nA∩B=" + fmt_set(solve(key))
    if task == "search_range":
        return f"target={key[2]}:" + search_walk(key[1], key[2]) + "\n" + fmt_list(solve(key))
    if task == "arithmetic":
        return arithmetic_work(*key[1:]) + "\n" + str(solve(key))
    if task == "gaokao_filter":
        return filter_walk(key) + "\nA∩B=" + fmt_set(solve(key))
    raise ValueError(f"unknown task {task!r}: one of {TASKS}")


# ---- the phrasings: ten written whole per language and task, the last HELD_OUT_TEMPLATES never trained on --------

TEMPLATES = {
    "intersection": {
        "zh": [
            "已知集合A={a}，B={b}，则A∩B=",
            "集合A={a}，B={b}，求A∩B。",
            "设A={a}，B={b}，A与B的交集是什么？",
            "已知A={a}，B={b}，求A和B的交集。",
            "若集合A={a}，集合B={b}，则A∩B等于多少？",
            "求集合A={a}与B={b}的交集A∩B。",
            "A={a}，B={b}，A∩B=?",
            "已知集合A={a}，B={b}，写出A∩B。",
            "给定两个集合A={a}和B={b}，它们的公共元素组成的集合是什么？",
            "设集合A={a}，B={b}，那么A∩B是？",
        ],
        "en": [
            "A={a}, B={b}. What is A∩B?",
            "Let A={a} and B={b}. Find A∩B.",
            "Given the sets A={a} and B={b}, what is their intersection?",
            "What is the intersection of A={a} and B={b}?",
            "If A={a} and B={b}, then A∩B=",
            "Find A∩B for A={a}, B={b}.",
            "Sets: A={a}, B={b}. Compute A∩B.",
            "A={a} and B={b}. Which elements are in both A and B?",
            "Consider A={a} and B={b}. Write down A∩B.",
            "Determine the common elements of A={a} and B={b}.",
        ],
    },
    "search_range": {
        "zh": [
            "给你一个按照非递减顺序排列的整数数组nums={nums}，和一个目标值target={t}。请你找出给定目标值在数组中的开始位置和结束位置。",
            "nums={nums}，target={t}，求target在nums中的开始位置和结束位置。",
            "在非递减数组{nums}中查找{t}的第一个和最后一个位置。",
            "已知有序数组nums={nums}，目标值target={t}，返回target的开始和结束下标。",
            "数组{nums}按升序排列，求{t}出现的第一个和最后一个下标。",
            "给定升序数组nums={nums}和target={t}，找出target的起止位置，不存在则返回[-1,-1]。",
            "在排好序的数组{nums}里，{t}的开始位置和结束位置分别是多少？",
            "查找目标值{t}在数组nums={nums}中的范围。",
            "有一个非递减的整数数组{nums}，请问{t}第一次和最后一次出现的下标是什么？",
            "对于nums={nums}，target={t}，输出target的开始位置和结束位置。",
        ],
        "en": [
            "Given nums={nums} sorted in non-decreasing order and target={t}, find the starting and ending position "
            "of target.",
            "nums={nums}, target={t}. Return the first and last position of target in nums.",
            "Find the first and last index of {t} in the sorted array {nums}.",
            "In the sorted array nums={nums}, where does target={t} start and end?",
            "Search range: nums={nums}, target={t}.",
            "For target={t} in nums={nums}, return its first and last index, or [-1,-1] if it is absent.",
            "The array {nums} is sorted. Give the first and last positions of {t}.",
            "Given a sorted list {nums} and a target {t}, return the range of indices where it appears.",
            "Sorted input nums={nums} and target={t}: what are the starting and ending indices?",
            "Locate {t} in the non-decreasing array {nums}: first and last index?",
        ],
    },
    "arithmetic": {
        "zh": [
            "计算：{e}=",
            "{e}等于多少？",
            "求{e}的值。",
            "请计算{e}。",
            "{e}=?",
            "算一算：{e}",
            "口算{e}的结果。",
            "{e}的结果是多少？",
            "请问{e}是多少？",
            "列竖式计算{e}。",
        ],
        "en": [
            "What is {e}?",
            "Compute {e}.",
            "{e} equals what?",
            "Calculate {e}.",
            "{e}=?",
            "Work out {e}.",
            "Find the value of {e}.",
            "Please evaluate {e}.",
            "What do you get for {e}?",
            "Solve: {e}",
        ],
    },
    "gaokao_filter": {
        "zh": [
            "已知集合A={{x|{cond}}}，B={b}，则A∩B=",
            "集合A={{x|{cond}}}，B={b}，求A∩B。",
            "设A={{x|{cond}}}，B={b}，求A与B的交集。",
            "若A={{x|{cond}}}，B={b}，则A∩B等于？",
            "已知A={{x|{cond}}}，B={b}，写出A∩B。",
            "集合B={b}中属于A={{x|{cond}}}的元素组成的集合是？",
            "已知集合A={{x|{cond}}}与集合B={b}，求A∩B。",
            "A={{x|{cond}}}，B={b}，A∩B=?",
            "设全集为整数集，A={{x|{cond}}}，B={b}，则A∩B为？",
            "集合A={{x|{cond}}}和B={b}的交集是什么？",
        ],
        "en": [
            "A={{x|{cond}}}, B={b}. What is A∩B?",
            "Let A={{x|{cond}}} and B={b}. Find A∩B.",
            "Given A={{x|{cond}}} and B={b}, find their intersection.",
            "If A={{x|{cond}}} and B={b}, then A∩B=",
            "Which elements of B={b} lie in A={{x|{cond}}}?",
            "Find A∩B where A={{x|{cond}}} and B={b}.",
            "Sets A={{x|{cond}}}, B={b}: compute A∩B.",
            "What is A∩B when A={{x|{cond}}} and B={b}?",
            "Consider A={{x|{cond}}} and B={b}. Write down A∩B.",
            "Determine which elements of B={b} belong to A={{x|{cond}}}.",
        ],
    },
}
# More ways people ask, for training only: a statement of the numbers, then a question (or the question first, whole).
# A model that saw only a few phrasings read the numbers by where they sat in them; many phrasings teach it to find
# them by their shape. None uses the held-out phrasings' telling words (HELD_OUT_WORDS, checked by the tests).
# Some name the sets in the other order (B first), as people do: a model that only saw A first walked the wrong list.
# fmt: off
STATEMENTS = {
    "intersection": {
        "zh": ["已知A={a}，B={b}。", "集合A={a}，集合B={b}。", "设A={a}，B={b}，", "若A={a}，B={b}，", "令A={a}，B={b}，",
               "已知集合A={a}与B={b}，", "有两个集合A={a}，B={b}，", "A={a}，B={b}，"],
        "en": ["A={a}, B={b}.", "A={a} and B={b}.", "Let A={a}, B={b}.", "Given A={a} and B={b},", "Suppose A={a} and B={b}.",
               "We have A={a} and B={b}.", "Take the sets A={a} and B={b}.", "For A={a} and B={b},", "Set A is {a} and set B is {b}."],
    },
    "search_range": {
        "zh": ["数组nums={nums}，目标值{t}。", "nums={nums}，target={t}。", "已知升序数组{nums}，目标值为{t}，", "设nums={nums}，target={t}，",
               "给定数组nums={nums}（非递减），目标{t}，", "有序数组{nums}，目标值target={t}，", "升序数组{nums}和数{t}，",
               "数组{nums}与整数{t}，"],
        "en": ["nums={nums}, target={t}.", "Given nums={nums} and target={t},", "The array is {nums} and the target is {t}.",
               "Let nums={nums}, target={t}.", "Sorted array {nums}, target {t}.", "Take the sorted list {nums} and the number {t}.",
               "Input: nums={nums}, target={t}.", "The list {nums} and the number {t}.", "Sorted array {nums} and value {t}."],
    },
    "arithmetic": {"zh": ["{e}", "算式{e}，", "计算{e}，"], "en": ["{e}", "Here is a sum: {e}.", "Expression: {e}."]},
    "gaokao_filter": {
        "zh": ["已知A={{x|{cond}}}，B={b}。", "设A={{x|{cond}}}，B={b}，", "若集合A={{x|{cond}}}，B={b}，", "集合A={{x|{cond}}}，集合B={b}，",
               "令A={{x|{cond}}}，B={b}，", "B={b}，A={{x|{cond}}}。", "集合B={b}，集合A={{x|{cond}}}，", "设B={b}，A={{x|{cond}}}，"],
        "en": ["A={{x|{cond}}}, B={b}.", "Let A={{x|{cond}}} and B={b}.", "Given A={{x|{cond}}} and B={b},",
               "Suppose A={{x|{cond}}}, B={b}.", "Take A={{x|{cond}}} and B={b}.", "For A={{x|{cond}}} and B={b},",
               "B={b}, A={{x|{cond}}}.", "Let B={b} and A={{x|{cond}}}.", "Given B={b} and A={{x|{cond}}},"],
    },
}
QUESTIONS = {
    "intersection": {
        "zh": ["求A∩B。", "则A∩B=", "A∩B是什么？", "求它们的交集。", "A和B的交集是？", "哪些数同时在A和B中？", "写出A∩B。", "A∩B等于？"],
        "en": ["What is A∩B?", "Find A∩B.", "Compute A∩B.", "A∩B=", "Find their intersection.", "Which numbers are in both?",
               "What is the intersection of A and B?", "List the elements in both sets.", "Give A∩B."],
    },
    "search_range": {
        "zh": ["求开始位置和结束位置。", "返回target的起止下标。", "求target的第一个和最后一个位置。", "它在数组中的范围是？",
               "找出目标值的开始和结束位置。"],
        "en": ["Find the first and last position of target.", "Return the starting and ending position.",
               "Where does it start and end?", "Give its first and last index.", "Find the range of the target.",
               "Return [first, last], or [-1,-1] if absent."],
    },
    "arithmetic": {"zh": ["等于多少？", "求值。", "结果是？", "=?"], "en": ["What is it?", "Compute it.", "Evaluate.", "=?"]},
    "gaokao_filter": {
        "zh": ["求A∩B。", "则A∩B=", "A∩B是什么？", "写出A∩B。", "求A与B的交集。", "B中哪些元素属于A？"],
        "en": ["What is A∩B?", "Find A∩B.", "A∩B=", "Compute their intersection.", "Which elements of B are in A?",
               "Give A∩B."],
    },
}
WHOLE = {
    "intersection": {
        "zh": ["求A={a}和B={b}的交集。", "A={a}与B={b}的交集是？", "集合{a}与{b}的交集是什么？"],
        "en": ["Find the intersection of A={a} and B={b}.", "Compute A∩B where A={a} and B={b}.",
               "What is A∩B if A={a} and B={b}?", "Which elements of A={a} are also in B={b}?",
               "Intersect A={a} with B={b}.", "What numbers do {a} and {b} share?"],
    },
    "search_range": {
        "zh": ["求{t}在有序数组{nums}中的开始和结束位置。", "target={t}在nums={nums}中的下标范围是？", "在{nums}中，{t}从哪里开始到哪里结束？",
               "{nums}中{t}的开始和结束下标是？", "在{nums}中找{t}，返回首尾位置。", "请找出{t}在升序数组{nums}中的起止下标。",
               "已知数组{nums}是非递减的，{t}出现的范围是什么？", "数组{nums}里，{t}从哪个下标开始，到哪个下标结束？",
               "非递减数组{nums}，找出{t}最早和最晚的下标。", "看数组{nums}，{t}的首尾位置在哪里？"],
        "en": ["Find where {t} starts and ends in {nums}.", "What is the index range of target={t} in nums={nums}?",
               "Search {nums} for {t}: first and last position.", "In {nums}, find the first and last {t}.",
               "Return the range of {t} in the sorted array nums={nums}.", "Where are the first and last {t} in {nums}?",
               "Find {t} in the sorted array {nums}: its first and last index.",
               "In the non-decreasing list {nums}, find the range of {t}.", "What are the first and last indices of {t} in {nums}?",
               "Given {nums}, return the first and last position of {t}.",
               "The sorted numbers are {nums}. Where is {t} first and last?"],
    },
    "arithmetic": {"zh": ["帮我算{e}。", "{e}得多少？", "{e}是多少？", "口算{e}。", "计算：{e}"],
                   "en": ["How much is {e}?", "Tell me {e}.", "Evaluate {e}.", "Calculate {e}.", "Work out {e}.",
                          "What's {e}?", "Find the value of {e}.", "Compute: {e}"]},
    "gaokao_filter": {
        "zh": ["求集合A={{x|{cond}}}与B={b}的交集。", "B={b}中满足{cond}的元素组成的集合是？"],
        "en": ["Find the intersection of A={{x|{cond}}} and B={b}.", "Which numbers in B={b} satisfy {cond}?",
               "What is A∩B if A={{x|{cond}}} and B={b}?"],
    },
}
# The telling words of the held-out phrasings (the last HELD_OUT_TEMPLATES of each TEMPLATES list), never used in a
# trained one: the "phrasing" split measures questions worded in ways training never showed.
HELD_OUT_WORDS = {
    "intersection": ("给定两个", "公共元素", "那么", "Consider", "Write down", "Determine", "common elements"),
    "search_range": ("有一个", "第一次和最后一次出现", "对于", "输出", "Sorted input", "starting and ending indices",
                     "Locate"),
    "arithmetic": ("请问", "列竖式", "What do you get", "Solve"),
    "gaokao_filter": ("全集", "为？", "的交集是什么", "Consider", "Write down", "Determine", "belong to"),
}
# fmt: on


def trained_templates(task: str, lang: str) -> list[str]:
    """Every phrasing training uses for `task` in `lang`: TEMPLATES' trained ones, each statement followed by each
    question, and the whole questions, each once."""
    join = "" if lang == "zh" else " "
    made = [s + join + q for s in STATEMENTS[task][lang] for q in QUESTIONS[task][lang]]
    return list(dict.fromkeys(TEMPLATES[task][lang][:-HELD_OUT_TEMPLATES] + made + WHOLE[task][lang]))  # distinct


# Never trained on, whatever the seed: the launch's gaokao question, the README's set-intersection example and two
# that a tiny model trained on one-digit sets got wrong, so that a model answering them shows what it learned, not
# what it saw. Word for word, as `reserved_problems()` asks them.
RESERVED_PROMPTS = {
    ("gaokao_filter", "x^3", -5, True, 5, True, (-3, -1, 0, 2, 3)): [
        "已知集合A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=()"
    ],
    ("intersection", (3, 5, 7, 9), (1, 3, 4, 9)): [
        "已知集合A={3,5,7,9}，B={1,3,4,9}，则A∩B=",
        "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?",
    ],
    ("intersection", (2, 3, 10, 15), (1, 10, 12, 13)): ["A={2,3,10,15}, B={1,10,12,13}. What is A∩B?"],
    ("intersection", (-6, -5, -1, 1), (-9, -4, 6, 7)): ["已知集合A={-6,-5,-1,1}，B={-9,-4,6,7}，则A∩B="],
}
RESERVED = set(RESERVED_PROMPTS)

HALF_TO_FULL = {",": "，", ".": "。", "?": "？", ":": "：", ";": "；", "(": "（", ")": "）"}
FULL_TO_HALF = {v: k for k, v in HALF_TO_FULL.items()}
SEPARATORS = (",", ",", ", ", "，", "， ")  # between the elements of a set or a list, as people type them


def typeset(template: str, rng: random.Random) -> str:
    """The template's own punctuation as people type it: kept half the time, else all full-width or all half-width
    (the numbers are typeset separately, with their own separators)."""
    r = rng.random()
    if r < 0.5:
        return template
    table = HALF_TO_FULL if r < 0.75 else FULL_TO_HALF
    return template.translate(str.maketrans(table))


# Words people put around a question. Added to some training questions, so that the model finds the numbers and the
# kind of problem by their shape, not by the words around them (no digits: they would be part of the problem).
PREFIXES = ("请回答：", "题目：", "问：", "帮我算一下：", "考考你：", "数学题：", "Question: ", "Quick question: ",
            "Please help: ", "Homework: ", "Q: ", "Math: ")  # fmt: skip
SUFFIXES = ("谢谢！", "请给出答案。", "请写出过程。", "快点哦", " Thanks!", " Show your work.", " Answer on the last line.",
            " Please.")  # fmt: skip


def decorate(prompt: str, rng: random.Random) -> str:
    """Sometimes a few words before the question (a fifth of the time) or after it (a tenth)."""
    if rng.random() < 0.2:
        prompt = rng.choice(PREFIXES) + prompt
    if rng.random() < 0.1:
        prompt += rng.choice(SUFFIXES)
    return prompt


def gaokao_blank(prompt: str, rng: random.Random) -> str:
    """A question ending in `=` sometimes gets the gaokao's answer blank, `()` or `（ ）`, as the launch's does."""
    return prompt + rng.choice(("", "", "()", "（ ）")) if prompt.endswith("=") else prompt


SPACED = ("=", "∩", "|", "<", "≤", ">", "≥", "+", "-")  # symbols people may type with a space on each side


def spaced(prompt: str, rng: random.Random) -> str:
    """A fifth of the time, some of the symbols typed with spaces around them (A = {1,2}, A ∩ B, -5 < x^3 < 5,
    48 + 327), as people type them; + and - only between two operands (never in -5 or non-decreasing)."""
    if rng.random() >= 0.2:
        return prompt
    for c in SPACED:
        if rng.random() < 0.6:
            pattern = rf"(?<=[0-9x])\s*{re.escape(c)}\s*(?=[0-9])" if c in "+-" else rf"\s*{re.escape(c)}\s*"
            prompt = re.sub(pattern, f" {c} ", prompt)
    return prompt.strip()


def render(key: tuple, rng: random.Random, split: str = "train") -> Problem:
    """Phrase a problem: pick the language, a template (a held-out one for split "phrasing", never otherwise),
    punctuation, separators and spacing with `rng` (and, for training, a few words around it); write the answer from
    the numbers."""
    task, lang = key[0], rng.choice(("zh", "en"))
    if task == "any_element":
        return render_any_element(key, lang, rng)
    pool = TEMPLATES[task][lang]
    templates = pool[-HELD_OUT_TEMPLATES:] if split == "phrasing" else trained_templates(task, lang)
    template, sep = typeset(rng.choice(templates), rng), rng.choice(SEPARATORS)
    if task == "intersection":
        prompt = template.format(a=fmt_set(key[1], sep), b=fmt_set(key[2], sep))
    elif task == "search_range":
        prompt = template.format(nums=fmt_list(key[1], sep), t=key[2])
    elif task == "arithmetic":
        prompt = template.format(e=f" {key[2]} ".join(map(str, key[1::2])) if rng.random() < 0.25 else
                                 f"{key[1]}{key[2]}{key[3]}")  # fmt: skip
    else:
        prompt = template.format(cond=cond_text(*key[1:6]), b=fmt_set(key[6], sep))
    prompt = spaced(gaokao_blank(prompt, rng), rng)
    return Problem(task, lang, decorate(prompt, rng) if split == "train" else prompt, worked_answer(key), key, split)


# ---- the numbers: task -> key, inside the ranges; the corners only when asked --------------------------------------


def is_corner(key: tuple) -> bool:
    """The corners of the number ranges, never trained on: each feature is trained, never the combination.

    intersection: both sets of 1 element, or both of 8; search_range: a list holding both ends of its range, -20 and
    50; arithmetic: the sum of two 4-digit numbers, or a 1-digit number minus a 4-digit one; gaokao_filter: B holding
    both -6 and 6.
    """
    task = key[0]
    if task == "intersection":
        return (len(key[1]), len(key[2])) in ((1, 1), (8, 8))
    if task == "search_range":
        return SEARCH_VALUES[0] in key[1] and SEARCH_VALUES[-1] in key[1]
    if task == "arithmetic":
        _, x, op, y = key
        digits = (len(str(x)), len(str(y)))
        return (op, digits) in (("+", (4, 4)), ("-", (1, 4)))
    if task == "gaokao_filter":
        return {-6, 6} <= set(key[6])
    if task == ANY_ELEMENT:
        return False
    raise ValueError(f"unknown task {task!r}: one of {TASKS}")


def some_order(xs: list, rng: random.Random, sorted_share: float) -> tuple:
    """xs sorted (with probability `sorted_share`) or shuffled."""
    xs = sorted(xs) if rng.random() < sorted_share else rng.sample(xs, len(xs))
    return tuple(xs)


def draw_intersection(rng: random.Random, corner: bool = False) -> tuple:
    """Two sets of 1-8 distinct integers sharing 0 to all of the smaller one's elements: ('intersection', A, B).
    Long sets are drawn more often than short ones (their walks and their final copies are the hardest).

    Values come from 0..9 a quarter of the time, -9..9 a fifth, -20..20 otherwise; sets are sorted or not."""
    size = (lambda: max(rng.randint(1, 8), rng.randint(1, 8))) if rng.random() < 0.4 else (lambda: rng.randint(1, 8))
    n_a, n_b = (n := rng.choice((1, 8)), n) if corner else (size(), size())
    common = max(rng.randint(0, min(n_a, n_b)), rng.randint(0, min(n_a, n_b)))  # larger overlaps likelier
    r = rng.random()
    values = range(0, 10) if r < 0.25 else range(-9, 10) if r < 0.45 else VALUES
    if n_a + n_b - common > len(values):
        values = VALUES
    pool = rng.sample(values, n_a + n_b - common)
    a, b = pool[:n_a], pool[:common] + pool[n_a:]
    ordered = rng.random() < 0.6  # both sorted, as the gaokao writes them, 60% of the time
    return ("intersection", some_order(a, rng, 1.0 if ordered else 0.3), some_order(b, rng, 1.0 if ordered else 0.3))


def draw_search_range(rng: random.Random, corner: bool = False) -> tuple:
    """A sorted list of 1-12 integers (longer ones likelier) from a stretch of -20..50 (repeats likely), and a target
    that is in it 70% of the time (its last element a seventh of those), else above all of it or just outside or in a
    gap: the walk often goes all the way."""
    n = max(rng.randint(1, 12), rng.randint(1, 12), 2 if corner else 1)
    lo = rng.randint(SEARCH_VALUES[0], SEARCH_VALUES[-1] - 2)
    hi = min(SEARCH_VALUES[-1], lo + rng.randint(2, 30))
    if corner:  # both ends of the range, and the rest anywhere between
        lo, hi = SEARCH_VALUES[0], SEARCH_VALUES[-1]
        nums = tuple(sorted([lo, hi] + rng.choices(SEARCH_VALUES, k=n - 2)))
    else:
        nums = tuple(sorted(rng.choices(range(lo, hi + 1), k=n)))
    near = range(max(SEARCH_VALUES[0], lo - 3), min(SEARCH_VALUES[-1], hi + 3) + 1)
    absent = [v for v in near if v not in nums]
    above = [v for v in absent if v > nums[-1]]
    r = rng.random()
    if r < 0.6 or not absent:
        target = rng.choice(nums)
    elif r < 0.7:
        target = nums[-1]
    else:
        target = rng.choice(above if above and r < 0.85 else absent)
    return ("search_range", nums, target)


def number_of(digits: int, rng: random.Random) -> int:
    """A non-negative integer of `digits` digits (0..9 for one digit)."""
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def draw_arithmetic(rng: random.Random, corner: bool = False) -> tuple:
    """x+y or x-y with x, y of 1-4 digits each (as many of each length); a difference may be negative."""
    if corner:
        op = rng.choice("+-")
        return ("arithmetic", number_of(4 if op == "+" else 1, rng), op, number_of(4, rng))
    return ("arithmetic", number_of(rng.randint(1, 4), rng), rng.choice("+-"), number_of(rng.randint(1, 4), rng))


ANCHORS = {"x^3": range(-3, 4), "x^2": range(0, 6), "|x|": range(0, 7), "2x+1": range(-6, 7)}  # |f| <= 27
JITTER = {"x^3": 5, "x^2": 2, "|x|": 1, "2x+1": 1}


def draw_bound(f: str, rng: random.Random, positive: bool = False) -> int:
    """A bound near a value of f (at most 32 in size), so that the condition cuts B somewhere interesting."""
    anchors = [a for a in ANCHORS[f] if a > 0] if positive else ANCHORS[f]
    bound = FUNCS[f](rng.choice(anchors)) + rng.randint(-JITTER[f], JITTER[f])
    return max(bound, 0) if f in ("x^2", "|x|") else bound  # x^2 > -2 holds for every x: not worth asking


def draw_gaokao_filter(rng: random.Random, corner: bool = False) -> tuple:
    """A={x | condition} with x^3, x^2, |x| or 2x+1 bounded on one side or both (< or ≤), and B of 3-6 integers from
    -6..6 (sorted 80% of the time): ('gaokao_filter', f, lo, lo_strict, hi, hi_strict, B)."""
    f = rng.choice(tuple(FUNCS))
    n = rng.randint(3, 6)
    inner = [v for v in FILTER_VALUES if abs(v) < 6]
    b = [-6, 6] + rng.sample(inner, n - 2) if corner else rng.sample(list(FILTER_VALUES), n)
    b = some_order(b, rng, 0.8)
    lo_strict, hi_strict = rng.random() < 0.6, rng.random() < 0.6
    shape = rng.choice(("both", "upper", "lower"))
    if shape == "both" and f in ("x^3", "2x+1") and rng.random() < 0.5:  # symmetric, as the launch's -5<x^3<5
        c = abs(draw_bound(f, rng, positive=True)) or 1
        return ("gaokao_filter", f, -c, lo_strict, c, hi_strict, b)
    lo, hi = sorted(draw_bound(f, rng) for _ in range(2))
    hi += lo == hi
    lo = lo if shape != "upper" else None
    hi = hi if shape != "lower" else None
    return ("gaokao_filter", f, lo, lo_strict, hi, hi_strict, b)


# ---- any element: a question with many right answers, so that sampling has a real choice to make ---------------

ANY_ELEMENT = "any_element"
# fmt: off
ANY_TEMPLATES = {
    "zh": ["任取集合A={a}中的一个元素。", "写出集合A={a}的任意一个元素。", "从{a}中随便选一个数。", "A={a}，举出A中的一个元素。"],
    "en": ["Name any element of A={a}.", "Pick a number from {a}.", "Give one element of the set A={a}.",
           "A={a}. Say any member of A."],
}
# fmt: on


def draw_any_element(rng: random.Random, corner: bool = False) -> tuple:
    """A set of 3 to 6 distinct integers (from 0..9 half the time, else -20..20) and the element the answer names,
    drawn uniformly: ('any_element', A, chosen). Trained on every element alike, the model learns to spread its
    probability over the set's elements."""
    values = range(0, 10) if rng.random() < 0.5 else VALUES
    a = tuple(rng.sample(values, rng.randint(3, 6)))
    return (ANY_ELEMENT, a, rng.choice(a))


def render_any_element(key: tuple, lang: str, rng: random.Random) -> Problem:
    """`Name any element of A={3,5,9}.` -> `5` (the element drawn in the key: any element is right)."""
    prompt = typeset(rng.choice(ANY_TEMPLATES[lang]), rng).format(a=fmt_set(key[1], rng.choice(SEPARATORS)))
    return Problem(ANY_ELEMENT, lang, spaced(prompt, rng), str(key[2]), key)


ANY_ELEMENT_EXAMPLE = Problem(
    ANY_ELEMENT, "en", "Name any element of A={3,5,7,9}.", "3", (ANY_ELEMENT, (3, 5, 7, 9), 3)
)
ANY_ELEMENT_LABEL = "Any element: many right answers (sampling)"


def any_element_problems(n: int = 100, seed: int = HELD_OUT_SEED) -> list[Problem]:
    """`n` seeded any-element questions, for measuring how the model spreads its choice (evaluate.any_element)."""
    rng = random.Random(f"any element {seed}")
    return [render(draw_any_element(rng), rng, "numbers") for _ in range(n)]


DRAW = {
    "intersection": draw_intersection,
    "search_range": draw_search_range,
    "arithmetic": draw_arithmetic,
    "gaokao_filter": draw_gaokao_filter,
    ANY_ELEMENT: draw_any_element,
}
# How often each task is drawn for training: the intersection and the filter, the slowest to learn, get the most;
# any_element, a task with many right answers (for the sampling lessons), a little.
MIX = {"intersection": 0.3, "search_range": 0.22, "arithmetic": 0.17, "gaokao_filter": 0.26, ANY_ELEMENT: 0.05}
# tiny-moe learned the search's lookups more slowly than tiny (its unseen search phrasings: 64% against 88%, the
# other tasks alike): it gets more of them, at the expense of the intersection and the filter.
MOE_MIX = {"intersection": 0.27, "search_range": 0.27, "arithmetic": 0.17, "gaokao_filter": 0.24, ANY_ELEMENT: 0.05}


def draw_key(task: str, rng: random.Random, corner: bool = False) -> tuple:
    """The numbers of one random problem of `task`: inside the corners if `corner`, else outside them."""
    if task not in DRAW:
        raise ValueError(f"unknown task {task!r}: one of {tuple(DRAW)}")
    while True:
        key = DRAW[task](rng, corner)
        if is_corner(key) == corner:
            return key


def draw(task: str, rng: random.Random, split: str = "train") -> Problem:
    """One random problem of `task`, phrased; split "corner" draws from the range corners, "phrasing" uses a held-out
    phrasing."""
    return render(draw_key(task, rng, corner=split == "corner"), rng, split)


def held_out(n_per_task: int = 200, seed: int = HELD_OUT_SEED) -> list[Problem]:
    """The held-out problems: the first `n_per_task` distinct problems of each task, from one seeded stream per task,
    cycling through the splits HELD_OUT_SPLITS (half new numbers, a quarter unseen phrasings, a quarter corners).

    One stream per task, so held_out(50) is the start of held_out(1000), task by task.
    """
    if not 0 < n_per_task <= HELD_OUT_MAX:
        raise ValueError(f"n_per_task must be in 1..{HELD_OUT_MAX} (the held-out problems set aside), got {n_per_task}")
    out = []
    for task in TASKS:
        rng, seen = random.Random(f"held-out {seed} {task}"), set()
        while len(seen) < n_per_task:
            p = draw(task, rng, HELD_OUT_SPLITS[len(seen) % len(HELD_OUT_SPLITS)])
            if p.key not in seen and p.key not in RESERVED:
                seen.add(p.key)
                out.append(p)
    return out


def validation(n_per_task: int = 200, seed: int = VALIDATION_SEED) -> list[Problem]:
    """Fresh problems in the trained phrasings, for choosing between training runs (random seeds, recipes) without
    looking at the held-out problems the model cards report: never a held-out or reserved problem, never a corner."""
    exclude = {p.key for p in held_out(HELD_OUT_MAX)} | set(RESERVED)
    out = []
    for task in TASKS:
        rng, seen = random.Random(f"validation {seed} {task}"), set()
        while len(seen) < n_per_task:
            p = draw(task, rng)
            if p.key not in seen and p.key not in exclude:
                seen.add(p.key)
                out.append(p)
    return out


def draw_beyond(task: str, rng: random.Random) -> tuple:
    """The numbers of a problem just outside the trained ranges: a set element beyond ±20 (up to ±60), a list of 13-16
    numbers, a 5-digit operand, an element of B beyond ±6 (up to ±9)."""
    if task == "intersection":
        n_a, n_b = rng.randint(2, 6), rng.randint(2, 6)
        common = rng.randint(0, min(n_a, n_b))
        pool = rng.sample(range(-60, 61), n_a + n_b - common)
        key = ("intersection", tuple(pool[:n_a]), tuple(pool[:common] + pool[n_a:]))
        return key if max(map(abs, pool)) > VALUES[-1] else draw_beyond(task, rng)
    if task == "search_range":
        lo = rng.randint(SEARCH_VALUES[0], SEARCH_VALUES[-1] - 10)
        nums = tuple(sorted(rng.choices(range(lo, min(SEARCH_VALUES[-1], lo + 30) + 1), k=rng.randint(13, 16))))
        return ("search_range", nums, rng.choice(nums))
    if task == "arithmetic":
        x, y = number_of(5, rng), number_of(rng.randint(1, 5), rng)
        return ("arithmetic", *((x, rng.choice("+-"), y) if rng.random() < 0.5 else (y, rng.choice("+-"), x)))
    key = draw_gaokao_filter(rng)
    b = rng.sample([v for v in range(-9, 10) if v != 0], len(key[6]))
    return key[:6] + (tuple(sorted(b)),) if max(map(abs, b)) > FILTER_VALUES[-1] else draw_beyond(task, rng)


def beyond(n_per_task: int = 50, seed: int = HELD_OUT_SEED) -> list[Problem]:
    """Problems just outside the trained ranges (`draw_beyond`), in the trained phrasings: never trained on, and not
    what the models were made for. They measure how far the procedures stretch (split "beyond")."""
    out = []
    for task in TASKS:
        rng = random.Random(f"beyond {seed} {task}")
        out += [render(draw_beyond(task, rng), rng, "beyond") for _ in range(n_per_task)]
    return out


def reserved_problems() -> list[Problem]:
    """The launch's gaokao question and the README's examples, word for word, with their answers (never trained on)."""
    return [
        Problem(key[0], "en" if prompt.isascii() else "zh", prompt, worked_answer(key), key, "reserved")
        for key, prompts in RESERVED_PROMPTS.items()
        for prompt in prompts
    ]


def training_stream(seed: int, exclude: set, mix: dict = MIX):
    """An endless seeded stream of training problems: never one whose key is in `exclude` (the held-out keys) or in
    RESERVED, never a range corner, never a held-out phrasing.

    mix: task -> weight (e.g. {"intersection": 1.0} for that task alone).
    """
    if not mix or set(mix) - set(DRAW):
        raise ValueError(f"mix must weigh some of the tasks {tuple(DRAW)}, got {mix!r}")
    rng = random.Random(seed)
    tasks, weights = list(mix), list(mix.values())
    while True:
        p = draw(rng.choices(tasks, weights)[0], rng)
        if p.key not in exclude and p.key not in RESERVED:
            yield p


# ---- slices, for reporting ---------------------------------------------------------------------------------------

SLICES = ("all", "numbers", "phrasing", "corner", "one-digit", "multi-digit", "negative", "zh", "en")
SLICE_LABELS = {
    "all": "all held-out",
    "numbers": "new numbers, trained phrasings",
    "phrasing": "unseen phrasings",
    "corner": "range corners",
    "one-digit": "one-digit numbers only",
    "multi-digit": "a number of 2+ digits",
    "negative": "a negative number",
    "zh": "Chinese",
    "en": "English",
}


def numbers_of(key: tuple) -> list[int]:
    """Every number a problem shows or answers with (bounds and results included)."""
    task = key[0]
    if task == "intersection":
        return [*key[1], *key[2]]
    if task == "search_range":
        return [*key[1], key[2]]
    if task == "arithmetic":
        return [key[1], key[3], solve(key)]
    return [v for v in (key[2], key[4]) if v is not None] + list(key[6])


def slices(p: Problem) -> list[str]:
    """The slices a problem counts in: all, its split, its digits, whether it has negatives, its language."""
    nums = numbers_of(p.key)
    digits = "one-digit" if all(-10 < v < 10 for v in nums) else "multi-digit"
    return ["all", p.split, digits] + (["negative"] if min(nums) < 0 else []) + [p.lang]


TASK_LABELS = {
    "intersection": "Set intersection",
    "search_range": "LeetCode 34 search range",
    "arithmetic": "Arithmetic",
    "gaokao_filter": "Gaokao set filter",
}


def example_prompts(n_per_task: int = 1) -> list[tuple[str, str]]:
    """(prompt, label) pairs a bundled model was trained to answer, for the web demo's examples: the launch's gaokao
    set question, then `n_per_task` held-out problems of each task in Chinese and in English (never trained on), then
    a question with many right answers (any element of a set), where sampling has a real choice to make."""
    out = [(p.prompt, "Gaokao 2024 set question (中文)") for p in reserved_problems() if p.task == "gaokao_filter"]
    held = held_out(50)
    for task in TASKS:
        for lang in ("zh", "en"):
            chosen = [p for p in held if p.task == task and p.lang == lang and p.split == "numbers"][:n_per_task]
            out += [(p.prompt, f"{TASK_LABELS[task]} ({'中文' if lang == 'zh' else 'English'})") for p in chosen]
    return out + [(ANY_ELEMENT_EXAMPLE.prompt, ANY_ELEMENT_LABEL)]
