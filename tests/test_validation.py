"""SPEC "Bad input": every illegal argument raises ValueError naming the argument and the value,
before anything runs; checks run on shapes and dtypes only (ShapeDtypeStructs work)."""

from __future__ import annotations

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_natten
from jax_natten import backends

F32 = jnp.float32

# The base problem: 1-D, 10 tokens, 4 query heads over 2 kv heads, head_dim 8, head_dim_v 6.
Q, K, V = (1, 10, 4, 8), (1, 10, 2, 8), (1, 10, 2, 6)


def _spec(shape, dtype=F32):
    return jax.ShapeDtypeStruct(shape, dtype)


def _array(shape, dtype=F32):
    return jnp.zeros(shape, dtype)


def attention_args(make, **changes):
    """Keyword arguments of a neighborhood_attention call on the base problem, with `changes`
    (a `(shape, dtype)` tuple or a shape builds an array with `make`; anything else is used as is)."""
    args = {"query": Q, "key": K, "value": V, "kernel_size": 3}
    args.update(changes)
    for name in ("query", "key", "value", "additional_keys", "additional_values", "rpb"):
        if name in args and isinstance(args[name], tuple):
            spec = args[name]
            args[name] = make(*spec) if isinstance(spec[0], tuple) else make(spec)
    return args


