"""What grouped-query attention saves: the KV cache of each Qwen2 size against the same model with one KV head per
query head (multi-head attention) and with a single KV head (multi-query attention).

Generating token t needs every earlier token's key and value in every layer, so the cache holds per token
2 (K and V) x layers x kv_heads x head_dim x bytes per value (`Arch.kv_cache_bytes_per_token`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ._style import base_layout

CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2,
         "float8": 1, "fp8": 1, "int8": 1, "int4": 0.5, "fp4": 0.5}  # fmt: skip


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


def as_archs(models) -> dict[str, object]:
    """{name: Arch} from None (the five Qwen2 releases), an Arch/Lab/Trace, a list of them or a dict name -> one."""
    if models is None:
        from ..arch import family

        return family()
    if isinstance(models, dict):
        items = list(models.items())
    else:
        items = [(None, m) for m in (models if isinstance(models, (list, tuple)) else [models])]
    out = {}
    for name, m in items:
        arch = getattr(m, "arch", m)
        if not hasattr(arch, "kv_cache_bytes_per_token"):
            raise TypeError(
                f"kv_cache_memory takes Archs (lab.arch, qwen2_lab.family()), Labs or Traces; got {type(m).__name__}"
            )
        out[name or arch.name] = arch
    return out


def short(name: str) -> str:
    """'Qwen/Qwen2-72B-Instruct' -> 'Qwen2-72B'."""
    return name.split("/")[-1].removesuffix("-Instruct")


def kv_cache_memory(models=None, context_lengths=CONTEXTS, dtype=torch.bfloat16) -> go.Figure:
    """KV-cache size of each model at each context length with its GQA layout (solid), as if it had full multi-head
    attention (dashed) and a single KV head (dotted); right: bytes per token.

    models: None = the five Qwen2 releases (qwen2_lab.family()); or Archs / Labs / Traces, a list or a name -> dict.
    context_lengths: tokens in the cache. dtype: of the cached K and V (torch dtype, 'bf16', 'fp8', or bytes).
    Each point's hover gives the exact bytes; customdata[..., 0] holds them.
    """
    archs = as_archs(models)
    b = bytes_per_value(dtype)
    ctx = np.array(sorted(int(c) for c in np.atleast_1d(context_lengths)), dtype=np.int64)
    if ctx.size == 0 or (ctx <= 0).any():
        raise ValueError(f"context_lengths must be positive token counts, got {list(context_lengths)}")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.64, 0.36], horizontal_spacing=0.1,
                        subplot_titles=["KV cache for one sequence", "per token"])  # fmt: skip
    layouts = (("GQA", "solid", None), ("as MHA", "dash", "n_heads"), ("as MQA", "dot", 1))
    for m, (name, arch) in enumerate(archs.items()):
        colour = COLOURS[m % len(COLOURS)]
        for kind, dash, kv in layouts:
            n_kv = arch.n_kv_heads if kv is None else arch.n_heads if kv == "n_heads" else kv
            per_token = replace(arch, n_kv_heads=n_kv).kv_cache_bytes_per_token(b)  # 2 x layers x kv x hd x bytes
            total = ctx * per_token  # (C,) bytes
            formula = f"2 × {arch.n_layers} layers × {n_kv} KV heads × {arch.head_dim} head_dim × {b:g} bytes"
            custom = np.empty((len(ctx), 2), dtype=object)
            custom[:, 0], custom[:, 1] = total.tolist(), formula
            label = f"{short(name)} {kind} ({n_kv} KV head{'s' * (n_kv > 1)})"
            fig.add_trace(
                go.Scatter(
                    x=ctx, y=total / 2**30, customdata=custom, mode="lines+markers", name=label, legendgroup=name,
                    line=dict(color=colour, dash=dash, width=2.5 if kind == "GQA" else 1.5),
                    hovertemplate=f"{label}<br>%{{x:,}} tokens: %{{y:,.3f}} GiB<br>= %{{customdata[0]:,}} bytes"
                    "<br>per token %{customdata[1]}<extra></extra>",
                ),
                row=1, col=1,
            )  # fmt: skip
            fig.add_trace(
                go.Bar(x=[short(name)], y=[per_token / 2**10], name=label, legendgroup=name, showlegend=False,
                       marker=dict(color=colour, opacity={"GQA": 1, "as MHA": 0.45, "as MQA": 0.2}[kind]),
                       customdata=[[per_token, formula]], offsetgroup=kind,
                       hovertemplate=f"{label}<br>%{{y:,.2f}} KiB per token = %{{customdata[1]}}<extra></extra>"),
                row=1, col=2,
            )  # fmt: skip
    fig.update_xaxes(row=1, col=1, type="log", tickvals=ctx, ticktext=[f"{c // 1024}K" if c >= 1024 else str(c) for c in ctx],
                     title_text="context length (tokens)")  # fmt: skip
    fig.update_yaxes(row=1, col=1, type="log", title_text="GiB (log scale)")
    fig.update_yaxes(row=1, col=2, type="log", title_text="KiB per token (log scale)")
    fig.update_layout(barmode="group", legend=dict(font=dict(size=10), groupclick="toggleitem"))
    return base_layout(
        fig,
        f"KV-cache memory: what sharing KV heads (GQA) saves ({b:g} bytes per value)",
        "solid: the model's own KV heads; dashed: one KV head per query head (MHA); dotted: a single KV head (MQA)",
        height=560,
        width=1150,
    )
