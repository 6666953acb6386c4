"""`load`: a Qwen2 model by hub id, local folder or bundled name, as a `Lab`.

Every path goes through transformers' own `from_pretrained`, the bundled checkpoints included, so what the lab shows
on `tiny` is what it shows on `Qwen/Qwen2-72B-Instruct`. Errors come within seconds and say what to do instead:
no silent fallback for an explicit name, no long retry loops when the hub is out of reach.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from .facts import MODEL_TYPES
from .lab import Lab

TINY_DIR = Path(__file__).parent / "tiny"
BUNDLED = {"tiny": TINY_DIR / "tiny", "tiny-moe": TINY_DIR / "tiny-moe"}
DEFAULT_HUB_ID = "Qwen/Qwen2-0.5B-Instruct"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class LoadError(OSError):
    """A model could not be loaded; the message says why and what to do instead."""


def bundled_path(name: str) -> Path:
    """The folder of a bundled checkpoint ("tiny" or "tiny-moe")."""
    if name not in BUNDLED:
        raise LoadError(f"no bundled model {name!r}; the bundled ones are {sorted(BUNDLED)}")
    path = BUNDLED[name]
    if not (path / "config.json").exists():
        raise LoadError(f"the bundled {name!r} is missing from {path}; rebuild it with `python -m qwen2_lab.tiny.make`")
    return path


def load(name: str | None = None, *, device: str = "auto", dtype="auto", **hf_kwargs) -> Lab:
    """Load a Qwen2 / Qwen2.5 / Qwen2-MoE model and wrap it in a `Lab`.

    name: a hub id ("Qwen/Qwen2-7B-Instruct"), a local HF folder, "tiny" or "tiny-moe"; None picks one (and says
      which, and why): $QWEN2_LAB_MODEL, else Qwen2-0.5B-Instruct if cached or the hub answers, else "tiny".
    device: "auto" (cuda, then mps, then cpu), or any torch device. dtype: "auto" (float32 on the CPU, the
      checkpoint's own, usually bfloat16, on a GPU; float16 for a bfloat16 checkpoint on a GPU without bfloat16,
      such as Colab's free T4, and the line it prints says so), a torch dtype or its name.
    hf_kwargs: passed to `from_pretrained`; `device_map="auto"` spreads a 72B model over GPUs (and offloads).
    """
    if name is None:
        name, why = default_model()
        print(f"qwen2_lab: using {name} ({why})")
    source, local_only = locate(name)
    device = pick_device(device)
    torch_dtype, why = pick_dtype(dtype, device, lambda: checkpoint_dtype(source, local_only))
    hf_kwargs.setdefault("device_map", device)

    from transformers import AutoModelForCausalLM

    print(f"qwen2_lab: loading {name} in {torch_dtype} on {hf_kwargs['device_map']}{why}")
    try:
        with without_progress_bars(name in BUNDLED):  # a bundled model loads in a blink: no bar for it
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, local_files_only=local_only, **hf_kwargs
            )
    except OSError as e:
        raise LoadError(f"could not load {name!r}: {e}") from e
    return Lab(model, load_tokenizer(source, local_only, name), name=name)


@contextmanager
def without_progress_bars(hide: bool = True):
    """transformers' progress bars ("Loading weights") hidden for the duration when `hide`, then as they were.

    A real checkpoint takes seconds to minutes to load and its bars say how far it got, so they stay (unless the
    user turned them off); a bundled one is a few MB and its bar would only be noise (in a notebook, a widget).
    """
    from transformers.utils import logging as hf_logging

    if not (hide and hf_logging.is_progress_bar_enabled()):
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def default_model() -> tuple[str, str]:
    """The model `load()` picks when given no name, and the reason."""
    env = os.environ.get("QWEN2_LAB_MODEL")
    if env:
        return env, "from $QWEN2_LAB_MODEL"
    if is_cached(DEFAULT_HUB_ID):
        return DEFAULT_HUB_ID, "found in the local Hugging Face cache"
    if hub_answers():
        return DEFAULT_HUB_ID, "the Hugging Face hub answered; it will be downloaded"
    return "tiny", f"offline and {DEFAULT_HUB_ID} is not cached: the bundled toy model; set QWEN2_LAB_MODEL for another"


def locate(name: str) -> tuple[str, bool]:
    """Where `from_pretrained` should look for `name`, and whether it must stay off the network.

    Checks, within seconds, that the name is a Qwen2-family checkpoint that can actually be reached.
    """
    if name in BUNDLED:
        return str(bundled_path(name)), True
    path = Path(name).expanduser()
    if path.is_dir():
        check_qwen2_config(path / "config.json", name)
        return str(path), True
    if not HUB_ID.match(name):
        raise LoadError(
            f"{name!r} is not a folder, not a bundled model ({', '.join(BUNDLED)}) and not a hub id like"
            f" 'Qwen/Qwen2-7B-Instruct'"
        )
    cached = is_cached(name)
    if cached:
        check_qwen2_config(Path(cached), name)
        return name, offline()
    if offline() or not hub_answers():
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hugging Face hub does not answer"
        raise LoadError(
            f"{name!r} is not in the local Hugging Face cache and {why}. Download it where there is network"
            f" (`hf download {name}`) and copy the cache, pass a local folder, or use the bundled 'tiny' / 'tiny-moe'"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        check_qwen2_config(Path(hf_hub_download(name, "config.json", etag_timeout=5)), name)
    except (RepositoryNotFoundError, EntryNotFoundError) as e:
        raise LoadError(f"no model {name!r} on the Hugging Face hub (or it is gated): check the id") from e
    return name, False


def check_qwen2_config(config_json: Path, name: str) -> None:
    import json

    if not config_json.exists():
        raise LoadError(f"{name!r} has no config.json: it is not a Hugging Face checkpoint folder")
    model_type = json.loads(config_json.read_text()).get("model_type")
    if model_type not in MODEL_TYPES:
        raise LoadError(
            f"{name!r} is a {model_type!r} model; the lab opens Qwen2, Qwen2.5 and Qwen2-MoE ({', '.join(MODEL_TYPES)})"
        )


def load_tokenizer(source: str, local_only: bool, name: str):
    """The checkpoint's own tokenizer; for a Qwen2 model without one, the offline Qwen2 tokenizer (said so)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        if len(tokenizer) >= 256:  # transformers 5 makes an empty one from nothing; byte-level BPE has >= 256 tokens
            return tokenizer
        why = "no tokenizer files"
    except (OSError, ValueError) as e:
        why = type(e).__name__
    from .tokenizer import qwen2_tokenizer

    print(f"qwen2_lab: {name} has no loadable tokenizer ({why}); using the offline Qwen2 tokenizer")
    return qwen2_tokenizer()


def pick_device(device) -> str:
    if device != "auto":
        return str(device)
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype, device: str, checkpoint=lambda: None) -> tuple:
    """(the dtype to load in, a note for the loading line). "auto": float32 on the CPU (exact comparisons), the
    checkpoint's own on a GPU, except bfloat16 on a CUDA GPU that lacks it (a T4, Colab's free GPU): float16, which
    it runs natively. checkpoint() reads the checkpoint's dtype (only asked for then)."""
    if dtype == "auto":
        if device == "cpu":
            return torch.float32, ""
        if device.startswith("cuda") and not torch.cuda.is_bf16_supported() and checkpoint() == torch.bfloat16:
            return torch.float16, " (this GPU has no bfloat16: float16 instead of the checkpoint's bfloat16)"
        return "auto", " (the checkpoint's own dtype)"
    if isinstance(dtype, str):
        aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
        dtype = getattr(torch, aliases.get(dtype, dtype), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError("dtype must be 'auto', a torch dtype or a name like 'bfloat16' / 'float32'")
    return dtype, ""


def checkpoint_dtype(source: str, local_only: bool):
    """The dtype a checkpoint's config.json declares (a torch dtype, or None when it declares none)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    dtype = getattr(config, "dtype", None)
    return getattr(torch, dtype, None) if isinstance(dtype, str) else dtype


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")


def is_cached(repo_id: str) -> str | None:
    """The cached config.json of a hub id, if the local HF cache has it."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, "config.json")
    return hit if isinstance(hit, str) else None


def hub_answers(timeout: float = 3.0) -> bool:
    """Does the Hugging Face hub answer within `timeout` seconds? (Never waits longer, DNS included.)"""
    if offline():
        return False
    answer = []

    def ask():
        try:
            import httpx

            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            answer.append(httpx.head(f"{endpoint}/api/models/{DEFAULT_HUB_ID}", timeout=timeout).status_code == 200)
        except Exception:
            answer.append(False)

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(timeout)
    return bool(answer and answer[0])
