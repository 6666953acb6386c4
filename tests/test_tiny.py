"""The bundled `tiny` and `tiny-moe`: Qwen2's design, answers measured through `lab.generate`, and the curriculum and
recipe that make them (deterministic, held-out splits without overlap, reproducible training). Seconds, no full run.

Expected answers are computed here from the question's text alone (regexes, Python sets, bisect, int arithmetic), not
taken from the curriculum's own solver, so a bug there cannot hide behind itself.
"""

import bisect
import itertools
import json
import re

import pytest
import torch

from qwen2_lab.loading import bundled_path
from qwen2_lab.tiny import curriculum as C
from qwen2_lab.tiny import evaluate, make
from qwen2_lab.tiny.evaluate import shipped_scores
from qwen2_lab.tiny.train import Recipe, collate, encode, keep_average, lr_at, train, update_average

KINDS = ("tiny", "tiny-moe")


@pytest.fixture(params=KINDS)
def lab(request):
    return request.getfixturevalue({"tiny": "tiny", "tiny-moe": "tiny_moe"}[request.param])  # conftest's, shared


# ---- an independent solver, from the question's text -----------------------------------------------------------


def ints(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def as_set(xs) -> str:
    return "{" + ",".join(map(str, xs)) + "}" if xs else "∅"


def plain(prompt: str) -> str:
    """The question with full-width commas made half-width and spaces removed, as a reader would parse it."""
    return prompt.replace("，", ",").replace(" ", "")


FILTER_COND = re.compile(r"^(?:(-?\d+)([<≤]))?(x\^3|x\^2|\|x\||2x\+1)(?:([<≤>≥])(-?\d+))?$")
CONDITION = re.compile(r"(?:-?\d+[<≤])?(?:x\^3|x\^2|\|x\||2x\+1)(?:[<≤>≥]-?\d+)?")  # wherever it is written


def value(cond: str, v: int) -> int:
    f = FILTER_COND.match(cond).group(3)
    return {"x^3": v**3, "x^2": v * v, "|x|": abs(v), "2x+1": 2 * v + 1}[f]


def holds(cond: str, v: int) -> bool:
    lo, lo_op, _, op, bound = FILTER_COND.match(cond).groups()
    y = value(cond, v)
    compare = {"<": int.__lt__, "≤": int.__le__, ">": int.__gt__, "≥": int.__ge__}
    return (lo is None or compare[lo_op](int(lo), y)) and (op is None or compare[op](y, int(bound)))


def expected_final(task: str, prompt: str) -> str:
    """The final answer as the curriculum writes it, worked out from the question's text alone."""
    text = plain(prompt)
    if task == "intersection":  # the first set written is A, the second B, named or not
        a, b = (ints(group) for group in re.findall(r"\{([^}]*)\}", text)[:2])
        return as_set([v for v in a if v in set(b)])  # in A's order
    if task == "search_range":
        listed = re.search(r"\[([^\]]*\d[^\]]*)\]", text)
        nums = ints(listed.group(1))
        rest = text[: listed.start()] + text[listed.end() :]
        (target,) = set(ints(rest.replace("[-1,-1]", "")))
        lo, hi = bisect.bisect_left(nums, target), bisect.bisect_right(nums, target) - 1  # LeetCode 34 in O(log n)
        return f"[{lo},{hi}]" if lo <= hi else "[-1,-1]"
    if task == "arithmetic":
        x, op, y = re.search(r"(\d+)([+-])(\d+)", text).groups()
        return str(int(x) + int(y) if op == "+" else int(x) - int(y))
    if task == "gaokao_filter":  # as A={x|cond} or in words ("satisfy cond")
        cond = CONDITION.search(text).group(0)
        b = ints(re.search(r"B=\{([^}]*)\}", text).group(1))
        return as_set([v for v in b if holds(cond, v)])
    raise ValueError(task)


# ---- the checkpoints ---------------------------------------------------------------------------------------------


def test_checkpoints_have_qwen2_design(lab):
    cfg, model = lab.model.config, lab.model
    assert cfg.num_hidden_layers == 4 and (cfg.num_attention_heads, cfg.num_key_value_heads) == (8, 2), "GQA 8/2"
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
        assert (cfg.num_experts, cfg.num_experts_per_tok) == (8, 2) and cfg.norm_topk_prob is False
        assert cfg.router_aux_loss_coef == 0.001, "Qwen2-57B-A14B's coefficient"
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
              "intermediate_size", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
              "shared_expert_intermediate_size", "router_aux_loss_coef"):  # fmt: skip
        assert shipped.get(k) == built.get(k), k


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_folder_is_small_and_documented(kind):
    path = bundled_path(kind)
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size <= 20 * 10**6, f"{kind} is {size / 10**6:.1f} MB; the limit is 20 MB"
    card = (path / "README.md").read_text()
    history = json.loads((path / "training.json").read_text())
    assert len(history["loss"]) == len(history["step"]) > 10
    assert history["loss"][-1] < history["loss"][0] / 10, "the loss curve should fall by far more than 10x"
    assert history["cpu_seconds"] <= 45 * 60, "the recipe trains each model in at most 45 minutes of one core"
    results = history["eval"]
    for task, score in results["scores"].items():
        assert f"| {task} | {100 * score:.1f}% |" in card, "the card states the measured scores"
    assert evaluate.slice_table(results) in card, "the card states the measured slices"


