"""One forward pass, looked at and changed: the `visit` that `forward.run` calls at every site, and the edits it makes.

A `Recorder` keeps the sites a `SiteFilter` asks for, applies the edits resolved for this model and reads the logit
lens out of each layer's residual. `lab.trace`, `lab.stages`, generation and the sweeps all run the forward through
one, so a site is kept, an edit applied and the lens read the same way everywhere.

An edit is a function at a site (`Edit`): the forward reports every site's tensor (`x = yield site, x` in
qwen2_lab/forward.py) and goes on with what comes back, so an edit changes everything downstream and nothing
upstream. `resolve` turns what a user passes (an Edit, a list, or {site: function}) into {site: [Edit]} and checks
it against the model before any compute; `apply` runs them on one forward's tensor. The ready-made edits (heads
off, steering, patching, rerouting, RoPE) are in qwen2_lab/edits.py.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .arch import Arch
from .inputs import InputError
from .trace import SHAPES, SiteFilter, position_dim, site_specs, split_site


class At(NamedTuple):
    """Where an edit runs: the site, its layer (None for embed, rope, final_norm, logits), the positions of this
    forward's tokens [S] (0..S-1 without a cache), `earlier`: the tensors of the earlier sites the edit reads (per
    sequence, by site name), and the model's Arch."""

    site: str
    layer: int | None
    positions: torch.Tensor
    earlier: dict
    arch: Arch


@dataclass(frozen=True)
class Edit:
    """A change at a site: `fn(tensor, at) -> tensor`, in the site's documented shape (no batch dimension).

    site: a site name or a glob over them ("layers.*.attn.z"). label: what it does, in words (kept in
    trace.edits). check(arch, site): raises ValueError, before any compute, when the edit cannot apply to this
    model. reads: earlier sites of the same run that `fn` reads from `at.earlier`.
    """

    site: str
    fn: Callable[[torch.Tensor, At], torch.Tensor]
    label: str = ""
    check: Callable | None = None
    reads: tuple[str, ...] = field(default=())


def as_edits(edits) -> list[Edit]:
    """A list of Edits from an Edit, a list of them (nested lists too), or a dict {site: function of the tensor}."""
    if edits is None:
        return []
    if isinstance(edits, Edit):
        return [edits]
    if isinstance(edits, dict):
        out = []
        for site, fn in edits.items():
            if isinstance(fn, Edit):
                raise InputError(f"edits={{{site!r}: Edit(...)}}: pass ready-made edits in a list, not in a dict")
            if not callable(fn):
                raise InputError(f"the edit at {site!r} must be a function of the tensor, got {type(fn).__name__}")
            out.append(Edit(site, lambda x, at, fn=fn: fn(x), function_label(site, fn)))
        return out
    if isinstance(edits, Iterable) and not isinstance(edits, (str, torch.Tensor)):
        return [e for item in edits for e in as_edits(item)]
    raise InputError(f"edits must be an Edit, a list of them or a dict {{site: function}}, got {type(edits).__name__}")


def resolve(edits, arch) -> dict[str, list[Edit]]:
    """{site: [edits, in the order given]} for this architecture; every problem raised before any compute."""
    names = [name for name, _ in site_specs(arch)]
    out: dict[str, list[Edit]] = {}
    for edit in as_edits(edits):
        sites = [n for n in names if fnmatch.fnmatchcase(n, edit.site)]
        layer, name = _layer_and_name(edit.site)
        if not sites and name in SHAPES and layer is not None and 0 <= layer < arch.n_layers:
            raise InputError(f"{edit.site}: layer {layer} is a {arch.layer_kind(layer)} layer: it has no {name}")
        if not sites:
            raise InputError(
                f"edit site {edit.site!r} matches no site of this model (layers 0..{arch.n_layers - 1}); see"
                " qwen2_lab.SITES, e.g. 'layers.0.attn.z'"
            )
        for read in edit.reads:
            if read not in names or names.index(read) >= names.index(sites[0]):
                raise InputError(f"the edit at {edit.site!r} reads {read!r}, which is not an earlier site")
        for site in sites:
            if edit.check is not None:
                edit.check(arch, site)
            out.setdefault(site, []).append(edit)
    return out