# (id, changes to the base call, regex the message must match: the argument and its value)
BAD_ATTENTION = [
    ("query-ndim3", {"query": (1, 10, 8)}, r"query has shape \(1, 10, 8\) \(ndim 3\)"),
    ("query-ndim7", {"query": (1, 2, 2, 2, 2, 4, 8)}, r"query has shape \(1, 2, 2, 2, 2, 4, 8\) \(ndim 7\)"),
    ("key-spatial", {"key": (1, 9, 2, 8)}, r"key has shape \(1, 9, 2, 8\), query has \(1, 10, 4, 8\)"),
    ("key-rank", {"key": (1, 10, 1, 2, 8)}, r"key has shape \(1, 10, 1, 2, 8\)"),
    ("value-batch", {"value": (2, 10, 2, 6)}, r"value has shape \(2, 10, 2, 6\), query has"),
    ("key-dtype", {"key": (K, jnp.float64)}, r"key has dtype float64, query has float32"),
    ("value-dtype", {"value": (V, jnp.bfloat16)}, r"value has dtype bfloat16, query has float32"),
    ("kv-heads", {"value": (1, 10, 1, 6)}, r"key has 2 heads and value has 1"),
    ("heads-not-multiple", {"key": (1, 10, 3, 8), "value": (1, 10, 3, 6)},
     r"query has 4 heads and key has 3"),
    ("key-head-dim", {"key": (1, 10, 2, 7)}, r"key has head_dim 7, query has 8"),
    ("kernel-too-large", {"kernel_size": 11}, r"kernel_size=11.*kernel_size \* dilation = 11 > input length 10"),
    ("kernel-dilation-too-large", {"kernel_size": 4, "dilation": 3},
     r"kernel_size=4, dilation=3: axis 0 has kernel_size \* dilation = 12 > input length 10"),
    ("stride-gt-kernel", {"stride": 4}, r"stride=4: axis 0 has stride 4 > kernel_size 3"),
    ("kernel-1", {"kernel_size": 1}, r"kernel_size=1: axis 0 has 1; it must be >= 2"),
    ("kernel-0", {"kernel_size": 0}, r"kernel_size=0: axis 0 has 0; it must be >= 2"),
    ("kernel-negative", {"kernel_size": -3}, r"kernel_size=-3: axis 0 has -3; it must be >= 2"),
    ("stride-0", {"stride": 0}, r"stride=0: axis 0 has 0; it must be >= 1"),
    ("stride-negative", {"stride": -1}, r"stride=-1: axis 0 has -1; it must be >= 1"),
    ("dilation-0", {"dilation": 0}, r"dilation=0: axis 0 has 0; it must be >= 1"),
    ("dilation-negative", {"dilation": -2}, r"dilation=-2: axis 0 has -2; it must be >= 1"),
    ("kernel-float", {"kernel_size": 3.0}, r"kernel_size=3\.0: every entry must be an integer, got 3\.0"),
    ("kernel-numpy-float", {"kernel_size": np.float32(3)}, r"kernel_size=.*3.*every entry must be an integer"),
    ("kernel-bool", {"kernel_size": True}, r"kernel_size=True: every entry must be an integer, got True"),
    ("kernel-string", {"kernel_size": "3"}, r"kernel_size='3': every entry must be an integer, got '3'"),
    ("kernel-none", {"kernel_size": None}, r"kernel_size=None: every entry must be an integer"),
    ("kernel-tuple-float", {"kernel_size": (3.5,)}, r"kernel_size=\(3\.5,\): every entry must be an integer, got 3\.5"),
    ("stride-float", {"stride": 1.0}, r"stride=1\.0: every entry must be an integer, got 1\.0"),
    ("stride-bool", {"stride": True}, r"stride=True: every entry must be an integer"),
    ("dilation-string", {"dilation": "2"}, r"dilation='2': every entry must be an integer"),
    ("dilation-float", {"dilation": 2.0}, r"dilation=2\.0: every entry must be an integer"),
    ("kernel-tuple-length", {"kernel_size": (3, 3)},
     r"kernel_size=\(3, 3\) has 2 entries; it needs one per spatial axis \(1\)"),
    ("stride-tuple-length", {"stride": (1, 1)}, r"stride=\(1, 1\) has 2 entries; it needs one per spatial axis \(1\)"),
    ("dilation-empty-tuple", {"dilation": ()}, r"dilation=\(\) has 0 entries"),
    ("causal-tuple-length", {"is_causal": (True, False)}, r"is_causal=\(True, False\) has 2 entries"),
    ("causal-int", {"is_causal": 1}, r"is_causal=1: every entry must be a bool, got 1"),
    ("causal-string", {"is_causal": "yes"}, r"is_causal='yes': every entry must be a bool"),
    ("causal-none", {"is_causal": None}, r"is_causal=None: every entry must be a bool"),
    ("causal-tuple-int", {"is_causal": (0,)}, r"is_causal=\(0,\): every entry must be a bool, got 0"),
    ("extra-keys-alone", {"additional_keys": (1, 3, 2, 8)},
     r"additional_keys and additional_values must be given together"),
    ("extra-values-alone", {"additional_values": (1, 3, 2, 6)},
     r"additional_keys and additional_values must be given together"),
    ("extra-keys-head-dim", {"additional_keys": (1, 3, 2, 7), "additional_values": (1, 3, 2, 6)},
     r"additional_keys has shape \(1, 3, 2, 7\); it must be \[batch=1, n_extra, heads_kv=2, 8\]"),
    ("extra-keys-batch", {"additional_keys": (2, 3, 2, 8), "additional_values": (1, 3, 2, 6)},
     r"additional_keys has shape \(2, 3, 2, 8\); it must be \[batch=1"),
    ("extra-keys-heads", {"additional_keys": (1, 3, 4, 8), "additional_values": (1, 3, 2, 6)},
     r"additional_keys has shape \(1, 3, 4, 8\); it must be \[batch=1, n_extra, heads_kv=2"),
    ("extra-keys-ndim", {"additional_keys": (1, 3, 8), "additional_values": (1, 3, 2, 6)},
     r"additional_keys has shape \(1, 3, 8\)"),
    ("extra-values-head-dim", {"additional_keys": (1, 3, 2, 8), "additional_values": (1, 3, 2, 8)},
     r"additional_values has shape \(1, 3, 2, 8\); it must be \[batch=1, n_extra, heads_kv=2, 6\]"),
    ("extra-n-mismatch", {"additional_keys": (1, 3, 2, 8), "additional_values": (1, 4, 2, 6)},
     r"additional_keys has 3 tokens and additional_values 4"),
    ("extra-keys-dtype", {"additional_keys": ((1, 3, 2, 8), jnp.float64), "additional_values": (1, 3, 2, 6)},
     r"additional_keys has dtype float64, query has float32"),
    ("extra-values-dtype", {"additional_keys": (1, 3, 2, 8), "additional_values": ((1, 3, 2, 6), jnp.float16)},
     r"additional_values has dtype float16, query has float32"),
    ("rpb-table", {"rpb": (4, 4)}, r"rpb has shape \(4, 4\); it must be \[query heads, 2\*kernel_size-1 per axis\] = \(4, 5\)"),
    ("rpb-heads", {"rpb": (2, 5)}, r"rpb has shape \(2, 5\); .* = \(4, 5\)"),
    ("rpb-rank", {"rpb": (4, 5, 5)}, r"rpb has shape \(4, 5, 5\); .* = \(4, 5\)"),
    ("rpb-dtype", {"rpb": ((4, 5), jnp.float64)}, r"rpb has dtype float64; it must match the inputs \(float32\)"),
    ("scale-bool", {"scale": True}, r"scale=True: it must be a finite real number or None"),
    ("scale-nan", {"scale": float("nan")}, r"scale=nan: it must be a finite real number"),
    ("scale-inf", {"scale": float("inf")}, r"scale=inf: it must be a finite real number"),
    ("scale-string", {"scale": "0.5"}, r"scale='0\.5': it must be a finite real number"),
    ("scale-complex", {"scale": 1j}, r"scale=1j: it must be a finite real number"),
    ("int-dtype", {"query": (Q, jnp.int32), "key": (K, jnp.int32), "value": (V, jnp.int32)},
     r"query has dtype int32; supported dtypes are float16, bfloat16, float32, float64"),
    ("bool-dtype", {"query": (Q, jnp.bool_), "key": (K, jnp.bool_), "value": (V, jnp.bool_)},
     r"query has dtype bool; supported dtypes"),
    ("complex-dtype", {"query": (Q, jnp.complex64), "key": (K, jnp.complex64), "value": (V, jnp.complex64)},
     r"query has dtype complex64; supported dtypes"),
    ("int-key", {"key": (K, jnp.int32)}, r"key has dtype int32, query has float32"),
]

