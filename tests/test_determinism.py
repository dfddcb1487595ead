"""Determinism of every CPU-runnable backend (`sweeps.CPU_BACKENDS`): the same inputs give
bitwise-identical outputs, LSEs and gradients across runs (fresh compiles) and across processes.

`python tests/test_determinism.py` prints the digests of this file's problems; the
cross-process test runs it in a subprocess and compares with its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import oracle
import sweeps

import jax_natten

C = oracle.Config
CONFIGS = [
    C(2, (11,), 4, 2, 3, 5, (4,), stride=(2,), dilation=(2,), is_causal=(True,), n_extra=2, rpb=True),
    C(1, (5, 7), 3, 1, 4, 2, (3, 2), stride=(1, 2), dilation=(1, 3), is_causal=(False, True), rpb=True,
      dtype="bfloat16"),
    C(1, (4, 3, 4), 2, 2, 2, 3, (3, 2, 2), dilation=(1, 1, 2), n_extra=1, scale=0.3, dtype="float16"),
]


def digest(backend, config, seed):
    """sha256 of the output, LSE and every input's gradient of one freshly compiled call."""
    low, _ = oracle.cast(config.inputs(seed), jnp.dtype(config.dtype))
    names = list(low)

    def loss(*arrays):
        out, lse = jax_natten.neighborhood_attention(**dict(zip(names, arrays)), **config.nbhd_args(),
                                                     scale=config.scale, return_lse=True, backend=backend)
        return jnp.sum(out.astype(jnp.float32) ** 2) + jnp.sum(jnp.sin(lse)), (out, lse)

    jax.clear_caches()
    args = [jnp.asarray(low[n]) for n in names]
    grads, (out, lse) = jax.jit(jax.grad(loss, tuple(range(len(args))), has_aux=True))(*args)
    h = hashlib.sha256()
    for x in (out, lse, *grads):
        h.update(np.asarray(x).tobytes())
    return h.hexdigest()


def all_digests():
    return {f"{backend}/{index}": digest(backend, config, seed=index)
            for backend in sweeps.CPU_BACKENDS for index, config in enumerate(CONFIGS)}


@pytest.mark.slow
def test_bitwise_identical_across_runs_and_processes():
    first = all_digests()
    assert all_digests() == first, "a second run in the same process differs"
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), here, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=600, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == first, "another process computes different bits"


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)  # as tests/conftest.py does
    jax.config.update("jax_num_cpu_devices", 8)
    print(json.dumps(all_digests()))
