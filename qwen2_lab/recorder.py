"""One forward pass, looked at and changed: the `visit` that `forward.run` calls at every site.

A `Recorder` keeps the sites a `SiteFilter` asks for, applies the edits resolved for this model (qwen2_lab/edits.py)
and reads the logit lens out of each layer's residual. `lab.trace`, generation and the sweeps all run the forward
through one, so a site is kept, an edit applied and the lens read the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .edits import At, apply, reads_of
from .trace import SiteFilter, position_dim, split_site


class Recorder:
    """keep: which sites to keep. edits: {site: [Edit]} from `edits.resolve`. positions: the absolute positions of
    this forward's tokens [S]. lens: a function of a residual [S', H] (the logit lens) or None. last_only: keep only
    the last position of every kept site (and read the lens there): one new token's view during generation.
    to_cpu: move kept tensors to the CPU as they come."""

    def __init__(
        self,
        arch,
        keep: SiteFilter,
        edits: dict,
        positions: torch.Tensor,
        *,
        lens: Callable | None = None,
        last_only: bool = False,
        to_cpu: bool = False,
    ):
        self.arch, self.keep, self.edits, self.positions = arch, keep, edits, positions
        self.lens, self.last_only, self.to_cpu = lens, last_only, to_cpu
        self.reads = reads_of(edits)
        self.run: dict[str, torch.Tensor] = {}  # earlier sites that edits read, per sequence
        self.store: dict[str, torch.Tensor] = {}
        self.lens_out: list = []
        self.applied: list[tuple[str, str]] = []

    @property
    def idle(self) -> bool:
        """Nothing to keep, change or read: the forward can run without visiting its sites."""
        return not self.edits and self.lens is None and self.keep.sites is not None and len(self.keep.sites) == 0

    def wants(self, site: str) -> bool:
        """Sites the forward must compute by hand: those kept and those edited (an edited pattern needs the pattern)."""
        return self.keep.wants(site) or site in self.edits

    def __call__(self, site: str, x: torch.Tensor) -> torch.Tensor:
        if site in self.edits:
            at = At(site, split_site(site)[0], self.positions, {r: self.run[r] for r in self.reads}, self.arch)
            x = apply(self.edits[site], x, at)
            self.applied += [(site, e.label) for e in self.edits[site]]
        if site in self.reads:
            self.run[site] = x[0]
        if self.keep.wants(site):
            self.store[site] = self.kept(site, x[0])
        if self.lens is not None and site.endswith(".resid_post"):
            self.lens_out.append(self.lens(x[0][-1:] if self.last_only else x[0]))
        return x

    def kept(self, site: str, t: torch.Tensor) -> torch.Tensor:
        if self.last_only:  # a copy, so that the whole prompt's tensor is not held by a view of its last row
            t = t.narrow(position_dim(site), t.shape[position_dim(site)] - 1, 1).clone()
        t = t.detach()
        return t.to("cpu") if self.to_cpu else t
