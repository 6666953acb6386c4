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
    "set": [
        r"A ?∩ ?B ?(?:=|是|为|:|equals)",
        r"(?:the )?intersection (?:of A and B )?(?:is|=|equals|would be|must be)",
        r"交集 ?(?:就是|为|是|=|:)",
    ],
    "count": [
        r"\bin total ?,?",
        rf"(?:只有|仅有|共有|一共有|总共有|一共|总共|共) ?(?P<v>{_NUMBER}) ?个(?! ?周期)",
        rf"there (?:are|is) (?:only|exactly) (?P<v>{_NUMBER})\b",
        r"交点 ?的? ?(?:个数|数目|数量|总数)? ?(?:共|一共|总共)? ?(?:是|为|有|=|:)",
        rf"(?P<v>{_NUMBER}) ?个 ?交点",
        r"number of (?:intersection points|intersections|points of intersection) ?(?:is|=|:|equals)",
        rf"(?P<v>{_NUMBER}) (?:distinct )?(?:intersection points|points of intersection|intersections)",
        rf"intersect[a-z]{{0,6}} (?:at )?(?:exactly )?(?P<v>{_NUMBER}) (?:times|points)",
    ],
}
_CORRECTIONS = r"而是|应该是|应为|应该为|\brather\b|\binstead\b|\bit(?: is|'s)(?: actually)?"  # after a negation
_WINDOW = 160  # characters after an answer phrase where its value must start (and before the sentence ends)
_CLAUSE_END = r"。|\. |[?？!！;；]"
_NEGATION = re.compile(r"\bnot\b|n't|不是|不为|不等于|并非|不")  # between a phrase and its value: "is not 6"
_REFUTED_AFTER = re.compile(  # right after a value: the writer takes it back, or calls it a mistake
    r"[ ?？!！。,，.;；:：)）\]]*(?:不对|错了|是错的|是错误的|有误|不正确|wait\b|no\b|oops|which is (?:wrong|incorrect|"
    r"a mistake)|is (?:wrong|incorrect)|(?:that|this)(?: i|')s (?:wrong|incorrect|a mistake)|wrong\b|incorrect\b)",
    re.IGNORECASE,
)
_QUOTED_MISTAKE = re.compile(  # before a phrase, in its clause: the value is quoted as someone's error
    r"mistake|mistaken|wrongly|incorrectly|wrong answer|misread|误以为|错误答案|错误地|常见错误|易错", re.IGNORECASE
)
_HEDGE = re.compile(r" ?,? ?(?:\bor\b|或者?|还是|/) ?,? ?", re.IGNORECASE)
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


def _candidates(kind: str, text: str) -> list[tuple[int, int, object]]:
    """Every candidate answer of this kind in `text` as (start, end, value), in order: integer sets (or ∅) for
    "set", counts for "count" (not a bound of an interval such as [0, 2π]). One pass."""
    if kind == "count":
        intervals = [m.span() for m in re.finditer(r"[\[(][^\[\]()]{0,40},[^\[\]()]{0,40}[\])]", text)]
        found = [(m.start(), m.end(), _to_int(m[0])) for m in re.finditer(_NUMBER, text, re.IGNORECASE)]
        starts = [a for a, _ in intervals]
        inside = lambda pos: (i := bisect.bisect_right(starts, pos) - 1) >= 0 and pos < intervals[i][1]  # noqa: E731
        found = [c for c in found if not inside(c[0])]
    else:
        found = [
            (m.start(), m.end(), frozenset() if m[1] is None else _parse_elements(m[1]))
            for m in re.finditer(_SET, text)
        ]
    return [c for c in found if c[2] is not None]


def _values(kind: str, text: str) -> list[object]:
    return [value for _, _, value in _candidates(kind, text)]


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


