"""Train a small DiNAT on scikit-learn's bundled handwritten digits (1797 images of 8x8, ten
classes) and report the learning curve: an end-to-end check that the neighborhood attention
gradients train a real model.

    python examples/train_digits.py                          # automatic backend choice
    python examples/train_digits.py --backend reference --json curve.json --plot curve.png
    python examples/train_digits.py --checkpoint-dir /tmp/digits   # saves each epoch; resumes

With `--checkpoint-dir`, the parameters, the optimizer state and the epoch are saved with Orbax
after every epoch (the last two kept); a run that finds a checkpoint there resumes after its
epoch. Batch order and dropout keys derive from (seed, epoch, step), so an interrupted and
resumed run ends with the same parameters as an uninterrupted one.

The 8x8 images are upsampled to 32x32, so that the convolutional tokenizer (4x downsampling)
leaves an 8x8 feature map for the first level (kernel 3, dilations 1 and 2) and 4x4 for the
second. A fixed, stratified split keeps 360 images for testing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jax_natten as jn
from jax_natten import models
from jax_natten.progress import progress

IMAGE_SIZE = 32


def model_config(backend):
    return models.ModelConfig(family="nat", embed_dim=32, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0,
                              drop_path_rate=0.1, kernel_size=3, dilations=((1, 2), (1, 1)),
                              image_size=IMAGE_SIZE, num_classes=10, in_channels=1, backend=backend)


def digits(seed):
    """Train and test images `[n, 32, 32, 1]` in [0, 1] and their labels."""
    data = load_digits()
    images = data.images.astype(np.float32)[..., None] / 16.0
    images = np.asarray(jax.image.resize(images, (len(images), IMAGE_SIZE, IMAGE_SIZE, 1), "bilinear"))
    return train_test_split(images, data.target, test_size=360, stratify=data.target, random_state=seed)


def checkpoint_manager(directory):
    """Orbax manager of the checkpoints in `directory` (one per epoch, the last two kept)."""
    return ocp.CheckpointManager(os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=2))


def restore(manager, like):
    """The latest checkpoint of `manager` as `(epoch, {"params", "opt_state"})`, in the
    structure, shapes and dtypes of `like`; `(0, like)` when there is none."""
    epoch = manager.latest_step()
    if epoch is None:
        return 0, like
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return epoch, manager.restore(epoch, args=ocp.args.StandardRestore(abstract))


def train(backend=None, epochs=12, batch_size=64, learning_rate=3e-3, seed=0, checkpoint_dir=None, log=print):
    """Train; returns the learning curve (one record per epoch run here) and the final
    `{"params", "opt_state"}`. With `checkpoint_dir`, resumes from its latest checkpoint and
    saves one after every epoch."""
    train_x, test_x, train_y, test_y = digits(seed)
    model = models.network(model_config(backend))
    params = model.init(jax.random.key(seed), jnp.asarray(train_x[:1]))["params"]
    steps_per_epoch = len(train_x) // batch_size
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
    optimizer = optax.adamw(schedule, weight_decay=0.05)
    state = {"params": params, "opt_state": optimizer.init(params)}
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir else None
    done = 0
    if manager:
        done, state = restore(manager, state)
        if done:
            log(f"resumed from {checkpoint_dir} after epoch {done}")

    @jax.jit
    def step(params, opt_state, images, labels, key):
        def loss_fn(params):
            logits = model.apply({"params": params}, images, deterministic=False, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def predict(params, images):
        return model.apply({"params": params}, images).argmax(-1)

    key = jax.random.key(seed + 1)
    curve = []
    start = time.perf_counter()
    params, opt_state = state["params"], state["opt_state"]
    for epoch in range(done + 1, epochs + 1):
        order = np.random.default_rng((seed, epoch)).permutation(len(train_x))
        losses = []
        for i in progress(range(steps_per_epoch), desc=f"epoch {epoch}", leave=False):
            batch = order[i * batch_size:(i + 1) * batch_size]
            step_key = jax.random.fold_in(key, (epoch - 1) * steps_per_epoch + i)
            params, opt_state, loss = step(params, opt_state, train_x[batch], train_y[batch], step_key)
            losses.append(float(loss))
        if manager:
            manager.save(epoch, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
        accuracy = float((np.asarray(predict(params, test_x)) == test_y).mean())
        curve.append(dict(epoch=epoch, train_loss=float(np.mean(losses)), test_accuracy=accuracy,
                          seconds=round(time.perf_counter() - start, 2)))
        log(f"epoch {epoch:2d}  train loss {curve[-1]['train_loss']:.4f}  test accuracy {accuracy:.4f}  "
            f"({curve[-1]['seconds']:.1f} s)")
    if manager:
        manager.wait_until_finished()
        manager.close()
    return curve, {"params": params, "opt_state": opt_state}


def plot(curve, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in curve]
    fig, loss_axis = plt.subplots(figsize=(6, 3.5))
    loss_axis.plot(epochs, [r["train_loss"] for r in curve], "o-", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    accuracy_axis = loss_axis.twinx()
    accuracy_axis.plot(epochs, [r["test_accuracy"] for r in curve], "s-", color="tab:red")
    accuracy_axis.set_ylabel("test accuracy", color="tab:red")
    loss_axis.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default=None, help="jax_natten backend (default: automatic choice)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the learning curve and the setup here")
    parser.add_argument("--plot", help="write a PNG of the learning curve here (needs matplotlib)")
    parser.add_argument("--checkpoint-dir", help="save an Orbax checkpoint here after every epoch; resume from it")
    args = parser.parse_args(argv)

    probe = jnp.zeros((1, 8, 8, 2, 16), jnp.float32)
    backend = args.backend or jn.explain(probe, probe, probe, kernel_size=3).chosen
    print(f"device: {jax.devices()[0].device_kind}, attention backend: {backend}")
    curve, _ = train(args.backend, args.epochs, args.batch_size, args.learning_rate, args.seed, args.checkpoint_dir)
    command = " ".join(["python examples/train_digits.py", *(sys.argv[1:] if argv is None else argv)])
    record = dict(date=datetime.date.today().isoformat(), command=command,
                  device=jax.devices()[0].device_kind, backend=backend, dataset="sklearn digits (1437 train / 360 test)",
                  model=str(model_config(args.backend)), epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, seed=args.seed, curve=curve,
                  final_test_accuracy=curve[-1]["test_accuracy"] if curve else None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)
    if args.plot:
        plot(curve, args.plot, f"DiNAT on digits, {backend} backend, {record['device']}")
    return record


if __name__ == "__main__":
    main()
