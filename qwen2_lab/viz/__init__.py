"""Figures of Qwen2's insides: one function per view, a Trace (or an Arch) in, a `plotly.graph_objects.Figure` out.

    from qwen2_lab import load, viz
    lab = load("tiny")
    trace = lab.trace("The cat sat on the mat.", sites=["layers.*.attn.*"])
    viz.attention_heads(trace, layer=1)          # every query head, grouped by the KV head it shares

No view touches a model: the same figures serve notebooks, widgets (`qwen2_lab.widgets`) and the web demo. Each
says in its error which `sites=` to trace when the trace lacks what it shows, and keeps to size limits
(`MAX_TOKENS`, `MAX_HEADS`, `MAX_CELLS`, each overridable per call) so a 72B trace never freezes the browser.

Offline: in JupyterLab plotly 7 renders figures through the `application/vnd.plotly.v1+json` mime type, drawn by
the jupyterlab-plotly extension that ships inside the plotly wheel (its own plotly.js, no CDN); `FigureWidget`s load
the widget bundle shipped in plotly's package_data. Avoid the `notebook_connected`/`iframe_connected` renderers and
`to_html(include_plotlyjs="cdn")`, which fetch plotly.js from a CDN.
"""

from ._style import MAX_CELLS, MAX_HEADS, MAX_TOKENS, token_label, token_labels
from .attention import attention_heads, gqa_group_similarity
from .lens import lens_position, logit_lens
from .memory import kv_cache_memory
from .moe import moe_expert_load, moe_routing, moe_token
from .residual import residual_norms
from .rope import rope_distance_decay, rope_frequencies, rope_rotation

__all__ = [
    "attention_heads",
    "gqa_group_similarity",
    "kv_cache_memory",
    "rope_frequencies",
    "rope_rotation",
    "rope_distance_decay",
    "moe_routing",
    "moe_token",
    "moe_expert_load",
    "logit_lens",
    "lens_position",
    "residual_norms",
    "token_label",
    "token_labels",
    "MAX_TOKENS",
    "MAX_HEADS",
    "MAX_CELLS",
]
