"""The architecture of a Qwen2 model in plain numbers, and the Qwen2 family side by side.

`arch_of(config_or_model)` reads an HF config (no weights needed) into an `Arch`: layers, heads, KV heads, widths,
experts, RoPE, and the parameter counts derived from those numbers alone. `family()` gives the five Qwen2 releases
from their published config.json values, so the family can be compared (and its KV caches sized) with no download.
`as_arch(x)` is what every function that needs a shape calls on its argument: an Arch, a Lab, a Trace, an HF config
or a model all give their Arch, anything else a TypeError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .facts import MODEL_TYPES

# config.json of each release on the Hugging Face hub (shapes as in the Qwen2 technical report, arXiv 2407.10671, Table 1).
_COMMON = dict(rope_theta=1e6, rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=32768)
FAMILY_CONFIGS = {
    "Qwen/Qwen2-0.5B-Instruct": dict(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
    ),
    "Qwen/Qwen2-1.5B-Instruct": dict(
        hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
    ),
    "Qwen/Qwen2-7B-Instruct": dict(
        hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False,
    ),
    "Qwen/Qwen2-72B-Instruct": dict(
        hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
        intermediate_size=29568, vocab_size=152064, tie_word_embeddings=False,
    ),
    "Qwen/Qwen2-57B-A14B-Instruct": dict(
        model_type="qwen2_moe", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        intermediate_size=18944, moe_intermediate_size=2560, shared_expert_intermediate_size=20480,
        num_experts=64, num_experts_per_tok=8, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
        vocab_size=151936, tie_word_embeddings=False, max_position_embeddings=65536,
    ),
}  # fmt: skip

# The Qwen2 blog's parameter table, in billions: (total, non-embedding). The 7B row counts one embedding matrix
# fewer than the checkpoint holds (7.62B on the model card): 7.07 = 7.62 - 0.545 and 5.98 = 6.53 - 0.545.
OFFICIAL_PARAMS_B = {
    "Qwen/Qwen2-0.5B-Instruct": (0.49, 0.35),
    "Qwen/Qwen2-1.5B-Instruct": (1.54, 1.31),
    "Qwen/Qwen2-7B-Instruct": (7.07, 5.98),
    "Qwen/Qwen2-72B-Instruct": (72.71, 70.21),
    "Qwen/Qwen2-57B-A14B-Instruct": (57.41, 56.32),
}

YARN_128K = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


@dataclass(frozen=True)
class Arch:
    """A Qwen2 model's shape. Dense models have n_experts == 0 and empty moe_layers."""

    name: str
    model_type: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    group_size: int  # query heads per KV head
    intermediate: int
    vocab: int
    tied_embeddings: bool
    rope_theta: float
    rope_scaling: dict | None  # None, or YaRN's {"rope_type", "factor", "original_max_position_embeddings", ...}
    max_position: int
    rms_norm_eps: float
    n_experts: int
    top_k: int
    moe_intermediate: int
    shared_intermediate: int
    norm_topk_prob: bool
    moe_layers: tuple[int, ...]
    total_params: int
    embedding_params: int  # embed_tokens, plus lm_head when untied
    non_embedding_params: int
    active_params: int  # per token: the top-k experts instead of all of them

    @property
    def is_moe(self) -> bool:
        return bool(self.moe_layers)

    def layer_kind(self, i: int) -> str:
        return "moe" if i in self.moe_layers else "dense"

    def kv_cache_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """K and V, every layer, every KV head: 2 x layers x kv_heads x head_dim x bytes."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_value

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        rows = [
            ("layers", self.n_layers),
            ("hidden", self.hidden),
            ("query heads / KV heads", f"{self.n_heads} / {self.n_kv_heads} ({self.group_size} per KV head)"),
            ("head_dim", self.head_dim),
        ]
        if self.is_moe:
            rows += [
                ("experts", f"{self.n_experts}, top-{self.top_k}, width {self.moe_intermediate}"),
                ("shared expert width", self.shared_intermediate),
                ("MoE layers", f"{len(self.moe_layers)} of {self.n_layers}"),
                ("norm_topk_prob", self.norm_topk_prob),
            ]
        if not self.is_moe or len(self.moe_layers) < self.n_layers:
            rows.append(("intermediate", self.intermediate))
        rope = f"theta {self.rope_theta:g}"
        if self.rope_scaling:
            rope += f", {self.rope_scaling.get('rope_type')} x{self.rope_scaling.get('factor')}"
        rows += [
            ("vocab", f"{self.vocab} ({'tied' if self.tied_embeddings else 'untied'} embeddings)"),
            ("RoPE", rope),
            ("parameters", f"{count(self.total_params)} ({count(self.non_embedding_params)} non-embedding)"),
        ]
        if self.is_moe:
            rows.append(("active per token", count(self.active_params)))
        width = max(len(k) for k, _ in rows)
        return f"{self.name} ({self.model_type})\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def count(n: int) -> str:
    """7615616512 -> '7.62B'; 833536 -> '0.83M'."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def as_arch(x) -> Arch:
    """The `Arch` of x: an Arch itself, the `.arch` that a Lab, a Trace or a Generation carries, or `arch_of` an HF
    config or model.

    Raises TypeError for anything else (a model name is not an Arch: qwen2_lab.family()[name] or load(name).arch).
    """
    if isinstance(x, Arch):
        return x
    if isinstance(getattr(x, "arch", None), Arch):  # what it carries, whatever it is
        return x.arch
    from transformers import PretrainedConfig, PreTrainedModel

    if isinstance(x, (PretrainedConfig, PreTrainedModel)):
        return arch_of(x)
    raise TypeError(
        f"expected a qwen2_lab Arch, Lab or Trace, or an HF Qwen2 config or model; got {type(x).__name__}"
        + (": for a release by name use qwen2_lab.family()[name]" if isinstance(x, str) else "")
    )


