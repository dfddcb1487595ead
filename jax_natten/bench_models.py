"""`python -m jax_natten models`: model-level throughput of the NAT / DiNAT / DiNAT_s zoo, per
attention backend, against the same network with dense attention measured in the same run (cuDNN
for 16-bit inputs on GPUs wherever it accepts a level's shapes, XLA otherwise; the record's
backend says which: "dense-cudnn", "dense-xla" or "dense-cudnn+xla").

Two passes per model, backend and dtype, on random images with float32 parameters:
- "fwd": inference, `model.apply` on a batch (images/s);
- "fwd+bwd": one training step: forward, backward and an AdamW update (ms per step, images/s).
Timing as in `python -m jax_natten bench` (medians of back-to-back calls after warm-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import bench, dense
from jax_natten.progress import progress

PASSES = ("fwd", "fwd+bwd")


@dataclasses.dataclass
class ModelRecord:
    model: str
    backend: str
    dtype: str
    passes: str
    batch: int
    ms: float
    attention_ms: float | None = None  # the attention cores of all layers, timed alone (--breakdown)

    @property
    def images_per_s(self):
        return 1e3 * self.batch / self.ms


def _step_fns(config, batch: int, image_size: int):
    """The jitted inference and training-step functions of `config` (a `ModelConfig`), and
    their arguments."""
    # Flax and optax are optional dependencies: imported only when a model is benchmarked.
    import optax

    from jax_natten import models

    model = models.network(config)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, image_size, image_size, config.in_channels)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, config.num_classes, batch))
    params = model.init(jax.random.key(0), images[:1])["params"]
    optimizer = optax.adamw(1e-4, weight_decay=0.05)
    opt_state = optimizer.init(params)

    def infer(params, images, labels, opt_state):
        return model.apply({"params": params}, images)

    def train_step(params, images, labels, opt_state):
        def loss_fn(params):
            logits = model.apply({"params": params}, images, deterministic=False,
                                 rngs={"dropout": jax.random.key(1)})
            return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    return {"fwd": jax.jit(infer), "fwd+bwd": jax.jit(train_step)}, (params, images, labels, opt_state)


def _attention_fn(config, dilation, passes):
    """The attention core of one layer (no projections) on its level's feature map, as the layer
    calls it: neighborhood attention with the bias table, or the dense baseline."""
    from jax_natten import functional

    def attend(q, k, v, rpb):
        if config.attention == "dense":
            flat = [x.reshape(x.shape[0], -1, *x.shape[-2:]) for x in (q, k, v)]
            return dense.attention(*flat).reshape(q.shape)
        return functional.neighborhood_attention(q, k, v, config.kernel_size, dilation=dilation, rpb=rpb,
                                                 backend=config.backend)

    if passes == "fwd":
        return jax.jit(attend)

    def step(q, k, v, rpb):
        out, vjp = jax.vjp(attend, q, k, v, rpb)
        return vjp(out)
    return jax.jit(step)


def attention_ms(config, batch: int, image_size: int, passes: str, warmup=2, reps=5):
    """Time of the attention cores of every layer of `config`, each timed alone on its level's
    shapes and summed (layers of one level and dilation share a timing): the attention share of a
    step is this over the step's time, the rest being projections, MLP, norms and convolutions."""
    rng = np.random.default_rng(0)
    total = 0.0
    for level, (height, width) in enumerate(config.feature_shapes((image_size, image_size))):
        heads = config.num_heads[level]
        head_dim = config.width(level) // heads
        dilations = [config.dilation(level, layer) for layer in range(config.depths[level])]
        shape = (batch, height, width, heads, head_dim)
        q, k, v = (jnp.asarray(rng.standard_normal(shape), config.dtype) for _ in range(3))
        window = 2 * config.kernel_size - 1
        rpb = jnp.asarray(rng.standard_normal((heads, window, window)), config.dtype) if config.rel_pos_bias else None
        for dilation in sorted(set(dilations)):
            fn = _attention_fn(config, dilation, passes)
            total += dilations.count(dilation) * bench._time_ms(fn, [(q, k, v, rpb)], warmup, reps)
    return total


