"""The recorder: an edit changes everything downstream and nothing upstream, is checked before any compute, and
leaves an unchanged run bit for bit."""

import pytest
import torch

from qwen2_lab import edits as E

IDS = [5, 17, 42, 8, 99, 23, 7, 61, 3, 11]


def test_an_edit_changes_everything_downstream_and_nothing_upstream(tiny):
    clean = tiny.trace(IDS)
    edited = tiny.trace(IDS, edits=E.zero_heads(2, [1]))
    names = list(clean.store)
    at = names.index("layers.2.attn.z")
    for site in names[:at]:
        assert torch.equal(clean[site], edited[site]), site
    for site in ["layers.2.attn.out", "layers.2.resid_post", "layers.3.attn.pattern", "logits"]:
        assert not torch.equal(clean[site], edited[site]), site
    assert edited.edits == [("layers.2.attn.z", "layer 2: heads [1] zeroed")] and clean.edits == []


def test_an_edit_that_changes_nothing_leaves_the_run_bit_for_bit(tiny):
    plain = tiny.trace(IDS, sites=[])
    same = tiny.trace(IDS, sites=[], edits={"layers.*.resid_mid": lambda h: h, "layers.1.attn.z": lambda z: z + 0})
    assert torch.equal(plain.logits, same.logits)
    by_hand = tiny.trace(IDS, sites=[], edits={"layers.1.attn.pattern": lambda p: p})  # attention computed by hand
    torch.testing.assert_close(plain.logits, by_hand.logits, rtol=1e-5, atol=1e-5)


def test_step_shows_the_edited_tensors(tiny):
    stages = {s.site: s.tensor for s in tiny.stages(IDS, edits=E.zero_heads(0, [0, 1]))}
    assert stages["layers.0.attn.z"][[0, 1]].abs().max() == 0 and stages["layers.0.attn.z"][2].abs().max() > 0


def test_an_edit_returning_the_wrong_shape_names_the_site_and_shape(tiny):
    with pytest.raises(ValueError, match=r"at layers.1.attn.z returned \(8, 3, 8\).*shape \(8, 10, 16\)"):
        tiny.trace(IDS, edits={"layers.1.attn.z": lambda z: z[:, :3, :8]})
