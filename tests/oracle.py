"""Brute-force NumPy float64 oracle, written from SPEC.md's text alone.

It deliberately does not import jax_natten: the per-axis rule below is a second, plain
implementation of SPEC's "The neighborhood, one axis at a time", and everything else (masks,
dense attention, the unfused operators) is built on it with float64 NumPy.

Layout as in SPEC: `[batch, *spatial, heads, head_dim]`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

# --------------------------------------------------------------------------------------------
# One axis
# --------------------------------------------------------------------------------------------


def radii(k):
    """SPEC step 1: (left, right) with left + right + 1 == k."""
    left = k // 2
    right = k // 2 + k % 2 - 1
    assert left + right + 1 == k
    return left, right


def group_length(L, d, g):
    """SPEC step 2: length of dilation group g."""
    return L // d + (1 if g < L % d else 0)


def leader(u, Lg, s, causal):
    """SPEC step 3: in-group coordinate of the leader of the stride group of u."""
    if causal:
        return min(s * (u // s) + s - 1, Lg - 1)
    return min(s * (u // s) + s // 2, Lg - 1)


def axis_window(i, L, k, s=1, d=1, causal=False):
    """SPEC steps 2-4 for query i: (group g, in-group query coordinate u, [a, b) in-group)."""
    left, _ = radii(k)
    g = i % d
    u = i // d
    Lg = group_length(L, d, g)
    m = leader(u, Lg, s, causal)
    if causal:
        a = max(m - k + 1, 0)
        b = u + 1
    else:
        a = min(max(m - left, 0), Lg - k)  # clamp(m - left, 0, Lg - k): shift, never shrink
        b = a + k
    return g, u, a, b


def axis_keys(i, L, k, s=1, d=1, causal=False):
    """SPEC step 5: the sorted list of keys that query i attends to on this axis."""
    g, _, a, b = axis_window(i, L, k, s, d, causal)
    return [v * d + g for v in range(a, b)]


def axis_mask(L, k, s=1, d=1, causal=False):
    """Boolean `[L, L]`: mask[i, j] says query i attends to key j on this axis."""
    mask = np.zeros((L, L), dtype=bool)
    for i in range(L):
        mask[i, axis_keys(i, L, k, s, d, causal)] = True
    return mask


def axis_slots(L, k, s=1, d=1, causal=False):
    """Slot tables of one axis, `[L, k]` each: slot t of query i means in-group key coordinate
    `a + t`; it is valid when `a + t < b`. Returns (key position, valid, rpb offset index)."""
    keys = np.zeros((L, k), dtype=np.int64)
    valid = np.zeros((L, k), dtype=bool)
    rpb_index = np.zeros((L, k), dtype=np.int64)
    for i in range(L):
        g, u, a, b = axis_window(i, L, k, s, d, causal)
        for t in range(k):
            v = a + t
            if v < b:
                valid[i, t] = True
                keys[i, t] = v * d + g
                rpb_index[i, t] = v - u + k - 1  # (j - i) / d + k - 1
    return keys, valid, rpb_index


# --------------------------------------------------------------------------------------------
# N-D neighborhoods
# --------------------------------------------------------------------------------------------


def per_axis(value, rank):
    """A plain value for every axis, or a tuple with one per axis."""
    if isinstance(value, (tuple, list)):
        assert len(value) == rank
        return tuple(value)
    return (value,) * rank


def dense_mask(spatial, kernel_size, stride=1, dilation=1, is_causal=False):
    """Boolean `[tokens, tokens]` (row-major flattened tokens): the product of the axis masks."""
    rank = len(spatial)
    params = zip(spatial, per_axis(kernel_size, rank), per_axis(stride, rank),
                 per_axis(dilation, rank), per_axis(is_causal, rank))
    mask = np.ones((1, 1), dtype=bool)
    for L, k, s, d, c in params:
        mask = np.kron(mask, axis_mask(L, k, s, d, c)).astype(bool)
    return mask


def dense_bias_index(spatial, kernel_size, dilation=1):
    """Per-axis `[tokens, tokens]` indices into rpb's table axes: `(j_a - i_a)/d_a + k_a - 1` for
    query i and key j (clipped into the table for pairs of different dilation groups, which the
    mask removes anyway)."""
    rank = len(spatial)
    ks, ds = per_axis(kernel_size, rank), per_axis(dilation, rank)
    coords = np.stack(np.unravel_index(np.arange(math.prod(spatial)), spatial))  # [rank, tokens]
    index = []
    for axis in range(rank):
        offset = (coords[axis][None, :] - coords[axis][:, None]) // ds[axis] + ks[axis] - 1
        index.append(np.clip(offset, 0, 2 * ks[axis] - 2))
    return index


def dense_bias(rpb, spatial, kernel_size, dilation=1):
    """`[heads, tokens, tokens]` float64: rpb[h, (j_1 - i_1)/d_1 + k_1 - 1, ...]."""
    return np.asarray(rpb, np.float64)[(slice(None), *dense_bias_index(spatial, kernel_size, dilation))]


@functools.lru_cache(maxsize=64)
def slot_tables(spatial, kernel_size, stride=1, dilation=1, is_causal=False):
    """`[tokens, w]` tables over row-major slots (w = prod(kernel_size)): flat key index, valid,
    and per-axis rpb offset indices (a list of `[tokens, w]`). Cached (the sweeps ask for the
    same tables several times per configuration): callers must not write into them."""
    rank = len(spatial)
    tables = [axis_slots(L, k, s, d, c) for L, k, s, d, c in zip(
        spatial, per_axis(kernel_size, rank), per_axis(stride, rank),
        per_axis(dilation, rank), per_axis(is_causal, rank))]
    kernel = [t[0].shape[1] for t in tables]
    # Broadcast each axis's [L_a, k_a] tables over [L_1..L_r, k_1..k_r]; row-major flattening of
    # the query axes and of the offset axes gives the token and slot orders.
    full = (*spatial, *kernel)
    key, valid, per_axis_rpb = np.zeros((), np.int64), np.ones((), bool), []
    for a in range(rank):
        shape = [1] * (2 * rank)
        shape[a], shape[rank + a] = spatial[a], kernel[a]
        keys_a, valid_a, rpb_a = (np.asarray(table).reshape(shape) for table in tables[a])
        key = key * spatial[a] + keys_a
        valid = valid & valid_a
        per_axis_rpb.append(rpb_a)
    tokens, w = math.prod(spatial), math.prod(kernel)
    valid = np.broadcast_to(valid, full).reshape(tokens, w)
    key = np.where(valid, np.broadcast_to(key, full).reshape(tokens, w), 0)
    rpb_index = [np.where(valid, np.broadcast_to(r, full).reshape(tokens, w), 0) for r in per_axis_rpb]
    return key, valid, rpb_index


# --------------------------------------------------------------------------------------------
# Attention in float64
# --------------------------------------------------------------------------------------------


def _f64(x):
    return None if x is None else np.asarray(x, np.float64)


def _tokens(x):
    """`[batch, *spatial, heads, dim]` -> `[batch, tokens, heads, dim]`."""
    return x.reshape(x.shape[0], -1, *x.shape[-2:])


def kv_head(heads, heads_kv):
    """SPEC's GQA rule: query head h reads key/value head h // (heads // heads_kv)."""
    return np.arange(heads) // (heads // heads_kv)