def run(config, name, backend_names, dtype, batch, image_size, passes_list, warmup=2, reps=5, breakdown=False):
    """Times the model with each backend, and with dense attention (backend "dense-<implementation>"),
    per pass."""
    records = []
    variants = [(b, dataclasses.replace(config, backend=b, dtype=jnp.dtype(dtype))) for b in backend_names]
    variants.append(("dense", dataclasses.replace(config, attention="dense", dtype=jnp.dtype(dtype))))
    for backend, variant in variants:
        fns, args = _step_fns(variant, batch, image_size)
        for passes in passes_list:
            with dense.record() as used:
                jax.eval_shape(fns[passes], *args)
            label = dense.label(used) if backend == "dense" else backend
            ms = bench._time_ms(fns[passes], [args], warmup, reps)
            attn = attention_ms(variant, batch, image_size, passes, warmup, reps) if breakdown else None
            records.append(ModelRecord(name, label, dtype, passes, batch, ms, attn))
    return records


def is_dense(record: ModelRecord) -> bool:
    return record.backend.startswith("dense")


def format_table(records, image_size):
    rows = [("model", "backend", "dtype", "pass", "ms/batch", "images/s", "vs dense", "attention share")]
    baselines = {(r.model, r.dtype, r.passes): r for r in records if is_dense(r)}
    for r in records:
        base = baselines.get((r.model, r.dtype, r.passes))
        ratio = f"{base.ms / r.ms:.3f}" if base else "-"
        share = f"{r.attention_ms / r.ms:.0%} ({r.attention_ms:.2f} ms)" if r.attention_ms is not None else "-"
        rows.append((r.model, r.backend, r.dtype, r.passes, f"{r.ms:.2f}", f"{r.images_per_s:.1f}", ratio, share))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{image_size}x{image_size} images, batch {records[0].batch if records else '-'}, device "
             f"{jax.devices()[0].device_kind}; fwd = inference, fwd+bwd = training step with AdamW", ""]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def json_records(records, command):
    out = []
    baselines = {(r.model, r.dtype, r.passes): r for r in records if is_dense(r)}
    for r in records:
        if is_dense(r):
            continue
        base = baselines.get((r.model, r.dtype, r.passes))
        out.append({**bench.record_header(command), "problem": r.model, "rank": 2, "devices": 1,
                    "backend": r.backend, "dtype": r.dtype, "pass": r.passes, "batch": r.batch, "ms": r.ms,
                    "images_per_s": r.images_per_s, "baseline": base.backend if base else None,
                    "baseline_ms": base.ms if base else None,
                    "baseline_images_per_s": base.images_per_s if base else None,
                    "attention_ms": r.attention_ms,
                    "baseline_attention_ms": base.attention_ms if base else None})
    return out


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--models", default="nat_mini", help="comma-separated names of jax_natten.models.MODELS")
    parser.add_argument("--backends", default="reference", help="comma-separated jax_natten backends")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16, float16")
    parser.add_argument("--passes", default="fwd,fwd+bwd", help="fwd (inference), fwd+bwd (training step)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=None, help="default: each model's own resolution")
    parser.add_argument("--kernel-size", type=int, default=None, help="override the models' kernel size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--breakdown", action="store_true",
                        help="also time every layer's attention core alone: the attention share of each step")
    parser.add_argument("--json", type=pathlib.Path, help="append records to this JSON file (and a .md table)")


def main(args):
    passes_list = args.passes.split(",")
    for p in passes_list:
        if p not in PASSES:
            raise SystemExit(f"--passes: {p!r} is not one of {PASSES}")
    from jax_natten import models

    jobs = []
    for name in args.models.split(","):
        if name not in models.MODELS:
            raise SystemExit(f"--models: {name!r} is not one of {sorted(models.MODELS)}")
        config = models.MODELS[name]
        if args.kernel_size is not None:
            config = dataclasses.replace(config, kernel_size=args.kernel_size)
        jobs += [(name, config, dtype, args.image_size or config.image_size) for dtype in args.dtypes.split(",")]
    records = []
    for name, config, dtype, image_size in progress(jobs, desc="models"):
        records += run(config, name, args.backends.split(","), dtype, args.batch, image_size, passes_list,
                       args.warmup, args.reps, args.breakdown)
    image_sizes = {image_size for *_, image_size in jobs}
    table = format_table(records, "/".join(str(s) for s in sorted(image_sizes)))
    print(table)
    if args.json:
        command = "python -m jax_natten " + " ".join(sys.argv[1:])
        existing = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps(existing + json_records(records, command), indent=1))
        with args.json.with_suffix(".md").open("a") as md:
            md.write(f"`{command}`\n\n{table}\n\n")
