"""Peak device memory of one standard problem's forward+backward (bfloat16) with one backend,
against the bytes of Q, K, V, O, dO, dQ, dK, dV and LSE (issue 16's 1.5x target). Run it in a
fresh process per backend, since the peak is the process's:
    python benchmarks/peak_memory.py 3d-video fused
Prints one JSON line."""
import json, sys, jax, jax.numpy as jnp
from jax_natten import bench
p = bench.STANDARD_PROBLEMS[sys.argv[1]]
backend = sys.argv[2]
q, k, v, do = (jnp.asarray(x, jnp.bfloat16) for x in bench._inputs(p, 0))
fn = bench._passes_fn(bench._neighborhood_fn(p, backend), "fwd+bwd")
compiled = fn.lower(q, k, v, do).compile()
analysis = compiled.memory_analysis()
jax.block_until_ready(compiled(q, k, v, do))
peak = jax.devices()[0].memory_stats()["peak_bytes_in_use"]
tokens_heads = q.size // q.shape[-1]
needed = 4 * q.nbytes + 4 * k.nbytes + tokens_heads * 4
print(json.dumps(dict(problem=p.name, backend=backend, peak_bytes=peak, needed_bytes=needed, ratio=peak / needed,
                      temp_bytes=analysis.temp_size_in_bytes, output_bytes=analysis.output_size_in_bytes,
                      argument_bytes=analysis.argument_size_in_bytes)))
