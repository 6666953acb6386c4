"""Sites, the choice of which to keep, and `Trace`, the tensors one forward pass kept.

A *site* is a named point in the forward pass, like TransformerLens's hook points but named after HF's modules:
`layers.3.attn.pattern` is the attention pattern that `model.model.layers[3].self_attn` computes. `SITES` below is
the one table of them (README's site table is this table); the forward in `forward.py` reports every site in this
order, and a `Trace` keeps only those a `SiteFilter` asks for.

Every tensor in a Trace is for one sequence: the batch dimension is dropped.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import saved
from .arch import Arch

# (site, shape, what it is). Per-layer sites are written without their "layers.{i}." prefix.
# Shapes use S = tokens, H = hidden, nH = query heads, nKV = KV heads, hd = head_dim, I = intermediate, E = experts.
MODEL_SITES = [
    ("embed", "[S, H]", "token embeddings: one row of embed_tokens per token (Qwen2 does not scale them)"),
    ("rope.cos", "[S, hd]", "RoPE's cos(position x frequency) for every position and dimension, shared by all layers"),
    ("rope.sin", "[S, hd]", "RoPE's sin of the same angles (both carry YaRN's attention factor when it is on)"),
]
LAYER_SITES = [
    ("resid_pre", "[S, H]", "the residual stream entering the layer"),
    ("attn_norm", "[S, H]", "input_layernorm (RMSNorm) of the residual: what attention reads"),
    ("attn.q", "[nH, S, hd]", "queries: q_proj (with Qwen2's bias), split into heads, before RoPE"),
    ("attn.k", "[nKV, S, hd]", "keys: k_proj (with bias), one per KV head, before RoPE"),
    ("attn.v", "[nKV, S, hd]", "values: v_proj (with bias), one per KV head"),
    (
        "attn.q_rot",
        "[nH, S, hd]",
        "queries after RoPE: each pair of dimensions turned by an angle of position x frequency",
    ),
    ("attn.k_rot", "[nKV, S, hd]", "keys after RoPE"),
    ("attn.scores", "[nH, S, S]", "q.k / sqrt(hd) against the shared KV head, future masked to -inf, before softmax"),
    ("attn.pattern", "[nH, S, S]", "softmax of the scores: how much each query position reads each key position"),
    ("attn.z", "[nH, S, hd]", "each head's output: pattern @ v of its KV group, before o_proj"),
    ("attn.out", "[S, H]", "o_proj of all heads: attention's contribution to the residual"),
    ("resid_mid", "[S, H]", "residual after attention: resid_pre + attn.out"),
    ("mlp_norm", "[S, H]", "post_attention_layernorm (RMSNorm): what the MLP or MoE block reads"),
    ("mlp.gate", "[S, I]", "dense layers: gate_proj, the SwiGLU gate before SiLU"),
    ("mlp.up", "[S, I]", "dense layers: up_proj"),
    ("mlp.act", "[S, I]", "dense layers: silu(gate) * up"),
    ("mlp.out", "[S, H]", "dense layers: down_proj, the MLP's contribution to the residual"),
    ("moe.router_logits", "[S, E]", "MoE layers: the router's score per expert, before softmax"),
    ("moe.router_probs", "[S, E]", "MoE layers: softmax over all experts (float32), taken before the top-k"),
    ("moe.topk_experts", "[S, k]", "MoE layers: the k experts each token is sent to, best first"),
    ("moe.topk_weights", "[S, k]", "MoE layers: their weights (raw probabilities unless norm_topk_prob)"),
    ("moe.routed_out", "[S, H]", "MoE layers: sum of the chosen experts' outputs times their weights"),
    ("moe.shared_out", "[S, H]", "MoE layers: the shared expert's output, before its gate"),
    ("moe.shared_gate", "[S]", "MoE layers: sigmoid(shared_expert_gate(x)), how much of the shared expert is added"),
    ("moe.out", "[S, H]", "MoE layers: routed_out + shared_gate * shared_out"),
    ("resid_post", "[S, H]", "the residual stream leaving the layer: resid_mid + mlp/moe out"),
]
FINAL_SITES = [
    ("final_norm", "[S, H]", "model.norm (RMSNorm) of the last residual"),
    ("logits", "[S, V]", "lm_head: a score for every vocabulary entry at every position"),
]
SITES = MODEL_SITES + [(f"layers.{{i}}.{name}", shape, why) for name, shape, why in LAYER_SITES] + FINAL_SITES
EXPLAIN = {name: why for name, _, why in MODEL_SITES + LAYER_SITES + FINAL_SITES}
SHAPES = {name: shape for name, shape, _ in MODEL_SITES + LAYER_SITES + FINAL_SITES}


def split_site(site: str) -> tuple[int | None, str]:
    """'layers.3.attn.q' -> (3, 'attn.q'); 'embed' -> (None, 'embed')."""
    if site.startswith("layers."):
        _, i, rest = site.split(".", 2)
        return int(i), rest
    return None, site


def site_spec(site: str) -> str:
    """The documented shape of a site: 'layers.3.attn.q' -> '[nH, S, hd]'."""
    _, name = split_site(site)
    if name not in SHAPES:
        raise KeyError(f"no site named {site!r}; see qwen2_lab.SITES")
    return SHAPES[name]


def position_dim(site: str) -> int:
    """Which dimension of a site's tensor runs over token positions (the queries', for scores and pattern)."""
    return [d.strip() for d in site_spec(site).strip("[]").split(",")].index("S")


@dataclass
class SiteFilter:
    """Which sites to keep: glob patterns over full site names, and an optional subset of layers.

    `sites=None` keeps every site; `layers=None` every layer. Site-level sites (embed, final_norm, logits) are kept
    whenever their name matches, whatever `layers` says.
    """

    sites: list[str] | None = None
    layers: list[int] | None = None

    def __post_init__(self):
        if isinstance(self.sites, str):
            self.sites = [self.sites]
        if isinstance(self.layers, int):
            self.layers = [self.layers]
        self._cache: dict[str, bool] = {}

    def wants(self, site: str) -> bool:
        if site not in self._cache:
            layer, _ = split_site(site)
            ok = self.layers is None or layer is None or layer in self.layers
            ok = ok and (self.sites is None or any(fnmatch.fnmatchcase(site, p) for p in self.sites))
            self._cache[site] = ok
        return self._cache[site]

    def check(self, arch) -> None:
        """Fail early, naming the problem, when a pattern or a layer can match nothing."""
        n_layers = arch.n_layers
        if self.layers is not None:
            bad = [i for i in self.layers if not 0 <= i < n_layers]
            if bad:
                raise ValueError(f"layers={bad} out of range: this model has layers 0..{n_layers - 1}")
        if self.sites is not None:
            names = [n for n, _ in expected_sites(arch)]
            for p in self.sites:
                if not any(fnmatch.fnmatchcase(n, p) for n in names):
                    raise ValueError(
                        f"site pattern {p!r} matches no site; see qwen2_lab.SITES, e.g. 'layers.*.attn.pattern'"
                    )


@dataclass
class Trace:
    """The tensors one forward pass kept, for one sequence.

    trace["layers.0.attn.pattern"]   # [heads, seq, seq]
    trace.sites()                    # the names kept, in forward order
    trace.tokens                     # the token strings
    trace.logits                     # [seq, vocab], always kept
    trace.lens_ids, trace.lens_probs # [layers, seq, k]: the logit lens, with lab.trace(..., lens=k)
    """

    token_ids: torch.Tensor  # [S]
    tokens: list[str]
    arch: Arch
    logits: torch.Tensor  # [S, V]
    store: dict[str, torch.Tensor] = field(default_factory=dict)
    lens_ids: torch.Tensor | None = None  # [L, S, k]: the logit lens, when lab.trace(..., lens=k)
    lens_probs: torch.Tensor | None = None  # [L, S, k]
    lens_text: dict[int, str] | None = None  # each token id in lens_ids as text (when the Lab has a tokenizer)
    edits: list[tuple[str, str]] = field(default_factory=list)  # (site, what the edit did) for each edit applied

    def __getitem__(self, site: str) -> torch.Tensor:
        if site not in self.store:
            hint = f"; it was not captured: pass sites=[{site!r}] to lab.trace" if self._is_site(site) else ""
            raise KeyError(f"no site {site!r} in this trace{hint}")
        return self.store[site]

    def __contains__(self, site: str) -> bool:
        return site in self.store

    def sites(self, pattern: str = "*") -> list[str]:
        return [s for s in self.store if fnmatch.fnmatchcase(s, pattern)]

    def _is_site(self, site: str) -> bool:
        _, name = split_site(site)
        return name in EXPLAIN

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.values())

    def __repr__(self) -> str:
        return f"Trace({len(self.tokens)} tokens, {len(self.store)} sites, {self.nbytes() / 2**20:.1f} MiB)"

    # ---- to and from a file (qwen2_lab/saved.py: one safetensors file, its JSON in the header) ----------------

    def save(self, path) -> Path:
        """Write this trace to one safetensors file: the kept sites, token ids, logits and logit lens bit for bit;
        tokens, arch, the lens' token texts and the edits applied in the JSON part. Returns the path."""
        tensors = {f"site/{s}": t for s, t in self.store.items()} | {"token_ids": self.token_ids, "logits": self.logits}
        if self.lens_ids is not None:
            tensors |= {"lens_ids": self.lens_ids, "lens_probs": self.lens_probs}
        info = dict(
            kind="Trace", tokens=self.tokens, arch=self.arch.as_dict(), sites=list(self.store),
            lens_text=None if self.lens_text is None else {str(i): t for i, t in self.lens_text.items()},
            edits=[list(e) for e in self.edits],
        )  # fmt: skip
        return saved.write(path, tensors, info)

    @classmethod
    def load(cls, path, *, sites=None, layers=None) -> Trace:
        """A saved trace, needing no model: the sites asked for (globs, as lab.trace takes them; all by default) and
        `layers`, read from the file without reading the others; token ids, logits and the logit lens always."""
        f = saved.Reader(path, "Trace")
        info = f.info
        arch = saved.arch_from(info["arch"])
        store = {s: f.get(f"site/{s}") for s in select(info["sites"], sites, layers, arch, f.path)}
        lens = {k: f.get(k) if k in f.names else None for k in ("lens_ids", "lens_probs")}  # [L, S, k] each
        lens_text = None if info["lens_text"] is None else {int(i): t for i, t in info["lens_text"].items()}
        edits = [tuple(e) for e in info["edits"]]
        return cls(f.get("token_ids"), info["tokens"], arch, f.get("logits"), store, **lens, lens_text=lens_text,
                   edits=edits)  # fmt: skip


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