def test_tokenizer_splits_digits_and_keeps_chatml(tiny):
    tok = tiny.tokenizer
    pieces = tok.convert_ids_to_tokens(tok.encode("A={3,15,-27}", add_special_tokens=False))
    assert [p for p in pieces if p.isdigit()] == ["3", "1", "5", "2", "7"], pieces
    assert tok.convert_ids_to_tokens(list(range(len(tok) - 3, len(tok)))) == list(make.SPECIAL_TOKENS)
    text = tok.apply_chat_template([{"role": "user", "content": "1+1"}], add_generation_prompt=True, tokenize=False)
    qwen2_chatml = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n1+1<|im_end|>\n"
    assert text == qwen2_chatml + "<|im_start|>assistant\n"  # Qwen2's template, default system prompt included


def test_checkpoints_score_what_their_cards_say(lab):
    """All the held-out problems the card was measured on, again: each task's accuracy within one point of the
    card's (a near tie between two tokens may fall the other way on another CPU), the reserved questions alike."""
    kind = lab.name
    card = json.loads((bundled_path(kind) / "training.json").read_text())["eval"]
    now = evaluate.evaluate(lab.model, lab.tokenizer, card["n_per_task"])
    for task in C.TASKS:
        assert now["scores"][task] == pytest.approx(card["scores"][task], abs=0.01), (kind, task)
        agree, asked = now["agrees_with_walk"][task]
        assert agree / asked == pytest.approx(card["agrees_with_walk"][task][0] / asked, abs=0.01), (kind, task)
    assert [q["right"] for q in now["reserved"]] == [q["right"] for q in card["reserved"]]
    spread, shipped = now["any_element"], card["any_element"]
    assert spread["entropy_bits"] == pytest.approx(shipped["entropy_bits"], abs=0.01)
    assert spread["greedy_valid"] == pytest.approx(shipped["greedy_valid"], abs=0.02)
    assert spread["entropy_bits"] > 1 and spread["candidates"] >= 2, "a real choice, for the sampling lessons"


@pytest.mark.parametrize("task", C.TASKS)
def test_lab_generate_answers_held_out_questions_as_measured(lab, task):
    """The first 12 held-out questions of each task (new numbers, unseen phrasings and range corners) through
    lab.generate, one at a time, checked against the text solver: about as many right as the card's accuracy."""
    problems = [p for p in C.held_out(12) if p.task == task]
    assert {p.split for p in problems} == {"numbers", "phrasing", "corner"}
    right = sum(C.final(lab.generate(p.messages(), max_new_tokens=128)) == expected_final(task, p.prompt)
                for p in problems)  # fmt: skip
    measured = shipped_scores(lab.name)[task]
    assert right >= 12 * measured - 3, f"{lab.name} got {right}/12 {task} right; its card says {measured:.0%}"


def test_both_answer_the_launchs_gaokao_question(lab):
    """The launch's gaokao set question, never trained on, word for word: -1 and 0 are the only x with -5<x^3<5."""
    p = next(p for p in C.reserved_problems() if p.task == "gaokao_filter")
    reply = lab.generate(p.messages(), max_new_tokens=128)
    assert C.final(reply) == expected_final(p.task, p.prompt) == "{-1,0}", (lab.name, reply)


# ---- the curriculum ----------------------------------------------------------------------------------------------


def test_curriculum_is_deterministic_and_varied():
    first = list(itertools.islice(C.training_stream(3, set()), 400))
    again = list(itertools.islice(C.training_stream(3, set()), 400))
    other = list(itertools.islice(C.training_stream(4, set()), 400))
    assert first == again and first != other
    assert {p.task for p in first} == set(C.DRAW) == {*C.TASKS, C.ANY_ELEMENT} and {p.lang for p in first} == {
        "zh",
        "en",
    }
    assert any(" = " in p.prompt for p in first) and any(" ∩ " in p.prompt for p in first), "spaces around symbols"
    assert sum(" = " in p.prompt for p in first) < len(first) / 4, "but mostly typed tight"
    sets = [p for p in first if p.task == "intersection"]
    assert any("，" in p.prompt for p in sets) and any(", " in p.prompt for p in sets), "punctuation as people type"
    assert any(list(p.key[1]) != sorted(p.key[1]) for p in sets), "unsorted sets too"
    assert any(C.final(p.answer) == "∅" for p in sets), "the empty set too"
    numbers = [v for p in sets for v in p.key[1] + p.key[2]]
    assert min(numbers) == -20 and max(numbers) == 20
    assert max(len(p.key[1]) for p in sets) == 8 and min(len(p.key[1]) for p in sets) == 1
    sums = [p for p in first if p.task == "arithmetic"]
    assert any(p.key[1] >= 1000 for p in sums) and any(C.final(p.answer).startswith("-") for p in sums)
    assert {p.key[1] for p in first if p.task == "gaokao_filter"} == set(C.FUNCS)


def template_pattern(template: str) -> re.Pattern:
    """A template as a regex: placeholders match anything, punctuation either width, spaces around a symbol or not,
    the gaokao blank optional."""
    out = []
    for piece in re.split(r"(\{\{x\|\{cond\}\}\}|\{[a-z]+\})", template):
        if piece.startswith("{"):
            out.append(".+")
            continue
        for ch in piece:
            pair = {**C.HALF_TO_FULL, **C.FULL_TO_HALF}.get(ch)
            out.append(f"[{re.escape(ch)}{re.escape(pair)}]" if pair else re.escape(ch))
            out[-1] = rf"\s*{out[-1]}\s*" if ch in C.SPACED else out[-1]
    return re.compile("".join(out) + r"\s*(\(\)|（ ）)?")


def test_held_out_phrasings_are_never_trained_on():
    held_templates = [template_pattern(t) for task in C.TASKS for lang in ("zh", "en")
                      for t in C.TEMPLATES[task][lang][-C.HELD_OUT_TEMPLATES :]]  # fmt: skip
    for task in C.TASKS:
        for lang in ("zh", "en"):
            assert len(C.TEMPLATES[task][lang]) - C.HELD_OUT_TEMPLATES >= 8, "at least 8 trained phrasings each"
            trained = C.trained_templates(task, lang)
            assert len(set(trained)) >= 20, "many more made from statements and questions"
            assert not [t for t in trained for word in C.HELD_OUT_WORDS[task] if word in t], "no held-out word"
            assert all(word in " ".join(C.TEMPLATES[task]["zh"][-2:] + C.TEMPLATES[task]["en"][-2:])
                       for word in C.HELD_OUT_WORDS[task])  # fmt: skip
    trained = list(itertools.islice(C.training_stream(0, set()), 3000))
    assert not [p.prompt for p in trained if any(t.fullmatch(p.prompt) for t in held_templates)]
    phrasing = [p for p in C.held_out(200) if p.split == "phrasing"]
    assert phrasing and all(any(t.fullmatch(p.prompt) for t in held_templates) for p in phrasing)


