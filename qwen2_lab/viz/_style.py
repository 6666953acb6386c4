"""What every figure shares: readable token labels, the size limits, early errors that say which sites to trace.

Limits. A browser draws a few hundred thousand heatmap cells smoothly; a 72B model (64 heads, 80 layers) on a long
prompt asks for far more. Each view therefore shows at most `MAX_TOKENS` positions on a token axis (the last ones,
unless `positions=` chooses others; the title says what was left out), at most `MAX_HEADS` attention heads, and
refuses a figure of more than `MAX_CELLS` cells with a message naming the smaller request to make instead.
"""

from __future__ import annotations

import html
import math

import numpy as np
import torch

MAX_TOKENS = 64  # positions on one token axis
MAX_HEADS = 16  # attention heatmaps in one figure
MAX_CELLS = 250_000  # heatmap cells in one figure: about 1 MB of float32, drawn in well under a second
MAX_LABEL = 14  # characters of one token label before it is cut with '…'

VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
FONT = dict(family="DejaVu Sans Mono, Menlo, Consolas, monospace")  # fixed width: ␣ and ↵ line up


def token_label(token: str) -> str:
    """A token as it can be read on an axis: whitespace made visible (␣ ↵ ⇥), other control characters escaped,
    HTML-like text ('<|im_start|>', '<s>') escaped so plotly shows it instead of interpreting it, long ones cut."""
    if token == "":
        return "∅"
    out = "".join(VISIBLE.get(c, c if c.isprintable() else repr(c)[1:-1]) for c in token)
    if len(out) > MAX_LABEL:
        out = out[: MAX_LABEL - 1] + "…"
    return html.escape(out, quote=False)


def token_labels(tokens: list[str]) -> list[str]:
    """token_label for each token. Figures put positions on numeric axes with these as tick text, so two equal
    tokens stay two distinct positions."""
    return [token_label(t) for t in tokens]


