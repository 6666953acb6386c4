"""Checking the model's answers in the chat, with `qwen2_lab.checks` (the same checks notebook 07 uses).

The demo finds which of the Qwen2 launch's problems a conversation is about (the user's message holds its prompt,
in Chinese or English), checks the latest reply against it, and, when code fails its tests, writes the message that
sends the failure back so the model can repair its own code, as Qwen2 did at its launch. The Check panel (`build`:
the last reply checked, a box to paste or edit code and check it, the failure sent back) and the `check_code` /
`check_answer` API endpoints live here.
"""

from __future__ import annotations

import re

import gradio as gr

from qwen2_lab import checks, sandbox
from qwen2_lab.inputs import normalize_messages
from qwen2_lab.loading import BUNDLED

from .serving import PRIVATE, QUICK, refused

AUTO = "auto"  # the problem dropdown's "find it in the chat" choice
WAITING = "Math answers are checked as soon as the model finishes; press *Check* for code."  # the panel at rest


def problem_prompts() -> dict[str, dict[str, str]]:
    """{problem_id: {"zh": prompt, "en": prompt}} for the Qwen2 launch's problems."""
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
    """Check a reply against a problem: its final answer (math) or its code run on the tests (code). Code runs only
    in a sandbox with every layer it requires: where this machine cannot give them, nothing runs and the visitor
    is told why (a refusal shown on the page, an error through the API)."""
    if not is_code(problem_id):
        return checks.check_answer(text, problem_id)
    why = sandbox_unavailable()
    if why:
        raise refused(f"Code cannot be checked on this server, so nothing was run: {why}")
    return checks.check_code(text, problem_id)


def report_markdown(result, problem_id: str) -> str:
    """A check result as the Check panel shows it: a verdict line, then the report verbatim."""
    verdict = "Passed" if result.passed else "Failed"
    return f"**{verdict}** ({problem_id})\n\n```text\n{result.report}\n```"


failure_message = checks.failure_message  # one message for the demo and notebook 07


# ---- the Check panel ---------------------------------------------------------------------------------------------


def check_last(history, problem_id):
    """The Check button: the last reply checked against the chosen (or detected) problem. Returns (report, failure):
    the failure is the report of a failed code check, ready to send back (empty otherwise)."""
    pid = find_problem(history) if problem_id == AUTO else problem_id
    reply = last_reply(history)
    if pid is None:
        return "No known problem in this chat: click one of the launch's examples, or choose the problem above.", ""
    if reply is None:
        return f"The model has not answered {pid} yet.", ""
    result = check(reply, pid)
    failed_code = is_code(pid) and not result.passed
    return report_markdown(result, pid), result.report if failed_code else ""


def auto_check(history, problem_id):
    """After every complete reply: math is checked at once; code waits for the Check button (it runs programs)."""
    pid = find_problem(history) if problem_id == AUTO else problem_id
    if pid is None or last_reply(history) is None:
        return WAITING, ""
    if is_code(pid):
        return f"This chat is about the code problem **{pid}**: press *Check the last reply* to run its tests.", ""
    return check_last(history, pid)


# ---- the API endpoints -------------------------------------------------------------------------------------------


def checked(text: str, problem_id: str, code: bool) -> dict:
    """{"problem", "passed", "report"} for `text` against a problem of the expected kind, or a gr.Error naming the
    problems of that kind."""
    kind = [p for p in problem_prompts() if is_code(p) == code]
    if problem_id not in kind:
        raise refused(f"{problem_id!r} is not a {'code' if code else 'math'} problem; the ones there are: {kind}")
    result = check(text, problem_id)
    return {"problem": problem_id, "passed": bool(result.passed), "report": result.report}


def check_code_endpoint(text: str, problem_id: str = "leetcode-34") -> dict:
    """Run the code in `text` (a whole reply, or bare Python) against a code problem's tests, in the sandbox.

    Returns {"problem", "passed", "report"}.
    """
    return checked(text, problem_id, code=True)


def check_answer_endpoint(text: str, problem_id: str = "gaokao-2024-set") -> dict:
    """Extract the final answer from `text` and compare it with a math problem's known answer.

    Returns {"problem", "passed", "report"}.
    """
    return checked(text, problem_id, code=False)


# ---- the panel ---------------------------------------------------------------------------------------------------

CODE_PROBLEM = "leetcode-34"  # the launch's code problem: what the code box is checked against
STARTER = """class Solution:
    def searchRange(self, nums: list[int], target: int) -> list[int]:
        # Right, but it reads every element: the check asks for O(log n). Make it a binary search.
        hits = [i for i, x in enumerate(nums) if x == target]
        return [hits[0], hits[-1]] if hits else [-1, -1]
"""
BUNDLED_NOTE = (
    "The bundled toy model writes no code: its answers to LeetCode 34 are walks through the list, not programs. So"
    " the box starts with a solution to edit: it is right but reads every element. Check it, make it O(log n) and"
    " check again; with a real Qwen2, the box fills with the code of its last reply, and *Send the failure back*"
    " lets the model repair its own code, as Qwen2 did at its launch."
)
REAL_NOTE = "The box fills with the code of the model's last reply; paste or edit your own and check it."


def sandbox_unavailable() -> str | None:
    """Why code cannot be run here, or None when it can: the one place where the page asks whether this machine gives
    the sandbox every layer it requires (seccomp, Landlock, rlimits, a child process), so that the code check fails
    closed. The answer is probed once and cached by the sandbox."""
    return sandbox.unavailable_reason()


def code_note(lab) -> str:
    """What the page says above the code box: where its code comes from, and, on a server that cannot run code
    safely, that nothing will run and why."""
    note = BUNDLED_NOTE if lab.name in BUNDLED else REAL_NOTE
    why = sandbox_unavailable()
    return note if not why else f"{note}\n\n**Code cannot be checked on this server**, so nothing will run: {why}"


def check_box(code: str):
    """The code box checked against LeetCode 34's tests: (report, failure to send back)."""
    why = sandbox_unavailable()
    if why:
        return f"**Code cannot be checked here**: {why}", ""
    if not (code or "").strip():
        return "The code box is empty: paste or write a solution first.", ""
    result = check(code, CODE_PROBLEM)
    return report_markdown(result, CODE_PROBLEM), "" if result.passed else result.report


def reply_code(history, current: str) -> str:
    """The code box after a reply: the reply's code when it has some, else what the box held."""
    reply = last_reply(history)
    code = checks.extract_code(reply) if reply else None
    return code or current


def build(lab, page) -> None:
    """Check: the last reply against its problem, a box with code to check, and the failure sent back as the next
    message (a turn like any other: `page.answer`)."""
    failure = gr.State("")
    with gr.Group():
        with gr.Row():
            problem = gr.Dropdown(
                [("Find it in the chat", AUTO)] + [(pid, pid) for pid in problem_prompts()],
                value=AUTO, label="Problem to check against", scale=2,
            )  # fmt: skip
            check_btn = gr.Button("Check the last reply", elem_id="check-btn", variant="primary", scale=1)
            send_btn = gr.Button("Send the failure back", elem_id="send-back-btn", scale=1)
        report = gr.Markdown(WAITING, elem_id="check-report")
    with gr.Accordion("Your code: paste or edit a LeetCode 34 solution and check it", open=False, elem_id="code-panel"):
        gr.Markdown(code_note(lab), elem_id="code-note")
        code = gr.Code(STARTER, language="python", interactive=True, elem_id="code-box", show_label=False)
        code_btn = gr.Button("Check the code", elem_id="check-code-btn", variant="primary")

    def send_back(failure, history, *settings):
        if not failure:
            raise refused("There is no failed check to send back: check a reply or the code box first.")
        return page.checked_turn(failure_message(failure), history, *settings)

    page.answer(send_btn.click(send_back, [failure, page.chatbot, *page.settings], page.turn, **QUICK),
                page.stream_reply, [page.chatbot, page.record, *page.settings])  # fmt: skip
    page.after_reply(auto_check, [page.chatbot, problem], [report, failure])
    page.after_reply(reply_code, [page.chatbot, code], code, queue=False)
    page.chatbot.clear(lambda: (WAITING, ""), None, [report, failure], queue=False, **PRIVATE)
    check_btn.click(check_last, [page.chatbot, problem], [report, failure], **PRIVATE)
    code_btn.click(check_box, code, [report, failure], **QUICK)
