"""Checkpoint conversion from NATTEN: NATTEN 0.21's own `NeighborhoodAttention1D/2D/3D` (PyTorch,
CPU, flex backend, random weights) against our linen and nnx layers (reference backend) holding
the converted weights; NATTEN 0.17-era state dicts with `rpb` against a NumPy float64 forward of
that module; and the errors for keys or shapes that do not fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import oracle
from conftest import import_natten
from jax_natten import convert
from jax_natten import linen as natten_linen
from jax_natten import nnx as natten_nnx

# `natten` is NATTEN's module arguments; `spatial` the input size; channels = heads * head_dim.
CASES = [
    dict(spatial=(13,), heads=2, head_dim=8, natten=dict(kernel_size=5, dilation=2)),
    dict(spatial=(11,), heads=3, head_dim=8, natten=dict(kernel_size=4, stride=2, is_causal=True)),
    dict(spatial=(9, 11), heads=2, head_dim=16,
         natten=dict(kernel_size=(3, 4), stride=(1, 2), dilation=(2, 1), is_causal=(False, True))),
    dict(spatial=(10, 9), heads=4, head_dim=8,
         natten=dict(kernel_size=3, dilation=3, qkv_bias=False, qk_scale=0.3)),
    dict(spatial=(7, 6), heads=2, head_dim=8, natten=dict(kernel_size=(7, 6))),  # full attention
    dict(spatial=(4, 5, 7), heads=2, head_dim=8,
         natten=dict(kernel_size=(2, 3, 3), stride=(1, 1, 2), is_causal=(True, False, False))),
    dict(spatial=(5, 6, 7), heads=1, head_dim=16, natten=dict(kernel_size=3, dilation=(1, 2, 2))),
]


def case_id(case):
    return f"{len(case['spatial'])}d-" + "-".join(f"{k}{v}" for k, v in case["natten"].items())


def natten_module_and_input(case, seed):
    """NATTEN's module with PyTorch's random initialization and a random float32 input."""
    natten, torch = import_natten()
    torch.manual_seed(seed)
    cls = getattr(natten, f"NeighborhoodAttention{len(case['spatial'])}D")
    channels = case["heads"] * case["head_dim"]
    module = cls(embed_dim=channels, num_heads=case["heads"], **case["natten"]).eval()
    x = torch.randn(2, *case["spatial"], channels, dtype=torch.float32)
    with torch.no_grad():
        out = module(x)
    state_dict = {key: value.numpy() for key, value in module.state_dict().items()}
    return state_dict, x.numpy(), out.numpy()


def our_kwargs(case):
    return dict(embed_dim=case["heads"] * case["head_dim"], num_heads=case["heads"], backend="reference",
                **case["natten"])


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_linen_matches_natten(case):
    state_dict, x, want = natten_module_and_input(case, seed=len(case_id(case)))
    module = getattr(natten_linen, f"NeighborhoodAttention{len(case['spatial'])}D")(**our_kwargs(case))
    params = convert.natten_to_linen(state_dict, module)
    got = jax.jit(module.apply)({"params": params}, jnp.asarray(x))
    assert got.dtype == jnp.float32
    assert oracle.rel_err(got, want) < 1e-5


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_nnx_matches_natten(case):
    state_dict, x, want = natten_module_and_input(case, seed=len(case_id(case)) + 1)
    cls = getattr(natten_nnx, f"NeighborhoodAttention{len(case['spatial'])}D")
    module = convert.natten_to_nnx(state_dict, cls(**our_kwargs(case), rngs=nnx.Rngs(0)))
    got = module(jnp.asarray(x))
    assert oracle.rel_err(got, want) < 1e-5


def test_qkv_row_order_matters():
    """The comparison sees the order of the fused qkv rows: the same weights read as
    `[heads, 3, head_dim]` instead of NATTEN's `[3, heads, head_dim]` give another output."""
    case = CASES[2]
    state_dict, x, want = natten_module_and_input(case, seed=0)
    heads, head_dim = case["heads"], case["head_dim"]
    for key in ("qkv.weight", "qkv.bias"):
        rows = state_dict[key].reshape(3, heads, head_dim, *state_dict[key].shape[1:])
        state_dict[key] = np.swapaxes(rows, 0, 1).reshape(state_dict[key].shape)
    module = natten_linen.NeighborhoodAttention2D(**our_kwargs(case))
    got = module.apply({"params": convert.natten_to_linen(state_dict, module)}, jnp.asarray(x))
    assert oracle.rel_err(got, want) > 1e-2


def natten_017_state_dict(rng, channels, heads, kernel_size):
    """A NATTEN 0.17-era `NeighborhoodAttention2D(dim, num_heads, kernel_size, bias=True)` state
    dict with random values."""
    return {
        "rpb": rng.standard_normal((heads, *(2 * k - 1 for k in kernel_size))).astype(np.float32),
        "qkv.weight": rng.standard_normal((3 * channels, channels)).astype(np.float32) / channels ** 0.5,
        "qkv.bias": rng.standard_normal(3 * channels).astype(np.float32),
        "proj.weight": rng.standard_normal((channels, channels)).astype(np.float32) / channels ** 0.5,
        "proj.bias": rng.standard_normal(channels).astype(np.float32),
    }


