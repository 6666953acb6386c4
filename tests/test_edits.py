"""Edits through the lab's forward equal the same change made with plain hooks on the unmodified transformers model.

Each case pairs a lab edit with its twin written with nothing but torch and transformers' public hooks
(`register_forward_hook`, `register_forward_pre_hook`, `AttentionInterface` for the attention probabilities) on the
model the lab wraps. The logits must agree at 1e-5 in float32, on dense and MoE models, tied and untied, with YaRN.
"""

from contextlib import ExitStack, contextmanager

import pytest
import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.qwen2.modeling_qwen2 import repeat_kv as hf_repeat_kv

from qwen2_lab import edits as E
from qwen2_lab.compare import attention_implementation
from tests.helpers import random_lab

IDS = [5, 17, 42, 8, 99, 23, 7, 61, 3, 11]
OTHER = [9, 17, 40, 8, 12, 23, 70, 61, 3, 2]  # the same length: a "corrupted" prompt to patch from
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "rope_theta": 1e6}
CONFIGS = {
    "dense tied": dict(tie_word_embeddings=True),
    "dense untied yarn": dict(
        tie_word_embeddings=False, rope_parameters=YARN, num_key_value_heads=1, max_position_embeddings=32
    ),
    "moe": dict(moe=True),
    "moe untied norm_topk_prob": dict(moe=True, tie_word_embeddings=False, norm_topk_prob=True),
}
L = 1  # the layer most cases edit (of 2)


@pytest.fixture(scope="module", params=list(CONFIGS))
def lab(request):
    return random_lab(**CONFIGS[request.param])


# ---- the HF side: hooks on the unmodified model ------------------------------------------------------------------


@contextmanager
def attention_changed(model, change):
    """Run HF's eager attention with `change(layer_idx, probs) -> probs` applied after the softmax."""

    def attend(module, q, k, v, mask, scaling=None, dropout=0.0, **kw):
        k, v = hf_repeat_kv(k, module.num_key_value_groups), hf_repeat_kv(v, module.num_key_value_groups)
        w = torch.matmul(q, k.transpose(2, 3)) * scaling + mask[:, :, :, : k.shape[-2]]
        w = change(module.layer_idx, F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype))
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w

    AttentionInterface.register("edited_eager", attend)
    AttentionMaskInterface.register("edited_eager", eager_mask)
    with attention_implementation(model, "edited_eager"):
        yield


@contextmanager
def hooked(*registrations):
    with ExitStack() as stack:
        for handle in registrations:
            stack.callback(handle.remove)
        yield


def hf_logits(model, ids, context=None) -> torch.Tensor:
    with torch.no_grad(), context or hooked():
        return model(torch.tensor([ids])).logits[0]


def hf_hidden(model, ids, layer):
    """HF's hidden state entering `layer` (output_hidden_states), [S, H]."""
    with torch.no_grad():
        return model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]


def o_proj_input(model, layer, change):
    """A pre-hook on o_proj: `change(z)` on its input viewed as heads [S, nH, hd]."""
    attn = model.model.layers[layer].self_attn

    def pre(mod, args):
        x = args[0]
        z = x.view(*x.shape[:-1], -1, attn.head_dim).clone()
        return (change(z[0])[None].reshape(x.shape),)

    return attn.o_proj.register_forward_pre_hook(pre)


def router_outputs(model, layer, pick):
    """A hook on the MoE router: `pick(logits) -> (experts, weights)` replaces its choice."""
    gate = model.model.layers[layer].mlp.gate

    def hook(mod, args, out):
        logits = out[0]
        experts, weights = pick(logits)
        if gate.norm_topk_prob:
            weights = weights / weights.sum(-1, keepdim=True)
        return logits, weights.to(logits.dtype), experts

    return gate.register_forward_hook(hook)


# ---- the cases ---------------------------------------------------------------------------------------------------


def case_zero_heads(lab):
    return E.zero_heads(L, [0, 2]), hooked(
        o_proj_input(lab.model, L, lambda z: z.index_fill(1, torch.tensor([0, 2]), 0))
    )