def token_axis(labels: list[str], positions: list[int], max_ticks: int = 64, y: bool = False) -> dict:
    """Axis settings that write token labels at positions (at most max_ticks of them, evenly spread); y=True for a
    vertical axis (labels kept horizontal)."""
    step = max(1, -(-len(positions) // max_ticks))
    shown = positions[::step]
    return dict(
        tickmode="array",
        tickvals=shown,
        ticktext=[labels[p] for p in shown],
        tickfont=dict(size=10, **FONT),
        tickangle=0 if y or len(shown) <= 12 else -60,
    )


def at(labels: list[str], p: int) -> str:
    """'␣cat' (pos 3): how a hover names a position."""
    return f"'{labels[p]}' (pos {p})"


def window(n: int, positions=None, max_tokens: int = MAX_TOKENS) -> tuple[list[int], str]:
    """The positions a view shows out of n, and a note for the title when some are left out.

    positions: None (all, or the last max_tokens), a range, a slice or a list of ints.
    """
    if positions is None:
        if n <= max_tokens:
            return list(range(n)), ""
        shown = list(range(n - max_tokens, n))
        return shown, (
            f"positions {shown[0]}..{shown[-1]} of {n}: pass positions=range(a, b) for others, or max_tokens= for more"
        )
    if isinstance(positions, slice):
        positions = range(n)[positions]
    shown = [int(p) + n if int(p) < 0 else int(p) for p in positions]
    bad = [p for p in shown if not 0 <= p < n]
    if bad:
        raise ValueError(f"positions {bad} out of range: this trace has {n} tokens, positions 0..{n - 1}")
    if not shown:
        raise ValueError("positions is empty: give at least one position")
    if len(shown) > max_tokens:
        raise ValueError(
            f"{len(shown)} positions asked for, more than max_tokens={max_tokens}: pass a shorter positions= window"
            " or raise max_tokens= (a browser slows down past a few hundred thousand cells)"
        )
    return shown, ""


def check_cells(cells: int, what: str, fix: str, max_cells: int = MAX_CELLS) -> None:
    """Refuse a figure too big to draw smoothly, naming what to ask for instead."""
    if cells > max_cells:
        raise ValueError(
            f"{what} would draw {cells:,} cells, more than max_cells={max_cells:,} (a browser would freeze):"
            f" {fix}, or raise max_cells="
        )


def subtitle(title: str, *notes: str) -> dict:
    """A layout title: the lesson, then each note (what a colour means, what was left out) on a smaller line."""
    lines = [title] + [f"<sup>{n}</sup>" for n in notes if n]
    return dict(text="<br>".join(lines), x=0.01, xanchor="left", font=dict(size=15))


def numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as float32 numpy on the CPU (bf16/fp16 widen exactly; float32 stays bit-identical)."""
    t = t.detach().cpu()
    return t.numpy() if t.dtype in (torch.int64, torch.int32, torch.bool) else t.float().numpy()


# ---- checking what the caller handed over -----------------------------------------------------------------------


def check_trace(trace, view: str):
    """A Trace, or a TypeError saying how to get one."""
    if not (hasattr(trace, "store") and hasattr(trace, "tokens") and hasattr(trace, "arch")):
        raise TypeError(
            f"{view} takes a Trace: trace = lab.trace(text, sites=...); got {type(trace).__name__}"
            + (" (a Lab: call lab.trace(...) first)" if hasattr(trace, "model") else "")
        )
    return trace


def check_layer(trace, layer: int, view: str) -> int:
    """`layer` as a non-negative index of this model (negative counts from the end), or an error naming the range."""
    n = trace.arch.n_layers
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
        raise TypeError(f"{view}: layer must be an int, got {layer!r}")
    if not -n <= layer < n:
        raise ValueError(f"{view}: layer {layer} out of range: this model has layers 0..{n - 1}")
    return int(layer) % n


def require(trace, sites: list[str], view: str, pattern: list[str]) -> None:
    """Fail early when the trace lacks a site the view needs, saying which sites= to trace with."""
    missing = [s for s in sites if s not in trace]
    if missing:
        shown = ", ".join(repr(s) for s in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise KeyError(
            f"{view} needs {shown}, which this trace did not keep: run lab.trace(inputs, sites={pattern!r})"
            " (and layers=[...] to keep fewer layers)"
        )


def check_index(value: int, n: int, what: str, view: str) -> int:
    """An index in 0..n-1 (negative counts from the end), or an error naming the range."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{view}: {what} must be an int, got {value!r}")
    if not -n <= value < n:
        raise ValueError(f"{view}: {what} {value} out of range 0..{n - 1}")
    return int(value) % n


def ref_line(fig, *, x=None, y=None, text: str = "", log: bool = False, row=None, col=None, color="black", dash="dash"):
    """A labelled reference line, vertical at x= or horizontal at y=. log=True when that axis is logarithmic: plotly
    places shapes on a log axis by value but annotations by log10 of the value (add_hline's own label gets it wrong)."""
    cell = dict(row=row, col=col) if row is not None else {}
    line = dict(color=color, dash=dash, width=1.5)
    label = dict(text=text, showarrow=False, font=dict(size=10, color=color), **cell)
    if x is not None:
        fig.add_vline(x=x, line=line, **cell)
        fig.add_annotation(x=math.log10(x) if log else x, y=1, yref="y domain", xanchor="right", yanchor="top", **label)
    else:
        fig.add_hline(y=y, line=line, **cell)
        fig.add_annotation(
            y=math.log10(y) if log else y, x=1, xref="x domain", xanchor="right", yanchor="bottom", **label
        )
    return fig


def base_layout(fig, title: str, *notes: str, height: int | None = None, width: int | None = None, top: int = 24):
    """Title, fonts and margins every view shares; `top`: extra room above the plots (two-line subplot titles).
    Returns fig."""
    lines = sum(1 for n in notes if n)
    height = height and height + 16 * lines + top
    fig.update_layout(
        title=subtitle(title, *notes),
        template="plotly_white",
        font=dict(size=12),
        hoverlabel=dict(font=FONT),
        margin=dict(l=70, r=30, t=60 + 16 * lines + top, b=70),
        height=height,
        width=width,
    )
    return fig
