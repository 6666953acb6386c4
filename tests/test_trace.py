"""Sites and Trace: the shapes a trace keeps are the documented ones."""

from qwen2_lab.trace import expected_sites
from tests.helpers import random_lab

IDS = list(range(3, 26))


def test_trace_shapes_are_the_documented_ones(tiny_moe):
    lab = random_lab(moe=True, num_hidden_layers=3, mlp_only_layers=[1])
    t = lab.trace(IDS)
    expected = expected_sites(lab.arch, len(IDS))
    assert t.sites() == [name for name, _ in expected]
    for name, shape in expected:
        assert tuple(t[name].shape) == shape, name
    assert "layers.1.mlp.gate" in t and "layers.1.moe.out" not in t  # a dense layer inside a MoE model
