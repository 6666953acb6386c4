"""What every view shares: readable token labels, the size limits, the checks that fail early, and one layout.

Limits. A browser draws a few hundred thousand heatmap cells smoothly; a 72B model (64 heads, 80 layers) on a long
prompt asks for far more. Each view therefore shows at most `MAX_TOKENS` positions on a token axis (the last ones,
unless `positions=` chooses others; the title says what was left out), at most `MAX_HEADS` attention heads, and
refuses a figure of more than `MAX_CELLS` cells with a message naming the smaller request to make instead.

Fit. No figure sets a width: each takes its container's (a notebook cell, the demo's column, an exported page) and
is laid out to read from `MIN_WIDTH` px up: titles wrap, legends sit below the plots, and token axes are category
axes that plotly thins and turns by itself as the space shrinks, so their labels never overlap. Every position keeps
its own category (`position_keys`), so a token that occurs twice is still two columns; `labelalias` writes the
token under it.
"""

from __future__ import annotations

import html
import math
import textwrap
import unicodedata

import numpy as np
import torch
from plotly.subplots import make_subplots

from ..trace import Trace

MAX_TOKENS = 64  # positions on one token axis
MAX_HEADS = 16  # attention heatmaps in one figure
MAX_CELLS = 250_000  # heatmap cells in one figure: about 1 MB of float32, drawn in well under a second
MAX_LABEL = 14  # characters of one token label before it is cut with '…'
MIN_WIDTH = 640  # px: the narrowest container every figure is laid out to read in (tested at 800 and 1280)
TITLE_CHARS, NOTE_CHARS = 76, 100  # characters per line of a title (16 px) and of a note (12.5 px) at MIN_WIDTH

VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
FONT = dict(family="DejaVu Sans Mono, Menlo, Consolas, monospace")  # fixed width: ␣ and ↵ line up
# Blues, with most of its steps below 0.2: attention over many keys is mostly small weights, which a linear scale
# leaves white. The colour bar shows the stretch; hovers give the exact weight.
WEIGHT_SCALE = [
    [0.0, "#ffffff"], [0.02, "#eef4fb"], [0.05, "#d6e6f4"], [0.1, "#abd0e6"], [0.2, "#6aaed6"],
    [0.4, "#3787c0"], [0.7, "#105ba4"], [1.0, "#08306b"],
]  # fmt: skip


def as_trace(x, view: str = "this function") -> Trace:
    """x itself when it is a Trace; otherwise a TypeError naming `view` and saying how to get a Trace."""
    if isinstance(x, Trace):
        return x
    hint = " (a Lab: call lab.trace(...) first)" if callable(getattr(x, "trace", None)) else ""
    raise TypeError(f"{view} takes a Trace: trace = lab.trace(text, sites=...); got {type(x).__name__}{hint}")


# ---- tokens -----------------------------------------------------------------------------------------------------


def text_columns(text: str) -> int:
    """The columns `text` takes in a monospace font: two for a wide character (Chinese, full-width punctuation), one
    for any other."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def token_label(token: str, max_label: int = MAX_LABEL) -> str:
    """A token as it can be read on an axis: whitespace made visible (␣ ↵ ⇥), other control characters escaped,
    HTML-like text ('<|im_start|>', '<s>') escaped so plotly shows it instead of interpreting it, cut with '…' when it
    takes more than `max_label` columns (a Chinese character takes two)."""
    if token == "":
        return "∅"
    out = "".join(VISIBLE.get(c, c if c.isprintable() else repr(c)[1:-1]) for c in token)
    if text_columns(out) > max_label:
        kept = 0
        while text_columns(out[: kept + 1]) <= max_label - 1:
            kept += 1
        out = out[:kept] + "…"
    return html.escape(out, quote=False)


def token_labels(tokens: list[str]) -> list[str]:
    """token_label for each token."""
    return [token_label(t) for t in tokens]


def fit_chars(columns: int, px_per_char: float = 6.6) -> int:
    """How many characters of 11 px text fit in one of `columns` equal cells at MIN_WIDTH (between 3 and 14): a cell's
    text set at a readable size is cut to this, since plotly would otherwise shrink it to fit (to 4 px)."""
    return max(3, min(14, int((MIN_WIDTH - 200) / columns / px_per_char) - 1))


def position_keys(positions) -> list[str]:
    """The category of each position on a token axis: '0', '1', ... (one per position, so repeats stay apart)."""
    return [str(int(p)) for p in positions]


def token_axis(labels: list[str], positions: list[int], *, reverse: bool = False) -> dict:
    """Axis settings that write token labels (labels[p]) under the categories position_keys(positions), in order
    (reverse=True: top to bottom on a y axis). plotly shows as many labels as fit without overlapping, thinned and
    turned as the figure narrows."""
    keys = position_keys(positions)
    ends = [-0.5, len(keys) - 0.5]
    return dict(
        type="category",
        categoryorder="array",
        categoryarray=keys,
        range=ends[::-1] if reverse else ends,  # exactly the cells: markers drawn on them add no padding
        labelalias={k: labels[p] for k, p in zip(keys, positions)},
        tickfont=dict(size=11, **FONT),
        automargin=True,
    )


def at(labels: list[str], p: int) -> str:
    """'␣cat' (pos 3): how a hover or a title names a position."""
    return f"'{labels[p]}' (pos {p})"


def window(n: int, positions=None, max_tokens: int = MAX_TOKENS) -> tuple[list[int], str]:
    """The positions a view shows out of n, and a note for the title when some are left out.

    positions: None (all, or the last max_tokens), a range, a slice (`slice(-24, None)`: the last 24) or ints.
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
    return shown, "" if len(shown) == n else f"positions {span(shown)} of {n}"


