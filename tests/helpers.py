"""Helpers the tests share: small random Qwen2 / Qwen2-MoE models built from configs (no downloads)."""

import os
from pathlib import Path

import pytest
import torch

BASE = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
    vocab_size=256, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=512,
)  # fmt: skip
MOE = dict(
    num_experts=6, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64,
    norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
)  # fmt: skip


def random_model(moe: bool = False, dtype=torch.float32, seed: int = 0, **overrides):
    """A random-initialised HF Qwen2ForCausalLM (or Qwen2MoeForCausalLM) with BASE's shape plus `overrides`.

    Weights are drawn with a larger std than HF's 0.02 so that attention patterns and routing are far from uniform
    and a wrong formula shows up as a large difference.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2MoeConfig

    kw = {**BASE, **(MOE if moe else {}), **overrides}
    config = (Qwen2MoeConfig if moe else Qwen2Config)(**kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.15)
    return model.to(dtype).eval()


def random_lab(moe: bool = False, dtype=torch.float32, seed: int = 0, **overrides):
    from qwen2_lab import Lab

    return Lab(random_model(moe, dtype, seed, **overrides), None, name="random")


def wait_for(condition, seconds: float = 60, what: str = "a condition"):
    """Poll condition() until it returns something truthy, and return that; exceptions count as "not yet" (an element
    not on the page yet, a value being replaced), and the last one is named if time runs out."""
    import time

    deadline, error = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except Exception as e:
            error = e
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {error!r})" if error else ""))


def wait_until_still(read, seconds: float = 30, still: float = 0.5, what: str = "a value to settle"):
    """Poll read() until it has not changed for `still` seconds; return that value."""
    import time

    deadline, last, since = time.monotonic() + seconds, read(), time.monotonic()
    while time.monotonic() - since < still:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last


# ---- a headless browser -----------------------------------------------------------------------------------------

CHROME_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
    " --disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1280,1400"
).split()
INSTALL_CHROMIUM = (
    "needs Debian's chromium and chromedriver: apt-get update && apt-get install -y chromium chromium-driver"
)


def start_chromium(profile_dir, env: dict | None = None):
    """A fresh headless chromium (selenium) with its own profile folder; env: the browser's environment (e.g.
    FONTCONFIG_FILE). pytest.skip where it cannot run here."""
    import shutil

    import pytest

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip(INSTALL_CHROMIUM)
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'qwen2-lab[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS + [f"--user-data-dir={profile_dir}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(chromedriver, env=env))


def family_lab(name: str, seed: int = 0, **overrides):
    """A Lab on a model with a Qwen2 release's published shape (qwen2_lab.arch.family_config) changed by
    `overrides`, with transformers' own random initialisation. (random_model's larger weights would not do at these
    widths: summed over 64 experts, values that large differ from HF's order of summation by more than 1e-5.)"""
    from transformers import AutoModelForCausalLM

    from qwen2_lab import Lab
    from qwen2_lab.arch import family_config

    config = family_config(name)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return Lab(AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval())


def synthetic_trace(name: str, S: int, store: dict, **kw):
    """A Trace with a Qwen2 release's shape (qwen2_lab.family()[name]) holding the tensors in `store` (random, made
    by the test): a 72B forward is far too big for a test, a figure's limits are not. Tokens ' t1', ' t2', '\\n', ..."""
    from qwen2_lab.arch import family
    from qwen2_lab.trace import Trace

    tokens = [f" t{i}" if i % 3 else "\n" for i in range(S)]
    return Trace(torch.arange(S), tokens, family()[name], torch.empty(0), store, **kw)


# ---- two prompts that differ in one token, and the answer they are read by (patching, attribution) ------------------

CLEAN = [5, 17, 42, 8, 99, 23, 7, 61, 3]
CORRUPT = [5, 17, 40, 8, 12, 23, 7, 61, 3]
ANSWER = (42, 12)


def last_diff(trace, answer=ANSWER) -> float:
    """logit[right] - logit[wrong] at the last position of a trace."""
    return float(trace.logits[-1, answer[0]] - trace.logits[-1, answer[1]])


def require_layer(layers, *alternatives: str) -> None:
    """Skip unless this machine gives one of the sandbox layers named ("seccomp", "landlock" = any ABI,
    "landlock-v4" = ABI 4 or newer, "netns", ...); the skip names what it has."""
    for alt in alternatives:
        name, _, version = alt.partition("-v")
        for have in layers:
            have_name, _, have_version = have.partition("-v")
            if have_name == name and (not version or int(have_version or 0) >= int(version)):
                return
    pytest.skip(f"needs one of {alternatives}; this machine gives {' '.join(layers)}")


# ---- the web demo (tests/test_demo_*.py): a reply as the page makes it, and the same reply made by the lab ------

QUESTION = "A={3,5,7,9}, B={1,3,4,9}. What is A∩B?"
GREEDY_24 = (None, 0.0, 1.0, 0, 24, 1.0)  # system, temperature, top_p, top_k, max new tokens, repetition penalty
SAMPLED = (None, 0.9, 0.95, 20, 24, 1.0)


