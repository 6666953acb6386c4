"""The web demo's Check panel (demo/lab_demo/check.py): the problem found in the chat, the last reply checked, the
code box checked, the failure written to send back, and the `check_code` / `check_answer` endpoints. The code checks
are fed known-good and known-bad code.
"""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError
from lab_demo import check

from qwen2_lab import checks

GOOD_CODE = """
class Solution:
    def searchRange(self, nums, target):
        import bisect
        lo = bisect.bisect_left(nums, target)
        if lo == len(nums) or nums[lo] != target:
            return [-1, -1]
        return [lo, bisect.bisect_right(nums, target) - 1]
"""

SCAN_CODE = """Here is my answer:
```python
def searchRange(nums, target):
    hits = [i for i, x in enumerate(nums) if x == target]
    return [hits[0], hits[-1]] if hits else [-1, -1]
```"""

PROMPT = check.problem_prompts()["gaokao-2024-set"]["zh"]


def test_problem_is_found_in_the_chat_and_kept_across_the_repair_turn():
    ask = check.problem_prompts()["leetcode-34"]["en"]
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Please solve this:\n" + ask}]},
        {"role": "assistant", "content": SCAN_CODE},
        {"role": "user", "content": check.failure_message("Wrong Answer")},
        {"role": "assistant", "content": GOOD_CODE},
    ]
    assert check.find_problem(history) == "leetcode-34"
    assert check.last_reply(history) == GOOD_CODE
    assert check.find_problem(history[:1] + [{"role": "user", "content": "hello"}]) == "leetcode-34"
    assert check.find_problem([{"role": "user", "content": "hello"}]) is None


def test_check_last_reply_and_send_back_text():
    ask = check.problem_prompts()["leetcode-34"]["zh"]
    history = [{"role": "user", "content": ask}, {"role": "assistant", "content": SCAN_CODE}]
    report, failure = check.check_last(history, check.AUTO)
    assert "**Failed** (leetcode-34)" in report and "O(log n)" in failure  # a scan reads every element
    assert failure in check.failure_message(failure)
    report, failure = check.check_last(history[:1] + [{"role": "assistant", "content": GOOD_CODE}], check.AUTO)
    assert "**Passed**" in report and failure == ""
    # math is checked as soon as the reply is complete; code waits for the button
    math = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "所以 A∩B = {-1, 0}"}]
    assert check.auto_check(math, check.AUTO)[0].startswith("**Passed** (gaokao-2024-set)")
    assert "press *Check" in check.auto_check(history, check.AUTO)[0]
    assert check.auto_check(history[:1], check.AUTO) == (check.WAITING, "")  # no reply yet


def test_check_code_reports_pass_and_fail(demo_client):
    good = demo_client.predict(GOOD_CODE, "leetcode-34", api_name="/check_code")
    assert good["passed"] is True and "LeetCode style" in good["report"]
    scan = demo_client.predict(SCAN_CODE, "leetcode-34", api_name="/check_code")
    assert scan["passed"] is False and "bare function" in scan["report"] and "O(log n)" in scan["report"]
    broken = demo_client.predict("def searchRange(nums, target):\n    return nums[10**9]", "leetcode-34",
                                 api_name="/check_code")  # fmt: skip
    assert broken["passed"] is False and "IndexError" in broken["report"]
    with pytest.raises(AppError, match="not a code problem"):
        demo_client.predict(GOOD_CODE, "gaokao-2024-set", api_name="/check_code")
    math = demo_client.predict("答案是 {-1, 0}", "gaokao-2024-set", api_name="/check_answer")
    assert math["passed"] is True
    assert demo_client.predict("答案是 {-1, 0}", api_name="/check_answer")["problem"] == "gaokao-2024-set"
    with pytest.raises(AppError, match="not a math problem"):
        demo_client.predict("{-1, 0}", "leetcode-34", api_name="/check_answer")


def test_the_code_box_is_checked_and_its_failure_is_ready_to_send_back():
    """The box starts with a right solution that reads every element: checked, it fails the O(log n) demand, and
    the report is what would be sent back; a binary search passes; a reply's code replaces the box's, prose does
    not."""
    report, failure = check.check_box(check.STARTER)
    assert report.startswith("**Failed** (leetcode-34)") and "O(log n)" in failure
    assert failure in check.failure_message(failure)
    report, failure = check.check_box(GOOD_CODE)
    assert report.startswith("**Passed** (leetcode-34)") and failure == ""
    assert check.check_box("  ") == ("The code box is empty: paste or write a solution first.", "")
    asked = [{"role": "user", "content": check.problem_prompts()["leetcode-34"]["en"]}]
    with_code = [*asked, {"role": "assistant", "content": SCAN_CODE}]
    assert check.reply_code(with_code, check.STARTER) == checks.extract_code(SCAN_CODE)
    walk = [*asked, {"role": "assistant", "content": "target=45:0:43<1:45=2:47>\n[1,1]"}]  # the toy model's answer
    assert check.reply_code(walk, "mine") == "mine"


def test_where_the_sandbox_cannot_give_its_layers_the_page_says_so_and_runs_nothing(monkeypatch):
    """Fail closed: a machine without the required layers (simulated) runs no code, and every way in says why."""
    from qwen2_lab import sandbox

    monkeypatch.setattr(sandbox, "unavailable_reason", lambda refresh=False: "this kernel refuses Landlock")
    ran = []
    monkeypatch.setattr(checks, "check_code", lambda *a, **k: ran.append(a))
    report, failure = check.check_box("class Solution:\n    pass\n")
    assert "cannot be checked here" in report and "Landlock" in report and failure == ""
    with pytest.raises(Exception, match="nothing was run: this kernel refuses Landlock"):
        check.check("```python\nprint(1)\n```", "leetcode-34")
    with pytest.raises(Exception, match="nothing was run"):
        check.check_code_endpoint("print(1)")

    class Bundled:
        name = "tiny"

    assert "nothing will run: this kernel refuses Landlock" in check.code_note(Bundled())
    assert ran == []  # no code reached the sandbox
    assert check.check("The answer is {-1, 0}", "gaokao-2024-set").passed  # answers are still checked