def case_mean_heads(lab):
    def mean(z):
        z = z.clone()
        z[:, 1] = z[:, 1].mean(0, keepdim=True)
        return z

    return E.mean_heads(L, [1]), hooked(o_proj_input(lab.model, L, mean))


def case_zero_kv_group(lab):
    g = lab.arch.group_size
    group = lab.arch.n_kv_heads - 1
    heads = torch.arange(group * g, (group + 1) * g)
    return E.zero_kv_group(L, group), hooked(o_proj_input(lab.model, L, lambda z: z.index_fill(1, heads, 0)))


def case_drop_key_renormalised(lab):
    def change(layer, w):
        if layer == L:
            w = w.clone()
            w[:, :, 4:, 3] = 0
            w = w / w.sum(-1, keepdim=True)  # masking a key before the softmax = renormalising without it
        return w

    return E.drop_key(L, 3), attention_changed(lab.model, change)


def case_drop_key_kept_mass(lab):
    def change(layer, w):
        if layer == L:
            w = w.clone()
            w[:, 1, 4:, 3] = 0
        return w

    return E.drop_key(L, 3, heads=[1], renormalise=False), attention_changed(lab.model, change)


def case_set_pattern(lab):
    S = len(IDS)
    uniform = torch.tril(torch.ones(S, S)) / torch.arange(1, S + 1)[:, None]  # every head reads its past evenly

    def change(layer, w):
        if layer == 0:
            w = w.clone()
            w[0, 2] = uniform
        return w

    return E.set_pattern(0, 2, uniform), attention_changed(lab.model, change)


def case_steer_resid_pre(lab):
    v = torch.randn(lab.arch.hidden, generator=torch.Generator().manual_seed(1))

    def pre(mod, args):  # args[0]: the hidden states entering the layer, (1, S, H)
        h = args[0].clone()
        h[0, [2, 5]] += 3.0 * v
        return (h, *args[1:])

    handle = lab.model.model.layers[L].register_forward_pre_hook(pre)
    return E.steer(L, v, scale=3.0, positions=[2, 5]), hooked(handle)


def case_steer_resid_post(lab):
    v = torch.randn(lab.arch.hidden, generator=torch.Generator().manual_seed(2))
    handle = lab.model.model.layers[0].register_forward_hook(lambda mod, args, out: out + 0.5 * v)
    return E.steer("layers.0.resid_post", v, scale=0.5), hooked(handle)


def case_patch_resid_pre(lab):
    source = lab.trace(OTHER, sites=[f"layers.{L}.resid_pre"])
    theirs = hf_hidden(lab.model, OTHER, L)

    def pre(mod, args):
        h = args[0].clone()
        h[0, 6] = theirs[6]
        return (h, *args[1:])

    handle = lab.model.model.layers[L].register_forward_pre_hook(pre)
    return E.patch(f"layers.{L}.resid_pre", source, positions=[6]), hooked(handle)


def case_patch_attn_out(lab):
    source = lab.trace(OTHER, sites=["layers.0.attn.out"])
    o_proj = lab.model.model.layers[0].self_attn.o_proj
    kept = {}
    with torch.no_grad(), hooked(o_proj.register_forward_hook(lambda m, a, out: kept.update(out=out[0].clone()))):
        lab.model(torch.tensor([OTHER]))
    return E.patch("layers.0.attn.out", source), hooked(
        o_proj.register_forward_hook(lambda m, a, out: kept["out"][None])
    )


def case_function_at_any_site(lab):
    if lab.arch.is_moe:
        site, module = f"layers.{L}.moe.shared_out", lab.model.model.layers[L].mlp.shared_expert
        return {site: lambda t: t * -2.0}, hooked(module.register_forward_hook(lambda m, a, out: out * -2.0))
    down = lab.model.model.layers[L].mlp.down_proj
    return {f"layers.{L}.mlp.act": lambda a: a.clamp(min=0)}, hooked(
        down.register_forward_pre_hook(lambda m, args: (args[0].clamp(min=0),))
    )


