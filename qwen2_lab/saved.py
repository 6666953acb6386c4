"""Traces and generations in a file: look at them later, on another machine, with no model.

    trace.save("cat.safetensors")                  # every kept tensor, bit for bit, and what it was
    trace = qwen2_lab.Trace.load("cat.safetensors", sites=["layers.1.attn.*"], layers=[1])  # reads only those
    gen.save("answer.safetensors")
    gen = qwen2_lab.Generation.load("answer.safetensors")  # gen.text, gen.steps, every viz view; no model

One file, in the safetensors format (https://huggingface.co/docs/safetensors): the tensors bit for bit (any dtype,
bfloat16 included), and everything else (tokens, arch, sites, the logit lens' texts, edits applied, sampling
settings, versions) as a small JSON in the file's header metadata, under the key "qwen2_lab", which any safetensors
reader shows (`safe_open(path, "pt").metadata()`). Loading reads the header first and then only the tensors asked
for: `safe_open` maps the file and copies out what is read, so a partial load of a large trace stays cheap. A save
writes a temporary file beside the target and renames it over the target only once it is whole.

A loaded Generation has no model: its `lab` is a `SavedLab`, which has the arch, the dtype and the text of every
token the generation shows (prompt, answer, candidates, lens), which is all `text`, `tokens`, the viz views and
the GenerationExplorer read. Anything that needs the model (`branch`, `experiments.divergence`) says so; load with
`lab=` to get it back. Edits are saved by their labels (functions cannot be saved): pass `edits=` again to branch.

This module is the file (and the stand-in Lab); what a Trace and a Generation put in it is written beside them, in
`Trace.save`/`Trace.load` (trace.py) and `Generation.save`/`Generation.load` (generate.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .arch import Arch

FORMAT_VERSION = 1  # raise it when a file written now could not be read as before; loading refuses newer ones
KEY = "qwen2_lab"  # the metadata key of the JSON part


# ---- the file: tensors + JSON, written atomically, read lazily -------------------------------------------------------


def write(path, tensors: dict[str, torch.Tensor], info: dict) -> Path:
    """Write `tensors` and the JSON `info` to `path` through a temporary file in the same folder, renamed over `path`
    only once complete: a save that fails (disk full, an interrupt) leaves the old file, or none, never half of one."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a file name, e.g. {path / 'trace.safetensors'}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: the folder {path.parent} does not exist")
    meta = {KEY: json.dumps({"version": FORMAT_VERSION, **versions(), **info}, ensure_ascii=False)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(owned(tensors), tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def owned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors on the CPU, contiguous, none sharing memory with another (safetensors refuses shared storage): a
    view into a larger tensor, or a second view of one already seen, is copied. Values are untouched."""
    out, seen = {}, set()
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def versions() -> dict:
    import transformers

    from . import __version__

    return {"qwen2_lab": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


class Reader:
    """An open saved file: `info` (its JSON), `names` (its tensors), `get(name)` reads one tensor and nothing else."""

    def __init__(self, path, kind: str):
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no file {self.path}: make one with {kind.lower()}.save(path)")
        try:
            self.file = safe_open(str(self.path), framework="pt", device="cpu")
            meta = self.file.metadata() or {}
        except Exception as e:  # safetensors raises its own error types for a bad or cut header
            raise ValueError(f"{self.path} is truncated or not a saved {kind} ({e}): save it again") from None
        self.info = check_info(self.path, meta.get(KEY), kind)
        self.names = set(self.file.keys())

    def get(self, name: str) -> torch.Tensor:
        try:
            return self.file.get_tensor(name)
        except Exception as e:
            raise ValueError(f"{self.path}: cannot read {name!r} ({e}): the file is damaged; save it again") from None


def check_info(path: Path, text: str | None, kind: str) -> dict:
    """The JSON part, checked: present, of this kind, of a format version this code reads."""
    if text is None:
        raise ValueError(f"{path} is a safetensors file but not one qwen2_lab saved (no {KEY!r} metadata)")
    info = json.loads(text)
    if info.get("kind") != kind:
        raise ValueError(f"{path} holds a saved {info.get('kind')}, not a {kind}: load it with {info.get('kind')}.load")
    if info.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was saved by qwen2_lab {info.get('qwen2_lab')} in format {info['version']}; this qwen2_lab"
            f" reads format {FORMAT_VERSION} and older: upgrade it (pip install -U qwen2-lab)"
        )
    return info


def arch_from(d: dict) -> Arch:
    """An Arch from its as_dict(), JSON's lists turned back into the tuples Arch holds."""
    return Arch(**{**d, "moe_layers": tuple(d["moe_layers"])})


# ---- a loaded Generation's stand-in for its Lab ---------------------------------------------------------


class SavedLab:
    """What a loaded Generation keeps of the Lab that made it: name, arch, dtype and the text of each token it shows.
    It has no model: anything that needs one raises an error saying how to load with one."""

    def __init__(self, name: str, arch: Arch, dtype: torch.dtype, vocab: dict[int, str], text: str, ids: list[int]):
        self.name, self.arch, self.dtype, self.vocab = name, arch, dtype, vocab
        self.tokenizer = SavedText(text, ids, vocab)

    def tokens(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in ids]

    def __getattr__(self, name):  # only called for what a SavedLab lacks: model, trace, encode, generate ...
        raise AttributeError(
            f"a loaded Generation has no model, so lab.{name} is not available: load it with its model,"
            f" Generation.load(path, lab=qwen2_lab.load({self.__dict__.get('name', '...')!r}))"
        )

    def __repr__(self) -> str:
        return f"SavedLab({self.name!r}, no model)"


class SavedText:
    """The decoding a loaded Generation needs: its own answer (gen.text) and any single token it saved."""

    def __init__(self, text: str, ids: list[int], vocab: dict[int, str]):
        self.text, self.ids, self.vocab = text, list(ids), vocab

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if ids == self.ids:
            return self.text
        if len(ids) == 1 and ids[0] in self.vocab:
            return self.vocab[ids[0]]
        raise ValueError("a loaded Generation decodes only its answer and its tokens: load it with lab= for more")
