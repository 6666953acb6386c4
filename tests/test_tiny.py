"""The bundled `tiny` and `tiny-moe`: Qwen2's design, answers measured through `lab.generate`, and the curriculum and
recipe that make them (deterministic, held-out split without overlap, reproducible training). Seconds, no full run.

Expected answers are computed here from the question's text alone (regexes, Python sets, bisect, int arithmetic), not
taken from the curriculum's own solver, so a bug there cannot hide behind itself.
"""

import bisect
import itertools
import json
import re

import pytest

from qwen2_lab.loading import bundled_path
from qwen2_lab.tiny import curriculum as C
from qwen2_lab.tiny import make
from qwen2_lab.tiny.train import Recipe, collate, encode, lr_at, train

KINDS = ("tiny", "tiny-moe")
MAIN_TASKS = ("intersection", "search_range", "arithmetic")


@pytest.fixture(params=KINDS)
def lab(request):
    return request.getfixturevalue({"tiny": "tiny", "tiny-moe": "tiny_moe"}[request.param])  # conftest's, shared


# ---- an independent solver, from the question's text -----------------------------------------------------------


def ints(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def expected_final(task: str, prompt: str) -> str:
    """The final answer as the curriculum writes it, worked out from the question's text alone."""
    if task == "intersection":
        a, b = (set(ints(s)) for s in re.findall(r"=\{([^}]*)\}", prompt))
        both = sorted(a & b)
        return "{" + ",".join(map(str, both)) + "}" if both else "∅"
    if task == "search_range":
        nums = ints(re.search(r"\[([^\]]*)\]", prompt).group(1))
        target = int(next(g for g in re.search(r"target=(\d+)|查找(\d+)|index of (\d+)", prompt).groups() if g))
        lo, hi = bisect.bisect_left(nums, target), bisect.bisect_right(nums, target) - 1  # LeetCode 34 in O(log n)
        return f"[{lo},{hi}]" if lo <= hi else "[-1,-1]"
    if task == "arithmetic":
        x, op, y = re.search(r"(\d+)([+-])(\d+)", prompt).groups()
        return str(int(x) + int(y) if op == "+" else int(x) - int(y))
    if task == "gaokao_filter":
        c, p = re.search(r"x\|-(\d+)<x(?:\^(\d))?<", prompt).groups()
        b = ints(re.search(r"B=\{([^}]*)\}", prompt).group(1))
        keep = [v for v in b if -int(c) < v ** int(p or 1) < int(c)]
        return "{" + ",".join(map(str, keep)) + "}" if keep else "∅"
    raise ValueError(task)


# ---- the checkpoints ---------------------------------------------------------------------------------------------


def test_checkpoints_have_qwen2_design(lab):
    cfg, model = lab.model.config, lab.model
    assert cfg.num_attention_heads // cfg.num_key_value_heads > 1, "GQA: several query heads per KV head"
    assert cfg.rope_parameters["rope_theta"] == 1e6
    for layer in model.model.layers:
        attn = layer.self_attn
        assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
        assert attn.o_proj.bias is None
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if lab.name == "tiny":
        assert cfg.model_type == "qwen2" and cfg.tie_word_embeddings and tied
    else:
        assert cfg.model_type == "qwen2_moe" and not cfg.tie_word_embeddings and not tied
        assert cfg.num_experts > 2 and cfg.num_experts_per_tok > 1 and cfg.norm_topk_prob is False
        mlp = model.model.layers[0].mlp
        assert mlp.shared_expert_gate.weight.shape == (1, cfg.hidden_size)
        assert mlp.experts.gate_up_proj.shape[0] == cfg.num_experts


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_config_is_the_one_make_builds(kind):
    from transformers import AutoConfig, AutoTokenizer

    path = bundled_path(kind)
    shipped = AutoConfig.from_pretrained(path).to_diff_dict()
    built = make.build_config(kind, AutoTokenizer.from_pretrained(path)).to_diff_dict()
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
              "num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size"):  # fmt: skip
        assert shipped.get(k) == built.get(k), k


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_folder_is_small_and_documented(kind):
    path = bundled_path(kind)
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 10 * 2**20, f"{kind} is {size / 2**20:.1f} MiB; the limit is 10 MiB"
    card = (path / "README.md").read_text()
    history = json.loads((path / "training.json").read_text())
    assert len(history["loss"]) == len(history["step"]) > 10
    assert history["loss"][-1] < history["loss"][0] / 10, "the loss curve should fall by far more than 10x"
    for task, score in history["eval"]["scores"].items():
        assert f"| {task} | {100 * score:.1f}% |" in card, "the card states the measured scores"


