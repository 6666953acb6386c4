"""Explorers: ipywidgets controls over the `qwen2_lab.viz` figures, redrawn in place as you move them.

    from qwen2_lab import load
    from qwen2_lab.widgets import AttentionExplorer
    AttentionExplorer(load("tiny"), "The cat sat on the mat.")      # or AttentionExplorer(trace)

Each explorer takes a Trace, or a Lab and the text to trace (then it traces only the sites its views need, one layer
at a time where it can, and a text box lets you trace something else). It draws through the viz functions (no
second copy of any plot) into one `go.FigureWidget` (`.figure`), updated in place; a view selector switches between
its figures. Every control's callback is a plain method (`update`, `show(...)`, `set_inputs`), so tests and notebooks
drive an explorer without a browser. An explorer displays itself; `.widget` is its ipywidgets box.

Each view shows only the controls it reads (`uses`): the others are hidden while it is on.

Each FigureWidget carries plotly's 5 MB widget bundle in a notebook's saved widget state, hence one per explorer.
"""

from __future__ import annotations

import html
from contextlib import contextmanager

import ipywidgets as W
import plotly.graph_objects as go
import torch

from . import viz
from .arch import Arch, as_arch
from .inputs import normalize_messages
from .lab import Lab
from .rope import resolve_scaling
from .trace import Trace
from .viz.style import notes_in_title


def is_chat(inputs) -> bool:
    """Whether inputs are chat messages (a list of dicts), as opposed to a string or token ids."""
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(m, dict) for m in inputs)


def inputs_text(inputs, tokenizer=None) -> str:
    """What the text box shows for inputs: a string as it is, a chat as its last user message, token ids decoded."""
    if isinstance(inputs, str):
        return inputs
    if is_chat(inputs):
        said = [m["content"] for m in normalize_messages(inputs) if m["role"] == "user"]
        return said[-1] if said else ""
    ids = inputs.flatten().tolist() if isinstance(inputs, torch.Tensor) else list(inputs)
    return tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids))


def with_text(inputs, text: str):
    """The inputs that text typed in the box stands for: in a chat, the chat up to its last user message, with the
    text as that message (the system prompt and earlier turns kept, a reply to the old message dropped); otherwise
    the text itself."""
    if not is_chat(inputs):
        return text
    messages = normalize_messages(inputs)
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages))
    return messages[:last] + [{"role": "user", "content": text}]