def _masked_scores(query, key, value, kernel_size, stride, dilation, is_causal, scale, additional_keys,
                   additional_values, rpb):
    """The pieces of dense masked attention in float64: (scores `[batch, heads, tokens, tokens +
    extra]` with -inf outside the neighborhoods, queries `[batch, tokens, heads, d]`, keys and values
    per query head `[batch, tokens + extra, heads, d]`, scale)."""
    q, k, v = _f64(query), _f64(key), _f64(value)
    spatial = q.shape[1:-2]
    heads, head_dim = q.shape[-2:]
    if scale is None:
        scale = head_dim ** -0.5
    hk = kv_head(heads, k.shape[-2])
    qt, keys, values = _tokens(q), _tokens(k)[:, :, hk], _tokens(v)[:, :, hk]  # kv heads -> query heads
    if additional_keys is not None:
        keys = np.concatenate([keys, _f64(additional_keys)[:, :, hk]], axis=1)
        values = np.concatenate([values, _f64(additional_values)[:, :, hk]], axis=1)
    tokens = math.prod(spatial)
    scores = scale * np.einsum("bihd,bjhd->bhij", qt, keys)
    if rpb is not None:
        scores[..., :tokens] += dense_bias(rpb, spatial, kernel_size, dilation)[None]
    mask = dense_mask(spatial, kernel_size, stride, dilation, is_causal)
    scores[..., :tokens] = np.where(mask[None, None], scores[..., :tokens], -np.inf)
    return scores, qt, keys, values, scale


