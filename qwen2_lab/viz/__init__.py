"""Figures of Qwen2's insides: one function per view, a Trace (or an Arch, a Generation, an experiment's result) in,
a `plotly.graph_objects.Figure` out.

    from qwen2_lab import load, viz
    lab = load("tiny")
    trace = lab.trace("The cat sat on the mat.", sites=["layers.*.attn.*"])
    viz.attention_heads(trace, layer=1)          # every query head, grouped by the KV head it shares

Each view is two functions and their composition: `attention_heads_data(trace, ...)` computes the numbers it draws
(a small dataclass of numpy arrays and their labels: test and reuse those), `draw_attention_heads(data)` draws
them, and `attention_heads(trace, ...)` does both. No view touches a model: the same figures serve notebooks,
widgets (`qwen2_lab.widgets`) and the web demo. Each says in its error which `sites=` to trace when the trace lacks
what it shows, and keeps to size limits (`MAX_TOKENS`, `MAX_HEADS`, `MAX_CELLS`, each overridable per call) so a
72B trace never freezes the browser. No figure sets a width: each fills its container (see `viz.style`).

Offline: in JupyterLab plotly renders figures through the `application/vnd.plotly.v1+json` mime type, drawn by
the jupyterlab-plotly extension that ships inside the plotly wheel (its own plotly.js, no CDN); `FigureWidget`s load
the widget bundle shipped in plotly's package_data. Avoid the `notebook_connected`/`iframe_connected` renderers and
`to_html(include_plotlyjs="cdn")`, which fetch plotly.js from a CDN.
"""

from .attention import (
    attention_heads,
    attention_heads_data,
    draw_attention_heads,
    draw_gqa_group_similarity,
    gqa_group_similarity,
    gqa_group_similarity_data,
    head_overlap,
    head_structure,
    most_structured_head,
)
from .experiments import (
    draw_edit_effect,
    draw_head_grid,
    draw_patching_heatmap,
    edit_effect,
    edit_effect_data,
    head_grid,
    head_grid_data,
    patching_heatmap,
    patching_heatmap_data,
)
from .export import save
from .generation import (
    candidates,
    candidates_data,
    draw_candidates,
    draw_generated_attention,
    draw_kv_cache_growth,
    draw_token_confidence,
    generated_attention,
    generated_attention_data,
    kv_cache_growth,
    kv_cache_growth_data,
    token_confidence,
    token_confidence_data,
)
from .lens import draw_lens_position, draw_logit_lens, lens_position, lens_position_data, logit_lens, logit_lens_data
from .memory import draw_kv_cache_memory, kv_cache_memory, kv_cache_memory_data
from .moe import (
    draw_moe_expert_load,
    draw_moe_routing,
    draw_moe_token,
    moe_expert_load,
    moe_expert_load_data,
    moe_routing,
    moe_routing_data,
    moe_token,
    moe_token_data,
)
from .residual import draw_residual_norms, residual_norms, residual_norms_data
from .rope import (
    draw_rope_distance_decay,
    draw_rope_frequencies,
    draw_rope_rotation,
    rope_distance_decay,
    rope_distance_decay_data,
    rope_frequencies,
    rope_frequencies_data,
    rope_rotation,
    rope_rotation_data,
)
from .style import MAX_CELLS, MAX_HEADS, MAX_TOKENS, MIN_WIDTH, token_label, token_labels

VIEWS = {  # name: (data function, draw function); the view itself is viz.<name>
    "attention_heads": (attention_heads_data, draw_attention_heads),
    "gqa_group_similarity": (gqa_group_similarity_data, draw_gqa_group_similarity),
    "kv_cache_memory": (kv_cache_memory_data, draw_kv_cache_memory),
    "rope_frequencies": (rope_frequencies_data, draw_rope_frequencies),
    "rope_rotation": (rope_rotation_data, draw_rope_rotation),
    "rope_distance_decay": (rope_distance_decay_data, draw_rope_distance_decay),
    "moe_routing": (moe_routing_data, draw_moe_routing),
    "moe_token": (moe_token_data, draw_moe_token),
    "moe_expert_load": (moe_expert_load_data, draw_moe_expert_load),
    "logit_lens": (logit_lens_data, draw_logit_lens),
    "lens_position": (lens_position_data, draw_lens_position),
    "residual_norms": (residual_norms_data, draw_residual_norms),
    # generation (a Generation in)
    "token_confidence": (token_confidence_data, draw_token_confidence),
    "candidates": (candidates_data, draw_candidates),
    "kv_cache_growth": (kv_cache_growth_data, draw_kv_cache_growth),
    "generated_attention": (generated_attention_data, draw_generated_attention),
    # experiments (a Sweep, an Attribution or a RunDiff in)
    "patching_heatmap": (patching_heatmap_data, draw_patching_heatmap),
    "head_grid": (head_grid_data, draw_head_grid),
    "edit_effect": (edit_effect_data, draw_edit_effect),
}

__all__ = [
    # the views: a Trace (or an Arch) in, a Figure out
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
    "token_confidence",
    "candidates",
    "kv_cache_growth",
    "generated_attention",
    "patching_heatmap",
    "head_grid",
    "edit_effect",
    # each view's numbers, and its drawing of them
    "attention_heads_data",
    "draw_attention_heads",
    "gqa_group_similarity_data",
    "draw_gqa_group_similarity",
    "kv_cache_memory_data",
    "draw_kv_cache_memory",
    "rope_frequencies_data",
    "draw_rope_frequencies",
    "rope_rotation_data",
    "draw_rope_rotation",
    "rope_distance_decay_data",
    "draw_rope_distance_decay",
    "moe_routing_data",
    "draw_moe_routing",
    "moe_token_data",
    "draw_moe_token",
    "moe_expert_load_data",
    "draw_moe_expert_load",
    "logit_lens_data",
    "draw_logit_lens",
    "lens_position_data",
    "draw_lens_position",
    "residual_norms_data",
    "draw_residual_norms",
    "token_confidence_data",
    "draw_token_confidence",
    "candidates_data",
    "draw_candidates",
    "kv_cache_growth_data",
    "draw_kv_cache_growth",
    "generated_attention_data",
    "draw_generated_attention",
    "patching_heatmap_data",
    "draw_patching_heatmap",
    "head_grid_data",
    "draw_head_grid",
    "edit_effect_data",
    "draw_edit_effect",
    # which head to look at, how alike heads attend
    "head_structure",
    "most_structured_head",
    "head_overlap",
    # what every view shares
    "VIEWS",
    "save",
    "token_label",
    "token_labels",
    "MAX_TOKENS",
    "MAX_HEADS",
    "MAX_CELLS",
    "MIN_WIDTH",
]