def refresh(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Make `widget` show `fig`, in place: traces of the same kinds are updated, otherwise replaced. The notes go into
    the title's text (viz.style.notes_in_title: a FigureWidget's first drawing would put them over the title)."""
    notes_in_title(fig)
    same = len(widget.data) == len(fig.data) and all(a.type == b.type for a, b in zip(widget.data, fig.data))
    with widget.batch_update():
        if same:
            for old, new in zip(widget.data, fig.data):
                props = new.to_plotly_json()
                props.pop("type")
                old.update(props, overwrite=True)
    if not same:
        widget.data = ()
        widget.add_traces(list(fig.data))
    widget.layout = fig.layout


class Source:
    """Where an explorer's traces come from: one Trace as given, or a Lab traced on demand (and cached).

    sites: the site patterns the explorer's views need; per_layer: trace one layer at a time (attention patterns of
    a big model for every layer would not fit); lens: also compute the logit lens with this many tokens.
    """

    def __init__(self, source, inputs, sites: list[str], *, per_layer=False, lens=0, view="", arch_ok=False):
        self.lab, self.trace, self.inputs = None, None, None
        if isinstance(source, Trace):
            self.trace = source
        elif isinstance(source, Lab):
            if inputs is None:
                raise ValueError(f"{view}(lab, inputs): give the text (or chat messages, or ids) to look at")
            self.lab, self.inputs = source, inputs
        elif not (arch_ok and isinstance(source, Arch)):
            raise TypeError(
                f"{view} takes a Trace, or a Lab and inputs{', or an Arch' if arch_ok else ''}; got {type(source).__name__}"
            )
        self.arch = as_arch(source)
        self.sites, self.per_layer, self.lens = sites, per_layer, lens
        self._cache: dict = {}

    @property
    def has_tensors(self) -> bool:
        """False for an explorer built from an Arch alone."""
        return self.lab is not None or self.trace is not None

    def get(self, layer: int | None = None):
        """The Trace holding `layer` (every layer when layer is None or per_layer is off)."""
        if self.lab is None:
            if self.trace is None:
                raise ValueError("this explorer was built from an Arch: give it a Trace, or a Lab and inputs")
            return self.trace
        key = layer if self.per_layer and layer is not None else "all"
        if key not in self._cache:
            layers = [layer] if key != "all" else None
            self._cache[key] = self.lab.trace(self.inputs, sites=self.sites, layers=layers, lens=self.lens)
        return self._cache[key]

    def set_inputs(self, inputs) -> None:
        if self.lab is None:
            raise ValueError("this explorer shows a fixed Trace; build it from a Lab to trace other inputs")
        self.inputs, self._cache = inputs, {}

    @property
    def text(self) -> str:
        """The inputs as the text box shows them (see inputs_text)."""
        return inputs_text(self.inputs, self.lab.tokenizer if self.lab is not None else None)

    @property
    def n_tokens(self) -> int:
        """Tokens in the inputs (tokenizing only: no forward pass)."""
        if self.lab is not None:
            return len(self.lab.encode(self.inputs))
        return len(self.trace.tokens) if self.trace is not None else 1


class Explorer:
    """What every explorer shares: a source, controls, a view selector, one FigureWidget and a message line.

    `uses`: for each view, the names of the controls it reads; the others are hidden while it is shown.
    """

    name = "Explorer"
    views: tuple[str, ...] = ()
    uses: dict[str, tuple[str, ...]] = {}
    REFUSED = (ValueError, KeyError, MemoryError)  # what the views raise for a request they cannot draw

    def __init__(self, source: Source, controls: list[W.ValueWidget], boxes: list[W.Widget] | None = None):
        """controls: the widgets whose values the views read; boxes: how to lay them out (default one row)."""
        self.source = source
        self.figure = go.FigureWidget()
        self.message = W.HTML()
        self.view = W.ToggleButtons(options=self.views, value=self.views[0]) if len(self.views) > 1 else None
        head = [self.view] if self.view else []
        self.text = None
        if source.lab is not None:
            self.text = W.Text(value=source.text, description="user" if is_chat(source.inputs) else "inputs",
                               continuous_update=False, layout=W.Layout(width="90%"))  # fmt: skip
            self.text.observe(self._text_changed, names="value")
            head.insert(0, self.text)
        self.widget = W.VBox([*head, W.HBox(boxes or controls), self.message, self.figure])
        self._holding = False
        for c in [*controls, *([self.view] if self.view else [])]:
            c.observe(self._changed, names="value")

    @contextmanager
    def holding(self):
        """Set controls without each change redrawing (the caller redraws once)."""
        held, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = held

    def _text_changed(self, change) -> None:
        if not self._holding:
            try:
                self.set_inputs(with_text(self.source.inputs, change["new"]))
            except self.REFUSED as e:  # typed in a browser: say it there, nobody would see a traceback
                self._say(e)

    def _say(self, error: Exception) -> None:
        self.message.value = f"<span style='color:#b00'>{type(error).__name__}: {html.escape(str(error))}</span>"

    def _changed(self, change=None) -> None:
        if not self._holding:
            self.update()

    def show(self, **values) -> Explorer:
        """Set several controls at once (e.g. show(layer=2, head=5)), then redraw once. Returns self."""
        with self.holding():
            for name, value in values.items():
                control = getattr(self, name, None)
                if not isinstance(control, W.ValueWidget):
                    raise AttributeError(f"{self.name} has no control {name!r}")
                control.value = value
        self.update()
        return self

    def set_inputs(self, inputs) -> None:
        """Trace other inputs (explorers built from a Lab) and redraw."""
        self.source.set_inputs(inputs)
        if self.text is not None:
            with self.holding():
                self.text.value = self.source.text
        self._inputs_changed()
        self.update()

    def _inputs_changed(self) -> None:
        """Refit the token slider (`self.tokens_slider`, if the explorer has one) to the new inputs' length."""
        slider = getattr(self, "tokens_slider", None)
        if slider is not None:
            n = self.source.n_tokens
            with self.holding():
                slider.max, slider.value = n - 1, min(slider.value, n - 1)

    def _show_controls(self) -> None:
        """Hide the controls the current view does not read."""
        if self.view is None:
            return
        used = self.uses.get(self.view.value, ())
        for view_controls in self.uses.values():
            for name in view_controls:
                getattr(self, name).layout.display = None if name in used else "none"

    def update(self) -> go.FigureWidget:
        """Redraw the figure for the current controls; a request the views refuse shows as a message instead."""
        self._show_controls()
        try:
            fig = self.draw()
        except self.REFUSED as e:
            self._say(e)
            return self.figure
        self.message.value = ""
        refresh(self.figure, fig)
        return self.figure

    def draw(self) -> go.Figure:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, and its first view as a static figure for where no kernel runs it (an exported page,
        the web site): Jupyter shows the widget, which it ranks above HTML; a page without widgets shows the figure."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        note = f"{self.name}: its first view. Run this notebook (make lab, or Open in Colab) to move its controls."
        bundle["text/html"] = viz.export.figure_html(go.Figure(self.figure), note)
        return bundle


