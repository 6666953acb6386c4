"""Math answers: find a reply's final answer (extract_answer) and compare it with the known one (check_answer)."""

from __future__ import annotations

import re
import unicodedata

from .problems import problem
from .result import CheckResult

_LATEX = [
    (r"\\left\s*\\\{|\\\{|\\lbrace\b", "{"),
    (r"\\right\s*\\\}|\\\}|\\rbrace\b", "}"),
    (r"\\cap\b", "∩"),
    (r"\\(?:emptyset|varnothing)\b", "∅"),
    (r"\\text\s*\{([^{}]*)\}|\\mathrm\s*\{([^{}]*)\}", r"\1\2"),
    (r"\\[,;:! ]|\\q?quad\b|\$|\*\*", " "),
    ("[−﹣–]", "-"),
]
_ZH_DIGITS = dict(zip("零一二两三四五六七八九", (0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9)))
_EN_NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()
_NUMBER = (
    r"(?<![A-Za-z0-9_.^/\\])\d+(?![0-9]|\.[0-9]|[A-Za-zπ/^])"
    r"|(?<![零一二两三四五六七八九十第])[零一二两三四五六七八九十]+(?=个|$|[\s,.;:!?)，。；、])"
    rf"|\b(?:{'|'.join(_EN_NUMBERS)})\b"
)
_ANSWER_PHRASES = (
    r"答案\s*(?:是|为|應為|应为|:)|最终答案|最后答案|the\s+(?:final\s+)?answer\s+is|final\s+answer\s*:?|answer\s*:"
)
_ANCHORS = {
    "set": [r"A\s*∩\s*B\s*(?:=|是|为|:|equals)"],
    "count": [
        r"交点\s*的?\s*(?:个数|数目|数量|总数)?\s*(?:共|一共|总共)?\s*(?:是|为|有|=|:)",
        rf"(?P<v>{_NUMBER})\s*个\s*交点",
        r"number\s+of\s+(?:intersection\s+points|intersections|points\s+of\s+intersection)\s*(?:is|=|:|equals)",
        rf"(?P<v>{_NUMBER})\s+(?:distinct\s+)?(?:intersection\s+points|points\s+of\s+intersection|intersections)",
        rf"intersect\w*\s+(?:at\s+)?(?:exactly\s+)?(?P<v>{_NUMBER})\s+(?:times|points)",
    ],
}


def _normalise(text: str) -> str:
    """NFKC (full-width ，｛｝６ → ,{}6), then LaTeX set braces, ∩, ∅, minus signs and markup to plain text."""
    text = unicodedata.normalize("NFKC", text)
    for pattern, repl in _LATEX:
        text = re.sub(pattern, repl, text)
    return text


def _to_int(token: str) -> int | None:
    """'6', '六', '十二', 'six' -> int; None for anything else."""
    token = token.strip().lower()
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token in _EN_NUMBERS:
        return _EN_NUMBERS.index(token)
    if re.fullmatch(r"[零一二两三四五六七八九]", token):
        return _ZH_DIGITS[token]
    if m := re.fullmatch(r"([一二三四五六七八九]?)十([一二三四五六七八九]?)", token):
        return _ZH_DIGITS.get(m[1], 1) * 10 + _ZH_DIGITS.get(m[2], 0)
    return None


def _parse_elements(content: str) -> frozenset | None:
    """'-1, 0' -> frozenset({-1, 0}); None unless every element is an integer (so {x|...} is not a set literal)."""
    items = [item.strip() for item in re.split(r"[,、;]", content)]
    if not all(re.fullmatch(r"-?\s*\d+", item) for item in items):
        return None
    return frozenset(int(item.replace(" ", "")) for item in items)


def _values(kind: str, text: str) -> list[object]:
    """Every candidate answer of this kind in `text`, in order: integer sets (or ∅) for "set", counts for "count"."""
    if kind == "count":
        return [v for m in re.finditer(_NUMBER, text, re.IGNORECASE) if (v := _to_int(m[0])) is not None]
    found = []
    for m in re.finditer(r"\{([^{}]*)\}|∅|空集", text):
        value = frozenset() if m[1] is None else _parse_elements(m[1])
        if value is not None:
            found.append(value)
    return found


def _boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...}, braces matched, in order."""
    contents = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        contents.append(text[m.end() : i - 1])
    return contents


def extract_answer(text: str, problem_id: str) -> tuple[object, str]:
    """The reply's final answer and where it was found: (value, how); (None, "") when there is none.

    The last \\boxed{} wins; else the latest explicit statement (an answer phrase or a problem-specific one, so a
    correction later in the reply beats an earlier claim); else the last set literal / the last line's number.
    """
    prob = problem(problem_id)
    if prob.kind == "code":
        raise ValueError(f"{problem_id} is a code problem: use check_code(text, {problem_id!r})")
    text = _normalise(text)
    for content in reversed(_boxed(text)):
        values = _values(prob.kind, content)
        if not values and prob.kind == "set":
            values = [v] if (v := _parse_elements(content.split("=")[-1].strip(" {}"))) is not None else []
        if values:
            return values[-1], "\\boxed{…}"
    statements = []  # (position, value, phrase): "答案是 …", "the answer is …", "A∩B = …", "6 个交点" …
    for pattern in [_ANSWER_PHRASES, *_ANCHORS[prob.kind]]:
        for m in re.finditer(pattern, text, re.IGNORECASE):
            window = m["v"] if "v" in m.re.groupindex else re.split(r"。|\.\s", text[m.end() : m.end() + 160])[0]
            if values := _values(prob.kind, window):
                statements.append((m.start(), values[0], m[0].strip()))
    if statements:
        _, value, phrase = max(statements, key=lambda s: s[0])
        return value, f'"{phrase}"'
    if prob.kind == "set" and (values := _values("set", text)):
        return values[-1], "the last set in the reply"
    last_line = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "")
    if prob.kind == "count" and (values := _values("count", last_line)):
        return values[-1], "the last number on the last line"
    return None, ""


def _show(value: object) -> str:
    """{-1, 0} for sets (sorted), plain str otherwise."""
    if isinstance(value, frozenset):
        return "{" + ", ".join(map(str, sorted(value))) + "}" if value else "∅"
    return str(value)


def check_answer(text: str, problem_id: str) -> CheckResult:
    """Extract the final answer of a model's reply to a math problem and compare it with the known answer."""
    prob = problem(problem_id)
    got, how = extract_answer(text, problem_id)
    expected = _show(prob.answer)
    if got is None:
        looked = "\\boxed{…}, 答案是… / the answer is …, " + (
            '"A∩B = {…}" and set literals like {-1, 0}'
            if prob.kind == "set"
            else '"交点个数为 N", "N intersection points"'
        )
        report = f"No final answer found (looked for {looked}). Expected {expected}."
    elif got == prob.answer:
        report = f"Correct: the final answer {_show(got)} (from {how}) matches the known answer {expected}."
    else:
        report = f"Wrong: the final answer is {_show(got)} (from {how}); the known answer is {expected}."
    return CheckResult(got == prob.answer, report, problem_id, expected=prob.answer, got=got, how=how)