# Arguments that explain() does not take.
BAD_CALL_ONLY = [
    ("return-lse-int", {"return_lse": 1}, r"return_lse=1: it must be a bool"),
    ("return-lse-string", {"return_lse": "yes"}, r"return_lse='yes': it must be a bool"),
    ("backend-unknown", {"backend": "nope"}, r"backend='nope': unknown backend; choose one of \(.*'reference'.*\) or None"),
    ("backend-case", {"backend": "Reference"}, r"backend='Reference': unknown backend"),
]


@pytest.fixture
def no_kernels(monkeypatch):
    """Make every backend operator fail loudly: a bad call must be refused before one runs."""
    def kernel_ran(*args, **kwargs):
        raise AssertionError("a backend operator ran on bad input")

    for backend in backends.BACKENDS:
        for op in backends.OPERATORS:
            monkeypatch.setattr(type(backend), op, staticmethod(kernel_ran), raising=False)


def _ids(cases):
    return [c[0] for c in cases]


@pytest.mark.parametrize("name,changes,message", BAD_ATTENTION + BAD_CALL_ONLY, ids=_ids(BAD_ATTENTION + BAD_CALL_ONLY))
def test_bad_attention_arguments_raise(name, changes, message, no_kernels):
    with pytest.raises(ValueError, match=message):
        jax_natten.neighborhood_attention(**attention_args(_array, **changes))


@pytest.mark.parametrize("name,changes,message", BAD_ATTENTION + BAD_CALL_ONLY, ids=_ids(BAD_ATTENTION + BAD_CALL_ONLY))
def test_bad_arguments_raise_on_shapes_alone(name, changes, message, no_kernels):
    """The same errors from ShapeDtypeStructs: the checks read shapes and dtypes only."""
    with pytest.raises(ValueError, match=message):
        jax_natten.neighborhood_attention(**attention_args(_spec, **changes))


@pytest.mark.parametrize("name,changes,message", BAD_ATTENTION, ids=_ids(BAD_ATTENTION))
def test_explain_raises_the_same_errors(name, changes, message):
    with pytest.raises(ValueError, match=message):
        jax_natten.explain(**attention_args(_spec, **changes))