def page_reply(lab, settings=GREEDY_24, record=True):
    """A reply as the page makes it: (the chat with it, its Generation)."""
    from lab_demo import chat, inside

    options = dict(top=chat.TOP, **(inside.record_options(lab.arch) if record else {}))
    *_, (history, gen) = chat.reply(lab, [{"role": "user", "content": QUESTION}], *settings, **options)
    return history, gen


def direct(lab, settings=GREEDY_24, **kwargs):
    """The same reply, generated by the lab directly."""
    from lab_demo import chat

    messages = chat.conversation(QUESTION, [], settings[0])
    temperature, top_p, top_k, max_new, penalty = settings[1:]
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if temperature else {}
    return lab.generate_steps(messages, max_new_tokens=max_new, repetition_penalty=penalty, **sampling, **kwargs)


class Forwards:
    """Counts the model's forward passes (a pre-hook on embed_tokens runs once per forward, HF's or the lab's)."""

    def __init__(self, lab):
        self.n = 0
        self.handle = lab.model.model.embed_tokens.register_forward_pre_hook(self.count)

    def count(self, module, args):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def other_token(step) -> int:
    """The best candidate at a step that is not the token chosen there."""
    return next(c.id for c in step.top if c.id != step.token_id)


def as_chatbot(history: list[dict]) -> list[dict]:
    """A conversation as the Chatbot component sends it: each message's content as blocks."""
    return [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in history]


def content(message: dict) -> str:
    return "".join(block["text"] for block in message["content"])


# ---- checkpoints with Qwen2's real vocabulary ---------------------------------------------------------------------

REAL_VOCAB = 151_646  # Qwen2's tokenizer: 151,643 BPE tokens and 3 special ones (qwen2_lab.facts)
REAL_VOCAB_CHECKPOINTS = {  # name: (moe, overrides): untied dense, tied MoE; both small but in Qwen2's vocabulary
    "random-qwen2": (False, dict(tie_word_embeddings=False)),
    "random-qwen2-moe": (True, dict(tie_word_embeddings=True)),
}


def save_checkpoint(model, folder):
    """Save an HF Qwen2 model as a checkpoint folder that `qwen2_lab.load` opens like a downloaded one:
    `save_pretrained`'s config and weights, Qwen2-Instruct's eos and pad ids, and Qwen2's real tokenizer files
    (qwen2_lab.qwen2_tokenizer_dir). Returns the folder."""
    import shutil
    from pathlib import Path

    from qwen2_lab.facts import EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS
    from qwen2_lab.tokenizer import qwen2_tokenizer_dir

    folder = Path(folder)
    ids = dict(eos_token_id=SPECIAL_TOKENS[EOS_TOKEN], pad_token_id=SPECIAL_TOKENS[PAD_TOKEN])
    model.config.update({**ids, "bos_token_id": None})
    model.generation_config.update(**ids)
    model.save_pretrained(folder)
    for file in qwen2_tokenizer_dir().iterdir():
        shutil.copy(file, folder / file.name)
    return folder


def save_real_vocab_checkpoint(folder, moe: bool = False, seed: int = 0, **overrides):
    """A random Qwen2 (or Qwen2-MoE) with BASE's small shape but Qwen2's whole vocabulary, saved by save_checkpoint.
    Nothing in it assumes the bundled models' 1,024-token vocabulary."""
    return save_checkpoint(random_model(moe, seed=seed, **{"vocab_size": REAL_VOCAB, **overrides}), folder)


# ---- notebooks run in one Jupyter kernel (tests/test_notebooks_real.py, bench/gpu_check.py) ---------------------


def notebook_cells(path) -> list[tuple[int, str]]:
    """(index, source) of the code cells nbval would run: NBVAL_SKIP ones (a GPU or a real model) left out."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    skip = [
        c.cell_type != "code" or "NBVAL_SKIP" in c.source or "nbval-skip" in c.metadata.get("tags", [])
        for c in nb.cells
    ]
    return [(i, c.source) for i, c in enumerate(nb.cells) if not skip[i]]


def start_kernel(cwd, **env):
    """A Jupyter kernel (python3) in `cwd`, with `env` added to this process's environment: (manager, client)."""
    import os

    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name="python3", cwd=str(cwd), env={**os.environ, **env})


def run_cell(kc, source: str, timeout: float = 600) -> str | None:
    """Run one cell in the kernel; None when it ran, else the error with its traceback (ANSI colours stripped)."""
    import re

    errors = []

    def on_output(msg):
        if msg["msg_type"] == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(source, timeout=timeout, output_hook=on_output, store_history=False)
    if reply["content"]["status"] == "ok":
        return None
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors) or str(reply["content"]))


def run_notebook(kc, path, model: str, timeout: float = 600) -> str | None:
    """Run a notebook's cells (as nbval would) in a fresh namespace of the kernel, its setup cell loading `model`
    ($QWEN2_LAB_MODEL). None when every cell ran and every assert held, else which cell failed and how."""
    start = f"%reset -f\n__import__('os').environ['QWEN2_LAB_MODEL'] = {str(model)!r}"
    if error := run_cell(kc, start, timeout):
        return f"could not start {path}: {error}"
    for index, source in notebook_cells(path):
        if error := run_cell(kc, source, timeout):
            return f"{Path(path).name} on {model}, cell {index}:\n{source}\n\n{error}"
    return None


def live_processes(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (a run's work dir is in its config, on its command line)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids
