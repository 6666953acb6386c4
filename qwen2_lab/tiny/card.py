"""The model card (README.md) written into each bundled checkpoint folder, from what was measured."""

from __future__ import annotations

from ..arch import arch_of
from .curriculum import ANY_ELEMENT, HELD_OUT_TEMPLATES, MIX, TASKS, trained_templates
from .evaluate import slice_table

LIMITS = """\
- It knows only the tasks above, within their ranges: set elements from -20 to 20 (1 to 8 per set), sorted
  lists of 1 to 12 integers from -20 to 50, operands of 1 to 4 digits, B of 3 to 6 integers from -6 to 6 against
  x^3, x^2, |x| or 2x+1. Just beyond them (set elements up to ±60, lists of 13 to 16, a 5-digit operand, B up to
  ±9) it scores what the table's last row says; further out, and on anything else (chat, other questions), it was
  never trained and answers with the same confidence.
- It needs its worked steps (the walk, the columns): the bare answer was never trained. The scores by slice above
  are what to expect; a phrasing far from the ones it was trained on can fail even on numbers it handles, and words
  it never saw can make it take one kind of problem for another.
- It is a toy for looking inside (attention, routing, the residual stream), not a model to use."""


def front_matter(moe: bool) -> list[str]:
    """The Hugging Face model card's YAML header."""
    tags = f"[qwen2{', qwen2_moe' if moe else ''}, toy, qwen2-lab]"
    return ["---", "license: apache-2.0", "language: [zh, en]", "library_name: transformers",
            "pipeline_tag: text-generation", f"tags: {tags}", "---", ""]  # fmt: skip


def model_card(kind: str, config, history: dict | None, results: dict | None, sizes_mib: float) -> str:
    """The README.md text for checkpoint `kind`: what it is, how it was trained, its scores and its limits."""
    a = arch_of(config, kind)
    moe = a.n_experts > 0
    lines = front_matter(moe) + [
        f"# `{kind}`: a {a.total_params / 1e6:.2f}M-parameter {'Qwen2-MoE' if moe else 'Qwen2'} trained from scratch "
        "on a gaokao-style toy curriculum",
        "",
        "Bundled with Qwen2 Lab so that notebooks, tests and the demo run offline and show trained structure (heads "
        "that find the matching element, experts that prefer digits or words) instead of random noise. Load it with "
        f"`qwen2_lab.load({kind!r})` or `transformers.AutoModelForCausalLM.from_pretrained(<this folder>)`.",
        "",
        "## Architecture",
        "",
        "| field | value |",
        "|---|---|",
        f"| layers / hidden | {a.n_layers} / {a.hidden} |",
        f"| query heads / KV heads (GQA) | {a.n_heads} / {a.n_kv_heads} ({a.group_size} query heads per KV head), "
        f"head_dim {a.head_dim} |",
        "| QKV bias | yes (Qwen2's) |",
        f"| RoPE theta | {a.rope_theta:,.0f} |",
    ]
    if moe:
        lines += [
            f"| MoE | {a.n_experts} experts of width {a.moe_intermediate}, top-{a.top_k}, norm_topk_prob "
            f"{str(a.norm_topk_prob).lower()}, shared expert of width {a.shared_intermediate} with a sigmoid gate, "
            f"every layer |",
            f"| router aux loss coefficient | {config.router_aux_loss_coef} |",
        ]
    else:
        lines.append(f"| MLP (SwiGLU) width | {a.intermediate} |")
    lines += [
        f"| vocabulary | {config.vocab_size} rows (a byte-level BPE trained on the curriculum, Qwen2's regex, "
        "digits one by one, `<|endoftext|>` `<|im_start|>` `<|im_end|>`, ChatML template) |",
        f"| tied embeddings | {str(a.tied_embeddings).lower()} |",
        f"| parameters | {a.total_params:,} ({a.active_params:,} active per token) |",
        f"| checkpoint | {str(getattr(config, 'dtype', None) or 'float32').replace('torch.', '')}, {sizes_mib:.1f} MiB |",
    ]
    lines += data_section((history or {}).get("recipe", {}).get("mix") or MIX)
    lines += training_section(history) + scores_section(kind, results)
    lines += ["", "## What it cannot do", "", LIMITS, "", "## Reproduce", "", "```",
              f"python -m qwen2_lab.tiny.make --only {kind}   # tokenizer, training, evaluation, this card",
              f"python -m qwen2_lab.tiny.evaluate {kind}", "```", ""]  # fmt: skip
    return "\n".join(lines)


def data_section(mix: dict) -> list[str]:
    """The card's "Training data" lines: the curriculum, its phrasings and mix, what is held out, an example each."""
    n_trained = {t: sum(len(set(trained_templates(t, lang))) for lang in ("zh", "en")) for t in TASKS}
    lines = [
        "",
        "## Training data",
        "",
        "A seeded synthetic curriculum (`qwen2_lab/tiny/curriculum.py`) in ChatML, half Chinese and half English, "
        "with this many trained phrasings per task, both languages together: "
        + ", ".join(f"{t} {n}" for t, n in n_trained.items())
        + "; full-width and half-width punctuation mixed, spaces after commas and around symbols or not; the loss is "
        "on the assistant's answer only. Task mix: "
        + ", ".join(f"{t} {100 * share:.0f}%" for t, share in mix.items())
        + f" ({ANY_ELEMENT}: `Name any element of A={{3,5,9}}.`, answered with one element drawn at random, so that "
        "the model learns a choice with many right answers). Held out and never trained on: 1,000 problems per "
        f"task, in three splits (new numbers in the trained phrasings; {HELD_OUT_TEMPLATES} more phrasings per "
        "language and task, whose telling words no trained phrasing uses; the corners of the number ranges, "
        "`curriculum.is_corner`), and the launch's gaokao question and the README's examples.",
        "",
        "| task | example question | answer |",
        "|---|---|---|",
    ]
    return lines + [f"| {t} | {q} | {ans} |" for t, q, ans in examples()]