ALL = -1  # the "all groups" / "all heads" menu entries (a Dropdown shows a None value as blank)


def _slider(description: str, n: int, value: int = 0) -> W.IntSlider:
    return W.IntSlider(value=value, min=0, max=max(0, n - 1), description=description, continuous_update=False)


class AttentionExplorer(Explorer):
    """Attention patterns by layer, KV group and head (viz.attention_heads), or how alike each group's heads attend
    (viz.gqa_group_similarity)."""

    name = "AttentionExplorer"
    views = ("patterns", "group similarity")
    uses = {"patterns": ("layer", "group", "head"), "group similarity": ("layer",)}

    def __init__(self, source, inputs=None, *, layer: int = 0):
        src = Source(source, inputs, ["layers.*.attn.pattern"], per_layer=True, view=self.name)
        arch, g = src.arch, src.arch.group_size
        self.layer = _slider("layer", arch.n_layers, layer)
        groups = [(f"KV {j}: heads {j * g}..{j * g + g - 1}", j) for j in range(arch.n_kv_heads)]
        self.group = W.Dropdown(options=[("all groups", ALL), *groups], value=ALL, description="KV group")
        self.head = W.Dropdown(options=self._heads(arch, ALL), value=ALL, description="head")
        self.group.observe(self._group_changed, names="value")
        super().__init__(src, [self.layer, self.group, self.head])
        self.update()

    @staticmethod
    def _heads(arch, group):
        """The head menu: every head, or the heads of one KV group."""
        g = arch.group_size
        heads = range(arch.n_heads) if group == ALL else range(group * g, (group + 1) * g)
        return [("all heads shown", ALL), *[(f"head {h}", h) for h in heads]]

    def _group_changed(self, change) -> None:
        """Offer only the chosen group's heads (the group's own observer then redraws)."""
        with self.holding():
            self.head.options = self._heads(self.source.arch, change["new"])
            self.head.value = ALL

    def draw(self) -> go.Figure:
        layer = self.layer.value
        trace = self.source.get(layer)
        if self.view.value == "group similarity":
            return viz.gqa_group_similarity(trace, layer)
        if self.head.value != ALL:
            return viz.attention_heads(trace, layer, heads=[self.head.value])
        groups = None if self.group.value == ALL else [self.group.value]
        return viz.attention_heads(trace, layer, groups=groups)