@pytest.mark.parametrize("name,changes,message", BAD_ATTENTION, ids=_ids(BAD_ATTENTION))
def test_bad_arguments_raise_under_jit(name, changes, message):
    """Inside jit the checks see tracers' static shapes and raise the same errors at trace time."""
    args = attention_args(_array, **changes)
    arrays = {n: a for n, a in args.items() if isinstance(a, jax.Array)}
    static = {n: a for n, a in args.items() if n not in arrays}
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda **arr: jax_natten.neighborhood_attention(**arr, **static))(**arrays)


def test_rank_specific_operators_check_the_rank(no_kernels):
    q, k, v = _array(Q), _array(K), _array(V)
    with pytest.raises(ValueError, match=r"query has shape \(1, 10, 4, 8\) \(ndim 4\); a 2-D operator needs"):
        jax_natten.na2d(q, k, v, 3)
    with pytest.raises(ValueError, match=r"query has shape \(1, 10, 4, 8\) \(ndim 4\); a 3-D operator needs"):
        jax_natten.na3d(q, k, v, 3)
    q2 = _array((1, 6, 6, 2, 4))
    with pytest.raises(ValueError, match=r"query has shape \(1, 6, 6, 2, 4\) \(ndim 5\); a 1-D operator needs"):
        jax_natten.na1d(q2, q2, q2, 3)


def test_per_axis_errors_name_the_axis(no_kernels):
    q = _array((1, 6, 9, 2, 4))
    with pytest.raises(ValueError, match=r"kernel_size=\(3, 10\), dilation=1: axis 1 has kernel_size \* dilation = 10 "
                                         r"> input length 9"):
        jax_natten.na2d(q, q, q, (3, 10))
    with pytest.raises(ValueError, match=r"stride=\(1, 4\): axis 1 has stride 4 > kernel_size 3"):
        jax_natten.na2d(q, q, q, 3, stride=(1, 4))
    with pytest.raises(ValueError, match=r"dilation=\(3, 1\): axis 0 has kernel_size \* dilation = 9 > input length 6"):
        jax_natten.neighborhood_attention(q, q, q, 3, dilation=(3, 1))
    with pytest.raises(ValueError, match=r"kernel_size=\(3, 3, 3\) has 3 entries; it needs one per spatial axis \(2\)"):
        jax_natten.na2d(q, q, q, (3, 3, 3))
    with pytest.raises(ValueError, match=r"is_causal=\(True, 'no'\): every entry must be a bool, got 'no'"):
        jax_natten.na2d(q, q, q, 3, is_causal=(True, "no"))
    with pytest.raises(ValueError, match=r"rpb has shape \(2, 5, 7\); .* = \(2, 5, 5\)"):
        jax_natten.na2d(q, q, q, 3, rpb=_array((2, 5, 7)))