def attention(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
              additional_keys=None, additional_values=None, rpb=None):
    """Dense masked attention in float64. Returns (out `[batch, *spatial, heads, head_dim_v]`,
    lse `[batch, *spatial, heads]`)."""
    scores, _, _, values, _ = _masked_scores(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                                             additional_keys, additional_values, rpb)
    shape = np.shape(query)[:-1]
    top = scores.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(scores - top).sum(axis=-1)) + top[..., 0]  # [b, h, i]
    probs = np.exp(scores - lse[..., None])
    out = np.einsum("bhij,bjhd->bihd", probs, values)
    out = out.reshape(*shape, values.shape[-1])
    lse = np.moveaxis(lse, 1, -1).reshape(shape)
    return out, lse


def qk(query, key, kernel_size, stride=1, dilation=1, is_causal=False, rpb=None):
    """PN: `[batch, *spatial, heads, prod(k)]` unscaled q.k (+ rpb); -inf in empty causal slots."""
    q, k = _f64(query), _f64(key)
    spatial = q.shape[1:-2]
    heads, heads_kv = q.shape[-2], k.shape[-2]
    nbr, valid, rpb_index = slot_tables(spatial, kernel_size, stride, dilation, is_causal)
    qt = _tokens(q)
    kt = _tokens(k)[:, :, kv_head(heads, heads_kv)]
    # kt[:, nbr] is [batch, tokens, w, heads, dim]
    attn = np.einsum("bxhd,bxthd->bxht", qt, kt[:, nbr])
    if rpb is not None:
        bias = _f64(rpb)[(slice(None), *rpb_index)]  # [heads, tokens, w]
        attn = attn + np.moveaxis(bias, 0, 1)[None]
    attn = np.where(valid[None, :, None, :], attn, -np.inf)
    return attn.reshape(*q.shape[:-1], nbr.shape[1])


def av(attn, value, kernel_size, stride=1, dilation=1, is_causal=False):
    """NN: `[batch, *spatial, heads, head_dim_v]` = sum over valid slots of attn * v[neighbor]."""
    a, v = _f64(attn), _f64(value)
    spatial = a.shape[1:-2]
    heads, heads_kv = a.shape[-2], v.shape[-2]
    nbr, valid, _ = slot_tables(spatial, kernel_size, stride, dilation, is_causal)
    at = _tokens(a)
    at = np.where(valid[None, :, None, :], at, 0.0)
    vt = _tokens(v)[:, :, kv_head(heads, heads_kv)]
    out = np.einsum("bxht,bxthd->bxhd", at, vt[:, nbr])
    return out.reshape(*a.shape[:-1], v.shape[-1])