class RopeExplorer(Explorer):
    """RoPE with your own theta and YaRN factor: the frequencies (viz.rope_frequencies), the score against distance
    (viz.rope_distance_decay, on a head's real mean q and k) and a real query turning (viz.rope_rotation).

    Takes a Trace or a Lab and inputs (all three views), or an Arch (frequencies and distance decay, q = k = ones).
    """

    name = "RopeExplorer"
    views = ("frequencies", "distance decay", "rotation")
    uses = {
        "frequencies": ("theta", "factor"),
        "distance decay": ("theta", "factor", "layer", "head"),
        "rotation": ("theta", "factor", "layer", "head", "token"),
    }
    SITES = ["layers.*.attn.q", "layers.*.attn.k", "layers.*.attn.q_rot", "layers.*.attn.k_rot"]

    def __init__(self, source, inputs=None, *, layer: int = 0, head: int = 0):
        src = Source(source, inputs, self.SITES, per_layer=True, view=self.name, arch_ok=True)
        arch = src.arch
        own = resolve_scaling(arch) or {}
        self.theta = W.FloatLogSlider(value=arch.rope_theta, base=10, min=3, max=8, step=0.25, description="theta",
                                      continuous_update=False)  # fmt: skip
        self.factor = W.FloatSlider(value=float(own.get("factor", 1.0)), min=1.0, max=16.0, step=0.5,
                                    description="YaRN factor", continuous_update=False)  # fmt: skip
        self.layer = _slider("layer", arch.n_layers, layer)
        self.head = _slider("head", arch.n_heads, head)
        self.token = self.tokens_slider = _slider("token", src.n_tokens, src.n_tokens - 1)
        for c in (self.layer, self.head, self.token):
            c.disabled = not src.has_tensors
        controls = [self.theta, self.factor, self.layer, self.head, self.token]
        super().__init__(src, controls, [W.VBox(controls[:2]), W.VBox(controls[2:])])
        self.update()

    @property
    def scaling(self):
        """The YaRN the factor slider asks for (False = plain RoPE at factor 1)."""
        return False if self.factor.value <= 1 else float(self.factor.value)

    def draw(self) -> go.Figure:
        theta, scaling, view, src = self.theta.value, self.scaling, self.view.value, self.source
        if view == "frequencies":
            return viz.rope_frequencies(src.arch, scaling, theta=theta)
        if view == "distance decay" and not src.has_tensors:  # q = k = ones
            return viz.rope_distance_decay(src.arch, scaling=scaling, theta=theta)
        trace, layer, head = src.get(self.layer.value), self.layer.value, self.head.value
        if view == "distance decay":
            return viz.rope_distance_decay(trace, layer, head, scaling=scaling, theta=theta)
        return viz.rope_rotation(trace, layer, head, self.token.value, theta=theta, scaling=scaling)


class MoEExplorer(Explorer):
    """Qwen2-MoE routing: one layer's token x expert decision (viz.moe_routing), one token's (viz.moe_token), and
    the load, entropy and near-ties of every layer (viz.moe_expert_load)."""

    name = "MoEExplorer"
    views = ("layer", "token", "all layers")
    uses = {"layer": ("layer",), "token": ("layer", "token"), "all layers": ()}

    def __init__(self, source, inputs=None, *, layer: int | None = None, token: int = 0):
        src = Source(source, inputs, ["layers.*.moe.*"], view=self.name)
        arch = src.arch
        if not arch.is_moe:
            raise ValueError(f"{self.name}: {arch.name} is a dense Qwen2; load a Qwen2-MoE, e.g. load('tiny-moe')")
        self.layer = W.Dropdown(options=list(arch.moe_layers), value=arch.moe_layers[0] if layer is None else layer,
                                description="MoE layer")  # fmt: skip
        self.token = self.tokens_slider = _slider("token", src.n_tokens, token)
        super().__init__(src, [self.layer, self.token])
        self.update()

    def draw(self) -> go.Figure:
        trace = self.source.get()
        if self.view.value == "layer":
            return viz.moe_routing(trace, self.layer.value)
        if self.view.value == "token":
            return viz.moe_token(trace, self.layer.value, self.token.value)
        return viz.moe_expert_load(trace)


class LensExplorer(Explorer):
    """The logit lens: every layer's guess at every position (viz.logit_lens), or one position's top-k per layer
    (viz.lens_position). From a Lab it traces with lens=k and writes guesses with the Lab's tokenizer."""

    name = "LensExplorer"
    views = ("all positions", "one position")
    uses = {"all positions": (), "one position": ("position",)}

    def __init__(self, source, inputs=None, *, k: int = 5, tokenizer=None, position: int = -1):
        src = Source(source, inputs, ["logits"], lens=k, view=self.name)
        self.tokenizer = tokenizer if tokenizer is not None or src.lab is None else src.lab.tokenizer
        n = src.n_tokens
        self.position = self.tokens_slider = _slider("position", n, position % n)
        super().__init__(src, [self.position])
        self.update()

    def draw(self) -> go.Figure:
        trace = self.source.get()
        if self.view.value == "all positions":
            return viz.logit_lens(trace, tokenizer=self.tokenizer)
        return viz.lens_position(trace, self.position.value, tokenizer=self.tokenizer)