def training_section(history: dict | None) -> list[str]:
    """The card's "Training" lines: the recipe, the time it took, the loss (none without a training history)."""
    lines: list[str] = []
    if history:
        r = history["recipe"]
        lines += [
            "",
            "## Training",
            "",
            f"{history['steps_done']} steps of {r['batch_size']} problems, AdamW (lr {r['lr']:g}, betas "
            f"{tuple(r['betas'])}, weight decay {r['weight_decay']}), {r['warmup']} warmup steps then cosine to "
            f"{r['min_lr_ratio']:g} x lr, gradient clipping {r['clip']}, {average_text(r)}seed {r['seed']}, "
            f"{history['threads']} CPU thread(s): **{history['cpu_seconds'] / 60:.1f} minutes of CPU** "
            f"({history['seconds'] / 60:.1f} minutes wall on a 2-core CPU shared with other work: load average "
            f"{load_text(history)}). Loss {history['loss'][0]:.3f} (first {history['step'][0]} steps) -> "
            f"{history['loss'][-1]:.3f} (last). "
            "The loss curve is in `training.json` (`step`, `loss`, `lm_loss`, `aux_loss`, `lr`).",
        ]
    return lines


def average_text(recipe: dict) -> str:
    """How the kept weights were made: the moving average the recipe names, or none (the last step's weights)."""
    if recipe.get("ema") is None:
        return ""
    return f"weights averaged over the last {1 - recipe['ema_from']:.0%} of the steps (decay {recipe['ema']:g}), "


def scores_section(kind: str, results: dict | None) -> list[str]:
    """The card's "Scores" lines: per task, by slice, and the reserved questions word for word."""
    lines: list[str] = []
    if results:
        agree = results.get("agrees_with_walk") or {}
        lines += [
            "",
            "## Scores",
            "",
            "| task | exact match | final answer agrees with its own work |",
            "|---|---:|---:|",
        ]
        lines += [f"| {t} | {100 * results['scores'][t]:.1f}% | {cell_share(*agree[t]) if t in agree else '-'} |"
                  for t in TASKS]  # fmt: skip
        lines += [
            "",
            f"Greedy decoding, {results['n_per_task']} held-out problems per task, the final answer compared with the "
            "one computed from the problem; the last column compares it with the answer the reply's own work implies "
            "(its marks, its equal indices, its columns), right or wrong. By slice (accuracy, and how many problems "
            "were asked):",
            "",
            slice_table(results),
            "",
            f"Re-run: `python -m qwen2_lab.tiny.evaluate {kind}`.",
        ]
        lines += any_element_lines(results.get("any_element"))
        lines += [
            "",
            "The launch's gaokao question and the README's examples, word for word (kept out of training for every "
            "random seed):",
            "",
            "| question | reply | |",
            "|---|---|---|",
        ]
        lines += [f"| {cell(q['prompt'])} | {cell(q['reply'])} | {'right' if q['right'] else 'wrong: ' + cell(q['expected'])} |"
                  for q in results.get("reserved", [])]  # fmt: skip
    return lines


def cell_share(right: int, asked: int) -> str:
    return f"{100 * right / asked:.1f}% ({right}/{asked})" if asked else "-"


def any_element_lines(measured: dict | None) -> list[str]:
    """The card's lines on the questions with many right answers (evaluate.any_element)."""
    if not measured:
        return []
    return [
        "",
        f"A question with many right answers ({ANY_ELEMENT}, {measured['n']} questions like `Name any element of "
        f"A={{3,5,9}}.`): {100 * measured['greedy_valid']:.0f}% of greedy replies name an element of the set; at the "
        f"answer's first token the model spreads its probability with an entropy of {measured['entropy_bits']:.2f} "
        f"bits on average, {measured['candidates']:.1f} candidates above {100 * measured['candidates_over']:.0f}% "
        "each: a real distribution for the sampling lessons to show.",
    ]


def load_text(history: dict) -> str:
    """The machine's load average before and after training, as recorded (2 = both cores busy)."""
    before, after = history.get("load") or (None, None)
    return "not recorded" if before is None else f"{before:g} before, {after:g} after"


def cell(text: str) -> str:
    """Text for a markdown table cell: pipes escaped, newlines as <br>."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def examples() -> list[tuple[str, str, str]]:
    """One held-out problem per task, for the card: (task, question, answer), as table cells."""
    from .curriculum import held_out

    seen, out = set(), []
    for p in held_out(5):
        if p.task not in seen:
            seen.add(p.task)
            out.append((p.task, cell(p.prompt), cell(p.answer)))
    return out
