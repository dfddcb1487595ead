"""Data-parallel training step of a DiNAT on every local device: the same step three ways,
checked against each other and timed.

  single:    one device, the whole global batch (the reference for loss and gradients);
  jit:       sharded jit: parameters replicated, the batch split over a 1-D mesh axis "data";
  shard_map: each device computes its shard's loss, averaged with `lax.pmean` inside the
             differentiated function, and the gradients of that global loss.

Prints the largest relative difference of the loss and gradients from the single-device step,
and the step times, including one device on the per-device batch (the scaling baseline).
Dropout and drop path are off so that the three steps compute the same function.

    python examples/data_parallel.py                             # DiNAT-Mini, 224x224, 32 images per device
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python examples/data_parallel.py --tiny   # CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_natten import models

TINY = models.ModelConfig(family="nat", embed_dim=16, depths=(1, 1), num_heads=(2, 2), mlp_ratio=2.0,
                          drop_path_rate=0.0, kernel_size=3, dilations=((2,), (1,)), num_classes=10,
                          image_size=32)


def loss_and_grads(model, params, images, labels, mean=lambda loss: loss):
    """The batch-mean loss and its gradients; `mean` turns a shard's loss into the global one."""
    def loss_fn(params):
        logits = model.apply({"params": params}, images)
        return mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean())

    return jax.value_and_grad(loss_fn)(params)


def relative_difference(a, b):
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def time_ms(fn, *args, reps=5):
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
    return 1e3 * float(np.median(samples))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dinat_mini", choices=sorted(models.MODELS))
    parser.add_argument("--tiny", action="store_true", help="a two-level toy network at 32x32 (CPU tests)")
    parser.add_argument("--per-device-batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--backend", default=None, help="jax_natten backend (default: automatic)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="write the differences and times here")
    args = parser.parse_args(argv)

    config = TINY if args.tiny else models.MODELS[args.model]
    config = dataclasses.replace(config, dtype=jnp.dtype(args.dtype), backend=args.backend, drop_path_rate=0.0)
    model = models.network(config)
    devices = jax.devices()
    batch = args.per_device_batch * len(devices)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, config.image_size, config.image_size, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, config.num_classes, batch))
    params = model.init(jax.random.key(0), images[:1])["params"]
    optimizer = optax.adamw(1e-4, weight_decay=0.05)
    opt_state = optimizer.init(params)

    def update(params, opt_state, loss, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    @jax.jit
    def single_step(params, opt_state, images, labels):
        return update(params, opt_state, *loss_and_grads(model, params, images, labels))

    mesh = Mesh(np.array(devices), ("data",))
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    jit_step = jax.jit(single_step, in_shardings=(replicated, replicated, split, split),
                       out_shardings=replicated)

    # The loss is averaged over the shards inside the differentiated function: the parameters are
    # replicated (invariant over "data"), so their gradient comes back already summed over shards.
    def shard_loss_and_grads(params, images, labels):
        return loss_and_grads(model, params, images, labels, mean=lambda loss: jax.lax.pmean(loss, "data"))

    sharded_grads = jax.shard_map(shard_loss_and_grads, mesh=mesh, in_specs=(P(), P("data"), P("data")),
                                  out_specs=P())

    @jax.jit
    def shard_map_step(params, opt_state, images, labels):
        return update(params, opt_state, *sharded_grads(params, images, labels))

    want = single_step(params, opt_state, images, labels)
    placed = (jax.device_put(params, replicated), jax.device_put(opt_state, replicated),
              jax.device_put(images, split), jax.device_put(labels, split))
    result = {"devices": len(devices), "device": devices[0].device_kind, "model": "tiny" if args.tiny else args.model,
              "dtype": args.dtype, "per_device_batch": args.per_device_batch}
    for name, step in (("jit", jit_step), ("shard_map", shard_map_step)):
        got = step(*placed)
        result[f"{name}_loss_rel_diff"] = relative_difference(got[2], want[2])
        result[f"{name}_grads_rel_diff"] = relative_difference(got[3], want[3])
        result[f"{name}_params_rel_diff"] = relative_difference(got[0], want[0])
        result[f"{name}_ms"] = time_ms(step, *placed, reps=args.reps)
    per_device = args.per_device_batch
    result["single_per_device_batch_ms"] = time_ms(single_step, params, opt_state, images[:per_device],
                                                   labels[:per_device], reps=args.reps)
    result["single_global_batch_ms"] = time_ms(single_step, params, opt_state, images, labels, reps=args.reps)
    for name in ("jit", "shard_map"):
        result[f"{name}_over_single_per_device"] = result[f"{name}_ms"] / result["single_per_device_batch_ms"]
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
