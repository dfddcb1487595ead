"""Model-level benchmark (`python -m jax_natten models`): records for each backend and for the
dense baseline, on a tiny network so that it runs in seconds on a CPU."""

from __future__ import annotations

import pytest

from jax_natten import __main__ as cli
from jax_natten import bench_models, models

TINY = models.ModelConfig(family="nat", embed_dim=16, depths=(1, 1), num_heads=(2, 2), mlp_ratio=2.0,
                          drop_path_rate=0.0, kernel_size=3, num_classes=4)


@pytest.mark.slow
def test_records_and_table():
    records = bench_models.run(TINY, "tiny", ["reference"], "float32", batch=2, image_size=32,
                               passes_list=["fwd", "fwd+bwd"], warmup=1, reps=1)
    assert [(r.backend, r.passes) for r in records] == [
        ("reference", "fwd"), ("reference", "fwd+bwd"), ("dense-xla", "fwd"), ("dense-xla", "fwd+bwd")]
    assert all(r.ms > 0 and r.images_per_s == pytest.approx(2e3 / r.ms) for r in records)
    table = bench_models.format_table(records, 32)
    assert "| tiny  | reference | float32 | fwd+bwd |" in table
    out = bench_models.json_records(records, "test")
    assert [(r["backend"], r["pass"]) for r in out] == [("reference", "fwd"), ("reference", "fwd+bwd")]
    assert all(r["baseline"] == "dense-xla" and r["baseline_images_per_s"] > 0 for r in out)
    assert {"device", "date", "commit", "command", "problem", "images_per_s"} <= set(out[0])


def test_dense_attention_variant_runs_any_size():
    import dataclasses

    import jax
    import jax.numpy as jnp

    dense = models.network(dataclasses.replace(TINY, attention="dense"))
    images = jnp.zeros((1, 8, 8, 3), jnp.float32)  # too small for the neighborhood layers' check
    assert dense.apply(dense.init(jax.random.key(0), images), images).shape == (1, 4)


@pytest.mark.parametrize("argv, message", [
    (["--passes", "bwd"], "--passes"),
    (["--models", "resnet50"], "--models"),
])
def test_cli_errors(argv, message, capsys):
    with pytest.raises(SystemExit, match=message):
        cli.main(["models", *argv])


@pytest.mark.slow
def test_breakdown_attention_share():
    records = bench_models.run(TINY, "tiny", ["reference"], "float32", batch=2, image_size=32,
                               passes_list=["fwd", "fwd+bwd"], warmup=1, reps=1, breakdown=True)
    assert all(0 < r.attention_ms for r in records)
    # The attention cores alone take less than whole steps with projections, MLPs and convolutions.
    assert all(r.attention_ms < r.ms for r in records if r.passes == "fwd+bwd")
    table = bench_models.format_table(records, 32)
    assert "attention share" in table and "%" in table
    out = bench_models.json_records(records, "test")
    assert all(r["attention_ms"] > 0 and r["baseline_attention_ms"] > 0 for r in out)
