"""Make the bundled checkpoints `tiny` (dense Qwen2) and `tiny-moe` (Qwen2-MoE), deterministically, from random seeds.

    python -m qwen2_lab.tiny.make                       # tokenizer, then both models trained, evaluated, carded
    python -m qwen2_lab.tiny.make --only tiny           # one of them (the tokenizer is rebuilt, identically)
    python -m qwen2_lab.tiny.make --steps 100 --out DIR # a short run somewhere else
    python -m qwen2_lab.tiny.make --random              # untrained, seeded random weights (seconds)
    python -m qwen2_lab.tiny.make --seed 3              # everything (tokenizer, weights, problems) from random seed 3
    python -m qwen2_lab.tiny.make --card-only           # rewrite each README.md from its training.json
    python -m qwen2_lab.tiny.make --eval-only           # score them again (nothing retrained), then rewrite cards

Each is a real Hugging Face checkpoint folder (config.json, model.safetensors, generation_config.json, tokenizer
files, README.md model card, training.json with the loss curve and the scores) loaded by the same `from_pretrained`
as a hub model. They are small but keep Qwen2's design: several query heads per KV head, QKV bias, RoPE theta 1e6,
tied embeddings (dense, like 0.5B/1.5B); for the MoE, experts with top-k > 1, a shared expert with its sigmoid gate,
norm_topk_prob false, untied embeddings (like 57B-A14B).

The curriculum is `curriculum.py`, the recipe `train.py`, the evaluation `evaluate.py`, the model card `card.py`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from pathlib import Path

from ..facts import CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, PRETOKENIZE_REGEX, SPECIAL_TOKENS, chatml
from .curriculum import HELD_OUT_MAX, MOE_MIX, held_out, training_stream

HERE = Path(__file__).parent
SEED = 0  # the tokenizer's corpus
SEEDS = {"tiny": 0, "tiny-moe": 2}  # each model's weights and problems: one model's can change, the other kept
# (runs of another seed are compared with `python -m qwen2_lab.tiny.evaluate --validation`, not on the held-out)
KINDS = ("tiny", "tiny-moe")
STEPS = {"tiny": 15_500, "tiny-moe": 13_000}  # about 42 minutes of one core each (an MoE step costs 1.2x)
MIXES = {"tiny": None, "tiny-moe": MOE_MIX}  # the share of each task in training (None: curriculum.MIX)

VOCAB_SIZE = 1024  # BPE merges stop short of this on the curriculum: every frequent word is already one token

COMMON = dict(
    hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, intermediate_size=384,
    rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=2048, hidden_act="silu", use_sliding_window=False,
    initializer_range=0.02,
)  # fmt: skip
MOE = dict(
    num_experts=8, num_experts_per_tok=2, moe_intermediate_size=80, shared_expert_intermediate_size=160,
    norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], router_aux_loss_coef=0.001,
)  # fmt: skip


def corpus(n: int = 4000, seed: int = SEED) -> list[str]:
    """The tokenizer's training text: `n` training chats exactly as ChatML renders them, cut at the special tokens
    (which are added whole and never merged with their neighbours). Nothing held out or reserved is in it: the
    held-out phrasings and the launch's question are tokenized with merges learned from other text."""
    exclude = {p.key for p in held_out(HELD_OUT_MAX)}
    special = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    turns = []  # every chat with its system turn written out: one render gives each chat's text, one after another
    for p in itertools.islice(training_stream(seed, exclude), n):
        turns += [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *p.messages(with_answer=True)]
    return [piece for piece in special.split(chatml(turns, add_generation_prompt=False)) if piece]


def build_tokenizer(lines: list[str], vocab_size: int = VOCAB_SIZE):
    """Byte-level BPE with Qwen2's regex split, trained on `lines`; the three special tokens come last, as in Qwen2."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=COMMON["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )


def build_config(kind: str, tokenizer):
    """The HF config of `tiny` or `tiny-moe`; the embedding is padded to a multiple of 64 rows, as Qwen2 pads."""
    from transformers import Qwen2Config, Qwen2MoeConfig

    vocab = -(-len(tokenizer) // 64) * 64
    ids = dict(
        vocab_size=vocab,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    if kind == "tiny":
        return Qwen2Config(**COMMON, **ids, tie_word_embeddings=True)
    if kind == "tiny-moe":
        return Qwen2MoeConfig(**COMMON, **MOE, **ids, tie_word_embeddings=False, qkv_bias=True)
    raise ValueError(f"unknown kind {kind!r}: one of {KINDS}")


def init_model(kind: str, tokenizer, seed: int = SEED):
    """A freshly initialised (seeded) float32 model of `kind`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(build_config(kind, tokenizer), dtype=torch.float32)


