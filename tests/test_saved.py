"""Saved traces and generations: bit for bit back, partial loads that read only what is asked, clear errors, and
every view drawing the same figure from a loaded object as from a fresh one."""

import dataclasses
import json
import os

import pytest
import torch

import qwen2_lab
from qwen2_lab import saved, viz
from qwen2_lab.generate import Generation
from qwen2_lab.trace import Trace
from tests.helpers import random_lab

MSGS = [{"role": "user", "content": "A={2,5,8}, B={1,5,7}. What is A∩B?"}]
IDS = [3, 17, 42, 5, 99, 7, 23, 11]
KINDS = {
    "dense float32": lambda: random_lab(),
    "dense bfloat16": lambda: random_lab(dtype=torch.bfloat16),
    "moe float32": lambda: random_lab(moe=True),
    "moe bfloat16": lambda: random_lab(moe=True, dtype=torch.bfloat16),
}


def same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Bit for bit: same dtype, same shape, same bytes (NaN and -inf included)."""
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def assert_same_trace(a: Trace, b: Trace, sites=None):
    assert b.sites() == (a.sites() if sites is None else sites)
    for s in b.sites():
        assert same(a[s], b[s]), s
    assert same(a.token_ids, b.token_ids) and same(a.logits, b.logits)
    assert same(a.lens_ids, b.lens_ids) and same(a.lens_probs, b.lens_probs)
    assert (a.tokens, a.arch, a.lens_text, a.edits) == (b.tokens, b.arch, b.lens_text, b.edits)


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_trace_comes_back_bit_for_bit(kind, tmp_path):
    from qwen2_lab import edits

    lab = KINDS[kind]()
    trace = lab.trace(IDS, lens=3, edits=edits.zero_heads(1, [0]))
    assert trace.logits.dtype == lab.dtype and trace.edits
    path = trace.save(tmp_path / "t.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["t.safetensors"]  # no temporary file left beside it
    assert_same_trace(trace, Trace.load(path))
    assert_same_trace(trace, qwen2_lab.Trace.load(str(path)))


def test_a_partial_load_reads_only_the_sites_asked_for(tmp_path, monkeypatch):
    lab = random_lab(moe=True)
    trace = lab.trace(IDS)
    trace.save(tmp_path / "t.safetensors")
    read = []
    get = saved.Reader.get
    monkeypatch.setattr(saved.Reader, "get", lambda self, name: read.append(name) or get(self, name))
    part = Trace.load(tmp_path / "t.safetensors", sites=["layers.*.attn.*", "layers.*.moe.router_probs"], layers=[1])
    wanted = [s for s in trace.sites() if s.startswith("layers.1.attn.")] + ["layers.1.moe.router_probs"]
    assert_same_trace(trace, part, sites=wanted)
    assert sorted(read) == sorted([f"site/{s}" for s in wanted] + ["token_ids", "logits"])
    assert Trace.load(tmp_path / "t.safetensors", sites="embed").sites() == ["embed"]


def test_views_and_explorers_draw_the_same_from_a_loaded_trace(tiny, tmp_path):
    from qwen2_lab.widgets import AttentionExplorer, LensExplorer

    trace = tiny.trace("The cat sat on the mat.", lens=5)
    assert trace.lens_text
    loaded = Trace.load(trace.save(tmp_path / "t.safetensors"))
    assert_same_trace(trace, loaded)
    for draw in (
        lambda t: viz.attention_heads(t, 1), lambda t: viz.gqa_group_similarity(t, 1),
        lambda t: viz.rope_rotation(t, 1, 0, 3), lambda t: viz.logit_lens(t), lambda t: viz.lens_position(t, 2),
        lambda t: viz.residual_norms(t), lambda t: AttentionExplorer(t, layer=1).figure,
        lambda t: LensExplorer(t).figure,
    ):  # fmt: skip
        assert draw(trace).to_json() == draw(loaded).to_json()


def test_moe_views_draw_the_same_from_a_loaded_trace(tiny_moe, tmp_path):
    trace = tiny_moe.trace("The cat sat on the mat.", sites=["layers.*.moe.*"])
    loaded = Trace.load(trace.save(tmp_path / "t.safetensors"))
    for draw in (lambda t: viz.moe_routing(t, 1), lambda t: viz.moe_token(t, 1, 2), viz.moe_expert_load):
        assert draw(trace).to_json() == draw(loaded).to_json()


def assert_same_generation(a: Generation, b: Generation):
    assert same(a.prompt_ids, b.prompt_ids) and len(a.steps) == len(b.steps)
    for x, y in zip(a.steps, b.steps):
        for f in ("logits", "lens_ids", "lens_probs"):
            assert same(getattr(x, f), getattr(y, f)), f
        assert list(x.sites) == list(y.sites) and all(same(x.sites[s], y.sites[s]) for s in x.sites)
        rest = ("index", "position", "token_id", "token", "piece", "prob", "processed_prob", "entropy", "top",
                "processed_top", "cache_tokens", "forced")  # fmt: skip
        assert [getattr(x, f) for f in rest] == [getattr(y, f) for f in rest]
    assert (a.settings, a.stop_reason, a.text, a.tokens) == (b.settings, b.stop_reason, b.text, b.tokens)
    assert (a.options.sites, a.options.layers, a.options.lens, a.options.seed) == (
        b.options.sites, b.options.layers, b.options.lens, b.options.seed)  # fmt: skip
    assert b.lab.arch == a.lab.arch and b.lab.dtype == a.lab.dtype


@pytest.mark.parametrize("kind", KINDS)
def test_a_generation_comes_back_bit_for_bit(kind, tmp_path):
    lab = KINDS[kind]()
    gen = lab.generate_steps(IDS, max_new_tokens=5, do_sample=True, temperature=0.8, top_p=0.9, seed=0,
                             sites=["layers.1.attn.pattern", "layers.*.moe.router_probs"] if lab.arch.is_moe
                             else ["layers.1.attn.pattern"], lens=2)  # fmt: skip
    loaded = Generation.load(gen.save(tmp_path / "g.safetensors"))
    assert sorted(os.listdir(tmp_path)) == ["g.safetensors"]
    assert_same_generation(gen, loaded)
    assert same(gen.logits, loaded.logits)


def test_a_loaded_generation_needs_no_model_and_every_view_draws_the_same(tiny, tmp_path):
    from qwen2_lab.widgets import GenerationExplorer

    gen = tiny.generate_steps(MSGS, max_new_tokens=6, do_sample=True, temperature=0.9, seed=0,
                              sites=["layers.2.attn.pattern"], keep_logits=False)  # fmt: skip
    loaded = qwen2_lab.Generation.load(gen.save(tmp_path / "g.safetensors"))
    assert_same_generation(gen, loaded)
    assert loaded.text == gen.text and gen.text and loaded.steps[0].logits is None
    assert isinstance(loaded.lab, saved.SavedLab) and "no model" in repr(loaded.lab)
    for draw in (viz.token_confidence, lambda g: viz.candidates(g, 2), viz.kv_cache_growth,
                 lambda g: viz.generated_attention(g, 2), lambda g: GenerationExplorer(g, step=2).figure):  # fmt: skip
        assert draw(gen).to_json() == draw(loaded).to_json()
    with pytest.raises(AttributeError, match="no model.*lab="):
        loaded.branch(2, gen.steps[2].top[1].id)


def test_a_generation_loaded_with_its_lab_branches_as_the_fresh_one(tmp_path):
    from qwen2_lab import edits

    lab = random_lab()
    gen = lab.generate_steps(IDS, max_new_tokens=6, do_sample=True, seed=1, edits=edits.zero_heads(0, [1]))
    path = gen.save(tmp_path / "g.safetensors")
    lab.arch = dataclasses.replace(lab.arch, name="the same model, loaded from a folder")  # another name, same shape
    loaded = Generation.load(path, lab=lab)
    assert loaded.lab is lab and loaded.options.edits[0].label == edits.zero_heads(0, [1]).label
    with pytest.raises(RuntimeError, match="pass edits= again"):
        loaded.branch(2, 7)
    again = loaded.branch(2, 7, edits=edits.zero_heads(0, [1]))
    assert again.token_ids == gen.branch(2, 7).token_ids
    with pytest.raises(ValueError, match="architecture differs"):
        Generation.load(tmp_path / "g.safetensors", lab=random_lab(moe=True))


def test_clear_errors(tmp_path):
    lab = random_lab()
    trace = lab.trace(IDS, sites=["layers.0.*"])
    with pytest.raises(FileNotFoundError, match=r"no file .*trace.save\(path\)"):
        Trace.load(tmp_path / "missing.safetensors")
    path = trace.save(tmp_path / "t.safetensors")
    with pytest.raises(KeyError, match="'layers.1.attn.z' matches no site saved in .* it holds: layers.0.resid_pre"):
        Trace.load(path, sites=["layers.1.attn.z"])
    with pytest.raises(ValueError, match="out of range"):
        Trace.load(path, layers=[7])
    with pytest.raises(ValueError, match="holds a saved Trace, not a Generation"):
        Generation.load(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 40, 4):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or not a saved Trace.*save it again"):
            Trace.load(tmp_path / "cut.safetensors")
    saved.write(tmp_path / "new.safetensors", {"x": torch.zeros(1)}, {"kind": "Trace", "version": 99})
    with pytest.raises(ValueError, match="format 99.*upgrade it"):
        Trace.load(tmp_path / "new.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not one qwen2_lab saved"):
        Trace.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trace.save(tmp_path / "no" / "such" / "t.safetensors")
    with pytest.raises(IsADirectoryError, match="give a file name"):
        trace.save(tmp_path)


def test_a_failed_save_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    import safetensors.torch

    lab = random_lab()
    path = lab.trace(IDS, sites=[]).save(tmp_path / "t.safetensors")
    before = path.read_bytes()

    def fail(tensors, filename, metadata=None):  # writes half a file, then the disk fills
        open(filename, "wb").write(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(OSError, match="No space"):
        lab.trace(IDS).save(path)
    assert os.listdir(tmp_path) == ["t.safetensors"] and path.read_bytes() == before


def test_the_json_part_is_readable_by_any_safetensors_reader(tmp_path):
    from safetensors import safe_open

    trace = random_lab().trace(IDS, sites=["embed"])
    with safe_open(trace.save(tmp_path / "t.safetensors"), "pt") as f:
        info = json.loads(f.metadata()["qwen2_lab"])
    assert info["version"] == saved.FORMAT_VERSION and info["kind"] == "Trace" and info["sites"] == ["embed"]
    assert info["qwen2_lab"] == qwen2_lab.__version__ and info["torch"] == torch.__version__