def natten_017_forward(state_dict, x, heads, kernel_size, dilation):
    """That module's forward in NumPy float64: qkv, split as `[3, heads, head_dim]`, scaled
    q.k plus `rpb`, softmax, weighted values (SPEC's attention, from the test oracle), proj."""
    sd = {key: value.astype(np.float64) for key, value in state_dict.items()}
    qkv = x @ sd["qkv.weight"].T + sd["qkv.bias"]
    qkv = qkv.reshape(*x.shape[:-1], 3, heads, x.shape[-1] // heads)
    q, k, v = np.moveaxis(qkv, -3, 0)
    out, _ = oracle.attention(q, k, v, kernel_size, dilation=dilation, rpb=sd["rpb"])
    return out.reshape(x.shape) @ sd["proj.weight"].T + sd["proj.bias"]


@pytest.mark.parametrize("kernel_size, dilation, spatial", [((3, 3), (1, 1), (9, 8)), ((5, 3), (2, 3), (11, 10))])
def test_rpb_from_natten_017(kernel_size, dilation, spatial):
    rng = np.random.default_rng(sum(spatial))
    channels, heads = 16, 4
    state_dict = natten_017_state_dict(rng, channels, heads, kernel_size)
    x = rng.standard_normal((2, *spatial, channels)).astype(np.float32)
    want = natten_017_forward(state_dict, x.astype(np.float64), heads, kernel_size, dilation)
    kwargs = dict(embed_dim=channels, num_heads=heads, kernel_size=kernel_size, dilation=dilation,
                  rel_pos_bias=True, backend="reference")
    linen_module = natten_linen.NeighborhoodAttention2D(**kwargs)
    params = convert.natten_to_linen(state_dict, linen_module)
    np.testing.assert_array_equal(params["rpb"], state_dict["rpb"])
    assert oracle.rel_err(linen_module.apply({"params": params}, jnp.asarray(x)), want) < 1e-5
    nnx_module = convert.natten_to_nnx(
        state_dict, natten_nnx.NeighborhoodAttention2D(**kwargs, rngs=nnx.Rngs(0)))
    assert oracle.rel_err(nnx_module(jnp.asarray(x)), want) < 1e-5


def test_params_take_the_modules_param_dtype():
    state_dict = natten_017_state_dict(np.random.default_rng(0), 16, 2, (3, 3))
    module = natten_linen.NeighborhoodAttention2D(16, 2, 3, rel_pos_bias=True, param_dtype=jnp.bfloat16)
    params = convert.natten_to_linen(state_dict, module)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    np.testing.assert_array_equal(params["qkv"]["kernel"],
                                  jnp.asarray(state_dict["qkv.weight"].T, jnp.bfloat16))


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("proj.bias"), r"parameters without a key: \['proj/bias'\]"),
    (lambda sd: sd.pop("rpb"), r"parameters without a key: \['rpb'\]"),
    (lambda sd: sd.update({"attn_drop.weight": np.zeros(3)}), r"keys without a parameter: \['attn_drop.weight'\]"),
    (lambda sd: sd.update({"qkv.weight": np.zeros((16, 48))}),
     r"state_dict\['qkv.weight'\] has shape \(16, 48\); the Flax parameter qkv/kernel \(16, 48\) needs \(48, 16\)"),
    (lambda sd: sd.update({"rpb": np.zeros((2, 5, 7))}),
     r"state_dict\['rpb'\] has shape \(2, 5, 7\); the Flax parameter rpb \(2, 5, 5\) needs \(2, 5, 5\)"),
])
def test_mismatches_raise(edit, message):
    state_dict = natten_017_state_dict(np.random.default_rng(0), 16, 2, (3, 3))
    edit(state_dict)
    linen_module = natten_linen.NeighborhoodAttention2D(16, 2, 3, rel_pos_bias=True)
    with pytest.raises(ValueError, match=message):
        convert.natten_to_linen(state_dict, linen_module)
    nnx_module = natten_nnx.NeighborhoodAttention2D(16, 2, 3, rel_pos_bias=True, rngs=nnx.Rngs(0))
    before = nnx.state(nnx_module, nnx.Param)
    with pytest.raises(ValueError, match=message):
        convert.natten_to_nnx(state_dict, nnx_module)
    after = nnx.state(nnx_module, nnx.Param)
    assert all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, before, after)))


def test_module_without_bias_rejects_a_state_dict_with_it():
    state_dict = natten_017_state_dict(np.random.default_rng(0), 16, 2, (3, 3))
    module = natten_linen.NeighborhoodAttention2D(16, 2, 3, rel_pos_bias=True, qkv_bias=False)
    with pytest.raises(ValueError, match=r"keys without a parameter: \['qkv.bias'\]"):
        convert.natten_to_linen(state_dict, module)
