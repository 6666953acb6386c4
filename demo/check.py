"""Checking the model's answers in the chat, with `qwen2_lab.checks` (the same checks notebook 07 uses).

The demo finds which of the seed's problems a conversation is about (the user's message holds its prompt, in
Chinese or English), checks the latest reply against it, and, when code fails its tests, writes the message that
sends the failure back so the model can repair its own code, as Qwen2 did at its launch.
"""

from __future__ import annotations

import re

from qwen2_lab import checks
from qwen2_lab.inputs import normalize_messages

AUTO = "auto"  # the problem dropdown's "find it in the chat" choice


def problem_prompts() -> dict[str, dict[str, str]]:
    """{problem_id: {"zh": prompt, "en": prompt}} for the seed's problems."""
    return {pid: {"zh": p.prompt_zh, "en": p.prompt_en} for pid, p in checks.PROBLEMS.items()}


def is_code(problem_id: str) -> bool:
    """Code problems are run against tests (check_code); the others have a known final answer (check_answer)."""
    return checks.problem(problem_id).kind == "code"


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def find_problem(history) -> str | None:
    """The problem the chat is about: the latest user message that contains one of the problems' prompts.

    Later turns ("your code failed: ...") keep the problem of the turn that asked it.
    """
    prompts = {pid: [_squash(p) for p in by_lang.values()] for pid, by_lang in problem_prompts().items()}
    for message in reversed(normalize_messages(history or [])):
        if message["role"] != "user":
            continue
        text = _squash(message["content"])
        for pid, variants in prompts.items():
            if any(v and v in text for v in variants):
                return pid
    return None


def last_reply(history) -> str | None:
    """The text of the last assistant message, or None when the model has not answered yet."""
    for message in reversed(normalize_messages(history or [])):
        if message["role"] == "assistant":
            return message["content"]
    return None


def check(text: str, problem_id: str):
    """Check a reply against a problem: its final answer (math) or its code run on the tests (code)."""
    return (checks.check_code if is_code(problem_id) else checks.check_answer)(text, problem_id)


def report_markdown(result, problem_id: str) -> str:
    """A check result as the Check panel shows it: a verdict line, then the report verbatim."""
    verdict = "Passed" if result.passed else "Failed"
    return f"**{verdict}** ({problem_id})\n\n```text\n{result.report}\n```"


failure_message = checks.failure_message  # one message for the demo and notebook 07