class EditExplorer(Explorer):
    """Switch heads (and, on a Qwen2-MoE, routed experts) off and on, and see the answer change at once
    (viz.edit_effect: the answer tokens' logits and the next token's probabilities, as built against as edited).

    `answer`: the tokens to follow, (right, wrong) ids or one-token texts, or one token; None follows the unedited
    run's most probable next token. Callbacks: toggle_head(layer, head), toggle_expert(layer, expert), clear().
    """

    name = "EditExplorer"

    def __init__(self, lab: Lab, inputs, answer=None, *, layer: int = 0):
        from .edits import drop_expert, zero_heads
        from .inputs import answer_ids

        if not isinstance(lab, Lab):
            raise TypeError(f"{self.name} takes a Lab and inputs; got {type(lab).__name__}")
        src = Source(lab, inputs, [], view=self.name)
        self.lab, self._zero_heads, self._drop_expert = lab, zero_heads, drop_expert
        self.heads_off: set[tuple[int, int]] = set()
        self.experts_off: set[tuple[int, int]] = set()
        self.clean = lab.trace(inputs, sites=[])
        if answer is None:
            answer = int(self.clean.logits[-1].argmax())
        self.answer = answer_ids(lab.tokenizer, answer, lab.arch.vocab)
        arch = lab.arch
        self.layer = _slider("layer", arch.n_layers, layer)
        self.head_buttons = [W.ToggleButton(description=f"{h // arch.group_size}.{h % arch.group_size}",
                                            tooltip=f"head {h} (KV group {h // arch.group_size})",
                                            layout=W.Layout(width="52px")) for h in range(arch.n_heads)]  # fmt: skip
        self.expert_buttons = [W.ToggleButton(description=f"E{e}", layout=W.Layout(width="52px"))
                               for e in range(arch.n_experts)]  # fmt: skip
        for h, b in enumerate(self.head_buttons):
            b.observe(lambda c, h=h: self._pressed(self.heads_off, h, c["new"]), names="value")
        for e, b in enumerate(self.expert_buttons):
            b.observe(lambda c, e=e: self._pressed(self.experts_off, e, c["new"]), names="value")
        self.layer.observe(lambda c: self._sync_buttons(), names="value")
        self.clear_button = W.Button(description="all back on")
        self.clear_button.on_click(lambda b: self.clear())
        rows = [W.HBox([W.Label("heads off (KV group.head):"), *self.head_buttons])]
        if arch.is_moe:
            rows.append(W.HBox([W.Label("experts dropped:"), *self.expert_buttons]))
        super().__init__(src, [self.layer], [W.VBox([W.HBox([self.layer, self.clear_button]), *rows])])
        self._sync_buttons()
        self.update()

    def _pressed(self, off: set, index: int, pressed: bool) -> None:
        if self._holding:
            return
        key = (self.layer.value, index)
        (off.add if pressed else off.discard)(key)
        self.update()

    def _sync_buttons(self) -> None:
        """Show the current layer's heads and experts as they are (pressed = off)."""
        layer = self.layer.value
        with self.holding():
            for h, b in enumerate(self.head_buttons):
                b.value = (layer, h) in self.heads_off
            moe_layer = layer in self.lab.arch.moe_layers
            for e, b in enumerate(self.expert_buttons):
                b.value, b.disabled = (layer, e) in self.experts_off, not moe_layer

    def toggle_head(self, layer: int, head: int) -> EditExplorer:
        """Switch a query head off (or back on) and redraw."""
        self._check(layer, head, self.lab.arch.n_heads, "head")
        self.heads_off ^= {(layer, head)}
        self._sync_buttons()
        self.update()
        return self

    def toggle_expert(self, layer: int, expert: int) -> EditExplorer:
        """Take a routed expert out of a MoE layer's routing (or put it back) and redraw."""
        if layer not in self.lab.arch.moe_layers:
            raise ValueError(f"layer {layer} is not a MoE layer; the MoE layers are {list(self.lab.arch.moe_layers)}")
        self._check(layer, expert, self.lab.arch.n_experts, "expert")
        self.experts_off ^= {(layer, expert)}
        self._sync_buttons()
        self.update()
        return self

    def clear(self) -> EditExplorer:
        """Everything back on."""
        self.heads_off, self.experts_off = set(), set()
        self._sync_buttons()
        self.update()
        return self

    def _check(self, layer: int, index: int, n: int, what: str) -> None:
        if not 0 <= layer < self.lab.arch.n_layers or not 0 <= index < n:
            raise ValueError(f"{self.name}: layer {layer}, {what} {index}: this model has layers 0..{self.lab.arch.n_layers - 1}"
                             f" and {what}s 0..{n - 1}")  # fmt: skip

    def edits(self) -> list:
        """The edits the switches stand for (qwen2_lab.edits), for lab.trace or lab.generate."""
        out = [self._zero_heads(L, [h]) for L, h in sorted(self.heads_off)]
        return out + [self._drop_expert(L, e) for L, e in sorted(self.experts_off)]

    def edited(self) -> Trace:
        return self.lab.trace(self.source.inputs, sites=[], edits=self.edits())

    def probability(self, token) -> float:
        """The edited run's probability of `token` (an id or a one-token text) as the next token."""
        from .inputs import token_id

        i = token_id(self.lab.tokenizer, token, self.lab.arch.vocab)
        return float(self.edited().logits[-1].float().softmax(-1)[i])

    def _inputs_changed(self) -> None:
        self.clean = self.lab.trace(self.source.inputs, sites=[])

    def draw(self) -> go.Figure:
        from .experiments import compare_runs

        answer = self.answer if len(self.answer) == 2 else self.answer[0]
        return viz.edit_effect(compare_runs(self.clean, self.edited(), answer=answer), self.lab.tokens)