def test_range_corners_are_never_trained_on():
    assert C.is_corner(("intersection", (5,), (-5,))) and C.is_corner(
        ("intersection", tuple(range(8)), tuple(range(8)))
    )
    assert not C.is_corner(("intersection", (5,), (-5, 3)))
    assert C.is_corner(("search_range", (-20, 3, 50), 3)) and C.is_corner(("search_range", (-20, 50), 7))
    assert not C.is_corner(("search_range", (-20, 3, 49), 3)) and not C.is_corner(("search_range", (-19, 50), 3))
    assert not C.is_corner(("search_range", tuple(range(12)), 10))
    assert C.is_corner(("arithmetic", 3, "-", 5678)) and C.is_corner(("arithmetic", 1234, "+", 5678))
    assert not C.is_corner(("arithmetic", 1234, "-", 5678)) and not C.is_corner(("arithmetic", 3, "+", 5678))
    assert C.is_corner(("gaokao_filter", "x^2", None, True, 9, True, (-6, 0, 6)))
    assert not any(C.is_corner(p.key) for p in itertools.islice(C.training_stream(1, set()), 5000))
    corners = [p for p in C.held_out(200) if p.split == "corner"]
    assert len(corners) == 50 * len(C.TASKS) and all(C.is_corner(p.key) for p in corners)


def test_answers_match_an_independent_solver():
    problems = list(itertools.islice(C.training_stream(5, set()), 600)) + C.held_out(50) + C.reserved_problems()
    for p in problems:
        if p.task == C.ANY_ELEMENT:  # any element is right: the one trained on is one of them
            assert int(C.final(p.answer)) in ints(re.search(r"\{([^}]*)\}", plain(p.prompt)).group(1)), p
            continue
        assert C.final(p.answer) == expected_final(p.task, p.prompt), p


def test_any_element_is_trained_on_every_element_alike():
    """The answer names one element drawn uniformly: over many questions, the first and the last element of a set
    are named about equally often; any element is right, nothing else is."""
    problems = [p for p in itertools.islice(C.training_stream(2, set()), 12000) if p.task == C.ANY_ELEMENT]
    position = [p.key[1].index(int(p.answer)) / (len(p.key[1]) - 1) for p in problems]  # 0: first, 1: last
    assert len(problems) > 400
    assert abs(sum(v == 0 for v in position) - sum(v == 1 for v in position)) < 0.25 * sum(v == 0 for v in position)
    p = problems[0]
    assert all(p.is_correct(f"{v}") for v in p.key[1]) and not p.is_correct(f"{max(p.key[1]) + 1}")
    assert not p.is_correct("")


def test_the_final_answer_is_checked_against_the_replys_own_work():
    """evaluate.agrees_with_walk reads the answer a reply's own work implies: the reference answers agree with
    theirs; a final line contradicting the walk (18∈B,4∉B,-4∉B then {18,-4}) does not, right or wrong."""
    problems = C.held_out(40) + C.beyond(10)
    assert all(evaluate.agrees_with_walk(p, p.answer) for p in problems)
    p = C.Problem("intersection", "en", "", "", ("intersection", (18, 4, -4), (18, 7)))
    assert not evaluate.agrees_with_walk(p, "18∈B,4∉B,-4∉B\nA∩B={18,-4}")
    assert evaluate.agrees_with_walk(p, "18∈B,4∉B,-4∈B\nA∩B={18,-4}")  # wrong, but as its walk says
    for p in problems:
        work, last = p.answer.rsplit("\n", 1)
        changed = last[:-1] + ("1" if last[-1] != "1" else "2") + last[-1:] if p.task != "arithmetic" else last + "1"
        assert not evaluate.agrees_with_walk(p, work + "\n" + changed), (p.answer, changed)
        assert not evaluate.agrees_with_walk(p, last), "no work: nothing to agree with"