def busiest_expert(lab, layer):
    return int(
        lab.trace(IDS, sites=[f"layers.{layer}.moe.topk_experts"])[f"layers.{layer}.moe.topk_experts"].mode().values[0]
    )


def case_drop_expert_renormalised(lab):
    x = busiest_expert(lab, L)

    def pick(logits):
        probs = F.softmax(
            logits.masked_fill(torch.arange(logits.shape[-1]) == x, float("-inf")), -1, dtype=torch.float32
        )
        w, e = probs.topk(lab.arch.top_k, -1)
        return e, w

    return E.drop_expert(L, x), hooked(router_outputs(lab.model, L, pick))


def case_drop_expert_kept_probs(lab):
    x = busiest_expert(lab, L)

    def pick(logits):
        probs = F.softmax(logits, -1, dtype=torch.float32)
        probs[:, x] = 0
        w, e = probs.topk(lab.arch.top_k, -1)
        return e, w

    return E.drop_expert(L, x, renormalise=False), hooked(router_outputs(lab.model, L, pick))


def case_force_experts(lab):
    forced = [4, 1][: lab.arch.top_k]

    def pick(logits):
        probs = F.softmax(logits, -1, dtype=torch.float32)
        e = probs.topk(lab.arch.top_k, -1).indices
        e[[0, 3]] = torch.tensor(forced)
        return e, probs.gather(-1, e)

    return E.force_experts(0, forced, positions=[0, 3]), hooked(router_outputs(lab.model, 0, pick))


def case_shared_gate_off(lab):
    gate = lab.model.model.layers[L].mlp.shared_expert_gate
    return E.shared_gate(L, value=0.0), hooked(
        gate.register_forward_hook(lambda m, a, out: torch.full_like(out, -torch.inf))
    )


def case_shared_gate_scaled(lab):
    shared = lab.model.model.layers[0].mlp.shared_expert
    return E.shared_gate(0, scale=0.25), hooked(shared.register_forward_hook(lambda m, a, out: out * 0.25))


