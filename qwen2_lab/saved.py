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
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import torch

from .arch import Arch
from .edits import Edit, as_edits
from .generate import Candidate, Generation, Options, Step
from .sampling import Sampling
from .trace import SiteFilter, Trace

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


def select(saved: list[str], sites, layers, arch: Arch, path: Path) -> list[str]:
    """The saved sites that `sites` (globs) and `layers` ask for; a pattern that matches nothing in the file, or a
    layer outside the model, is refused, naming what the file holds."""
    keep = SiteFilter(sites, layers)
    if keep.layers is not None:
        SiteFilter(None, keep.layers).check(arch)
    for pattern in keep.sites or []:
        if not any(SiteFilter([pattern]).wants(s) for s in saved):
            shown = ", ".join(saved[:12]) + (" ..." if len(saved) > 12 else "")
            raise KeyError(f"site pattern {pattern!r} matches no site saved in {path}; it holds: {shown or 'none'}")
    return [s for s in saved if keep.wants(s)]


# ---- Trace ------------------------------------------------------------------------------------------------------------


def save_trace(trace: Trace, path) -> Path:
    """trace.save(path): the kept sites, token ids, logits and logit lens bit for bit; tokens, arch, the lens' token
    texts and the edits applied in the JSON part."""
    tensors = {f"site/{s}": t for s, t in trace.store.items()}
    tensors |= {"token_ids": trace.token_ids, "logits": trace.logits}
    if trace.lens_ids is not None:
        tensors |= {"lens_ids": trace.lens_ids, "lens_probs": trace.lens_probs}
    info = dict(
        kind="Trace", tokens=trace.tokens, arch=trace.arch.as_dict(), sites=list(trace.store),
        lens_text=None if trace.lens_text is None else {str(i): t for i, t in trace.lens_text.items()},
        edits=[list(e) for e in trace.edits],
    )  # fmt: skip
    return write(path, tensors, info)


def load_trace(path, *, sites=None, layers=None) -> Trace:
    """Trace.load(path, sites=, layers=): the sites asked for (globs, as lab.trace takes them; all by default), read
    from the file without reading the others; token ids, logits and the logit lens always."""
    f = Reader(path, "Trace")
    info = f.info
    arch = arch_from(info["arch"])
    store = {s: f.get(f"site/{s}") for s in select(info["sites"], sites, layers, arch, f.path)}
    lens = {k: f.get(k) if k in f.names else None for k in ("lens_ids", "lens_probs")}  # [L, S, k] each
    lens_text = None if info["lens_text"] is None else {int(i): t for i, t in info["lens_text"].items()}
    edits = [tuple(e) for e in info["edits"]]
    return Trace(
        f.get("token_ids"), info["tokens"], arch, f.get("logits"), store, **lens, lens_text=lens_text, edits=edits
    )


# ---- Generation ---------------------------------------------------------------------------------------------------------


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


def shown_ids(gen: Generation) -> list[int]:
    """Every token id a generation's views may label: prompt, answer, candidates and the logit lens."""
    ids = set(gen.prompt_ids.tolist()) | set(gen.token_ids)
    for s in gen.steps:
        ids |= {c.id for c in s.top + s.processed_top}
        if s.lens_ids is not None:
            ids |= set(s.lens_ids.flatten().tolist())
    return sorted(ids)


STEP_TENSORS = ("logits", "lens_ids", "lens_probs")


def save_generation(gen: Generation, path) -> Path:
    """gen.save(path): prompt ids, each step's logits, sites and lens bit for bit; everything else in the JSON part."""
    tensors = {"prompt_ids": gen.prompt_ids}
    steps = []
    for s in gen.steps:
        tensors |= {f"steps.{s.index}.{k}": getattr(s, k) for k in STEP_TENSORS if getattr(s, k) is not None}
        tensors |= {f"steps.{s.index}.site/{site}": t for site, t in s.sites.items()}
        scalars = {f.name: getattr(s, f.name) for f in fields(Step) if f.name not in STEP_TENSORS + ("sites",)}
        steps.append({**scalars, "top": [asdict(c) for c in s.top],
                      "processed_top": [asdict(c) for c in s.processed_top], "sites": list(s.sites)})  # fmt: skip
    ids = shown_ids(gen)
    options = {**asdict(gen.options), "edits": [[e.site, e.label] for e in as_edits(gen.options.edits)]}
    info = dict(
        kind="Generation", lab=str(gen.lab.name), arch=gen.lab.arch.as_dict(),
        dtype=str(gen.lab.dtype).removeprefix("torch."), settings=asdict(gen.settings), options=options,
        stop_reason=gen.stop_reason, text=gen.text, steps=steps, vocab=dict(zip(map(str, ids), gen.lab.tokens(ids))),
    )  # fmt: skip
    return write(path, tensors, info)


def load_generation(path, *, lab=None) -> Generation:
    """Generation.load(path, lab=None): the steps with their candidates, logits, sites and lens. Without `lab`, a
    SavedLab stands in for the model; with one (of the same architecture), the generation can `branch` again."""
    f = Reader(path, "Generation")
    info, arch = f.info, arch_from(f.info["arch"])
    if lab is not None and not same_shape(lab.arch, arch):
        raise ValueError(
            f"{f.path} was generated by {info['lab']!r}, whose architecture differs from lab's {lab.name!r}"
        )
    steps = [load_step(f, s) for s in info["steps"]]
    if lab is None:
        vocab = {int(i): t for i, t in info["vocab"].items()}
        lab = SavedLab(
            info["lab"], arch, getattr(torch, info["dtype"]), vocab, info["text"], [s.token_id for s in steps]
        )
    s = info["settings"]
    settings = Sampling(**{**s, "eos": tuple(s["eos"])})
    o = info["options"]
    edits = [Edit(site, unsaved_edit(site, label), label) for site, label in o["edits"]] or None
    tup = lambda x: None if x is None else tuple(x)  # noqa: E731
    options = Options(**{**o, "sites": tup(o["sites"]), "layers": tup(o["layers"]), "edits": edits})
    return Generation(lab, f.get("prompt_ids"), settings, options, steps, stop_reason=info["stop_reason"])


def same_shape(a: Arch, b: Arch) -> bool:
    """Whether two Archs describe the same model, whatever name each goes by (a local folder, a hub id)."""
    return {**a.as_dict(), "name": None} == {**b.as_dict(), "name": None}


def load_step(f: Reader, s: dict) -> Step:
    i = s["index"]
    tensors = {k: f.get(f"steps.{i}.{k}") if f"steps.{i}.{k}" in f.names else None for k in STEP_TENSORS}
    sites = {site: f.get(f"steps.{i}.site/{site}") for site in s["sites"]}
    top = [Candidate(**c) for c in s["top"]]
    processed = [Candidate(**c) for c in s["processed_top"]]
    return Step(**{**s, **tensors, "sites": sites, "top": top, "processed_top": processed})


def unsaved_edit(site: str, label: str):
    """The stand-in for an edit's function, which a file cannot hold: running it says what to do instead."""

    def fn(x, at):
        raise RuntimeError(
            f"the edit at {site!r} ({label}) was loaded from a file, which keeps its label, not its function:"
            " pass edits= again (gen.branch(..., edits=...))"
        )

    return fn