def span(positions: list[int]) -> str:
    """'3..9' for a run of positions, else '3, 5, 9' (shortened past six)."""
    if positions == list(range(positions[0], positions[0] + len(positions))):
        return f"{positions[0]}..{positions[-1]}" if len(positions) > 1 else str(positions[0])
    shown = ", ".join(map(str, positions[:6]))
    return shown + (f" and {len(positions) - 6} more" if len(positions) > 6 else "")


def numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as float32 numpy on the CPU (bf16/fp16 widen exactly; float32 stays bit-identical)."""
    t = t.detach().cpu()
    return t.numpy() if t.dtype in (torch.int64, torch.int32, torch.bool) else t.float().numpy()


# ---- checking what the caller handed over, before any work --------------------------------------------------------


def check_index(value: int, n: int, what: str, view: str) -> int:
    """An index in 0..n-1 (negative counts from the end), or an error naming the range."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{view}: {what} must be an int, got {value!r}")
    if not -n <= value < n:
        raise ValueError(f"{view}: {what} {value} out of range 0..{n - 1}")
    return int(value) % n


def check_layer(trace: Trace, layer: int, view: str) -> int:
    """`layer` as a non-negative index of this model (negative counts from the end), or an error naming the range."""
    n = trace.arch.n_layers
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
        raise TypeError(f"{view}: layer must be an int, got {layer!r}")
    if not -n <= layer < n:
        raise ValueError(f"{view}: layer {layer} out of range: this model has layers 0..{n - 1}")
    return int(layer) % n


def check_moe(arch, view: str) -> None:
    """An error pointing at a Qwen2-MoE when the model has no experts."""
    if not arch.is_moe:
        raise ValueError(
            f"{view}: {arch.name} is a dense Qwen2 (no experts): load a Qwen2-MoE, e.g. qwen2_lab.load('tiny-moe')"
        )


def require(trace: Trace, sites: list[str], view: str, hint: list[str]) -> None:
    """Fail early when the trace lacks a site the view needs, saying which sites= to trace with."""
    missing = [s for s in sites if s not in trace]
    if missing:
        shown = ", ".join(repr(s) for s in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise KeyError(
            f"{view} needs {shown}, which this trace did not keep: run lab.trace(inputs, sites={hint!r})"
            " (and layers=[...] to keep fewer layers)"
        )


def layer_sites(
    trace, layer: int, names: list[str], view: str, *, hint: list[str] | None = None, moe: bool = False
) -> tuple[Trace, int, list[torch.Tensor]]:
    """What a view of one layer checks first: a Trace, a layer of its model (negative counts from the end; moe=True:
    an MoE layer), and the sites `layers.{layer}.{name}` for each name. Returns (trace, layer, their tensors).

    hint: the sites= patterns the error suggests (default `layers.*.{name}` for each name).
    """
    trace = as_trace(trace, view)
    layer = check_layer(trace, layer, view)
    if moe:
        check_moe(trace.arch, view)
        if layer not in trace.arch.moe_layers:
            raise ValueError(
                f"{view}: layer {layer} is a dense layer; the MoE layers are {list(trace.arch.moe_layers)}"
            )
    sites = [f"layers.{layer}.{name}" for name in names]
    require(trace, sites, view, hint or [f"layers.*.{name}" for name in names])
    return trace, layer, [trace[s] for s in sites]


def layers_with(trace: Trace, candidates, names, view: str, hint: list[str]) -> list[int]:
    """The layers among `candidates` for which the trace kept every site `names(layer)` lists (a view across layers
    shows those); none: the error for the first candidate."""
    layers = [i for i in candidates if all(s in trace for s in names(i))]
    if not layers:
        require(trace, names(candidates[0]), view, hint)
    return layers


def check_cells(cells: int, what: str, fix: str, max_cells: int = MAX_CELLS) -> None:
    """Refuse a figure too big to draw smoothly, naming what to ask for instead."""
    if cells > max_cells:
        raise ValueError(
            f"{what} would draw {cells:,} cells, more than max_cells={max_cells:,} (a browser would freeze):"
            f" {fix}, or raise max_cells="
        )


# ---- drawing ----------------------------------------------------------------------------------------------------


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, broken at spaces (plotly never wraps a title by itself)."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


LINE_PX, NOTE_PX = 21, 17  # px per line of a title (16 px text) and of its notes (12.5 px)
PAD = 40  # px above the title: room for plotly's mode bar (on hover) and a label a page puts over the corner
LEGEND_BELOW = dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0.01, xanchor="left")