def case_rope_theta(lab):
    from transformers import AutoConfig

    config = AutoConfig.for_model(
        **{**lab.model.config.to_dict(), "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    )
    other = type(lab.model.model.rotary_emb)(config=config)
    rotary = lab.model.model.rotary_emb
    return E.rope(theta=1e4, yarn_factor=1), hooked(rotary.register_forward_hook(lambda m, args, out: other(*args)))


def case_rope_off(lab):
    def pre(mod, args, kwargs):
        cos, sin = kwargs["position_embeddings"]
        return args, {**kwargs, "position_embeddings": (torch.ones_like(cos), torch.zeros_like(sin))}

    attn = lab.model.model.layers[0].self_attn
    return E.rope_off([0]), hooked(attn.register_forward_pre_hook(pre, with_kwargs=True))


DENSE_OR_MOE = [
    case_zero_heads, case_mean_heads, case_zero_kv_group, case_drop_key_renormalised, case_drop_key_kept_mass,
    case_set_pattern, case_steer_resid_pre, case_steer_resid_post, case_patch_resid_pre, case_patch_attn_out,
    case_function_at_any_site, case_rope_theta, case_rope_off,
]  # fmt: skip
MOE_ONLY = [
    case_drop_expert_renormalised, case_drop_expert_kept_probs, case_force_experts, case_shared_gate_off,
    case_shared_gate_scaled,
]  # fmt: skip


def check_against_hf(lab, case):
    edits, hf_side = case(lab)
    ours = lab.trace(IDS, sites=[], edits=edits).logits
    theirs = hf_logits(lab.model, IDS, hf_side)
    assert (ours - hf_logits(lab.model, IDS)).abs().max() > 1e-3  # the edit changes something
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", DENSE_OR_MOE, ids=lambda c: c.__name__.removeprefix("case_"))
def test_an_edit_equals_the_same_change_made_with_hooks_on_hf(lab, case):
    check_against_hf(lab, case)


@pytest.mark.parametrize("config", [c for c in CONFIGS if CONFIGS[c].get("moe")])
@pytest.mark.parametrize("case", MOE_ONLY, ids=lambda c: c.__name__.removeprefix("case_"))
def test_a_moe_edit_equals_the_same_change_made_with_hooks_on_hf(config, case):
    check_against_hf(random_lab(**CONFIGS[config]), case)


# ---- what edits change, and what they do not ---------------------------------------------------------------------


def test_generation_with_an_edit_equals_hf_generate_with_the_hooks(lab):
    """Steering and a head off during generation: HF generate with the same hooks makes the same tokens and logits."""
    v = torch.randn(lab.arch.hidden, generator=torch.Generator().manual_seed(5))
    edits = [E.steer(L, v, scale=2.0), E.zero_heads(0, [1])]
    ids = torch.tensor([IDS])

    with hooked(
        lab.model.model.layers[L].register_forward_pre_hook(lambda mod, args: (args[0] + 2.0 * v, *args[1:])),
        o_proj_input(lab.model, 0, lambda z: z.index_fill(1, torch.tensor([1]), 0)),
    ):
        out = lab.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True)  # fmt: skip
    gen = lab.generate_steps(IDS, max_new_tokens=8, do_sample=False, edits=edits)
    assert gen.token_ids == out.sequences[0, len(IDS) :].tolist()
    torch.testing.assert_close(gen.logits, torch.stack([x[0] for x in out.logits]), rtol=1e-5, atol=1e-5)
    assert gen.token_ids != lab.generate_steps(IDS, max_new_tokens=8, do_sample=False).token_ids


def test_steering_at_given_positions_reaches_generated_tokens():
    lab = random_lab()
    v = torch.randn(lab.arch.hidden)
    seen = []
    spy = E.Edit("layers.1.resid_pre", lambda x, at: (seen.append(at.positions.tolist()), x)[1], "spy")
    lab.generate_steps(IDS, max_new_tokens=3, do_sample=False, edits=[E.steer(1, v, positions=[11]), spy])
    assert seen == [list(range(10)), [10], [11]]  # prompt, then one new position per step


# ---- bad edits: clear errors, before any compute -----------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda lab: {"layers.7.attn.z": lambda z: z}, "matches no site"),
        (lambda lab: {"layers.0.attn.zz": lambda z: z}, "matches no site"),
        (lambda lab: E.zero_heads(0, [99]), r"query heads \[99\] out of range"),
        (lambda lab: E.zero_kv_group(1, 5), r"KV heads \[5\] out of range"),
        (lambda lab: E.steer(1, torch.ones(7)), "needs 128"),
        (lambda lab: E.steer("layers.1.mlp.act", torch.ones(128)), "not a residual-width site"),
        (lambda lab: E.drop_expert(0, 1), "layer 0 is a dense layer: it has no moe.router_logits"),
        (lambda lab: {"layers.0.attn.z": 3}, "must be a function"),
        (lambda lab: E.patch("layers.0.resid_pre", lab.trace(IDS, sites=["embed"])), "does not hold"),
    ],
)
def test_bad_edits_are_refused_before_any_compute(tiny, make, message):
    forwards = []
    with hooked(tiny.model.model.embed_tokens.register_forward_hook(lambda *a: forwards.append(1))):
        with pytest.raises((ValueError, TypeError), match=message):
            tiny.trace(IDS, edits=make(tiny))
    assert len(forwards) <= 1  # the patch case runs its source trace first


def test_moe_edits_check_experts_and_k(tiny_moe):
    with pytest.raises(ValueError, match=r"experts \[8\] out of range"):
        tiny_moe.trace(IDS, edits=E.drop_expert(0, 8))
    with pytest.raises(ValueError, match="give 2 different experts"):
        tiny_moe.trace(IDS, edits=E.force_experts(0, [1, 1]))


def test_the_catalogue_exports_every_ready_made_edit():
    import inspect

    public = {n for n, f in inspect.getmembers(E, inspect.isfunction) if f.__module__ == E.__name__ and n[0] != "_"}
    assert public <= set(E.__all__)