def with_attention(gen, layer: int):
    """`gen` with layers.{layer}.attn.pattern at every step, for viz.generated_attention: the steps' own when they
    kept it, else read from one forward over the prompt and the answer (with the generation's edits). Attention is
    causal, so row t of that forward is what the cached forward of the step at position t computed; tests check the
    two agree at 1e-5."""
    from dataclasses import replace

    site = f"layers.{layer}.attn.pattern"
    if site in gen.steps[0].sites:
        return gen
    read = torch.tensor(gen.token_ids[:-1], dtype=torch.long, device=gen.prompt_ids.device)
    ids = torch.cat([gen.prompt_ids, read])  # (T,): everything the step forwards read
    pattern = gen.lab.trace(ids, sites=[site], edits=gen.options.edits)[site]  # (nH, T, T)
    P = len(gen.prompt_ids)
    steps = [replace(s, sites={**s.sites, site: pattern[:, P - 1 + i : P + i, : P + i]})  # (nH, 1, P + i)
             for i, s in enumerate(gen.steps)]  # fmt: skip
    return replace(gen, steps=steps)


class GenerationExplorer(Explorer):
    """Scrub through a recorded generation (lab.generate_steps): each step's candidates raw and after the sampling
    processors (viz.candidates), the whole answer by confidence (viz.token_confidence), the KV cache growing
    (viz.kv_cache_growth), and where each token looked in any layer (viz.generated_attention: the pattern the steps
    kept, else traced when first shown). Callback: show(step=3, view="candidates")."""

    name = "GenerationExplorer"
    views = ("candidates", "confidence", "kv cache", "attention")
    uses = {"candidates": ("step",), "confidence": (), "kv cache": (), "attention": ("layer",)}

    def __init__(self, gen, *, step: int = 0):
        from .generate import Generation

        if not isinstance(gen, Generation) or not gen.steps:
            raise TypeError(f"{self.name} takes a Generation with steps: gen = lab.generate_steps(inputs, ...)")
        self.gen = gen
        self.step = _slider("step", len(gen.steps), step)
        kept = sorted({int(s.split(".")[1]) for s in gen.steps[0].sites if s.endswith(".attn.pattern")})
        n = gen.lab.arch.n_layers
        self.layer = W.Dropdown(options=list(range(n)), value=kept[0] if kept else n // 2, description="layer")
        self._attention: dict[int, object] = {}  # layer -> gen with that layer's pattern at every step
        super().__init__(Source(gen.lab.arch, None, [], view=self.name, arch_ok=True), [self.step, self.layer])
        self.update()

    def draw(self) -> go.Figure:
        view = self.view.value
        if view == "candidates":
            return viz.candidates(self.gen, self.step.value)
        if view == "confidence":
            return viz.token_confidence(self.gen)
        if view == "kv cache":
            return viz.kv_cache_growth(self.gen)
        layer = self.layer.value
        if layer not in self._attention:
            self._attention[layer] = with_attention(self.gen, layer)
        return viz.generated_attention(self._attention[layer], layer)
