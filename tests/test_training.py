"""End-to-end training: examples/train_digits.py trains a small DiNAT on scikit-learn's digits
through the reference backend's gradients and must reach 95% test accuracy (about a minute on
a 2-core CPU)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


@pytest.mark.slow
def test_dinat_learns_digits(tmp_path):
    out = tmp_path / "curve.json"
    subprocess.run([sys.executable, str(SCRIPT), "--backend", "reference", "--json", str(out)], check=True,
                   capture_output=True, text=True)
    record = json.loads(out.read_text())
    curve = record["curve"]
    assert record["backend"] == "reference" and len(curve) == 12
    assert curve[-1]["train_loss"] < 0.2 * curve[0]["train_loss"]
    assert record["final_test_accuracy"] >= 0.95, curve


def _example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_checkpoint_restores_and_resumes(tmp_path):
    """Orbax checkpoints of the digits example: the restored parameters and optimizer state are
    the trained ones, bit for bit, and predict the same; a run interrupted after epoch 1 and
    resumed from its checkpoint ends where the uninterrupted run does."""
    import jax
    import numpy as np

    example = _example()
    options = dict(backend="reference", epochs=2, batch_size=256, log=lambda line: None)
    curve, state = example.train(checkpoint_dir=tmp_path / "full", **options)
    assert [r["epoch"] for r in curve] == [1, 2]

    manager = example.checkpoint_manager(tmp_path / "full")
    assert manager.all_steps() == [1, 2]
    fresh = jax.tree.map(np.zeros_like, state)
    epoch, restored = example.restore(manager, fresh)
    assert epoch == 2
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    model = example.models.network(example.model_config("reference"))
    _, test_x, _, _ = example.digits(0)
    predict = jax.jit(lambda params: model.apply({"params": params}, test_x))
    np.testing.assert_array_equal(predict(restored["params"]), predict(state["params"]))

    # Interrupted after epoch 1: only its checkpoint is there; the rerun trains epoch 2 only.
    (tmp_path / "full" / "2").rename(tmp_path / "epoch2")
    resumed_curve, resumed = example.train(checkpoint_dir=tmp_path / "full", **options)
    assert [r["epoch"] for r in resumed_curve] == [2]
    assert resumed_curve[0]["train_loss"] == curve[1]["train_loss"]
    for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(state)):
        np.testing.assert_array_equal(got, want)
