"""Build a DiNAT, show which neighborhood attention backend each level runs on, run inference
and a few training steps.

    python examples/dinat_demo.py                                   # DiNAT-Mini, 224x224
    python examples/dinat_demo.py --model dinat_s_tiny --dtype bfloat16 --batch 16
    python examples/dinat_demo.py --model nat_mini --image-size 96 --kernel-size 3   # quick, on a CPU
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import jax_natten as jn
from jax_natten import models


def backend_choices(config, image_shape, batch):
    """For each level and dilation: the backend `backend=None` picks for its attention calls."""
    lines = []
    dtype = config.dtype or jnp.float32
    for level, (height, width) in enumerate(config.feature_shapes(image_shape)):
        heads = config.num_heads[level]
        head_dim = config.width(level) // heads
        q = jax.ShapeDtypeStruct((batch, height, width, heads, head_dim), dtype)
        rpb = jax.ShapeDtypeStruct((heads, 2 * config.kernel_size - 1, 2 * config.kernel_size - 1), dtype)
        for dilation in sorted({config.dilation(level, layer) for layer in range(config.depths[level])}):
            explanation = jn.explain(q, q, q, config.kernel_size, dilation=dilation, rpb=rpb)
            lines.append(f"level {level}: {height}x{width} tokens, {heads} heads x {head_dim}, kernel "
                         f"{config.kernel_size}, dilation {dilation} -> {explanation.chosen}")
            lines.extend("    " + line for line in str(explanation).splitlines()[1:])
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dinat_mini", choices=sorted(models.MODELS))
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's own resolution")
    parser.add_argument("--kernel-size", type=int, default=None, help="override the model's kernel size")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--backend", default=None, help="force a jax_natten backend (default: automatic)")
    args = parser.parse_args(argv)

    overrides = dict(dtype=jnp.dtype(args.dtype), backend=args.backend, num_classes=10)
    if args.kernel_size is not None:
        overrides["kernel_size"] = args.kernel_size
    model = models.create(args.model, **overrides)
    config = model.config
    size = args.image_size or config.image_size
    print(f"{args.model} at {size}x{size}, batch {args.batch}, {args.dtype}, device {jax.devices()[0].device_kind}")
    for line in backend_choices(config, (size, size), args.batch):
        print(line)

    key_init, key_data, key_labels, key_dropout = jax.random.split(jax.random.key(0), 4)
    images = jax.random.normal(key_data, (args.batch, size, size, 3), jnp.float32)
    labels = jax.random.randint(key_labels, (args.batch,), 0, 10)
    params = model.init(key_init, images)["params"]
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    print(f"parameters: {count / 1e6:.2f} M")

    predict = jax.jit(lambda params, images: model.apply({"params": params}, images))
    start = time.perf_counter()
    logits = predict(params, images).block_until_ready()
    print(f"inference: logits {logits.shape} {logits.dtype} in {time.perf_counter() - start:.2f} s (with compilation)")

    optimizer = optax.adamw(1e-4, weight_decay=0.05)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        def loss_fn(params):
            out = model.apply({"params": params}, images, deterministic=False, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        key_dropout, key = jax.random.split(key_dropout)
        params, opt_state, loss = train_step(params, opt_state, key)
        print(f"train step {step}: loss {float(loss):.4f} ({time.perf_counter() - start:.2f} s)")


if __name__ == "__main__":
    main()