# Unfused operators: (id, operator, arguments, regex)
def _bad_unfused():
    q, k = _array(Q), _array(K)
    attn, v = _array((1, 10, 4, 3)), _array(V)
    return [
        ("qk-rank", jax_natten.na2d_qk, (q, k, 3), {}, r"query has shape \(1, 10, 4, 8\) \(ndim 4\); a 2-D operator"),
        ("qk-key-spatial", jax_natten.na1d_qk, (q, _array((1, 8, 2, 8)), 3), {}, r"key has shape \(1, 8, 2, 8\), query has"),
        ("qk-key-dtype", jax_natten.na1d_qk, (q, _array(K, jnp.float64), 3), {}, r"key has dtype float64, query has float32"),
        ("qk-heads", jax_natten.na1d_qk, (q, _array((1, 10, 3, 8)), 3), {}, r"query has 4 heads and key has 3"),
        ("qk-head-dim", jax_natten.na1d_qk, (q, _array((1, 10, 2, 5)), 3), {}, r"key has head_dim 5, query has 8"),
        ("qk-int", jax_natten.na1d_qk, (_array(Q, jnp.int32), _array(K, jnp.int32), 3), {}, r"query has dtype int32"),
        ("qk-kernel", jax_natten.na1d_qk, (q, k, 12), {}, r"kernel_size=12.* = 12 > input length 10"),
        ("qk-stride", jax_natten.na1d_qk, (q, k, 3), {"stride": 5}, r"stride=5: axis 0 has stride 5 > kernel_size 3"),
        ("qk-causal", jax_natten.na1d_qk, (q, k, 3), {"is_causal": "true"}, r"is_causal='true'"),
        ("qk-rpb-shape", jax_natten.na1d_qk, (q, k, 3), {"rpb": _array((4, 3))}, r"rpb has shape \(4, 3\); .* = \(4, 5\)"),
        ("qk-rpb-dtype", jax_natten.na1d_qk, (q, k, 3), {"rpb": _array((4, 5), jnp.bfloat16)}, r"rpb has dtype bfloat16"),
        ("qk-backend", jax_natten.na1d_qk, (q, k, 3), {"backend": "nope"}, r"backend='nope': unknown backend"),
        ("av-rank", jax_natten.na3d_av, (attn, v, 3), {}, r"attn has shape \(1, 10, 4, 3\) \(ndim 4\); a 3-D operator"),
        ("av-window", jax_natten.na1d_av, (_array((1, 10, 4, 5)), v, 3), {},
         r"attn has 5 weights per query; kernel_size=\(3,\) needs prod\(kernel_size\) = 3"),
        ("av-heads", jax_natten.na1d_av, (attn, _array((1, 10, 3, 6)), 3), {}, r"attn has 4 heads and value has 3"),
        ("av-spatial", jax_natten.na1d_av, (attn, _array((1, 11, 2, 6)), 3), {}, r"value has shape \(1, 11, 2, 6\), attn has"),
        ("av-dtype", jax_natten.na1d_av, (attn, _array(V, jnp.float16), 3), {}, r"value has dtype float16, attn has float32"),
        ("av-int", jax_natten.na1d_av, (_array((1, 10, 4, 3), jnp.int8), _array(V, jnp.int8), 3), {}, r"attn has dtype int8"),
        ("av-kernel", jax_natten.na1d_av, (attn, v, 1), {}, r"kernel_size=1: axis 0 has 1; it must be >= 2"),
        ("av-dilation", jax_natten.na1d_av, (attn, v, 3), {"dilation": 1.5}, r"dilation=1\.5: every entry must be an integer"),
        ("av-backend", jax_natten.na1d_av, (attn, v, 3), {"backend": "nope"}, r"backend='nope': unknown backend"),
    ]


BAD_UNFUSED = _bad_unfused()


@pytest.mark.parametrize("name,op,args,kwargs,message", BAD_UNFUSED, ids=_ids(BAD_UNFUSED))
def test_bad_unfused_arguments_raise(name, op, args, kwargs, message, no_kernels):
    with pytest.raises(ValueError, match=message):
        op(*args, **kwargs)


GOOD_VARIANTS = [
    ("numpy-ints", {"kernel_size": np.int64(3), "stride": np.int32(2), "dilation": np.int16(2)}),
    ("list-args", {"kernel_size": [4], "stride": [2], "dilation": [1], "is_causal": [True]}),
    ("numpy-bool", {"is_causal": np.bool_(True)}),
    ("int-scale", {"scale": 1}),
    ("numpy-scale", {"scale": np.float32(0.25)}),
    ("zero-scale", {"scale": 0.0}),
    ("negative-scale", {"scale": -0.5}),
    ("mqa", {"key": (1, 10, 1, 8), "value": (1, 10, 1, 6)}),
    ("kernel-equals-length", {"kernel_size": 10}),
    ("kernel-times-dilation-equals-length", {"kernel_size": 5, "dilation": 2}),
    ("stride-equals-kernel", {"kernel_size": 4, "stride": 4}),
    ("extra-kv-and-rpb", {"additional_keys": (1, 2, 2, 8), "additional_values": (1, 2, 2, 6), "rpb": (4, 5)}),
    ("float16", {"query": (Q, jnp.float16), "key": (K, jnp.float16), "value": (V, jnp.float16)}),
    ("bfloat16", {"query": (Q, jnp.bfloat16), "key": (K, jnp.bfloat16), "value": (V, jnp.bfloat16)}),
    ("float64", {"query": (Q, jnp.float64), "key": (K, jnp.float64), "value": (V, jnp.float64)}),
]


