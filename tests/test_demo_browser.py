"""The web demo in a real headless browser: the page renders, an example click streams a reply, the math answer is
checked on its own, the code answer is checked on request and its failure sent back for repair, and Look inside
draws the figures. Debian's chromium + chromedriver (CI: `apt-get install -y chromium chromium-driver`), driven by
selenium; skipped, with that line as the reason, where they are absent.

Replies come from the bundled (random or barely trained) model, so they are compared with transformers' own
greedy `generate` on the same chat, letter by letter (markdown rendering may change spaces and punctuation).
Set QWEN2_LAB_SCREENSHOT=path.png to keep screenshots of the chat after the repair turn (path.png) and of Look
inside (path.inside.png).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromedriver: apt-get update && apt-get install -y chromium chromium-driver",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'qwen2-lab[dev]')")

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))

import app  # noqa: E402
import chat  # noqa: E402
import check  # noqa: E402
import torch  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

import qwen2_lab  # noqa: E402
from qwen2_lab import checks  # noqa: E402

CHROME_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
    " --disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1280,1400"
).split()


@pytest.fixture(scope="module")
def lab():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield qwen2_lab.load("tiny")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory):
    """The demo served on loopback and opened in a fresh headless chromium profile."""
    demo = app.build_app(lab)
    driver = None
    try:
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        driver.get(url)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        demo.close()


def wait_for(condition, seconds: float = 60, what: str = "the page"):
    """Poll condition() (exceptions count as not yet) until it returns something truthy; return that."""
    deadline, error = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except Exception as e:  # an element not there yet, or replaced while being read
            error = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {error!r})" if error else ""))


def letters(text: str) -> str:
    """Only letters and digits (any script): what survives markdown rendering unchanged."""
    return "".join(c for c in text if c.isalnum())


def texts(driver, css: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def click_text(driver, css: str, text: str):
    wait_for(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.text.strip() == text], what=text)[
        0
    ].click()


def default_reply(lab, message, history=()) -> str:
    """The greedy reply with the demo's default settings (tiny: greedy, the generation config's max_new_tokens)."""
    s = chat.default_settings(lab)
    messages = chat.conversation(message, list(history), chat.DEFAULT_SYSTEM_PROMPT)
    return lab.generate(
        messages, **chat.generation_kwargs(lab, 0, s.top_p, s.top_k, s.max_new_tokens, s.repetition_penalty)
    )


def watch_reply(driver, expected: str, count: int) -> list[str]:
    """Wait for the count-th bot message to read `expected`, recording what it showed on the way (the stream)."""
    seen: list[str] = []

    def done():
        bots = texts(driver, "#chatbot .bot.message")
        if len(bots) >= count and (not seen or seen[-1] != bots[count - 1]):
            seen.append(bots[count - 1])
        return len(bots) >= count and letters(bots[count - 1]) == letters(expected)

    try:
        wait_for(done, what=f"bot message {count} to read {expected[:40]!r}")
    except AssertionError as e:
        raise AssertionError(f"{e}; the chat shows {texts(driver, '#chatbot .message')}") from None
    return seen


def report(driver) -> str:
    return driver.find_element(By.ID, "check-report").text


def test_page_example_check_repair_and_look_inside(page, lab):
    driver = page
    wait_for(lambda: "bundled toy model" in driver.find_element(By.ID, "toy-banner").text, what="the toy banner")
    click_text(driver, 'button[role="tab"]', "Model card")
    card = wait_for(lambda: driver.find_element(By.ID, "model-card").text, what="the model card")
    assert "tiny" in card and "cpu" in card and "parameters" in card
    click_text(driver, 'button[role="tab"]', "Chat")

    # A math example: the reply streams in, then its final answer is checked without asking.
    prompts = check.problem_prompts()
    click_text(driver, "#chatbot button.example", "gaokao-2024-set (English)")
    reply = default_reply(lab, prompts["gaokao-2024-set"]["en"])
    watch_reply(driver, reply, 1)
    verdict = "Passed" if checks.check_answer(reply, "gaokao-2024-set").passed else "Failed"
    wait_for(lambda: report(driver).startswith(f"{verdict} (gaokao-2024-set)"), what="the automatic math check")
    for action in ("Retry", "Undo", "Clear"):  # ChatInterface's own buttons, wired to the chat
        assert driver.find_elements(By.CSS_SELECTOR, f'#chatbot button[aria-label="{action}"]'), action

    # A code example, after clearing the chat: checked when the button is pressed.
    driver.find_element(By.CSS_SELECTOR, '#chatbot button[aria-label="Clear"]').click()
    wait_for(lambda: not texts(driver, "#chatbot .message"), what="the chat to clear")
    ask = prompts["leetcode-34"]["en"]
    click_text(driver, "#chatbot button.example", "leetcode-34 (English)")
    reply = default_reply(lab, ask)
    watch_reply(driver, reply, 1)
    wait_for(lambda: "press Check the last reply" in report(driver), what="the code problem to be recognised")
    driver.find_element(By.ID, "check-btn").click()
    result = checks.check_code(reply, "leetcode-34")
    verdict = "Passed" if result.passed else "Failed"
    wait_for(lambda: report(driver).startswith(f"{verdict} (leetcode-34)"), what="the code check's report")
    assert letters(result.report) in letters(report(driver))

    if not result.passed:  # the failure goes back as the next user turn, and the model answers it
        driver.find_element(By.ID, "send-back-btn").click()
        failure = check.failure_message(result.report)
        wait_for(lambda: "did not pass the tests" in texts(driver, "#chatbot .user.message")[-1], what="the failure")
        # the chat holds each message as the browser shows it: without leading and trailing whitespace
        history = [{"role": "user", "content": ask}, {"role": "assistant", "content": reply.strip()}]
        watch_reply(driver, default_reply(lab, failure, history), 2)
    if os.environ.get("QWEN2_LAB_SCREENSHOT"):
        driver.save_screenshot(os.environ["QWEN2_LAB_SCREENSHOT"])

    # Look inside the conversation: attention by KV group and the logit lens, drawn by plotly in the page.
    click_text(driver, 'button[role="tab"]', "Look inside")
    driver.find_element(By.ID, "look-btn").click()
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 2, what="the figures")
    assert "Layer 0 attention, grouped by the KV head" in driver.page_source
    assert "Logit lens" in driver.page_source
    if os.environ.get("QWEN2_LAB_SCREENSHOT"):
        driver.save_screenshot(str(Path(os.environ["QWEN2_LAB_SCREENSHOT"]).with_suffix(".inside.png")))