def _layer_and_name(site: str) -> tuple[int | None, str]:
    try:
        return split_site(site)
    except ValueError:  # a glob or a malformed layer number
        return None, ""


def apply(edits: list[Edit], x: torch.Tensor, at: At) -> torch.Tensor:
    """Run `edits` on the forward's tensor x (B, ...) one sequence at a time; check each result's shape."""
    rows = []
    for b in range(x.shape[0]):
        y = x[b]
        for edit in edits:
            new = edit.fn(y, at)
            if not isinstance(new, torch.Tensor) or new.shape != y.shape:
                got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise InputError(
                    f"the edit {edit.label or edit.site!r} at {at.site} returned {got}; it must return a tensor"
                    f" of the site's shape {tuple(y.shape)}"
                )
            y = new.to(device=x.device, dtype=x.dtype)
        rows.append(y)
    return torch.stack(rows)


def reads_of(resolved: dict[str, list[Edit]]) -> set[str]:
    return {r for edits in resolved.values() for e in edits for r in e.reads}


def function_label(site: str, fn) -> str:
    """How an edit given as {site: function} is named in trace.edits and figures: the function's own name, or, for a
    lambda, what it is: a function at that site."""
    name = getattr(fn, "__name__", "")
    return f"{site}: function {name}" if name and name != "<lambda>" else f"{site}: a function"


class Recorder:
    """keep: which sites to keep. edits: {site: [Edit]} from `resolve`. positions: the absolute positions of
    this forward's tokens [S]. read_lens: a function of a residual [S', H] (the logit lens) or None. last_only: keep only
    the last position of every kept site (and read the lens there): one new token's view during generation.
    to_cpu: move kept tensors to the CPU as they come."""

    def __init__(
        self,
        arch,
        keep: SiteFilter,
        edits: dict,
        positions: torch.Tensor,
        *,
        read_lens: Callable | None = None,
        last_only: bool = False,
        to_cpu: bool = False,
    ):
        self.arch, self.keep, self.edits, self.positions = arch, keep, edits, positions
        self.read_lens, self.last_only, self.to_cpu = read_lens, last_only, to_cpu
        self.reads = reads_of(edits)
        self.earlier: dict[str, torch.Tensor] = {}  # the earlier sites that edits read, per sequence
        self.store: dict[str, torch.Tensor] = {}
        self.lens_out: list = []  # per layer: (probs, ids) [S, k] each
        self.lens_rows: list = []  # last_only: per layer, the last position's residual [H]
        self.applied: list[tuple[str, str]] = []

    @property
    def idle(self) -> bool:
        """Nothing to keep, change or read: the forward can run without visiting its sites."""
        return not self.edits and self.read_lens is None and self.keep.sites is not None and len(self.keep.sites) == 0

    def wants(self, site: str) -> bool:
        """Sites the forward must compute by hand: those kept and those edited (an edited pattern needs the pattern)."""
        return self.keep.wants(site) or site in self.edits

    def __call__(self, site: str, x: torch.Tensor) -> torch.Tensor:
        if site in self.edits:
            at = At(site, split_site(site)[0], self.positions, {r: self.earlier[r] for r in self.reads}, self.arch)
            x = apply(self.edits[site], x, at)
            self.applied += [(site, e.label) for e in self.edits[site]]
        if site in self.reads:
            self.earlier[site] = x[0]
        if self.keep.wants(site):
            self.store[site] = self.kept(site, x[0])
        if self.read_lens is not None and site.endswith(".resid_post"):
            if self.last_only:  # one row per layer: read them all at once at the end (one pass over lm_head)
                self.lens_rows.append(x[0][-1])
            else:
                self.lens_out.append(self.read_lens(x[0]))
        return x

    def lens_read(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The logit lens of a last_only run, every layer's row read in one batch: (probs, ids), [L, k] each."""
        if not self.lens_rows:
            return None
        return self.read_lens(torch.stack(self.lens_rows))

    def kept(self, site: str, t: torch.Tensor) -> torch.Tensor:
        if self.last_only:  # a copy, so that the whole prompt's tensor is not held by a view of its last row
            t = t.narrow(position_dim(site), t.shape[position_dim(site)] - 1, 1).clone()
        t = t.detach()
        return t.to("cpu") if self.to_cpu else t