def base_layout(fig, title: str, *notes: str, height: int, top: int = 0):
    """Title, notes, fonts and margins every view shares; returns fig.

    The title says what the figure teaches; each note (what a colour means, what was left out) goes on the lines
    under it, all wrapped to fit MIN_WIDTH. height: px for the plots below the title; top: extra px above them
    (subplot titles). No width: the figure fills its container.
    """
    lines = wrap(title, TITLE_CHARS)
    note_lines = [line for n in notes if n for line in wrap(n, NOTE_CHARS)]
    head = PAD + 2 + LINE_PX * len(lines) + NOTE_PX * len(note_lines) + 24 + top  # px from the top to the plots
    fig.update_layout(
        title=dict(
            text="<br>".join(lines), x=0.01, xanchor="left", yref="container", y=1, yanchor="top", pad=dict(t=PAD),
            font=dict(size=16), subtitle=dict(text="<br>".join(note_lines), font=dict(size=12.5, color="#444444")),
        ),
        template="plotly_white",
        font=dict(size=12),
        hoverlabel=dict(font=FONT),
        margin=dict(l=70, r=30, t=head, b=50),
        height=head + height + 50,
        autosize=True,
    )  # fmt: skip
    return fig


LIFT_PX = 11  # px plotly lifts a title of several lines anchored at its top (measured in Chromium, plotly.js 3)


def notes_in_title(fig):
    """fig with its notes written as the last lines of the title's own text, instead of as plotly's subtitle; returns
    fig. For FigureWidgets (widgets.py): plotly places a subtitle under the title's measured box, and a FigureWidget
    draws itself before the page holds it, where text measures 0 px, so the notes land on top of the title and the
    mode bar until something redraws the figure. One text has nothing to place."""
    title = fig.layout.title
    notes = title.subtitle.text
    if not notes:
        return fig
    lines = notes.split("<br>")
    small = [f"<span style='font-size:{title.subtitle.font.size}px;color:{title.subtitle.font.color}'>{x}</span>" for x in lines]  # fmt: skip
    grow = (LINE_PX - NOTE_PX) * len(lines)  # a line of the title's text is as tall as its font's, whatever its spans
    fig.update_layout(
        title=dict(text="<br>".join([title.text, *small]), subtitle_text="", pad_t=title.pad.t + LIFT_PX),
        margin_t=fig.layout.margin.t + grow,
        height=fig.layout.height + grow,
    )
    return fig


def subplots(**kw):
    """plotly's make_subplots, with subplot titles at 13 px (they share narrow columns)."""
    fig = make_subplots(**kw)
    fig.update_annotations(font_size=13)
    return fig


def ref_line(fig, *, x=None, y=None, text: str = "", log: bool = False, row=None, col=None, color="black", dash="dash",
             at: float = 1.0):  # fmt: skip
    """A labelled reference line, vertical at x= or horizontal at y=; a vertical line's label hangs from `at` (a
    fraction of the plot's height). log=True when that axis is logarithmic: plotly places shapes on a log axis by
    value but annotations by log10 of the value (add_hline's own label gets it wrong)."""
    cell = dict(row=row, col=col) if row is not None else {}
    line = dict(color=color, dash=dash, width=1.5)
    label = dict(text=text, showarrow=False, font=dict(size=11, color=color), **cell)
    if x is not None:
        fig.add_vline(x=x, line=line, **cell)
        fig.add_annotation(
            x=math.log10(x) if log else x, y=at, yref="y domain", xanchor="right", yanchor="top", **label
        )
    else:
        fig.add_hline(y=y, line=line, **cell)
        fig.add_annotation(
            y=math.log10(y) if log else y, x=1, xref="x domain", xanchor="right", yanchor="bottom", **label
        )
    return fig
