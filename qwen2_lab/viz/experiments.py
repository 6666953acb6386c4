"""Experiments, drawn: where patching brings the answer back, which heads write it, and what an edit changed.

Each view takes a result of qwen2_lab.experiments (a Sweep, an Attribution, a RunDiff) and draws its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ..attribution import Attribution
from ..experiments import RunDiff
from ..patching import Sweep
from .style import LEGEND_BELOW, base_layout, numpy, position_keys, subplots, token_axis, token_labels

DIVERGING = "RdBu"  # red below 0, white at 0, blue above: the sign of an effect matters


def _check(x, kind, view: str, how: str):
    if not isinstance(x, kind):
        raise TypeError(f"{view} takes a {kind.__name__} ({how}); got {type(x).__name__}")
    return x


# ---- activation patching: layers x positions ----------------------------------------------------------------------


@dataclass(frozen=True)
class PatchingMap:
    """What patching_heatmap draws: the share of the clean answer recovered by each patch, [layers, positions]."""

    recovered: np.ndarray
    layers: list[int]
    positions: list[int]
    labels: list[str]
    site: str
    clean: float
    corrupted: float


def patching_heatmap_data(sweep) -> PatchingMap:
    """The numbers of patching_heatmap (see there)."""
    sweep = _check(sweep, Sweep, "patching_heatmap", "patching.patch_sweep(...)")
    if sweep.column_kind != "position":
        raise ValueError("patching_heatmap draws a sweep over positions; for heads use head_grid")
    return PatchingMap(numpy(sweep.recovered), sweep.layers, sweep.columns, token_labels(sweep.tokens), sweep.site,
                       sweep.clean, sweep.corrupted)  # fmt: skip


def draw_patching_heatmap(d: PatchingMap) -> go.Figure:
    keys = position_keys(d.positions)
    lim = max(1.0, float(np.nanmax(np.abs(d.recovered))))
    fig = go.Figure(go.Heatmap(
        z=d.recovered, x=keys, y=[str(i) for i in d.layers], colorscale=DIVERGING, zmid=0, zmin=-lim, zmax=lim,
        colorbar=dict(title="recovered"), customdata=np.array([[d.labels[p] for p in d.positions]] * len(d.layers)),
        hovertemplate="layer %{y}, token %{customdata} (pos %{x})<br>recovered %{z:.3f}<extra></extra>",
    ))  # fmt: skip
    fig.update_xaxes(title_text="patched position (the corrupted prompt's tokens)", **token_axis(d.labels, d.positions))
    fig.update_yaxes(title_text="layer", autorange="reversed", type="category")
    return base_layout(
        fig, f"Where the answer travels: the clean run's {d.site} patched into the corrupted run",
        f"colour: share of the logit difference recovered, (patched - corrupted) / (clean - corrupted); clean"
        f" {d.clean:+.2f}, corrupted {d.corrupted:+.2f}; 1 = the clean answer is back",
        height=max(220, 24 * len(d.layers)),
    )  # fmt: skip


def patching_heatmap(sweep) -> go.Figure:
    """A patching sweep over layers x positions (patching.patch_sweep): which (layer, position) carries the
    difference between the two prompts."""
    return draw_patching_heatmap(patching_heatmap_data(sweep))


# ---- heads, laid out by KV group ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadGrid:
    """What head_grid draws: one number per (layer, query head), the heads of one KV group side by side."""

    values: np.ndarray  # [L, nH]
    layers: list[int]
    group_size: int
    title: str
    note: str
    colorbar: str


def head_grid_data(result) -> HeadGrid:
    """The numbers of head_grid (see there), from a head sweep or a logit attribution."""
    if isinstance(result, Sweep):
        if result.column_kind != "head":
            raise ValueError("head_grid draws a sweep over heads (patching.head_patch_sweep)")
        return HeadGrid(numpy(result.recovered), result.layers, result.group_size,
                        "Which heads carry the answer: each head's output patched from the clean run",
                        f"share of the logit difference recovered; clean {result.clean:+.2f}, corrupted"
                        f" {result.corrupted:+.2f}", "recovered")  # fmt: skip
    result = _check(result, Attribution, "head_grid", "patching.head_patch_sweep or logit_attribution")
    what = "logit difference" if len(result.answer) == 2 else "logit"
    return HeadGrid(numpy(result.heads), list(range(result.heads.shape[0])), result.group_size,
                    f"Which heads write the answer: each head's direct share of the {what}",
                    f"the shares of every head, MLP/expert and the embedding add up to {result.total:+.3f}"
                    f" (the model's {result.logit:+.3f}), read through the final norm at its actual scale",
                    "share")  # fmt: skip


def draw_head_grid(d: HeadGrid) -> go.Figure:
    L, nH = d.values.shape
    g = d.group_size
    lim = float(np.nanmax(np.abs(d.values))) or 1.0
    fig = go.Figure(go.Heatmap(
        z=d.values, x=[f"{h // g}.{h % g}" for h in range(nH)], y=[str(i) for i in d.layers], colorscale=DIVERGING,
        zmid=0, zmin=-lim, zmax=lim, xgap=1, ygap=1, colorbar=dict(title=d.colorbar),
        hovertemplate="layer %{y}, head %{x} (KV group.head)<br>%{z:.4f}<extra></extra>",
    ))  # fmt: skip
    for k in range(1, nH // g):  # a line between KV groups
        fig.add_vline(x=k * g - 0.5, line=dict(color="#222", width=2))
    fig.update_xaxes(title_text=f"query head, as KV group.head ({g} heads share each KV head)", type="category")
    fig.update_yaxes(title_text="layer", autorange="reversed", type="category")
    return base_layout(fig, d.title, d.note, height=max(220, 24 * L))


def head_grid(result) -> go.Figure:
    """One value per (layer, query head), the heads of each KV group side by side between lines: a head patching
    sweep (patching.head_patch_sweep) or a direct logit attribution (attribution.logit_attribution)."""
    return draw_head_grid(head_grid_data(result))


# ---- what an edit changed -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditEffect:
    """What edit_effect draws: the answer tokens' logits before and after, and the probabilities of the most
    probable next tokens of either run, in both runs."""

    answers: list[str]
    before: np.ndarray  # [A] logits
    after: np.ndarray  # [A]
    candidates: list[str]  # the top tokens of either run, most probable before first
    p_before: np.ndarray  # [C]
    p_after: np.ndarray  # [C]
    edits: list[str]
    position: int


def edit_label(site: str, label: str) -> str:
    """How a subtitle names one edit: a ready-made edit's own words ("layer 3: heads [0] zeroed"); an edit given as
    a function ({site: fn}, labelled with the function's name) by its site, and the function when it has a name
    ("layers.1.attn.out: a function", "layers.1.attn.out: function double"), never a bare "<lambda>"."""
    if label and not label.isidentifier() and not label.startswith("<"):
        return label
    named = label.isidentifier() and label != "function"
    return f"{site}: function {label}" if named else f"{site}: a function"


def edit_effect_data(diff, tokens=None) -> EditEffect:
    """The numbers of edit_effect (see there). tokens: a function from ids to texts (lab.tokens), for labels."""
    diff = _check(diff, RunDiff, "edit_effect", "experiments.compare_runs(clean, edited, answer=...)")
    name = (lambda ids: [str(i) for i in ids]) if tokens is None else tokens
    ids = list(diff.answer_logits)
    return EditEffect(
        token_labels(name(ids)), np.array([diff.answer_logits[i][0] for i in ids]),
        np.array([diff.answer_logits[i][1] for i in ids]), token_labels(name([i for i, _, _ in diff.top])),
        np.array([a for _, a, _ in diff.top]), np.array([b for _, _, b in diff.top]),
        [edit_label(site, label) for site, label in diff.edits], diff.position,
    )  # fmt: skip


def draw_edit_effect(d: EditEffect) -> go.Figure:
    fig = subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.14,
                   subplot_titles=["the answer tokens' logits", "the most probable next tokens"])  # fmt: skip
    runs = (("before", d.before, d.p_before, "#9ecae1"), ("after the edit", d.after, d.p_after, "#08519c"))
    answers, cands = position_keys(range(len(d.answers))), position_keys(range(len(d.candidates)))
    for name, logits, probs, colour in runs:
        fig.add_trace(go.Bar(x=answers, y=logits, name=name, marker_color=colour, legendgroup=name,
                             hovertemplate="logit %{y:.3f}<extra>" + name + "</extra>"), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Bar(x=cands, y=probs, name=name, marker_color=colour, legendgroup=name, showlegend=False,
                             hovertemplate="p %{y:.2%}<extra>" + name + "</extra>"), row=1, col=2)  # fmt: skip
    fig.update_layout(barmode="group", legend=LEGEND_BELOW)
    fig.update_xaxes(row=1, col=1, title_text="answer token", **token_axis(d.answers, list(range(len(d.answers)))))
    fig.update_xaxes(row=1, col=2, title_text="next token", **token_axis(d.candidates, list(range(len(d.candidates)))))
    fig.update_yaxes(row=1, col=1, title_text="logit")
    fig.update_yaxes(row=1, col=2, title_text="probability", tickformat=".0%", rangemode="tozero")
    return base_layout(fig, f"What the edit changed at position {d.position}",
                       "; ".join(d.edits) or "two runs compared", height=320, top=20)  # fmt: skip


def edit_effect(diff, tokens=None) -> go.Figure:
    """Before and after an edit (experiments.compare_runs): the answer tokens' logits, and the probabilities of the
    most probable next tokens of either run. tokens: lab.tokens, to write token texts instead of ids."""
    return draw_edit_effect(edit_effect_data(diff, tokens))
