"""A minimal program for compute-sanitizer: one call of each unfused CUDA operator (PN with RPB,
NN, IN) of one backend through jax, or with --attention one neighborhood_attention call (the fused
forward and backward kernels), on a small 2-D problem, checked against the reference backend.
Used by benchmarks/device.sh's `sanitize` stages to find out whether the sanitizer itself runs
under this jaxlib (the whole pytest suite under memcheck crashed the host process), before it is
pointed at the test sweeps.

    compute-sanitizer --tool memcheck python3 benchmarks/sanitizer_probe.py --backend gemm
    compute-sanitizer --tool racecheck python3 benchmarks/sanitizer_probe.py --backend fused --attention --grad
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jax_natten as jn


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="gemm")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--grad", action="store_true", help="also run the backward pass (IN)")
    parser.add_argument("--attention", action="store_true",
                        help="call neighborhood_attention (the fused kernels) instead of na2d_qk and na2d_av")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 11, 9, 2, 32)), args.dtype) for _ in range(3))
    rpb = jnp.asarray(rng.standard_normal((2, 5, 5)), args.dtype)

    def loss(q, k, v, backend):
        if args.attention:
            return jn.neighborhood_attention(q, k, v, kernel_size=3, dilation=(1, 2), backend=backend)
        logits = jn.na2d_qk(q, k, kernel_size=3, dilation=(1, 2), rpb=rpb.astype(q.dtype), backend=backend)
        attn = jax.nn.softmax(logits.astype(jnp.float32), -1).astype(q.dtype)
        return jn.na2d_av(attn, v, kernel_size=3, dilation=(1, 2), backend=backend)

    fn = jax.jit(lambda q, k, v: loss(q, k, v, args.backend))
    if args.grad:
        fn = jax.jit(jax.grad(lambda q, k, v: loss(q, k, v, args.backend).astype(jnp.float32).sum(), (0, 1, 2)))
    got = jax.block_until_ready(fn(q, k, v))
    ref_fn = (jax.grad(lambda q, k, v: loss(q, k, v, "reference").astype(jnp.float32).sum(), (0, 1, 2))
              if args.grad else (lambda q, k, v: loss(q, k, v, "reference")))
    with jax.default_device(jax.devices("cpu")[0]):
        want = ref_fn(*(jnp.asarray(np.asarray(x, np.float32)) for x in (q, k, v)))
    errors = [float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)) /
                    np.linalg.norm(np.asarray(b, np.float64)))
              for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want))]
    print(f"sanitizer_probe backend={args.backend} dtype={args.dtype} grad={args.grad} "
          f"attention={args.attention} rel_err={max(errors):.2e}")
    return 0 if max(errors) < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
