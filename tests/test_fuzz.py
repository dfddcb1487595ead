"""Property-based fuzzing of the public API (hypothesis): start from a random legal call, replace
one argument with a fuzzed value (random shapes and dtypes, integer / complex / float8 / float64
arrays, non-arrays, zero, negative, huge and NumPy integers, bools for ints, tuples of the wrong
length, NaN), and require either a correct result or a ValueError / NotImplementedError /
TypeError whose message names the replaced argument; never another exception.

Every call runs three ways that must agree: `explain` on ShapeDtypeStructs, `jax.eval_shape`
(tracers, the backend traced too) and, for the calls that are legal, on real arrays against the
oracle (a smaller number: each compiles). `JAX_NATTEN_LONG=1` multiplies the example counts.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import sweeps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jax_natten
from jax_natten import models
from jax_natten.layer import LayerConfig

EXAMPLES = 20 if sweeps.LONG else 1
FUZZ = settings(max_examples=150 * EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
ALLOWED = (ValueError, NotImplementedError, TypeError)
ARRAY_NAMES = ("query", "key", "value", "additional_keys", "additional_values", "rpb")
DTYPES = ("float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2", "int8", "int32",
          "uint8", "bool", "complex64", "complex128")

INTS = st.one_of(
    st.integers(-3, 12),
    st.integers(2 ** 31 - 2, 2 ** 64),
    st.integers(-(2 ** 64), -(2 ** 31)),
    st.sampled_from([np.int32(3), np.int64(2), np.uint8(4), np.int16(-1)]),
)
SCALARS = st.one_of(
    INTS, st.booleans(), st.sampled_from([np.bool_(True), np.float32(3), 3.0, 2.5, float("nan"), float("inf"),
                                          1j, "3", None, b"", np.array(3), np.array([3, 3])]),
)
PARAMETERS = st.one_of(SCALARS, st.lists(SCALARS, max_size=4).map(tuple), st.lists(INTS, max_size=4))


@st.composite
def legal_call(draw):
    """A random legal configuration (small) and its arrays as ShapeDtypeStructs."""
    config = sweeps.configs(1, seed=draw(st.integers(0, 2 ** 32 - 1)), max_tokens=48)[0]
    arrays = {name: jax.ShapeDtypeStruct(x.shape, jnp.dtype(config.dtype))
              for name, x in config.inputs(seed=0).items()}
    kwargs = {**arrays, **config.nbhd_args(), "scale": config.scale}
    return config, kwargs


@st.composite
def array_mutant(draw, spec):
    """`spec` with one axis resized, an axis added or dropped, or another dtype; or a non-array."""
    shape = list(spec.shape) if spec is not None else [1, 5, 2, 4]
    kind = draw(st.sampled_from(["resize", "resize", "ndim", "dtype", "dtype", "other"]))
    dtype = jnp.dtype(spec.dtype) if spec is not None else jnp.dtype("float32")
    if kind == "resize":
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.one_of(st.integers(0, 12), st.just(2 ** 31)))
    elif kind == "ndim":
        if draw(st.booleans()) and len(shape) > 1:
            del shape[draw(st.integers(0, len(shape) - 1))]
        else:
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 3)))
    elif kind == "dtype":
        dtype = jnp.dtype(draw(st.sampled_from(DTYPES)))
    else:
        return draw(st.sampled_from([None, 3, 1.5, "query", [1.0, 2.0], np.float32(1)]))
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


@st.composite
def mutated_call(draw, names):
    config, kwargs = draw(legal_call())
    name = draw(st.sampled_from(names))
    if name in ARRAY_NAMES:
        kwargs[name] = draw(array_mutant(kwargs.get(name)))
    else:
        kwargs[name] = draw(PARAMETERS)
    return config, name, kwargs


def call_traced(fn, kwargs):
    """`fn(**kwargs)` under `jax.eval_shape`: arrays become tracers, everything else is static."""
    arrays = {n: x for n, x in kwargs.items() if isinstance(x, jax.ShapeDtypeStruct)}
    static = {n: x for n, x in kwargs.items() if n not in arrays}
    return jax.eval_shape(lambda arrays: fn(**arrays, **static), arrays)


def outcome(fn, kwargs):
    """("ok", result) or ("error", exception)."""
    try:
        return "ok", fn(kwargs)
    except Exception as error:  # noqa: BLE001 -- the property is about which exceptions occur
        return "error", error


def assert_clear_error(error, name):
    assert isinstance(error, ALLOWED), f"{type(error).__name__} for a bad {name}: {error}"
    assert re.search(rf"\b{name}\b", str(error)), f"the message does not name {name!r}: {error}"


ATTENTION_NAMES = ARRAY_NAMES + ("kernel_size", "stride", "dilation", "is_causal", "scale", "return_lse",
                                 "backend")


@FUZZ
@given(mutated_call(ATTENTION_NAMES))
def test_attention_fuzz(case):
    config, name, kwargs = case
    explained = outcome(lambda kw: jax_natten.explain(
        **{n: x for n, x in kw.items() if n not in ("return_lse", "backend")}), kwargs)
    traced = outcome(lambda kw: call_traced(jax_natten.neighborhood_attention, kw), kwargs)
    if traced[0] == "error":
        assert_clear_error(traced[1], name)
        if name not in ("return_lse", "backend"):  # arguments that explain() does not take
            assert explained[0] == "error" and str(explained[1]) == str(traced[1])
        return
    if name not in ("return_lse", "backend"):
        assert explained[0] == "ok", explained[1]
        assert isinstance(explained[1], jax_natten.Explanation)
    q, v = kwargs["query"], kwargs["value"]
    result = traced[1]
    out = result[0] if kwargs.get("return_lse") else result
    assert out.shape == q.shape[:-1] + v.shape[-1:] and out.dtype == q.dtype


@settings(FUZZ, max_examples=15 * EXAMPLES)
@given(mutated_call(("kernel_size", "stride", "dilation", "is_causal", "scale", "query", "key", "value")))
def test_legal_fuzzed_calls_match_oracle(case):
    """The fuzzed calls that are legal, on real arrays: the oracle's output."""
    config, name, kwargs = case
    status, _ = outcome(lambda kw: call_traced(jax_natten.neighborhood_attention, kw), kwargs)
    if status == "error":
        return
    rng = np.random.default_rng(0)
    arrays, args = {}, {}
    for n, x in kwargs.items():
        if isinstance(x, jax.ShapeDtypeStruct):
            arrays[n] = rng.standard_normal(x.shape).astype(x.dtype)
        else:
            args[n] = x
    out = jax_natten.neighborhood_attention(**{n: jnp.asarray(x) for n, x in arrays.items()}, **args,
                                            backend="reference")
    ref, _ = oracle.attention(**{n: x.astype(np.float64) for n, x in arrays.items()}, **args)
    sweeps.assert_close(f"fuzzed {name}", out, ref, oracle.TOLERANCE[np.dtype(out.dtype).name])