@pytest.mark.parametrize("name,changes", GOOD_VARIANTS, ids=_ids(GOOD_VARIANTS))
def test_legal_arguments_are_accepted(name, changes):
    explanation = jax_natten.explain(**attention_args(_spec, **changes))
    assert explanation.chosen in backends.names()


def test_legal_arguments_run():
    """A legal call with the unusual-but-legal argument forms runs and gives finite outputs."""
    args = attention_args(_array, kernel_size=[np.int64(4)], stride=np.int32(2), is_causal=np.bool_(True),
                          scale=np.float32(0.3), return_lse=np.bool_(True), backend="reference")
    args["query"] = args["query"] + 1.0
    out, lse = jax_natten.neighborhood_attention(**args)
    assert out.shape == (1, 10, 4, 6) and lse.shape == (1, 10, 4)
    assert np.isfinite(np.asarray(out)).all() and np.isfinite(np.asarray(lse)).all()


def test_explain():
    explanation = jax_natten.explain(_spec((2, 8, 8, 4, 16)), _spec((2, 8, 8, 2, 16)),
                                     _spec((2, 8, 8, 2, 16)), (3, 5), dilation=(2, 1),
                                     is_causal=(True, False))
    assert isinstance(explanation, jax_natten.Explanation)
    assert set(explanation.reasons) == set(backends.names())
    assert explanation.reasons[explanation.chosen] is None
    if jax.default_backend() == "cpu":
        assert explanation.chosen == ("reference" if explanation.reasons["blocked"] else "blocked")
    text = str(explanation)
    assert f"chosen backend: {explanation.chosen}" in text
    for name in backends.names():
        assert re.search(rf"^\s+{re.escape(name)}: (can run|cannot run: .+)$", text, re.MULTILINE), text


def _float64_request_reasons():
    """{backend name: why it cannot run} for float64 attention on the base problem."""
    request = backends.make_request("attention", "float64", Q[1:-2], Q[-2], K[-2], Q[-1], V[-1],
                                    jax_natten.Neighborhood((3,), (1,), (1,), (False,)))
    return {b.name: backends.automatic_reason(b, request) for b in backends.BACKENDS}


def test_explicit_backend_that_cannot_run_raises_not_implemented(no_kernels):
    """A legal call that an explicitly named backend does not support: NotImplementedError naming
    the backend and its reason (float64 is beyond every CUDA backend, and no CUDA backend runs
    on a CPU)."""
    request = backends.make_request("attention", "float64", Q[1:-2], Q[-2], K[-2], Q[-1], V[-1],
                                    jax_natten.Neighborhood((3,), (1,), (1,), (False,)))
    refused = {b.name: b.unsupported(request) for b in backends.BACKENDS if b.unsupported(request)}
    assert refused, "expected some backend to refuse float64 inputs"
    args = attention_args(_spec, query=(Q, jnp.float64), key=(K, jnp.float64), value=(V, jnp.float64))
    for name, reason in refused.items():
        with pytest.raises(NotImplementedError, match=rf"backend={name!r} cannot run this attention call: {re.escape(reason)}"):
            jax_natten.neighborhood_attention(**args, backend=name)


def test_automatic_choice_logs_and_explains_fallbacks(caplog):
    """backend=None passes over the preferred backends that cannot run: it says why at debug
    level, and explain lists the reasons of every backend."""
    reasons = _float64_request_reasons()
    caplog.set_level(logging.DEBUG, logger="jax_natten")
    args = attention_args(_spec, query=(Q, jnp.float64), key=(K, jnp.float64), value=(V, jnp.float64))
    explanation = jax_natten.explain(**args)
    assert explanation.chosen == "reference"
    assert explanation.reasons == reasons
    text = str(explanation)
    for name, reason in reasons.items():
        assert f"{name}: {'can run' if reason is None else 'cannot run: ' + reason}" in text
    passed_over = backends.names()[:backends.names().index("reference")]
    assert passed_over, "expected CUDA backends to be preferred over the reference"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    for name in passed_over:
        assert repr(name) in logged and reasons[name] in logged, logged