def test_tokenizer_splits_digits_and_keeps_chatml(tiny):
    tok = tiny.tokenizer
    pieces = tok.convert_ids_to_tokens(tok.encode("A={3,15,27}", add_special_tokens=False))
    assert [p for p in pieces if p.isdigit()] == ["3", "1", "5", "2", "7"], pieces
    assert tok.convert_ids_to_tokens(list(range(len(tok) - 3, len(tok)))) == list(make.SPECIAL_TOKENS)
    text = tok.apply_chat_template([{"role": "user", "content": "1+1"}], add_generation_prompt=True, tokenize=False)
    qwen2_chatml = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n1+1<|im_end|>\n"
    assert text == qwen2_chatml + "<|im_start|>assistant\n"  # Qwen2's template, default system prompt included


@pytest.mark.parametrize("task", MAIN_TASKS)
def test_trained_models_answer_held_out_questions(lab, task):
    """The first 10 held-out questions of each main task, through lab.generate, checked against the text solver."""
    problems = [p for p in C.held_out(10) if p.task == task]
    right = 0
    for p in problems:
        reply = lab.generate(p.messages(), max_new_tokens=48)
        right += C.final(reply) == expected_final(task, p.prompt)
    assert right >= 8, f"{lab.name} got {right}/10 held-out {task} questions right"


# ---- the curriculum ----------------------------------------------------------------------------------------------


def test_curriculum_is_deterministic_and_varied():
    first = list(itertools.islice(C.training_stream(3, set()), 200))
    again = list(itertools.islice(C.training_stream(3, set()), 200))
    other = list(itertools.islice(C.training_stream(4, set()), 200))
    assert first == again and first != other
    assert {p.task for p in first} == set(C.TASKS) and {p.lang for p in first} == {"zh", "en"}
    assert len({p.prompt.split("=")[0][:6] for p in first if p.task == "intersection"}) >= 4, "several phrasings"


def test_answers_match_an_independent_solver():
    for p in itertools.islice(C.training_stream(5, set()), 400):
        assert C.final(p.answer) == expected_final(p.task, p.prompt), p


def test_worked_steps_are_right():
    """The column arithmetic and the search walk, checked step by step."""
    for p in itertools.islice(C.training_stream(6, set()), 300):
        if p.task == "arithmetic":
            cols = p.answer.splitlines()[0].split(",")
            x, op, y = re.search(r"(\d+)([+-])(\d+)", p.prompt).groups()
            x, y = int(x), int(y)
            carry = 0
            for i, col in enumerate(cols):
                a, b, c, d = (int(v) for v in re.findall(r"\d", col))
                assert (a, b, c) == (x // 10**i % 10, y // 10**i % 10, carry)
                v = a + b + c if op == "+" else a - b - c
                assert d == v % 10
                carry = int(v >= 10) if op == "+" else int(v < 0)
        if p.task == "search_range":
            nums, t = p.key[1], p.key[2]
            for i, v, sign in re.findall(r"(\d):(\d)([<=>])", p.answer):
                assert nums[int(i)] == int(v) and sign == "<=>"[(int(v) > t) - (int(v) < t) + 1]


def test_held_out_never_overlaps_training():
    held = C.held_out(C.HELD_OUT_MAX)
    keys = {p.key for p in held}
    assert len(keys) == len(held) == C.HELD_OUT_MAX * len(C.TASKS)
    assert all(p.key not in keys for p in itertools.islice(C.training_stream(0, keys), 5000))
    small = C.held_out(20)
    assert all(p in held for p in small), "held_out(n) is the start of held_out(HELD_OUT_MAX), task by task"
    with pytest.raises(ValueError, match="n_per_task"):
        C.held_out(C.HELD_OUT_MAX + 1)


# ---- the recipe --------------------------------------------------------------------------------------------------


def test_labels_cover_the_answer_only(tiny):
    tok = tiny.tokenizer
    p = C.held_out(1)[0]
    ids, labels = encode(tok, p)
    answer = [t for t, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(answer) == p.answer + "<|im_end|>"
    prompt = tok.apply_chat_template(p.messages(), add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids[: len(ids) - len(answer)]) == prompt, "the prompt is exactly what lab.generate feeds"
    x, y = collate([(ids, labels), (ids[:5], labels[:5])], tok.pad_token_id)
    assert x.shape == y.shape == (2, len(ids)) and (y[1, 5:] == -100).all()


def test_lr_schedule_warms_up_then_decays():
    r = Recipe(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, r) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_a_short_run_is_reproducible_from_the_seed(kind, tiny):
    tok = tiny.tokenizer
    recipe = Recipe(seed=7, steps=3, batch_size=4, warmup=1, sort_pool=2)
    runs = []
    for _ in range(2):
        model = make.init_model(kind, tok, seed=7)
        runs.append(train(model, tok, recipe, progress=False, log_every=1))
    assert runs[0]["loss"] == runs[1]["loss"] and len(runs[0]["loss"]) == 3
    if kind == "tiny-moe":
        assert all(a > 0 for a in runs[0]["aux_loss"]), "the router's load-balancing loss is part of the MoE's loss"
    assert runs[0]["threads"] == recipe.threads
