"""Make the bundled checkpoints `tiny` (dense Qwen2) and `tiny-moe` (Qwen2-MoE), deterministically.

    python -m qwen2_lab.tiny.make            # rewrites qwen2_lab/tiny/tiny and qwen2_lab/tiny/tiny-moe
    python -m qwen2_lab.tiny.make --out DIR  # somewhere else

Each is a real Hugging Face checkpoint folder (config.json, model.safetensors, generation_config.json, tokenizer
files) loaded by the same `from_pretrained` as a hub model. They are small but keep Qwen2's design: several query
heads per KV head, QKV bias, RoPE theta 1e6, tied embeddings (dense, like 0.5B/1.5B); for the MoE, experts with
top-k > 1, a shared expert with its sigmoid gate, norm_topk_prob false, untied embeddings (like 57B-A14B).

The weights are random (seeded) for now; the tokenizer is a small byte-level BPE trained on a seeded corpus of
gaokao-style and LeetCode-style text, with Qwen2's pre-tokenization regex, special tokens and chat template.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

HERE = Path(__file__).parent
SEED = 0

# Qwen2's pre-tokenization split (shared/reference/qwen2.md, section 4): digits one by one.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

COMMON = dict(
    hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, intermediate_size=384,
    rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=2048, hidden_act="silu", use_sliding_window=False,
    initializer_range=0.02,
)  # fmt: skip
MOE = dict(
    num_experts=8, num_experts_per_tok=2, moe_intermediate_size=96, shared_expert_intermediate_size=192,
    norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[], router_aux_loss_coef=0.001,
)  # fmt: skip


def corpus(n: int = 3000, seed: int = SEED) -> list[str]:
    """A seeded corpus in the seed's own registers: set intersections, sorted-array searches, sums, in zh and en."""
    rng = random.Random(seed)
    lines = [
        "已知集合A={x|-5<x^3<5}，B={-3,-1,0,2,3}，则A∩B=()",
        "当x∈[0, 2π]时，曲线y=sinx与y=2sin(3x-π/6)的交点个数为？",
        "给你一个按照非递减顺序排列的整数数组nums，和一个目标值target。请你找出给定目标值在数组中的开始位置和结束位置。",
        "class Solution:\n    def searchRange(self, nums: List[int], target: int) -> List[int]:\n        return [-1, -1]\n",
        "The quick brown fox jumps over the lazy dog. What is the answer? Let me think step by step.",
    ]
    for _ in range(n):
        a = sorted(rng.sample(range(-9, 20), rng.randint(2, 5)))
        b = sorted(rng.sample(range(-9, 20), rng.randint(2, 5)))
        both = sorted(set(a) & set(b))
        x, y = rng.randint(10, 999), rng.randint(10, 999)
        nums = sorted(rng.choices(range(0, 12), k=rng.randint(3, 8)))
        lines += [
            f"A={{{','.join(map(str, a))}}}，B={{{','.join(map(str, b))}}}，则A∩B={{{','.join(map(str, both))}}}",
            f"A={{{', '.join(map(str, a))}}}, B={{{', '.join(map(str, b))}}}. What is A∩B? The answer is {both}.",
            f"{x}+{y}={x + y}。{x}-{y}={x - y}. What is {x} plus {y}? {x + y}",
            f"nums = {nums}, target = {nums[0]}: the first and last position are [0, {nums.count(nums[0]) - 1}]",
        ]
    return lines


def build_tokenizer(lines: list[str], vocab_size: int = 512):
    """Byte-level BPE with Qwen2's regex split, trained on `lines`; the three special tokens come last, as in Qwen2."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
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
    tok.add_special_tokens(SPECIAL_TOKENS)
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
    raise ValueError(f"unknown kind {kind!r}: 'tiny' or 'tiny-moe'")


def make(kind: str, out: Path, seed: int = SEED, tokenizer=None, model=None) -> Path:
    """Write checkpoint `kind` to `out`: a random-initialised model (seeded) unless `model` is given."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = tokenizer or build_tokenizer(corpus(seed=seed))
    config = build_config(kind, tokenizer)
    if model is None:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
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
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write tiny/ and tiny-moe/ into")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    tokenizer = build_tokenizer(corpus(seed=args.seed))
    for kind in ("tiny", "tiny-moe"):
        path = make(kind, args.out / kind, args.seed, tokenizer)
        size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
        print(f"{kind}: {path} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