def _statements(kind: str, text: str, candidates: list) -> list[tuple[int, int, str]]:
    """(position, candidate index, phrase) for each explicit claim: an answer phrase or a problem-specific one with
    its value, which must start within _WINDOW characters after it and before its clause ends. A claim is left out
    when the writer negates it ("is not 6"), takes it back right after ("6？不对", "{…}, which is wrong") or quotes
    it as a mistake ("a common mistake is A∩B = {…}")."""
    starts = [pos for pos, _, _ in candidates]
    ends = sorted(m.start() for m in re.finditer(_CLAUSE_END, text))
    found = []
    for pattern in [_ANSWER_PHRASES, *_ANCHORS[kind], _CORRECTIONS]:
        for m in re.finditer(pattern, text, re.IGNORECASE):
            i = bisect.bisect_left(ends, m.end())
            clause_start = ends[i - 1] if i else 0
            if "v" in m.re.groupindex:
                j = bisect.bisect_left(starts, m.start("v"))
                if j == len(starts) or starts[j] != m.start("v"):
                    continue
            else:
                clause_end = ends[i] if i < len(ends) else len(text)
                j = bisect.bisect_left(starts, m.end())
                if j == len(starts) or starts[j] >= min(m.end() + _WINDOW, clause_end):
                    continue
                if _NEGATION.search(text, m.end(), starts[j]):
                    continue
            if pattern == _CORRECTIONS and not _NEGATION.search(text, max(0, m.start() - 80), m.start()):
                continue  # "it is 4" is a claim only as the correction of a negation
            if _REFUTED_AFTER.match(text, candidates[j][1]) or _QUOTED_MISTAKE.search(
                text, max(clause_start, m.start() - _WINDOW), m.start()
            ):
                continue
            found.append((m.start(), j, m[0].strip()))
    return found


def _hedged(text: str, candidates: list, j: int) -> tuple:
    """The values a claim hedges between ("{-1, 0} or {-1, 0, 2}", "6 or 4"), or () when it commits to one."""
    values = [candidates[j][2]]
    if j + 1 < len(candidates) and _HEDGE.fullmatch(text, candidates[j][1], candidates[j + 1][0]):
        values.append(candidates[j + 1][2])
    if j > 0 and _HEDGE.fullmatch(text, candidates[j - 1][1], candidates[j][0]):
        values.insert(0, candidates[j - 1][2])
    distinct = list(dict.fromkeys(values))
    return tuple(distinct) if len(distinct) > 1 else ()


def read_claim(text: str, problem_id: str) -> tuple[object, str, tuple]:
    """(final answer, where it was found, the values it hedges between or ()), read as a person would: the last
    \\boxed{}; else the latest claim that the writer did not negate, take back or quote as a mistake; else the last
    set literal / the last line's number. (None, "", ()) when there is none."""
    prob = problem(problem_id)
    if prob.kind == "code":
        raise ValueError(f"{problem_id} is a code problem: use check_code(text, {problem_id!r})")
    if not isinstance(text, str):
        raise TypeError(f"check_answer wants the reply text as a str, got {type(text).__name__}")
    if len(text) > MAX_REPLY:
        return None, "", ()  # unread: see check_answer
    text = _normalise(text)
    flat = re.sub(r"\s+", " ", text)
    for content in reversed(_boxed(flat)):
        values = _values(prob.kind, content)
        if not values and prob.kind == "set":
            values = [v] if (v := _parse_elements(content.split("=")[-1].strip(" {}"))) is not None else []
        if values:
            return values[-1], "\\boxed{…}", ()
    candidates = _candidates(prob.kind, flat)
    if statements := _statements(prob.kind, flat, candidates):
        _, j, phrase = max(statements)
        return candidates[j][2], f'"{phrase}"', _hedged(flat, candidates, j)
    if prob.kind == "set" and candidates:
        return candidates[-1][2], "the last set in the reply", _hedged(flat, candidates, len(candidates) - 1)
    last_line = next((line for line in reversed(text.strip().splitlines()) if line.strip()), "")
    last_line = re.sub(r"\{[^{}]*\}", " ", last_line)  # a number inside a set literal counts nothing
    if prob.kind == "count" and (values := _values("count", last_line)):
        return values[-1], "the last number on the last line", ()
    return None, "", ()


def extract_answer(text: str, problem_id: str) -> tuple[object, str]:
    """The reply's final answer and where it was found: (value, how); (None, "") when there is none (read_claim)."""
    value, how, _ = read_claim(text, problem_id)
    return value, how


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
    got, how, hedge = read_claim(text, problem_id)
    expected = _show(prob.answer)
    if hedge:
        between = " and ".join(map(_show, hedge))
        report = (
            f"Hedged: the reply ends between {between} (from {how}), not on one answer; the known answer is {expected}."
        )
        report = clean_text(report)
        return CheckResult(False, report, problem_id, expected=prob.answer, got=None, how=clean_text(how))
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
