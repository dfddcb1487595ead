"""Adversarial calls straight to the FFI targets (jax.ffi.ffi_call, bypassing every Python
check): the handlers of the host emulation, which share their binding and buffer checks with
the CUDA handlers (cuda/include/jax_natten/unfused_ffi.h, ffi_util.h), must answer each bad call
with an error naming what is wrong, never a crash or a wrong-sized write; well-formed calls with
empty axes must return empty results. A crash takes the pytest worker down and fails the test. (XLA does not call a
handler whose results are all empty, so bad calls with empty results cannot reach it from here:
the fuzz harness tests/cpp/ffi_fuzz_test.cc calls the handlers directly.)

Needs the host emulation (JAX_NATTEN_EMULATION=ON); skips without it, unless
JAX_NATTEN_REQUIRE_EMULATION=1 (CI), which makes it fail instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import require_emulation

VARIANTS = ("naive", "gemm")


@pytest.fixture(autouse=True)
def emulation():
    require_emulation()


def attributes(kernel_size=(3,), stride=(1,), dilation=(1,), is_causal=(0,)):
    return {name: np.asarray(value, np.int64) for name, value in
            dict(kernel_size=kernel_size, stride=stride, dilation=dilation, is_causal=is_causal).items()}


def call(operator, variant, result, *args, **attrs):
    target = f"jax_natten_na_{operator}_{variant}"
    extra = {"scale": np.float32(1.0)}
    if operator == "pn":
        extra["empty_value"] = np.float32(-np.inf)
    fn = jax.ffi.ffi_call(target, result)
    return jax.block_until_ready(jax.jit(lambda *a: fn(*a, **extra, **attrs))(*args))


def zeros(*shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


def pn(variant, q, k, rpb=None, window=3, out_dtype=None, **nbhd):
    rpb = zeros(0, dtype=q.dtype) if rpb is None else rpb
    result = jax.ShapeDtypeStruct(q.shape[:-1] + (window,), out_dtype or q.dtype)
    return call("pn", variant, result, q, k, rpb, **attributes(**nbhd))


def nn(variant, w, v, out_shape=None, out_dtype=None, **nbhd):
    result = jax.ShapeDtypeStruct(out_shape or (w.shape[:-1] + v.shape[-1:]), out_dtype or v.dtype)
    return call("nn", variant, result, w, v, **attributes(**nbhd))


def in_(variant, w, values, heads_kv, out_dtype=None, **nbhd):
    result = jax.ShapeDtypeStruct(values.shape[:-2] + (heads_kv, values.shape[-1]), out_dtype or values.dtype)
    return call("in", variant, result, w, values, **attributes(**nbhd))


# (name, call, substring the error must contain)
BAD_CALLS = [
    ("a 2-D kernel for a 1-D query", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 8), kernel_size=(3, 3)),
     "query: expected [batch, *spatial(2), heads, dim], got rank 4"),
    ("four spatial axes", lambda b: pn(b, zeros(1, 4, 4, 4, 4, 2, 8), zeros(1, 4, 4, 4, 4, 2, 8), kernel_size=(3,) * 4,
                                       stride=(1,) * 4, dilation=(1,) * 4, is_causal=(0,) * 4), "spatial(4)"),
    ("stride of the wrong rank", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 8), stride=(1, 1)),
     "one entry per spatial axis"),
    ("kernel larger than the axis", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), kernel_size=(9,), window=9),
     "illegal kernel_size"),
    ("kernel 1", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), kernel_size=(1,), window=1), "illegal kernel_size"),
    ("negative kernel", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), kernel_size=(-3,), window=1),
     "illegal kernel_size"),
    ("kernel past int32", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), kernel_size=(2**32 + 3,)),
     "illegal kernel_size"),
    ("stride past int32", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), stride=(2**32 + 1,)),
     "illegal kernel_size"),
    ("dilation past int32", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), dilation=(2**32 + 1,)),
     "illegal kernel_size"),
    ("stride 0", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), stride=(0,)), "illegal kernel_size"),
    ("stride above the kernel", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), stride=(4,)), "illegal kernel_size"),
    ("dilation 0", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), dilation=(0,)), "illegal kernel_size"),
    ("kernel times dilation past the axis", lambda b: pn(b, zeros(1, 5, 2, 8), zeros(1, 5, 2, 8), dilation=(2,)),
     "illegal kernel_size"),
    ("heads not a multiple of heads_kv", lambda b: pn(b, zeros(1, 8, 3, 8), zeros(1, 8, 2, 8)),
     "multiple of key/value heads"),
    ("zero key heads", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 0, 8)), "multiple of key/value heads"),
    ("query of too low a rank", lambda b: pn(b, zeros(8, 8), zeros(8, 8)), "query: expected [batch, *spatial(1)"),
    ("key of another length", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 9, 2, 8)), "key: shape does not match"),
    ("key of another head dim", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 16)), "key: shape does not match"),
    ("output of the wrong window", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 8), window=4),
     "output: shape does not match"),
    ("rpb of the wrong size", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 8), rpb=zeros(2, 4)), "rpb: expected"),
    ("rpb of another dtype", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 8), rpb=zeros(2, 5, dtype=jnp.float16)),
     "one dtype"),
    ("key of another dtype", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 8, dtype=jnp.float16)), "one dtype"),
    ("integer inputs", lambda b: pn(b, zeros(1, 8, 2, 8, dtype=jnp.int32), zeros(1, 8, 2, 8, dtype=jnp.int32)),
     "unsupported dtype"),
    ("float64 inputs", lambda b: pn(b, zeros(1, 8, 2, 8, dtype=jnp.float64), zeros(1, 8, 2, 8, dtype=jnp.float64)),
     "unsupported dtype"),
    ("integer weights", lambda b: pn(b, zeros(1, 8, 2, 8), zeros(1, 8, 2, 8), out_dtype=jnp.int32),
     "attention weights must be float32"),
    ("nn: value of another length", lambda b: nn(b, zeros(1, 8, 2, 3), zeros(1, 7, 2, 8)), "value: shape does not match"),
    ("nn: weights of the wrong window", lambda b: nn(b, zeros(1, 8, 2, 5), zeros(1, 8, 2, 8)),
     "weights: shape does not match"),
    ("nn: output of another dtype", lambda b: nn(b, zeros(1, 8, 2, 3), zeros(1, 8, 2, 8), out_dtype=jnp.float16),
     "output dtype must be value's"),
    ("nn: output of the wrong shape", lambda b: nn(b, zeros(1, 8, 2, 3), zeros(1, 8, 2, 8), out_shape=(1, 8, 2, 5)),
     "output: shape does not match"),
    ("nn: heads not a multiple", lambda b: nn(b, zeros(1, 8, 3, 3), zeros(1, 8, 2, 8)), "multiple of key/value heads"),
    ("in: values of another head count", lambda b: in_(b, zeros(1, 8, 2, 3), zeros(1, 8, 3, 8), heads_kv=1),
     "values: shape does not match"),
    ("in: heads not a multiple", lambda b: in_(b, zeros(1, 8, 3, 3), zeros(1, 8, 3, 8), heads_kv=2),
     "multiple of key/value heads"),
    ("in: output of another dtype", lambda b: in_(b, zeros(1, 8, 2, 3), zeros(1, 8, 2, 8), heads_kv=2, out_dtype=jnp.float16),
     "output dtype must be values'"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name,bad_call,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_call_returns_a_clear_error(variant, name, bad_call, message):
    with pytest.raises(jax.errors.JaxRuntimeError) as error:
        bad_call(variant)
    assert "INVALID_ARGUMENT" in str(error.value) and message in str(error.value), str(error.value)


# Well-formed calls with an empty axis: empty results of the right shape, no kernel work.
EMPTY_CALLS = [
    ("batch 0", lambda b: pn(b, zeros(0, 8, 2, 8), zeros(0, 8, 2, 8)), (0, 8, 2, 3)),
    ("a leading vmap axis of 0", lambda b: pn(b, zeros(0, 1, 8, 2, 8), zeros(0, 1, 8, 2, 8)), (0, 1, 8, 2, 3)),
    ("head dim 0", lambda b: pn(b, zeros(1, 8, 2, 0), zeros(1, 8, 2, 0)), (1, 8, 2, 3)),
    ("nn: batch 0", lambda b: nn(b, zeros(0, 8, 2, 3), zeros(0, 8, 2, 8)), (0, 8, 2, 8)),
    ("nn: head dim 0", lambda b: nn(b, zeros(1, 8, 2, 3), zeros(1, 8, 2, 0)), (1, 8, 2, 0)),
    ("in: batch 0", lambda b: in_(b, zeros(0, 8, 2, 3), zeros(0, 8, 2, 8), heads_kv=1), (0, 8, 1, 8)),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name,empty_call,shape", EMPTY_CALLS, ids=[c[0] for c in EMPTY_CALLS])
def test_empty_axes_give_empty_results(variant, name, empty_call, shape):
    out = empty_call(variant)
    assert out.shape == shape
    if name == "head dim 0":  # q . k over no dims is 0 in every valid slot (stride 1: all slots valid)
        assert np.all(np.asarray(out) == 0)


def test_gemm_rejects_head_dims_it_cannot_tile():
    with pytest.raises(jax.errors.JaxRuntimeError, match="head_dim must be a multiple of 8, got 4"):
        pn("gemm", zeros(1, 8, 2, 4), zeros(1, 8, 2, 4))
