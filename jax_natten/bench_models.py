"""`python -m jax_natten models`: model-level throughput of the NAT / DiNAT / DiNAT_s zoo, per
attention backend, against the same network with dense attention (cuDNN for 16-bit inputs on
GPUs, XLA's choice otherwise) measured in the same run.

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

from jax_natten import bench
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


def run(config, name, backend_names, dtype, batch, image_size, passes_list, warmup=2, reps=5):
    """Times the model with each backend, and with dense attention (backend "dense"), per pass."""
    records = []
    variants = [(b, dataclasses.replace(config, backend=b, dtype=jnp.dtype(dtype))) for b in backend_names]
    variants.append(("dense", dataclasses.replace(config, attention="dense", dtype=jnp.dtype(dtype))))
    for backend, variant in variants:
        fns, args = _step_fns(variant, batch, image_size)
        for passes in passes_list:
            ms = bench._time_ms(fns[passes], [args], warmup, reps)
            records.append(ModelRecord(name, backend, dtype, passes, batch, ms))
    return records


def format_table(records, image_size):
    rows = [("model", "backend", "dtype", "pass", "ms/batch", "images/s", "vs dense")]
    dense = {(r.model, r.dtype, r.passes): r for r in records if r.backend == "dense"}
    for r in records:
        base = dense.get((r.model, r.dtype, r.passes))
        ratio = f"{base.ms / r.ms:.3f}" if base else "-"
        rows.append((r.model, r.backend, r.dtype, r.passes, f"{r.ms:.2f}", f"{r.images_per_s:.1f}", ratio))
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
    dense = {(r.model, r.dtype, r.passes): r for r in records if r.backend == "dense"}
    for r in records:
        if r.backend == "dense":
            continue
        base = dense.get((r.model, r.dtype, r.passes))
        out.append({**bench.record_header(command), "problem": r.model, "rank": 2, "devices": 1,
                    "backend": r.backend, "dtype": r.dtype, "pass": r.passes, "batch": r.batch, "ms": r.ms,
                    "images_per_s": r.images_per_s, "baseline": "dense-attention" if base else None,
                    "baseline_ms": base.ms if base else None,
                    "baseline_images_per_s": base.images_per_s if base else None})
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
                       args.warmup, args.reps)
    image_sizes = {image_size for *_, image_size in jobs}
    table = format_table(records, "/".join(str(s) for s in sorted(image_sizes)))
    print(table)
    if args.json:
        command = "python -m jax_natten " + " ".join(sys.argv[1:])
        existing = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps(existing + json_records(records, command), indent=1))
        with args.json.with_suffix(".md").open("a") as md:
            md.write(f"`{command}`\n\n{table}\n\n")