def _scatter_kv_heads(per_query_head, heads, heads_kv):
    """`[..., heads, d]` -> `[..., heads_kv, d]`: sums each group of query heads into its KV head."""
    return per_query_head.reshape(*per_query_head.shape[:-2], heads_kv, heads // heads_kv, -1).sum(-2)


def qk_vjp(query, key, cotangent, kernel_size, stride=1, dilation=1, is_causal=False, rpb=None):
    """Gradients of `qk` for the cotangent `[batch, *spatial, heads, prod(k)]`: (dq, dk, drpb or
    None). Empty slots are constants (-inf) and take no gradient."""
    q, k = _f64(query), _f64(key)
    spatial = q.shape[1:-2]
    heads, heads_kv = q.shape[-2], k.shape[-2]
    nbr, valid, rpb_index = slot_tables(spatial, kernel_size, stride, dilation, is_causal)
    g = np.where(valid[None, :, None, :], _tokens(_f64(cotangent)), 0.0)  # [b, x, h, t]
    qt = _tokens(q)
    kt = _tokens(k)[:, :, kv_head(heads, heads_kv)]
    dq = np.einsum("bxht,bxthd->bxhd", g, kt[:, nbr])
    dk_per_head = np.zeros_like(kt)
    np.add.at(dk_per_head, (slice(None), nbr), np.einsum("bxht,bxhd->bxthd", g, qt))
    dk = _scatter_kv_heads(dk_per_head, heads, heads_kv)
    drpb = None
    if rpb is not None:
        drpb = np.zeros_like(_f64(rpb))
        np.add.at(drpb, (slice(None), *rpb_index), np.moveaxis(g.sum(0), 1, 0))
    return dq.reshape(q.shape), dk.reshape(k.shape), drpb


def av_vjp(attn, value, cotangent, kernel_size, stride=1, dilation=1, is_causal=False):
    """Gradients of `av` for the cotangent `[batch, *spatial, heads, head_dim_v]`: (dattn, dv);
    dattn is 0 in empty slots."""
    a, v = _f64(attn), _f64(value)
    spatial = a.shape[1:-2]
    heads, heads_kv = a.shape[-2], v.shape[-2]
    nbr, valid, _ = slot_tables(spatial, kernel_size, stride, dilation, is_causal)
    at = np.where(valid[None, :, None, :], _tokens(a), 0.0)
    vt = _tokens(v)[:, :, kv_head(heads, heads_kv)]
    g = _tokens(_f64(cotangent))
    dattn = np.where(valid[None, :, None, :], np.einsum("bxhd,bxthd->bxht", g, vt[:, nbr]), 0.0)
    dv_per_head = np.zeros_like(vt)
    np.add.at(dv_per_head, (slice(None), nbr), np.einsum("bxht,bxhd->bxthd", at, g))
    return dattn.reshape(a.shape), _scatter_kv_heads(dv_per_head, heads, heads_kv).reshape(v.shape)


def attention_vjp(query, key, value, d_out, d_lse, kernel_size, stride=1, dilation=1, is_causal=False,
                  scale=None, additional_keys=None, additional_values=None, rpb=None):
    """Gradients of `attention` (out, lse) for the cotangents d_out and d_lse: (dq, dk, dv, drpb,
    d_additional_keys, d_additional_values), None for absent inputs. With S the masked scores and
    P = exp(S - lse): dS = P * (dO.V - rowsum(P * dO.V)) + P * dlse."""
    scores, qt, keys, values, scale = _masked_scores(query, key, value, kernel_size, stride, dilation, is_causal,
                                                     scale, additional_keys, additional_values, rpb)
    q_shape, k_shape, v_shape = np.shape(query), np.shape(key), np.shape(value)
    spatial = q_shape[1:-2]
    heads, heads_kv, tokens = q_shape[-2], k_shape[-2], math.prod(spatial)
    probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    d_o = np.moveaxis(_tokens(_f64(d_out)), 2, 1)  # [b, h, i, dv]
    d_probs = np.einsum("bhid,bjhd->bhij", d_o, values)
    d_scores = probs * (d_probs - (probs * d_probs).sum(-1, keepdims=True))
    d_scores += probs * np.moveaxis(_f64(d_lse).reshape(q_shape[0], tokens, heads), 2, 1)[..., None]
    dq = scale * np.einsum("bhij,bjhd->bihd", d_scores, keys)
    d_keys = _scatter_kv_heads(scale * np.einsum("bhij,bihd->bjhd", d_scores, qt), heads, heads_kv)
    d_values = _scatter_kv_heads(np.einsum("bhij,bhid->bjhd", probs, d_o), heads, heads_kv)
    drpb = None
    if rpb is not None:
        drpb = np.zeros_like(_f64(rpb))
        np.add.at(drpb, (slice(None), *dense_bias_index(spatial, kernel_size, dilation)), d_scores[..., :tokens].sum(0))
    d_extra_k = d_extra_v = None
    if additional_keys is not None:
        d_extra_k, d_extra_v = d_keys[:, tokens:], d_values[:, tokens:]
    return (dq.reshape(q_shape), d_keys[:, :tokens].reshape(k_shape), d_values[:, :tokens].reshape(v_shape),
            drpb, d_extra_k, d_extra_v)


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


# SPEC "Numerics": the largest relative error each dtype may have (float64: the reference's own
# accuracy, far below what any kernel should need).
TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}