def site_specs(arch) -> list[tuple[str, str]]:
    """Every site this architecture's forward reports, in order, with its shape as written in `SITES`.

    Dense layers have the mlp.* sites, MoE layers the moe.* ones.
    """
    out = [(name, shape) for name, shape, _ in MODEL_SITES]
    for i in range(arch.n_layers):
        kind = arch.layer_kind(i)
        for name, shape, _ in LAYER_SITES:
            if not ((name.startswith("mlp.") and kind != "dense") or (name.startswith("moe.") and kind != "moe")):
                out.append((f"layers.{i}.{name}", shape))
    return out + [(name, shape) for name, shape, _ in FINAL_SITES]


def expected_sites(arch, seq: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """Every site with its shape for `seq` tokens, read off the `SITES` table: the documented shapes are the tested ones."""
    return [(name, site_shape(shape, arch, seq)) for name, shape in site_specs(arch)]


def site_shape(shape: str, arch, seq: int) -> tuple[int, ...]:
    """'[nH, S, S]' -> (n_heads, seq, seq) for this arch."""
    dims = dict(
        S=seq, H=arch.hidden, nH=arch.n_heads, nKV=arch.n_kv_heads, hd=arch.head_dim, I=arch.intermediate,
        E=arch.n_experts, k=arch.top_k, V=arch.vocab,
    )  # fmt: skip
    return tuple(dims[d.strip()] for d in shape.strip("[]").split(","))


def estimate_bytes(arch, seq: int, wants, bytes_per_value: int = 4) -> int:
    """How much a trace of `seq` tokens keeping the sites `wants` accepts would hold (logits always kept)."""
    kept = [shape for name, shape in expected_sites(arch, seq) if wants(name) or name == "logits"]
    return sum(math.prod(shape) for shape in kept) * bytes_per_value


def block_out(arch, layer: int) -> str:
    """The site of what the MLP or MoE block adds to the residual in `layer`: mlp.out, or moe.out in a MoE layer."""
    return f"layers.{layer}.{'moe' if arch.layer_kind(layer) == 'moe' else 'mlp'}.out"


def site_table() -> str:
    """The site table as Markdown (README.md carries it; tests/test_docs.py keeps the two equal)."""
    rows = ["| site | shape | what it is |", "|---|---|---|"]
    rows += [f"| `{name}` | `{shape}` | {why} |" for name, shape, why in SITES]
    return "\n".join(rows)


if __name__ == "__main__":
    print(site_table())