def arch_of(config_or_model, name: str | None = None) -> Arch:
    """The `Arch` of an HF Qwen2/Qwen2-MoE config, or of a model (its `.config`)."""
    from transformers import PretrainedConfig, PreTrainedModel

    c = config_or_model.config if isinstance(config_or_model, PreTrainedModel) else config_or_model
    if not isinstance(c, PretrainedConfig):
        raise TypeError(f"arch_of takes an HF config or model, got {type(config_or_model).__name__}")
    if c.model_type not in MODEL_TYPES:
        raise ValueError(f"a {c.model_type!r} config is not Qwen2 or Qwen2-MoE")
    H, L, nH, nKV = c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
    hd = getattr(c, "head_dim", None) or H // nH
    E = getattr(c, "num_experts", 0) or 0
    moe_layers = tuple(
        i
        for i in range(L)
        if c.model_type == "qwen2_moe" and E > 0 and i not in c.mlp_only_layers and (i + 1) % c.decoder_sparse_step == 0
    )
    k = getattr(c, "num_experts_per_tok", 0) if moe_layers else 0
    I_moe = getattr(c, "moe_intermediate_size", 0) if moe_layers else 0
    I_shared = getattr(c, "shared_expert_intermediate_size", 0) if moe_layers else 0
    body, active, embedding = param_counts(c, hd, moe_layers, k, I_moe, I_shared)
    rope = dict(c.rope_parameters or {})
    theta = rope.pop("rope_theta", getattr(c, "rope_theta", 10000.0))
    scaling = rope if rope.get("rope_type", "default") != "default" else None
    return Arch(
        name=name or getattr(c, "_name_or_path", "") or c.model_type,
        model_type=c.model_type,
        n_layers=L,
        hidden=H,
        n_heads=nH,
        n_kv_heads=nKV,
        head_dim=hd,
        group_size=nH // nKV,
        intermediate=c.intermediate_size,
        vocab=c.vocab_size,
        tied_embeddings=bool(c.tie_word_embeddings),
        rope_theta=float(theta),
        rope_scaling=scaling,
        max_position=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        n_experts=E if moe_layers else 0,
        top_k=k,
        moe_intermediate=I_moe,
        shared_intermediate=I_shared,
        norm_topk_prob=bool(getattr(c, "norm_topk_prob", False)) and bool(moe_layers),
        moe_layers=moe_layers,
        total_params=body + embedding,
        embedding_params=embedding,
        non_embedding_params=body,
        active_params=active + embedding,
    )


def param_counts(c, hd: int, moe_layers: tuple, k: int, I_moe: int, I_shared: int) -> tuple[int, int, int]:
    """(non-embedding, active non-embedding, embedding) parameters of config c, from its shape alone."""
    H, L, nH, nKV = c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
    E = getattr(c, "num_experts", 0) or 0
    qkv_bias = getattr(c, "qkv_bias", True)
    attn = H * nH * hd + 2 * H * nKV * hd + nH * hd * H + qkv_bias * (nH * hd + 2 * nKV * hd)
    dense_mlp = 3 * H * c.intermediate_size
    expert = 3 * H * I_moe
    moe_fixed = E * H + 3 * H * I_shared + H  # router, shared expert, shared_expert_gate
    embedding = c.vocab_size * H * (1 if c.tie_word_embeddings else 2)
    body = L * (attn + 2 * H) + H  # attention and the two norms of every layer, and the final norm
    body += sum(moe_fixed + E * expert if i in moe_layers else dense_mlp for i in range(L))
    active = body - len(moe_layers) * (E - k) * expert
    return body, active, embedding


def family_config(name: str, rope_scaling: dict | None = None):
    """An HF config (no weights) with the published shape of a Qwen2 release; YaRN optional."""
    from transformers import Qwen2Config, Qwen2MoeConfig

    if name not in FAMILY_CONFIGS:
        raise KeyError(f"{name!r} is not in the family table; choose one of {list(FAMILY_CONFIGS)}")
    kw = {**_COMMON, **FAMILY_CONFIGS[name]}
    rope = {"rope_type": "default", "rope_theta": kw.pop("rope_theta")}
    if rope_scaling:  # e.g. YaRN x4 on a 32K original window: the model now reaches factor x 32K positions
        rope.update(rope_scaling)
        kw["max_position_embeddings"] = int(rope["factor"] * rope["original_max_position_embeddings"])
    cls = Qwen2MoeConfig if kw.pop("model_type", "qwen2") == "qwen2_moe" else Qwen2Config
    cfg = cls(**kw, rope_parameters=rope)
    cfg.name_or_path = name
    return cfg


def family(rope_scaling: dict | None = None) -> dict[str, Arch]:
    """The five Qwen2 releases as `Arch`es, from their published configs; pass `YARN_128K` for the 128K setting."""
    return {name: arch_of(family_config(name, rope_scaling), name) for name in FAMILY_CONFIGS}