def rel_err(x, ref):
    """SPEC's `||x - ref|| / ||ref||` in float64 (NaN if x has a NaN or ref is all zero)."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    norm = np.linalg.norm(ref)
    if norm == 0:
        return float("nan")
    return float(np.linalg.norm(x - ref) / norm)


# --------------------------------------------------------------------------------------------
# Test problems (plain data, shared by the test files)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """One attention problem. Per-axis fields are tuples; `n_extra = 0` means no extra KV."""

    batch: int
    spatial: tuple
    heads: int
    heads_kv: int
    head_dim: int
    head_dim_v: int
    kernel_size: tuple
    stride: tuple = None
    dilation: tuple = None
    is_causal: tuple = None
    n_extra: int = 0
    rpb: bool = False
    scale: float | None = None
    scalar_args: bool = False  # pass per-axis arguments as one plain value (all entries equal)
    dtype: str = "float32"  # of the arrays that `inputs` are cast to by the sweeps

    def __post_init__(self):
        rank = len(self.spatial)
        for name, default in (("stride", 1), ("dilation", 1), ("is_causal", False)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, (default,) * rank)

    @property
    def rank(self):
        return len(self.spatial)

    @property
    def tokens(self):
        return math.prod(self.spatial)

    def nbhd_args(self):
        """kernel_size, stride, dilation, is_causal as keyword arguments (plain values when
        `scalar_args` and every axis agrees)."""
        out = {}
        for name in ("kernel_size", "stride", "dilation", "is_causal"):
            value = getattr(self, name)
            out[name] = value[0] if self.scalar_args and len(set(value)) == 1 else value
        return out

    def inputs(self, seed):
        """Fresh float64 NumPy inputs: query, key, value and (when configured)
        additional_keys/values and rpb, as keyword arguments."""
        rng = np.random.default_rng(seed)
        tokens = (self.batch, *self.spatial)
        arrays = {
            "query": rng.standard_normal((*tokens, self.heads, self.head_dim)),
            "key": rng.standard_normal((*tokens, self.heads_kv, self.head_dim)),
            "value": rng.standard_normal((*tokens, self.heads_kv, self.head_dim_v)),
        }
        if self.n_extra:
            arrays["additional_keys"] = rng.standard_normal(
                (self.batch, self.n_extra, self.heads_kv, self.head_dim))
            arrays["additional_values"] = rng.standard_normal(
                (self.batch, self.n_extra, self.heads_kv, self.head_dim_v))
        if self.rpb:
            arrays["rpb"] = rng.standard_normal((self.heads, *(2 * k - 1 for k in self.kernel_size)))
        return arrays


def cast(arrays, dtype):
    """The same arrays in `dtype` (NumPy, so ml_dtypes' bfloat16 works too), and their exact
    float64 values for the oracle."""
    low = {name: np.asarray(x).astype(dtype) for name, x in arrays.items()}
    return low, {name: x.astype(np.float64) for name, x in low.items()}


def dense_attention_jnp(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
                        scale=None, additional_keys=None, additional_values=None, rpb=None):
    """`attention` again, in jnp so that autodiff can take its gradients (w.r.t. every array,
    rpb included); the mask and bias indices are the NumPy ones above. Returns (out, lse)."""
    import jax.numpy as jnp
    from jax import nn

    spatial = query.shape[1:-2]
    heads, heads_kv = query.shape[-2], key.shape[-2]
    if scale is None:
        scale = query.shape[-1] ** -0.5
    mask = dense_mask(spatial, kernel_size, stride, dilation, is_causal)
    hk = kv_head(heads, heads_kv)
    qt = query.reshape(query.shape[0], -1, *query.shape[-2:])
    kt = key.reshape(key.shape[0], -1, *key.shape[-2:])[:, :, hk]
    vt = value.reshape(value.shape[0], -1, *value.shape[-2:])[:, :, hk]
    scores = scale * jnp.einsum("bihd,bjhd->bhij", qt, kt)
    if rpb is not None:
        scores = scores + rpb[(slice(None), *dense_bias_index(spatial, kernel_size, dilation))][None]
    scores = jnp.where(mask[None, None], scores, -jnp.inf)
    if additional_keys is not None:
        extra = scale * jnp.einsum("bihd,bnhd->bhin", qt, additional_keys[:, :, hk])
        scores = jnp.concatenate([scores, extra], axis=-1)
        vt = jnp.concatenate([vt, additional_values[:, :, hk]], axis=1)
    lse = nn.logsumexp(scores, axis=-1)
    out = jnp.einsum("bhij,bjhd->bihd", jnp.exp(scores - lse[..., None]), vt)
    out = out.reshape(*query.shape[:-1], value.shape[-1])
    return out, jnp.moveaxis(lse, 1, -1).reshape(query.shape[:-1])


# --------------------------------------------------------------------------------------------
# Random problems (seeded; drawn at collection time by the sweeps, see tests/sweeps.py)
# --------------------------------------------------------------------------------------------

MAX_TOKENS = 200  # keeps the dense oracle and each compile fast
DTYPES = ("float16", "bfloat16", "float32", "float64")


def random_axis(rng, length):
    """(k, s, d, causal) for one axis of `length`: odd and even kernels, sometimes the whole
    axis, dilation often not dividing the length, stride from 1 to k."""
    k = int(rng.integers(2, min(length, 9) + 1)) if rng.random() < 0.85 else length
    d = 1 if rng.random() < 0.45 else int(rng.integers(1, length // k + 1))
    s = 1 if rng.random() < 0.35 else int(rng.integers(1, k + 1))
    return k, s, d, bool(rng.random() < 0.3)


def random_config(rng, max_tokens=MAX_TOKENS):
    """A random legal problem of at most `max_tokens` tokens: rank 1 to 3, GQA/MQA, head_dim_v !=
    head_dim, extra KV, rpb, scale None / explicit / 0.0 and every dtype, each some of the time."""
    rank = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    max_length = {1: max_tokens, 2: 16, 3: 7}[rank]
    while True:
        spatial = tuple(int(rng.integers(2, max_length + 1)) for _ in range(rank))
        if math.prod(spatial) <= max_tokens:
            break
    if rank == 1 and rng.random() < 0.7:  # mostly shorter 1-D axes, but keep some long ones
        spatial = (int(rng.integers(2, min(48, max_tokens + 1))),)
    axes = [random_axis(rng, length) for length in spatial]
    heads_kv = int(rng.integers(1, 4))
    heads = heads_kv * int(rng.choice([1, 1, 2, 3]))
    head_dim = int(rng.choice([1, 4, 5, 8, 16]))
    head_dim_v = head_dim if rng.random() < 0.6 else int(rng.choice([2, 3, 8, 12]))
    scale_kind = rng.choice(["default", "explicit", "zero"], p=[0.5, 0.35, 0.15])
    scale = {"default": None, "zero": 0.0, "explicit": float(rng.uniform(-1.0, 2.0))}[scale_kind]
    return Config(
        batch=int(rng.integers(1, 3)),
        spatial=spatial,
        heads=heads,
        heads_kv=heads_kv,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        kernel_size=tuple(a[0] for a in axes),
        stride=tuple(a[1] for a in axes),
        dilation=tuple(a[2] for a in axes),
        is_causal=tuple(a[3] for a in axes),
        n_extra=0 if rng.random() < 0.7 else int(rng.integers(1, 6)),
        rpb=bool(rng.random() < 0.3),
        scale=scale,
        scalar_args=bool(rng.random() < 0.3),
        dtype=str(rng.choice(DTYPES, p=[0.2, 0.2, 0.4, 0.2])),
    )


def sweep(count, seed, supports=None, max_tokens=MAX_TOKENS):
    """`count` random legal configurations (those `supports(config)` accepts), the same for the
    same seed (`sweeps.configs`)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        config = random_config(rng, max_tokens)
        if supports is None or supports(config):
            out.append(config)
    return out
