"""Random configurations for every backend's tests, and the check that holds a backend to the
float64 NumPy oracle (tests/oracle.py).

    configs(n, seed, supports=None, max_tokens=...)  n random legal `oracle.Config`s (rank 1-3, odd
        sizes, odd/even kernels, stride, dilation not dividing the length, per-axis causal,
        GQA/MQA, head_dim_v != head_dim, extra KV, rpb, scale None/explicit/0.0, every dtype),
        the same for the same seed; `supports(config) -> bool` keeps only what a backend runs
        (`runs_on(name)` asks the backend itself, through `jax_natten.explain`).
    check_backend(backend, config, seed, grads=False)  runs `neighborhood_attention(...,
        backend=backend)` on the config's inputs drawn from `seed` and asserts output and LSE
        (and, with `grads`, every input's gradient) within SPEC's tolerance of the oracle. A
        failure's first line is a shell command that reproduces it alone.
    check_sweep(backend, configs, first_seed)  `check_backend` over many, reporting every failure.

Plugging in a CPU-runnable backend `B` (registered in `jax_natten.backends.BACKENDS`):

    CONFIGS = sweeps.configs(200, seed=..., supports=sweeps.runs_on("B"))
    @pytest.mark.parametrize("index", range(len(CONFIGS)))
    def test_B_matches_oracle(index):
        sweeps.check_backend("B", CONFIGS[index], seed=index, grads=index < 20)

and add "B" to `CPU_BACKENDS` below: the long mode, the numerics at the extremes and the
determinism tests then cover it too. The long mode
(`JAX_NATTEN_LONG=1`, count `JAX_NATTEN_LONG_COUNT`, default 10,000 per backend) runs in
tests/test_reference_sweep.py.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import oracle

import jax_natten

LONG = os.environ.get("JAX_NATTEN_LONG") == "1"
LONG_COUNT = int(os.environ.get("JAX_NATTEN_LONG_COUNT", "10000"))
LONG_MAX_TOKENS = 64  # small problems: the long mode's time is the compiles, one per configuration
CPU_BACKENDS = ("reference", "blocked")  # CPU-runnable: the long sweep, tests/test_numerics.py, tests/test_determinism.py


configs = oracle.sweep


def _specs(config):
    """ShapeDtypeStructs of the config's arrays, as keyword arguments."""
    return {name: jax.ShapeDtypeStruct(x.shape, jnp.dtype(config.dtype))
            for name, x in config.inputs(seed=0).items()}


def runs_on(backend):
    """A `supports` predicate: whether `backend` can run a configuration's attention call (when
    named, for the backends that `backend=None` never takes)."""

    def supports(config):
        explanation = jax_natten.explain(**_specs(config), **config.nbhd_args(), scale=config.scale)
        return explanation.reasons[backend] in (None, f"runs only when named (backend={backend!r})")

    return supports


def reproduction(backend, config, seed, grads):
    """A one-line shell command, from the repository root, that reruns one check."""
    return (f"PYTHONPATH=.:tests python -c \"import oracle, sweeps; sweeps.check_backend("
            f"{backend!r}, oracle.{config!r}, seed={seed}, grads={grads})\"")


def check_backend(backend, config: oracle.Config, seed, grads=False):
    try:
        _check(backend, config, seed, grads)
    except Exception as error:
        raise AssertionError(f"{reproduction(backend, config, seed, grads)}\n"
                             f"{type(error).__name__}: {error}") from None


def check_sweep(backend, configs, first_seed):
    """`check_backend` on every configuration (seeds `first_seed`, `first_seed + 1`, ...); one
    AssertionError listing every failure."""
    failures = []
    for index, config in enumerate(configs):
        try:
            check_backend(backend, config, first_seed + index)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, f"{len(failures)} of {len(configs)} configurations failed:\n" + "\n".join(failures)


def assert_close(what, got, ref, tolerance):
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, oracle {ref.shape}"
    assert not np.isnan(got).any(), f"{what}: NaN"
    if not np.linalg.norm(ref):
        assert not np.abs(got).max(initial=0), f"{what}: nonzero where the oracle is exactly zero"
        return
    error = oracle.rel_err(got, ref)
    assert error < tolerance, f"{what}: relative error {error:.3e} >= {tolerance:g}"


def _check(backend, config, seed, grads):
    dtype = jnp.dtype(config.dtype)
    low, exact = oracle.cast(config.inputs(seed), dtype)
    names = list(low)
    nbhd = config.nbhd_args()
    tolerance = oracle.TOLERANCE[config.dtype]

    def attention(*arrays):
        return jax_natten.neighborhood_attention(**dict(zip(names, arrays)), **nbhd, scale=config.scale,
                                                 return_lse=True, backend=backend)

    args = [jnp.asarray(low[name]) for name in names]
    out, lse = jax.jit(attention)(*args)
    ref_out, ref_lse = oracle.attention(**exact, **nbhd, scale=config.scale)
    lse_dtype = jnp.float64 if dtype == jnp.float64 else jnp.float32
    assert out.dtype == dtype and lse.dtype == lse_dtype, f"dtypes: output {out.dtype}, LSE {lse.dtype}"
    assert_close("output", out, ref_out, tolerance)
    assert_close("LSE", lse, ref_lse, tolerance)
    if not grads:
        return

    rng = np.random.default_rng(seed + 1)
    d_out = rng.standard_normal(out.shape)
    d_lse = rng.standard_normal(lse.shape)

    def loss(f, cast):
        def scalar(*arrays):
            o, l = f(*arrays)
            return (jnp.sum(o.astype(jnp.float64) * cast(d_out)) + jnp.sum(l.astype(jnp.float64) * d_lse))
        return scalar

    argnums = tuple(range(len(args)))
    # The cotangent of the output in the output's dtype, as the backend sees it.
    got = jax.jit(jax.grad(loss(attention, lambda d: d.astype(dtype)), argnums))(*args)

    def dense(*arrays):
        return oracle.dense_attention_jnp(**dict(zip(names, arrays)), **nbhd, scale=config.scale)

    want = jax.jit(jax.grad(loss(dense, lambda d: d.astype(dtype).astype(np.float64)), argnums))(
        *(jnp.asarray(exact[name]) for name in names))
    for name, g, w in zip(names, got, want):
        assert g.dtype == dtype, f"d{name}: dtype {g.dtype}"
        assert_close(f"d{name}", g, np.asarray(w), tolerance)
