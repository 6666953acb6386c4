"""Qwen2 Lab: open up Qwen2 and Qwen2-MoE layer by layer.

    import qwen2_lab
    lab = qwen2_lab.load("tiny")                  # or a hub id, or a local folder
    trace = lab.trace("A={3,5,7,9}, B={1,3,4,9}. What is A∩B?")
    trace["layers.0.attn.pattern"]                 # [heads, seq, seq]
    qwen2_lab.compare_with_hf(lab, "Hello")        # equal to transformers, site by site

Names are imported lazily, so `import qwen2_lab.sandbox` or `qwen2_lab.checks` stays light (no torch).
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "load": "loading",
    "bundled_path": "loading",
    "Lab": "lab",
    "Trace": "trace",
    "Generation": "generate",
    "SITES": "trace",
    "Arch": "arch",
    "arch_of": "arch",
    "family": "arch",
    "compare_with_hf": "compare",
    "qwen2_tokenizer": "tokenizer",
    "qwen2_tokenizer_dir": "tokenizer",
    "token_pieces": "tokenizer",
    "tokens_per_char": "tokenizer",
    "check_answer": "checks",
    "check_code": "checks",
    "problem": "checks",
    "PROBLEMS": "checks",
    "run_python": "sandbox",
}

_SUBMODULES = {"viz", "widgets", "checks", "sandbox", "rope", "dca", "arch", "forward", "trace", "notebook"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _SUBMODULES:  # qwen2_lab.viz.attention_heads(...) works without importing viz first
        return import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qwen2_lab' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