def test_worked_steps_are_right():
    """Every column of the arithmetic, every step of the walks, checked against the numbers."""
    for p in itertools.islice(C.training_stream(6, set()), 600):
        work = p.answer.splitlines()[:-1]
        if p.task == "arithmetic":
            _, x, op, y = p.key
            assert work[0].startswith(f"{x}{op}{y}:") and (len(work) == 1 or work[1].startswith(f"-({y}-{x}):"))
            w = max(4, len(str(x)), len(str(y)))  # the same columns whatever the operands' lengths, a sum's carry too
            assert [len(line.split(",")) for line in work] == [w + (op == "+")] + [w] * (len(work) - 1)
            passes = [(x, op, y, work[0].split(":")[1])] + (
                [(y, "-", x, work[1].split(":")[1])] if len(work) == 2 else []
            )
            assert (len(work) == 2) == (op == "-" and x < y)
            for a_num, sign, b_num, line in passes:
                carry = 0
                for i, col in enumerate(line.split(",")):
                    a, b, c, d = (int(v) for v in re.findall(r"\d", col))
                    assert (a, b, c) == (a_num // 10**i % 10, b_num // 10**i % 10, carry), (p.prompt, col)
                    v = a + b + c if sign == "+" else a - b - c
                    assert d == v % 10
                    carry = int(v >= 10) if sign == "+" else int(v < 0)
                assert carry == (sign == "-" and a_num < b_num)
        if p.task == "search_range":
            nums, t = p.key[1], p.key[2]
            assert work[0].startswith(f"target={t}:")
            steps = re.findall(r"(\d+):(-?\d+)([<=>])", work[0].split(":", 1)[1])
            assert [int(i) for i, _, _ in steps] == list(range(len(steps)))
            for i, v, sign in steps:
                assert nums[int(i)] == int(v) and sign == "<=>"[(int(v) > t) - (int(v) < t) + 1]
            assert steps[-1][2] == ">" or len(steps) == len(nums)
        if p.task == "intersection":
            a, b = p.key[1], p.key[2]
            assert work[0] == ",".join(f"{v}{'∈' if v in b else '∉'}B" for v in a)
        if p.task == "gaokao_filter":
            cond = CONDITION.search(plain(p.prompt)).group(0)
            steps = re.findall(r"(-?\d+):([-\d<=>]+)([✓✗])", work[0])
            assert [int(v) for v, _, _ in steps] == list(p.key[6])
            for v, chain, mark in steps:
                numbers, relations = ints(chain), re.findall(r"(?<=\d)[<=>]", chain)
                assert value(cond, int(v)) in numbers and set(numbers) - {value(cond, int(v))} <= set(ints(cond))
                assert all(relation == "<=>"[(a > b) - (a < b) + 1] for a, b, relation in
                           zip(numbers, numbers[1:], relations)), chain  # fmt: skip
                assert (mark == "✓") == holds(cond, int(v))


def test_held_out_never_overlaps_training():
    held = C.held_out(C.HELD_OUT_MAX)
    keys = {p.key for p in held}
    assert len(keys) == len(held) == C.HELD_OUT_MAX * len(C.TASKS)
    assert not keys & C.RESERVED
    assert all(
        p.key not in keys and p.key not in C.RESERVED for p in itertools.islice(C.training_stream(0, keys), 5000)
    )
    small = C.held_out(20)
    assert all(p in held for p in small), "held_out(n) is the start of held_out(HELD_OUT_MAX), task by task"
    with pytest.raises(ValueError, match="n_per_task"):
        C.held_out(C.HELD_OUT_MAX + 1)


def test_validation_is_fresh_problems_in_trained_phrasings(capsys):
    """What runs are chosen on: never a problem the cards report (held out, reserved), never a corner or an unseen
    phrasing; and the shipped `tiny` does on it what it does on the held-out problems of the same kind."""
    val = C.validation(30)
    held = {p.key for p in C.held_out(C.HELD_OUT_MAX)}
    assert len({p.key for p in val}) == len(val) == 30 * len(C.TASKS)
    assert not {p.key for p in val} & (held | C.RESERVED)
    assert all(p.split == "train" and not C.is_corner(p.key) for p in val)
    words = [w for ws in C.HELD_OUT_WORDS.values() for w in ws]
    assert not [p.prompt for p in val if any(w in p.prompt for w in words)]
    assert all(p in val for p in C.validation(10)), "validation(n) is the start of validation(m), task by task"
    evaluate.main(["tiny", "--validation", "10"])
    share = float(re.search(r"tiny: validation ([\d.]+)%", capsys.readouterr().out).group(1))
    card = json.loads((bundled_path("tiny") / "training.json").read_text())["eval"]["slices"]
    numbers = sum(card[t]["numbers"][0] for t in C.TASKS) / sum(card[t]["numbers"][1] for t in C.TASKS)
    assert share >= 100 * numbers - 15, (share, numbers)  # 40 problems: within a few misses of the card's slice


def test_slices_sort_the_held_out_problems():
    held = C.held_out(40)
    assert {s for p in held for s in C.slices(p)} == set(C.SLICES)
    counts = evaluate.score(held, [p.answer for p in held])  # the reference answers score 100% on every slice
    assert all(right == asked for task in counts.values() for right, asked in task.values())
    assert counts["arithmetic"]["all"] == [40, 40] and counts["arithmetic"]["numbers"][1] == 20


def test_example_prompts_are_held_out_or_reserved():
    examples = C.example_prompts(n_per_task=2)
    held = {p.prompt for p in C.held_out(50)} | {p.prompt for p in C.reserved_problems()}
    assert examples[0][0] == "已知集合A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=()"
    assert len(examples) == 1 + 2 * 2 * len(C.TASKS) + 1 and all(prompt in held for prompt, _ in examples[:-1])
    assert examples[-1] == (C.ANY_ELEMENT_EXAMPLE.prompt, C.ANY_ELEMENT_LABEL)  # many right answers: for sampling


@pytest.mark.parametrize("kind", ["tiny", "tiny-moe"])
def test_each_checkpoint_ships_the_demos_examples_with_their_answers(kind):
    """examples.json is what `qwen2_lab.tiny.shipped.make` writes (the demo reads it instead of regenerating), and
    each answer is the right one: its final answer is the problem's, computed from the held-out problem."""
    from qwen2_lab.tiny import shipped as examples

    shipped = examples.read(bundled_path(kind))
    assert shipped == examples.make() and [(e["prompt"], e["label"]) for e in shipped] == C.example_prompts()
    problems = {p.prompt: p for p in C.held_out(50) + C.reserved_problems() + [C.ANY_ELEMENT_EXAMPLE]}
    assert shipped[-1]["any_of"] == ["3", "5", "7", "9"] and all(examples.is_right(v, shipped[-1]) for v in "3579")
    for e in shipped:
        assert problems[e["prompt"]].is_correct(e["answer"]) and examples.is_right(e["answer"], e)
        assert not examples.is_right(e["answer"] + "\nA∩B={99}", e)


# ---- the recipe --------------------------------------------------------------------------------------------------


def test_labels_cover_the_answer_only(tiny):
    tok = tiny.tokenizer
    p = C.held_out(1)[0]
    ids, labels = encode(tok, p)
    answer = [t for t, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(answer) == p.answer + "<|im_end|>"
    prompt = tok.apply_chat_template(p.messages(), add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids[: len(ids) - len(answer)]) == prompt, "the prompt is exactly what lab.generate feeds"
    x, y, mask = collate([(ids, labels), (ids[:5], labels[:5])], tok.pad_token_id)
    assert x.shape == y.shape == mask.shape == (2, len(ids)) and (y[1, 5:] == -100).all()
    assert mask[0].all() and mask[1, :5].all() and not mask[1, 5:].any()


def test_load_balancing_loss_leaves_pads_out(tiny_moe):
    """The MoE's aux loss, as the recipe calls the model, equals E * sum_e f_e * P_e over the real tokens only."""
    from transformers.models.qwen2_moe.modeling_qwen2_moe import load_balancing_loss_func

    model, tok = tiny_moe.model, tiny_moe.tokenizer
    pairs = [encode(tok, p) for p in C.held_out(2)[:2]]
    ids, labels, mask = collate([pairs[0], (pairs[1][0][:9], pairs[1][1][:9])], tok.pad_token_id)  # (2, S)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    real = mask.reshape(-1).bool()  # (2*S,)
    by_hand = load_balancing_loss_func(tuple(g[real] for g in out.router_logits), 8, 2)  # real rows only
    with_pads = load_balancing_loss_func(out.router_logits, 8, 2)
    torch.testing.assert_close(out.aux_loss, by_hand)
    assert not torch.isclose(out.aux_loss, with_pads), "the pads would have counted"


def test_lr_schedule_warms_up_then_decays():
    r = Recipe(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, r) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_the_kept_weights_are_the_mean_of_the_steps_weighted_by_the_decay():
    layer, average, after = torch.nn.Linear(3, 2), None, []
    for _ in range(6):
        with torch.no_grad():
            layer.weight.add_(torch.randn(2, 3))
        after.append(layer.weight.detach().clone())
        average = update_average(average, layer, 0.7)
    keep_average(layer, average, 0.7)
    w = [0.7 ** (5 - i) for i in range(6)]  # k steps ago weighs 0.7**k, whatever the run's length
    torch.testing.assert_close(layer.weight, sum(wi * a for wi, a in zip(w, after)) / sum(w))


def test_averaging_changes_the_kept_weights_not_the_training(tiny):
    tok, runs, weights = tiny.tokenizer, [], []
    for ema in (None, 0.9):
        model = make.init_model("tiny", tok, seed=7)
        runs.append(train(model, tok, Recipe(seed=7, steps=6, batch_size=4, warmup=1, sort_pool=2, ema=ema),
                          progress=False, log_every=1))  # fmt: skip
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert runs[0]["loss"] == runs[1]["loss"], "the same steps, the same losses"
    assert not torch.allclose(weights[0], weights[1]), "but the average of the last three steps is kept"


@pytest.mark.parametrize("kind", KINDS)
def test_a_short_run_is_reproducible_from_the_seed(kind, tiny, capsys):
    tok = tiny.tokenizer
    recipe = Recipe(seed=7, steps=4, batch_size=4, warmup=1, sort_pool=2)
    runs, weights = [], []
    for _ in range(2):
        model = make.init_model(kind, tok, seed=7)
        runs.append(train(model, tok, recipe, progress=True, log_every=1))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert runs[0]["loss"] == runs[1]["loss"] and len(runs[0]["loss"]) == 4
    assert torch.equal(weights[0], weights[1]), "bitwise the same weights"
    if kind == "tiny-moe":
        assert all(a > 0 for a in runs[0]["aux_loss"]), "the router's load-balancing loss is part of the MoE's loss"
    assert runs[0]["threads"] == recipe.threads
    lines = capsys.readouterr().out.splitlines()
    assert 0 < len(lines) <= 2 * 10 and lines[-1].startswith("step 4/4"), "a few plain progress lines, no bar"