def save(model, tokenizer, out: Path, kind: str, history: dict | None = None, results: dict | None = None) -> Path:
    """Write the checkpoint folder: weights, configs, tokenizer, training.json (if trained), the web demo's examples
    and the model card."""
    from transformers import GenerationConfig

    from . import shipped
    from .card import model_card

    config = model.config
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, config.pad_token_id],
        pad_token_id=config.pad_token_id,
        do_sample=False,
        max_new_tokens=128,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if history is not None:
        (out / "training.json").write_text(json.dumps({**history, "eval": results}, ensure_ascii=False, indent=1))
    shipped.write(out)
    size = sum(f.stat().st_size for f in out.iterdir() if f.name != "README.md") / 2**20
    (out / "README.md").write_text(model_card(kind, config, history, results, size))
    return out


def rewrite_card(out: Path, kind: str) -> Path:
    """Rewrite a trained checkpoint's README.md from its config.json and training.json (nothing is retrained)."""
    from transformers import AutoConfig

    from .card import model_card

    run = json.loads((out / "training.json").read_text())
    results = run.pop("eval")
    size = sum(f.stat().st_size for f in out.iterdir() if f.name != "README.md") / 2**20
    (out / "README.md").write_text(model_card(kind, AutoConfig.from_pretrained(out), run, results, size))
    return out / "README.md"


def reevaluate(out: Path, kind: str, eval_n: int = 300, n_beyond: int = 50) -> Path:
    """Score a trained checkpoint again (after the evaluation changed: nothing is retrained), store the scores in its
    training.json and rewrite its card."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .evaluate import evaluate

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    run = json.loads((out / "training.json").read_text())
    run["eval"] = evaluate(model, AutoTokenizer.from_pretrained(out), eval_n, n_beyond)
    (out / "training.json").write_text(json.dumps(run, ensure_ascii=False, indent=1))
    return rewrite_card(out, kind)


def make(kind: str, out: Path, seed: int | None = None, tokenizer=None, *, train: bool = True, steps: int | None = None,
         minutes: float | None = None, eval_n: int = 300, n_beyond: int = 50, progress: bool = True) -> Path:  # fmt: skip
    """Build checkpoint `kind` into `out`: train it with the recipe (or leave it random), evaluate it, card it.
    seed: its weights' and problems' random seed (default SEEDS[kind]); the tokenizer, if not given, from SEED."""
    from .evaluate import evaluate
    from .train import Recipe
    from .train import train as train_model

    seed = SEEDS[kind] if seed is None else seed
    tokenizer = tokenizer or build_tokenizer(corpus(seed=SEED))
    model = init_model(kind, tokenizer, seed)
    history = results = None
    if train:
        recipe = Recipe(seed=seed, steps=steps or STEPS[kind], mix=MIXES[kind])
        history = train_model(model, tokenizer, recipe, minutes=minutes, progress=progress)
        if eval_n:
            results = evaluate(model, tokenizer, eval_n, n_beyond)
    return save(model, tokenizer, out, kind, history, results)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write tiny/ and tiny-moe/ into")
    ap.add_argument(
        "--seed",
        type=int,
        help=f"one random seed for everything (default: {SEED} for the tokenizer, then each model's own: {SEEDS})",
    )
    ap.add_argument("--only", choices=KINDS, help="make just this one")
    ap.add_argument("--random", action="store_true", help="skip training: seeded random weights")
    ap.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    ap.add_argument("--minutes", type=float, help="stop training after this many minutes (the card says so)")
    ap.add_argument("--eval-n", type=int, default=300, help="held-out problems per task to score (0: skip)")
    ap.add_argument("--beyond", type=int, default=50, help="problems per task beyond the trained ranges to score")
    ap.add_argument("--card-only", action="store_true", help="only rewrite README.md from training.json")
    ap.add_argument("--eval-only", action="store_true", help="only score the checkpoint again, then rewrite README.md")
    args = ap.parse_args(argv)
    if args.card_only or args.eval_only:
        for kind in [args.only] if args.only else KINDS:
            folder = args.out / kind
            card = reevaluate(folder, kind, args.eval_n, args.beyond) if args.eval_only else rewrite_card(folder, kind)
            print(f"{kind}: {card}")
        return
    t0 = time.time()
    tokenizer = build_tokenizer(corpus(seed=SEED if args.seed is None else args.seed))
    print(f"tokenizer: {len(tokenizer)} tokens ({time.time() - t0:.1f} s)")
    for kind in [args.only] if args.only else KINDS:
        path = make(kind, args.out / kind, args.seed, tokenizer, train=not args.random, steps=args.steps,
                    minutes=args.minutes, eval_n=args.eval_n, n_beyond=args.beyond)  # fmt: skip
        size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        print(f"{kind}: {path} ({size:.1f} MiB)")
        if (path / "training.json").exists():
            done = json.loads((path / "training.json").read_text())
            print(f"  trained {done['steps_done']} steps in {done['seconds'] / 60:.1f} min;", done.get("eval") and
                  {t: f"{100 * s:.1f}%" for t, s in done["eval"]["scores"].items()})  # fmt: skip


if __name__ == "__main__":
    main()