@st.composite
def unfused_call(draw):
    config, kwargs = draw(legal_call())
    operator = draw(st.sampled_from(["qk", "av"]))
    nbhd = config.nbhd_args()
    if operator == "qk":
        call = {"query": kwargs["query"], "key": kwargs["key"], **nbhd}
        if config.rpb:
            call["rpb"] = kwargs["rpb"]
    else:
        attn = jax.ShapeDtypeStruct((*kwargs["query"].shape[:-1], int(np.prod(config.kernel_size))),
                                    kwargs["query"].dtype)
        call = {"attn": attn, "value": kwargs["value"], **nbhd}
    name = draw(st.sampled_from(sorted(call) + ["backend"]))
    if isinstance(call.get(name), jax.ShapeDtypeStruct):
        call[name] = draw(array_mutant(call[name]))
    else:
        call[name] = draw(PARAMETERS)
    return config, operator, name, call


@FUZZ
@given(unfused_call())
def test_unfused_fuzz(case):
    config, operator, name, call = case
    fn = getattr(jax_natten, f"na{config.rank}d_{operator}")
    status, result = outcome(lambda kw: call_traced(fn, kw), call)
    if status == "error":
        assert_clear_error(result, name)
        return
    first = call["query"] if operator == "qk" else call["attn"]
    assert result.shape[:-1] == first.shape[:-1] and result.dtype == first.dtype


LAYER_BASE = dict(rank=2, embed_dim=16, num_heads=4, kernel_size=3)
LAYER_FIELDS = ("rank", "embed_dim", "num_heads", "kernel_size", "stride", "dilation", "is_causal",
                "num_kv_heads", "qk_scale", "rel_pos_bias", "attn_drop", "backend")


@FUZZ
@given(st.sampled_from(LAYER_FIELDS), PARAMETERS)
def test_layer_config_fuzz(name, value):
    """The Flax layers' shared constructor checks (linen and nnx both build a LayerConfig)."""
    status, result = outcome(lambda kw: LayerConfig(**kw), {**LAYER_BASE, name: value})
    if status == "error":
        assert_clear_error(result, name)


@settings(FUZZ, max_examples=10 * EXAMPLES)
@given(st.sampled_from(["num_heads", "kernel_size", "num_kv_heads", "qk_scale", "attn_drop", "backend"]),
       PARAMETERS)
def test_flax_constructors_fuzz(name, value):
    """linen (traced init through eval_shape) and nnx modules with one fuzzed argument."""
    from flax import nnx

    from jax_natten import linen as natten_linen
    from jax_natten import nnx as natten_nnx

    kwargs = {"embed_dim": 16, "num_heads": 4, "kernel_size": 3, name: value}
    x = jax.ShapeDtypeStruct((1, 6, 6, 16), jnp.float32)
    linen = outcome(lambda kw: jax.eval_shape(natten_linen.NeighborhoodAttention2D(**kw).init,
                                              jax.random.key(0), x), kwargs)
    if linen[0] == "error":
        assert_clear_error(linen[1], name)
        status, error = outcome(lambda kw: natten_nnx.NeighborhoodAttention2D(**kw, rngs=nnx.Rngs(0)), kwargs)
        assert status == "error", f"nnx accepts what linen refuses: {name}={value!r}"
        assert_clear_error(error, name)


MODEL_FIELDS = ("embed_dim", "depths", "num_heads", "mlp_ratio", "drop_path_rate", "kernel_size", "dilations",
                "layer_scale", "image_size", "num_classes", "in_channels", "family", "attention")


@FUZZ
@given(st.sampled_from(MODEL_FIELDS), st.one_of(PARAMETERS, st.lists(st.lists(INTS, max_size=3), max_size=4)))
def test_model_config_fuzz(name, value):
    status, result = outcome(lambda kw: models.create("dinat_mini", **kw), {name: value})
    if status == "error":
        assert_clear_error(result, name)
