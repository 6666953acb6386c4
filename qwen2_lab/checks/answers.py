"""Math answers: find a reply's final answer (extract_answer) and compare it with the known one (check_answer).

The reply is text a user can steer, checked in the server's process: so it is capped at MAX_REPLY characters
before any parsing, and every step is linear. Whitespace runs are folded to one space first, so that no pattern
needs nested or adjacent open-ended quantifiers; braces are matched in one pass; candidate answers are found in one
pass over the text and looked up by position.
"""

from __future__ import annotations

import bisect
import re
import unicodedata

from ..sandbox.text import clean_text
from .problems import problem
from .result import MAX_REPLY, CheckResult, too_long

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
_SET = r"\{([^{}]*)\}|∅|空集"
# After whitespace folding, " ?" is all the space a pattern ever needs; each optional part is a fixed word.
_ANSWER_PHRASES = r"答案 ?(?:是|为|應為|应为|:)|最终答案|最后答案|the (?:final )?answer is|final answer ?:?|answer ?:"
_ANCHORS = {
    "set": [r"A ?∩ ?B ?(?:=|是|为|:|equals)"],
    "count": [
        r"交点 ?的? ?(?:个数|数目|数量|总数)? ?(?:共|一共|总共)? ?(?:是|为|有|=|:)",
        rf"(?P<v>{_NUMBER}) ?个 ?交点",
        r"number of (?:intersection points|intersections|points of intersection) ?(?:is|=|:|equals)",
        rf"(?P<v>{_NUMBER}) (?:distinct )?(?:intersection points|points of intersection|intersections)",
        rf"intersect[a-z]{{0,6}} (?:at )?(?:exactly )?(?P<v>{_NUMBER}) (?:times|points)",
    ],
}
_WINDOW = 160  # characters after an answer phrase where its value must start (and before the sentence ends)
_BOX_CONTENT = 200  # a \boxed{} longer than this holds no final answer


def _normalise(text: str) -> str:
    """NFKC (full-width ，｛｝６ → ,{}6), LaTeX set braces, ∩, ∅, minus signs and markup to plain text.

    NFKC can make a text up to 18 times longer (ﷺ); past 2·MAX_REPLY characters only the end is kept, where a final
    answer would be.
    """
    text = unicodedata.normalize("NFKC", text)[-2 * MAX_REPLY :]
    for pattern, repl in _LATEX:
        text = re.sub(pattern, repl, text)
    return text


def _to_int(token: str) -> int | None:
    """'6', '六', '十二', 'six' -> int; None for anything else (and for numbers of more than 18 digits)."""
    token = token.strip().lower()
    if re.fullmatch(r"-?\d{1,18}", token):
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
    if not all(re.fullmatch(r"-? ?\d{1,18}", item) for item in items):
        return None
    return frozenset(int(item.replace(" ", "")) for item in items)


def _candidates(kind: str, text: str) -> list[tuple[int, object]]:
    """Every candidate answer of this kind in `text` as (position, value), in order: integer sets (or ∅) for "set",
    counts for "count". One pass."""
    if kind == "count":
        found = [(m.start(), _to_int(m[0])) for m in re.finditer(_NUMBER, text, re.IGNORECASE)]
    else:
        found = [(m.start(), frozenset() if m[1] is None else _parse_elements(m[1])) for m in re.finditer(_SET, text)]
    return [(pos, value) for pos, value in found if value is not None]


def _values(kind: str, text: str) -> list[object]:
    return [value for _, value in _candidates(kind, text)]


def _matching_braces(text: str) -> dict[int, int]:
    """{position of "{": position of its "}"} for every closed pair, in one pass with a stack."""
    pairs, stack = {}, []
    for m in re.finditer(r"[{}]", text):
        if m[0] == "{":
            stack.append(m.start())
        elif stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...} of at most _BOX_CONTENT characters, braces matched, in order."""
    pairs = _matching_braces(text)
    contents = []
    for m in re.finditer(r"\\boxed ?\{", text):
        close = pairs.get(m.end() - 1, len(text))
        if close - m.end() <= _BOX_CONTENT:
            contents.append(text[m.end() : close])
    return contents


def _statements(kind: str, text: str) -> list[tuple[int, object, str]]:
    """(position, value, phrase) for each explicit statement: an answer phrase or a problem-specific one with its
    value, which must start within _WINDOW characters after it and before the sentence ends."""
    candidates = _candidates(kind, text)
    starts = [pos for pos, _ in candidates]
    ends = sorted(m.start() for m in re.finditer(r"。|\. ", text))
    found = []
    for pattern in [_ANSWER_PHRASES, *_ANCHORS[kind]]:
        for m in re.finditer(pattern, text, re.IGNORECASE):
            if "v" in m.re.groupindex:
                value = _to_int(m["v"])
            else:
                sentence_end = ends[i] if (i := bisect.bisect_left(ends, m.end())) < len(ends) else len(text)
                j = bisect.bisect_left(starts, m.end())
                inside = j < len(starts) and starts[j] < min(m.end() + _WINDOW, sentence_end)
                value = candidates[j][1] if inside else None
            if value is not None:
                found.append((m.start(), value, m[0].strip()))
    return found


def extract_answer(text: str, problem_id: str) -> tuple[object, str]:
    """The reply's final answer and where it was found: (value, how); (None, "") when there is none.

    The last \\boxed{} wins; else the latest explicit statement (an answer phrase or a problem-specific one, so a
    correction later in the reply beats an earlier claim); else the last set literal / the last line's number.
    """
    prob = problem(problem_id)
    if prob.kind == "code":
        raise ValueError(f"{problem_id} is a code problem: use check_code(text, {problem_id!r})")
    if not isinstance(text, str):
        raise TypeError(f"check_answer wants the reply text as a str, got {type(text).__name__}")
    if len(text) > MAX_REPLY:
        return None, ""  # unread: see check_answer
    text = _normalise(text)
    flat = re.sub(r"\s+", " ", text)
    for content in reversed(_boxed(flat)):
        values = _values(prob.kind, content)
        if not values and prob.kind == "set":
            values = [v] if (v := _parse_elements(content.split("=")[-1].strip(" {}"))) is not None else []
        if values:
            return values[-1], "\\boxed{…}"
    if statements := _statements(prob.kind, flat):
        _, value, phrase = max(statements, key=lambda s: s[0])
        return value, f'"{phrase}"'
    if prob.kind == "set" and (values := _values("set", flat)):
        return values[-1], "the last set in the reply"
    last_line = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "")
    last_line = re.sub(r"\{[^{}]*\}", " ", last_line)  # a number inside a set literal counts nothing
    if prob.kind == "count" and (values := _values("count", last_line)):
        return values[-1], "the last number on the last line"
    return None, ""


def _show(value: object) -> str:
    """{-1, 0} for sets (sorted), plain str otherwise."""
    if isinstance(value, frozenset):
        return "{" + ", ".join(map(str, sorted(value))) + "}" if value else "∅"
    return str(value)


def check_answer(text: str, problem_id: str) -> CheckResult:
    """Extract the final answer of a model's reply to a math problem and compare it with the known answer.

    Never raises for a reply (a str); a reply over MAX_REPLY characters is refused unread.
    """
    prob = problem(problem_id)
    if prob.kind != "code" and isinstance(text, str) and (refused := too_long(text, problem_id)):
        return refused
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
    report = clean_text(report)
    return CheckResult(got == prob.answer, report, problem_id, expected=prob.answer, got=got, how=clean_text(how))
