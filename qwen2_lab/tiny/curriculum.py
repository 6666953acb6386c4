"""The synthetic gaokao-style curriculum the bundled `tiny` and `tiny-moe` are trained on.

Four small tasks, each a short question (Chinese or English, several phrasings) and an exact answer:

    intersection   已知集合A={3,5,7,9}，B={1,3,4,9}，则A∩B=              ->  A∩B={3,9}
    search_range   LeetCode 34 on a short sorted list: nums=[1,2,2,4], target=2 ->  0:1<1:2=2:2=3:4>
                                                                                 [1,2]      ([-1,-1] when absent)
    arithmetic     2-3 digit addition and subtraction: 计算：327+48=        ->  7+8+0=5,2+4+1=7,3+0+0=3,0+0+0=0
                                                                                 375
    gaokao_filter  the seed's gaokao question in small: A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=  ->  A∩B={-1,0}

The answer's last line is the final answer (`final`). Two tasks show their work first, in a fixed layout in which
every token depends only on a few tokens at fixed distances: a tiny model trained for minutes on two CPU cores learns
that, while the bare answer needs counting (search range) or carries looked ahead (arithmetic), which it does not
learn in that time. Arithmetic is done in columns from the units up, as at school, with the carry (or borrow) written
as the third operand of each column; the search walks the list with its indices until it passes the target.

A `Problem` keeps its numbers (`key`), so the answer is always computed from the problem (`solve`), never stored by
hand, and the held-out split can exclude a problem in every phrasing. Everything is seeded: the same seed gives the
same problems, in the same order, on every machine (only `random.Random` is used).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TASKS = ("intersection", "search_range", "arithmetic", "gaokao_filter")
HELD_OUT_SEED = 10_007  # the held-out problems come from their own streams, one per task
HELD_OUT_MAX = 1000  # held-out problems set aside per task: evaluations may use any first n <= this
# Never trained on, whatever the seed: the seed's gaokao question and the set-intersection example, so that
# a model answering them shows what it learned, not what it saw. Word for word, as `reserved_problems()` asks them.
RESERVED_PROMPTS = {
    ("gaokao_filter", 3, 5, (-3, -1, 0, 2, 3)): ["已知集合A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=()"],
    ("intersection", (3, 5, 7, 9), (1, 3, 4, 9)): [
        "已知集合A={3,5,7,9}，B={1,3,4,9}，则A∩B=",
        "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?",
    ],
}
RESERVED = set(RESERVED_PROMPTS)


@dataclass(frozen=True)
class Problem:
    """One question. `key` is the task and its numbers: two problems with the same key are the same problem."""

    task: str
    lang: str  # "zh" or "en"
    prompt: str  # the user's message
    answer: str  # the assistant's message; its final answer is `final(answer)`
    key: tuple

    def messages(self, with_answer: bool = False) -> list[dict]:
        """Chat messages for the chat template (the default system prompt is added by the template)."""
        msgs = [{"role": "user", "content": self.prompt}]
        return msgs + [{"role": "assistant", "content": self.answer}] if with_answer else msgs

    def is_correct(self, reply: str) -> bool:
        """Exact match of the final answer in `reply` with the one computed from the problem."""
        return final(reply) == final(self.answer)


# ---- formatting --------------------------------------------------------------------------------------------------


def fmt_set(xs) -> str:
    """{3,9} as the gaokao writes it; the empty set as ∅."""
    return "{" + ",".join(map(str, xs)) + "}" if xs else "∅"


def fmt_list(xs) -> str:
    """[1,2,2,4], LeetCode style (no spaces)."""
    return "[" + ",".join(map(str, xs)) + "]"


def search_walk(nums, target: int) -> str:
    """The worked search: index:value and <, = or > against the target, stopping after the first value above it."""
    steps = []
    for i, v in enumerate(nums):
        steps.append(f"{i}:{v}{'<' if v < target else '=' if v == target else '>'}")
        if v > target:
            break
    return "".join(steps)


def columns(x: int, op: str, y: int, width: int = 4) -> str:
    """Column arithmetic from the units up: `a+b+carry=digit` (or `a-b-borrow=digit`) for each of `width` columns."""
    xs, ys = f"{x:0{width}d}"[::-1], f"{y:0{width}d}"[::-1]  # digits, units first
    cols, c = [], 0
    for a, b in zip(map(int, xs), map(int, ys)):
        v = a + b + c if op == "+" else a - b - c
        cols.append(f"{a}{op}{b}{op}{c}={v % 10}")
        c = int(v >= 10) if op == "+" else int(v < 0)
    return ",".join(cols)


def final(text: str) -> str:
    """The final answer of a reply: its last line, without spaces and without a leading `A∩B=`."""
    lines = text.strip().splitlines() or [""]
    last = lines[-1].replace(" ", "")
    return last.split("=", 1)[1] if last.startswith("A∩B=") else last


# ---- the four tasks: numbers -> key, key -> answer, key -> prompt ------------------------------------------------

INTERSECTION_ZH = [
    "已知集合A={a}，B={b}，则A∩B=",
    "集合A={a}，B={b}，求A∩B。",
    "设A={a}，B={b}，A与B的交集是什么？",
    "已知A={a}，B={b}，求A和B的交集。",
]
INTERSECTION_EN = [
    "A={a}, B={b}. What is A∩B?",
    "Let A={a} and B={b}. Find A∩B.",
    "Given the sets A={a} and B={b}, what is their intersection?",
    "What is the intersection of A={a} and B={b}?",
]
SEARCH_ZH = [
    "给你一个按照非递减顺序排列的整数数组nums={nums}，和一个目标值target={t}。请你找出给定目标值在数组中的开始位置和结束位置。",
    "nums={nums}，target={t}，求target在nums中的开始位置和结束位置。",
    "在非递减数组{nums}中查找{t}的第一个和最后一个位置。",
]
SEARCH_EN = [
    "Given nums={nums} sorted in non-decreasing order and target={t}, find the starting and ending position of target.",
    "nums={nums}, target={t}. Return the first and last position of target in nums.",
    "Find the first and last index of {t} in the sorted array {nums}.",
]
# The expression is always written x+y or x-y (no spaces, no words), so the digits sit next to the operator.
ARITH_ZH = ["计算：{x}{op}{y}=", "{x}{op}{y}等于多少？", "求{x}{op}{y}的值。"]
ARITH_EN = ["What is {x}{op}{y}?", "Compute {x}{op}{y}.", "{x}{op}{y} equals what?"]
FILTER_ZH = ["已知集合A={{x|{cond}}}，B={b}，则A∩B=", "集合A={{x|{cond}}}，B={b}，求A∩B。"]
FILTER_EN = ["A={{x|{cond}}}, B={b}. What is A∩B?", "Let A={{x|{cond}}} and B={b}. Find A∩B."]


def draw_intersection(rng: random.Random) -> tuple:
    """Two sorted sets of 3-5 distinct digits 0..9 sharing 0-3 elements: ('intersection', A, B)."""
    pool = rng.sample(range(10), 10)
    n_a, n_b = rng.randint(3, 5), rng.randint(3, 5)
    common = rng.randint(0, min(3, n_a, n_b))
    a = pool[:n_a]
    b = pool[:common] + pool[n_a : n_a + n_b - common]
    return ("intersection", tuple(sorted(a)), tuple(sorted(b)))


def draw_search_range(rng: random.Random) -> tuple:
    """A sorted list of 3-8 digits 0..9 with repeats, and a target that is in it 3 times out of 4."""
    nums = sorted(rng.choices(range(rng.randint(0, 5), 10), k=rng.randint(3, 8)))
    target = rng.choice(nums) if rng.random() < 0.75 else rng.choice([v for v in range(10) if v not in nums])
    return ("search_range", tuple(nums), target)


def draw_arithmetic(rng: random.Random) -> tuple:
    """x+y or x-y with x, y of 2-3 digits; x >= y for subtraction (no negative results)."""
    x, y = (rng.randint(10, 99) if rng.random() < 0.3 else rng.randint(100, 999) for _ in range(2))
    op = rng.choice("+-")
    if op == "-" and x < y:
        x, y = y, x
    return ("arithmetic", x, op, y)


def draw_gaokao_filter(rng: random.Random) -> tuple:
    """A={x | -c < x^p < c} (p = 1, 2 or 3) and a sorted B of 3-5 integers in -4..4."""
    p = rng.choice((1, 2, 3))
    c = rng.randint(1, {1: 5, 2: 17, 3: 65}[p])
    b = tuple(sorted(rng.sample(range(-4, 5), rng.randint(3, 5))))
    return ("gaokao_filter", p, c, b)


def solve(key: tuple):
    """The exact answer of a problem, computed from its numbers (a set, a [first,last] pair or an integer)."""
    task = key[0]
    if task == "intersection":
        return sorted(set(key[1]) & set(key[2]))
    if task == "search_range":
        nums, t = key[1], key[2]
        return [nums.index(t), len(nums) - 1 - nums[::-1].index(t)] if t in nums else [-1, -1]
    if task == "arithmetic":
        _, x, op, y = key
        return x + y if op == "+" else x - y
    if task == "gaokao_filter":
        _, p, c, b = key
        return [v for v in b if -c < v**p < c]
    raise ValueError(f"unknown task {task!r}: one of {TASKS}")


def cond_text(p: int, c: int) -> str:
    """-c<x^p<c as the gaokao writes it (x, x^2, x^3)."""
    return f"-{c}<{'x' if p == 1 else f'x^{p}'}<{c}"


def render(key: tuple, rng: random.Random) -> Problem:
    """Phrase a problem: pick the language and a template with `rng`, write the answer from `solve`."""
    task, lang = key[0], rng.choice(("zh", "en"))
    if task == "intersection":
        tmpl = rng.choice(INTERSECTION_ZH if lang == "zh" else INTERSECTION_EN)
        prompt = tmpl.format(a=fmt_set(key[1]), b=fmt_set(key[2]))
        answer = "A∩B=" + fmt_set(solve(key))
    elif task == "search_range":
        tmpl = rng.choice(SEARCH_ZH if lang == "zh" else SEARCH_EN)
        prompt = tmpl.format(nums=fmt_list(key[1]), t=key[2])
        answer = search_walk(key[1], key[2]) + "\n" + fmt_list(solve(key))
    elif task == "arithmetic":
        tmpl = rng.choice(ARITH_ZH if lang == "zh" else ARITH_EN)
        prompt = tmpl.format(x=key[1], op=key[2], y=key[3])
        answer = columns(key[1], key[2], key[3]) + "\n" + str(solve(key))
    elif task == "gaokao_filter":
        tmpl = rng.choice(FILTER_ZH if lang == "zh" else FILTER_EN)
        prompt = tmpl.format(cond=cond_text(key[1], key[2]), b=fmt_set(key[3]))
        answer = "A∩B=" + fmt_set(solve(key))
    else:
        raise ValueError(f"unknown task {task!r}: one of {TASKS}")
    return Problem(task, lang, prompt, answer, key)


DRAW = {
    "intersection": draw_intersection,
    "search_range": draw_search_range,
    "arithmetic": draw_arithmetic,
    "gaokao_filter": draw_gaokao_filter,
}
# How often each task is drawn for training: arithmetic, the slowest to learn, gets the most.
MIX = {"intersection": 0.2, "search_range": 0.25, "arithmetic": 0.4, "gaokao_filter": 0.15}


def draw(task: str, rng: random.Random) -> Problem:
    """One random problem of `task`, phrased."""
    if task not in DRAW:
        raise ValueError(f"unknown task {task!r}: one of {TASKS}")
    return render(DRAW[task](rng), rng)


def held_out(n_per_task: int = 200, seed: int = HELD_OUT_SEED) -> list[Problem]:
    """The held-out problems: the first `n_per_task` distinct problems of each task, from one seeded stream per task.

    One stream per task, so held_out(50) is the start of held_out(1000), task by task.
    """
    if not 0 < n_per_task <= HELD_OUT_MAX:
        raise ValueError(f"n_per_task must be in 1..{HELD_OUT_MAX} (the held-out problems set aside), got {n_per_task}")
    out = []
    for task in TASKS:
        rng, seen = random.Random(f"held-out {seed} {task}"), set()
        while len(seen) < n_per_task:
            p = draw(task, rng)
            if p.key not in seen:
                seen.add(p.key)
                out.append(p)
    return out


def reserved_problems() -> list[Problem]:
    """The seed's gaokao question and the issue's example, word for word, with their answers (never trained on)."""
    return [
        Problem(key[0], "en" if prompt.isascii() else "zh", prompt, "A∩B=" + fmt_set(solve(key)), key)
        for key, prompts in RESERVED_PROMPTS.items()
        for prompt in prompts
    ]


def training_stream(seed: int, exclude: set, mix: dict = MIX):
    """An endless seeded stream of training problems, never one whose key is in `exclude` (the held-out keys) or in
    RESERVED.

    mix: task -> weight (e.g. {"intersection": 1.0} for that task alone).
    """
    if not mix or set(mix) - set(TASKS):
        raise ValueError(f"mix must weigh some of the tasks {TASKS}, got {mix!r}")
    rng = random.Random(seed)
    tasks, weights = list(mix), list(mix.values())
    while True:
        p = draw(rng.choices(tasks, weights)[0], rng)
        if p.key not in exclude and p.key not in RESERVED:
            yield p


TASK_LABELS = {
    "intersection": "Set intersection",
    "search_range": "LeetCode 34 search range",
    "arithmetic": "Arithmetic",
    "gaokao_filter": "Gaokao set filter",
}


def example_prompts(n_per_task: int = 1) -> list[tuple[str, str]]:
    """(prompt, label) pairs a bundled model was trained to answer, for the web demo's examples: the launch's gaokao
    set question, then `n_per_task` held-out problems of each task in Chinese and in English (never trained on)."""
    out = [(p.prompt, "Gaokao 2024 set question (中文)") for p in reserved_problems() if p.task == "gaokao_filter"]
    for task in TASKS:
        for lang in ("zh", "en"):
            chosen = [p for p in held_out(50) if p.task == task and p.lang == lang][:n_per_task]
            out += [(p.prompt, f"{TASK_LABELS[task]} ({'中文' if lang == 'zh' else 'English'})") for p in chosen]
    return out
