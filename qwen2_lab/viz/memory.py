"""What grouped-query attention saves: the KV cache of each Qwen2 size against the same model with one KV head per
query head (multi-head attention) and with a single KV head (multi-query attention).

Generating token t needs every earlier token's key and value in every layer, so the cache holds per token
2 (K and V) x layers x kv_heads x head_dim x bytes per value (`Arch.kv_cache_bytes_per_token`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
import torch

from ..arch import Arch, as_arch, family
from .style import LEGEND_BELOW, base_layout, subplots

CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2,
         "float8": 1, "fp8": 1, "int8": 1, "int4": 0.5, "fp4": 0.5}  # fmt: skip
LAYOUTS = ("GQA", "as MHA", "as MQA")  # the model's own KV heads, one per query head, a single one
DASHES, OPACITY = ("solid", "dash", "dot"), (1, 0.45, 0.2)


def bytes_per_value(dtype) -> float:
    """2 for torch.bfloat16 or 'bf16', 1 for 'fp8', 0.5 for 'int4'; a number passes through."""
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    if isinstance(dtype, (int, float)) and not isinstance(dtype, bool) and dtype > 0:
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name not in BYTES:
        raise ValueError(f"unknown dtype {dtype!r}: pass a torch dtype, one of {sorted(BYTES)}, or bytes per value")
    return BYTES[name]


def as_archs(models) -> dict[str, Arch]:
    """{name: Arch} from None (the five Qwen2 releases), one model (Arch, Lab, Trace, HF config or model), a list of
    them, or a dict name -> one."""
    if models is None:
        return family()
    if isinstance(models, dict):
        items = list(models.items())
    else:
        items = [(None, m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    out = {}
    for name, m in items:
        try:
            arch = as_arch(m)
        except TypeError:
            raise TypeError(
                f"kv_cache_memory takes Archs (lab.arch, qwen2_lab.family()), Labs or Traces; got {type(m).__name__}"
            ) from None
        out[name or arch.name] = arch
    return out


def short(name: str) -> str:
    """'Qwen/Qwen2-72B-Instruct' -> 'Qwen2-72B'."""
    return name.split("/")[-1].removesuffix("-Instruct")


@dataclass(frozen=True)
class KVCacheMemory:
    """What kv_cache_memory draws: for each model and each of LAYOUTS, the cache size per token and per context."""

    names: list[str]  # one per model
    archs: list[Arch]
    contexts: np.ndarray  # [C]: tokens in the cache
    bytes_per_value: float
    n_kv: np.ndarray  # [M, 3]: KV heads of each layout
    per_token: np.ndarray  # [M, 3]: bytes per token
    total: np.ndarray  # [M, 3, C]: bytes for each context length


def kv_cache_memory_data(models=None, context_lengths=CONTEXTS, dtype=torch.bfloat16) -> KVCacheMemory:
    """The numbers of kv_cache_memory (see there)."""
    archs = as_archs(models)
    b = bytes_per_value(dtype)
    ctx = np.array(sorted(int(c) for c in np.atleast_1d(context_lengths)), dtype=np.int64)
    if ctx.size == 0 or (ctx <= 0).any():
        raise ValueError(f"context_lengths must be positive token counts, got {list(context_lengths)}")
    n_kv = np.array([[a.n_kv_heads, a.n_heads, 1] for a in archs.values()])  # (M, 3)
    per_token = np.array(
        [
            [replace(a, n_kv_heads=int(kv)).kv_cache_bytes_per_token(b) for kv in row]
            for a, row in zip(archs.values(), n_kv)
        ]
    )  # (M, 3): 2 x layers x kv x hd x bytes
    return KVCacheMemory(list(archs), list(archs.values()), ctx, b, n_kv, per_token, per_token[..., None] * ctx)


def draw_kv_cache_memory(d: KVCacheMemory) -> go.Figure:
    """Left: a line per model and layout over context lengths (log-log); right: bars of bytes per token. The legend
    names the models (colour) and the layouts (line style) once each."""
    fig = subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.14,
                   subplot_titles=["KV cache for one sequence", "per token"])  # fmt: skip
    for m, (name, arch) in enumerate(zip(d.names, d.archs)):
        colour = COLOURS[m % len(COLOURS)]
        for i, kind in enumerate(LAYOUTS):
            kv, per_token = int(d.n_kv[m, i]), d.per_token[m, i]
            formula = (
                f"2 × {arch.n_layers} layers × {kv} KV heads × {arch.head_dim} head_dim × {d.bytes_per_value:g} bytes"
            )
            custom = np.empty((len(d.contexts), 2), dtype=object)
            custom[:, 0], custom[:, 1] = d.total[m, i].tolist(), formula
            label = f"{short(name)} {kind} ({kv} KV head{'s' * (kv > 1)})"
            fig.add_trace(
                go.Scatter(
                    x=d.contexts, y=d.total[m, i] / 2**30, customdata=custom, mode="lines+markers", name=label,
                    legendgroup=name, showlegend=False,
                    line=dict(color=colour, dash=DASHES[i], width=2.5 if i == 0 else 1.5),
                    hovertemplate=f"{label}<br>%{{x:,}} tokens: %{{y:,.3f}} GiB<br>= %{{customdata[0]:,}} bytes"
                    "<br>per token %{customdata[1]}<extra></extra>",
                ),
                row=1, col=1,
            )  # fmt: skip
            fig.add_trace(
                go.Bar(x=[short(name).removeprefix("Qwen2-")], y=[per_token / 2**10], name=label, legendgroup=name, showlegend=False,
                       marker=dict(color=colour, opacity=OPACITY[i]), customdata=[[per_token, formula]], offsetgroup=kind,
                       hovertemplate=f"{label}<br>%{{y:,.2f}} KiB per token = %{{customdata[1]}}<extra></extra>"),
                row=1, col=2,
            )  # fmt: skip
        legend_entry(fig, short(name), dict(color=colour, width=2.5), group=name)
    for i, kind in enumerate(LAYOUTS):
        legend_entry(fig, kind, dict(color="#555555", dash=DASHES[i], width=2 if i == 0 else 1.5), group=kind)
    ctx = d.contexts
    fig.update_xaxes(row=1, col=1, type="log", tickvals=ctx, ticktext=[f"{c // 1024}K" if c >= 1024 else str(c) for c in ctx],
                     title_text="context length (tokens)")  # fmt: skip
    fig.update_yaxes(row=1, col=1, type="log", dtick=1, title_text="GiB (log scale)")
    fig.update_yaxes(row=1, col=2, type="log", dtick=1, title_text="KiB per token (log scale)")
    fig.update_xaxes(row=1, col=2, title_text="Qwen2 release")
    fig.update_layout(barmode="group", legend=dict(LEGEND_BELOW, groupclick="togglegroup"))
    return base_layout(
        fig,
        f"KV-cache memory: what sharing KV heads (GQA) saves ({d.bytes_per_value:g} bytes per value)",
        "solid: the model's own KV heads (GQA); dashed: one KV head per query head (MHA); dotted: a single KV head"
        " (MQA); bars: the same per token, faded for MHA and MQA",
        height=440,
        top=24,
    )


def legend_entry(fig, name: str, line: dict, group: str) -> None:
    """A legend line that draws nothing (its group's traces do): one entry per model colour or line style."""
    fig.add_trace(
        go.Scatter(x=[None], y=[None], mode="lines", name=name, line=line, legendgroup=group, hoverinfo="skip")
    )


def kv_cache_memory(models=None, context_lengths=CONTEXTS, dtype=torch.bfloat16) -> go.Figure:
    """KV-cache size of each model at each context length with its GQA layout (solid), as if it had full multi-head
    attention (dashed) and a single KV head (dotted); right: bytes per token.

    models: None = the five Qwen2 releases (qwen2_lab.family()); or Archs / Labs / Traces, a list or a name -> dict.
    context_lengths: tokens in the cache. dtype: of the cached K and V (torch dtype, 'bf16', 'fp8', or bytes).
    Each point's hover gives the exact bytes.
    """
    return draw_kv_cache_memory(kv_cache_memory_data(models, context_lengths, dtype))
