"""load(): bundled names, folders, hub ids offline, the automatic default, and clear errors within seconds."""

import copy
import json
import time

import pytest
import torch

import qwen2_lab
from qwen2_lab import loading
from qwen2_lab.loading import LoadError


def test_bundled_models_are_real_checkpoint_folders():
    for name, model_type in (("tiny", "qwen2"), ("tiny-moe", "qwen2_moe")):
        path = qwen2_lab.bundled_path(name)
        config = json.loads((path / "config.json").read_text())
        assert (
            config["model_type"] == model_type and config["rope_theta" if "rope_theta" in config else "rope_parameters"]
        )
        for f in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            assert (path / f).exists(), f
        assert sum(f.stat().st_size for f in path.iterdir()) < 10 * 2**20


def test_bundled_models_have_qwen2_design(tiny, tiny_moe):
    for lab in (tiny, tiny_moe):
        a = lab.arch
        assert a.group_size > 1 and a.rope_theta == 1e6
        assert lab.model.model.layers[0].self_attn.q_proj.bias is not None  # QKV bias
        assert lab.model.model.layers[0].self_attn.o_proj.bias is None
        tok = lab.tokenizer
        for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
            assert len(tok.encode(special, add_special_tokens=False)) == 1
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
        assert (
            text
            == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        )
    assert tiny.arch.tied_embeddings and not tiny.arch.is_moe
    m = tiny_moe.arch
    assert m.is_moe and m.top_k > 1 and m.n_experts > m.top_k and m.shared_intermediate > 0 and not m.norm_topk_prob
    assert tiny_moe.model.model.layers[0].mlp.shared_expert_gate.weight.shape == (1, m.hidden)


def test_the_recipe_rebuilds_the_bundled_tokenizer():
    """`python -m qwen2_lab.tiny.make` is deterministic: the corpus of today's curriculum gives the bundled tokenizer
    (a curriculum changed without retraining fails here), and each bundled model records make's recipe."""
    from transformers import AutoTokenizer

    from qwen2_lab.tiny import make

    built = make.build_tokenizer(make.corpus()).get_vocab()
    for kind in make.KINDS:
        path = qwen2_lab.bundled_path(kind)
        assert AutoTokenizer.from_pretrained(path).get_vocab() == built, kind
        recipe = json.loads((path / "training.json").read_text())["recipe"]
        assert (recipe["seed"], recipe["steps"], recipe["mix"]) == (
            make.SEEDS[kind],
            make.STEPS[kind],
            make.MIXES[kind],
        )


def test_explicit_names_never_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(LoadError, match="not in the local Hugging Face cache"):
        qwen2_lab.load("Qwen/Qwen2-72B-Instruct")
    with pytest.raises(LoadError, match="not a folder, not a bundled model"):
        qwen2_lab.load("no such thing")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(LoadError, match="'llama' model"):
        qwen2_lab.load(str(tmp_path / "llama"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="no config.json"):
        qwen2_lab.load(str(tmp_path / "empty"))
    with pytest.raises(LoadError, match="no bundled model"):
        qwen2_lab.bundled_path("small")
    assert time.monotonic() - start < 10  # errors come within seconds, no retry loops


def test_unreachable_hub_fails_fast(monkeypatch):
    """A hub that accepts the connection but never answers: hub_answers gives up on time (loopback only)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        start = time.monotonic()
        assert loading.hub_answers(timeout=1.0) is False
        assert time.monotonic() - start < 3
    finally:
        server.close()


def test_default_model_choice(monkeypatch, capsys):
    monkeypatch.setenv("QWEN2_LAB_MODEL", "tiny-moe")
    assert loading.default_model() == ("tiny-moe", "from $QWEN2_LAB_MODEL")
    lab = qwen2_lab.load()
    assert lab.arch.is_moe and "using tiny-moe (from $QWEN2_LAB_MODEL)" in capsys.readouterr().out
    monkeypatch.delenv("QWEN2_LAB_MODEL")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "is_cached", lambda repo: None)
    name, why = loading.default_model()
    assert name == "tiny" and "offline" in why


def test_local_folder_and_dtype(tmp_path, tiny):
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    lab = qwen2_lab.load(str(tmp_path / "m"), dtype="bfloat16")
    assert lab.dtype == torch.bfloat16 and lab.arch == qwen2_lab.arch_of(tiny.model.config, lab.name)
    with pytest.raises(ValueError, match="dtype must be"):
        qwen2_lab.load("tiny", dtype="float33")


def test_missing_tokenizer_falls_back_to_offline_qwen2(tmp_path, tiny, capsys):
    tiny.model.save_pretrained(tmp_path / "m")  # weights only, no tokenizer files
    lab = qwen2_lab.load(str(tmp_path / "m"))
    assert "offline Qwen2 tokenizer" in capsys.readouterr().out
    assert len(lab.tokenizer) == 151646


def test_auto_dtype_on_a_gpu_without_bfloat16_is_float16_and_says_so(monkeypatch, capsys, tmp_path, tiny):
    bf16 = lambda: torch.bfloat16  # noqa: E731 (a bfloat16 checkpoint)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4
    assert loading.pick_dtype("auto", "cuda", bf16) == (torch.float16, loading.pick_dtype("auto", "cuda:0", bf16)[1])
    assert "no bfloat16" in loading.pick_dtype("auto", "cuda", bf16)[1]
    assert loading.pick_dtype("auto", "cuda", lambda: torch.float32)[0] == "auto"  # float32 runs there as it is
    assert loading.pick_dtype("auto", "cpu", bf16) == (torch.float32, "")
    assert loading.pick_dtype("bfloat16", "cuda", bf16) == (torch.bfloat16, "")  # asked for: given
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # an A100, an H100
    assert loading.pick_dtype("auto", "cuda", bf16)[0] == "auto"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    copy.deepcopy(tiny.model).to(torch.bfloat16).save_pretrained(tmp_path / "m")  # the shared tiny stays as it is
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    lab = qwen2_lab.load(str(tmp_path / "m"), device="cuda", device_map="cpu")  # a GPU's choice, placed on the CPU
    assert lab.dtype == torch.float16
    assert "in torch.float16 on cpu (this GPU has no bfloat16: float16 instead of the checkpoint's bfloat16)" in (
        capsys.readouterr().out
    )
