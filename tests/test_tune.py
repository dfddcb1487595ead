"""The tuner's cache (tune_cache), its use by the fused backend, and `python -m jax_natten tune`."""

from __future__ import annotations

import json
import multiprocessing
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import require_emulation
from jax_natten import backends, checks, fused_plan, tune_cache
from jax_natten.__main__ import main as cli

SPATIAL = (12, 12)
NBHD = checks.neighborhood(SPATIAL, 5)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_NATTEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("JAX_NATTEN_TUNE_CACHE", raising=False)
    return tmp_path


def _key(platform="cpu"):
    return fused_plan.tune_key(SPATIAL, NBHD, 64, dtype="float32", platform=platform)


def _other_choice(platform="cpu"):
    """A candidate that is not the planner's choice."""
    ranked = fused_plan.candidates(SPATIAL, NBHD, 64, dtype="float32", platform=platform)
    planned = ranked[0]
    return next(p for p in ranked if (p.q_tile, p.kv_tile) != (planned.q_tile, planned.kv_tile))


def test_cache_round_trip_and_plan_source(cache_dir):
    other = _other_choice()
    assert fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", platform="cpu").source == "planned"
    path = tune_cache.store({_key(): tune_cache.entry(other.q_tile, other.kv_tile, 1.0, "fwd", "t", 1, 2, 5)})
    assert path == cache_dir / "tune.json"
    assert tune_cache.lookup(_key())["q_tile"] == list(other.q_tile)
    tuned = fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", platform="cpu")
    assert (tuned.q_tile, tuned.kv_tile) == (other.q_tile, other.kv_tile)
    assert tuned.source.startswith("tuned on ")
    # Another signature (GQA group, dtype) is not the entry's.
    assert fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", group=2, platform="cpu").source == "planned"


def test_disable_switch(cache_dir, monkeypatch):
    other = _other_choice()
    tune_cache.store({_key(): tune_cache.entry(other.q_tile, other.kv_tile, 1.0, "fwd", "t", 1, 2, 5)})
    monkeypatch.setenv("JAX_NATTEN_TUNE_CACHE", "off")
    assert tune_cache.lookup(_key()) is None
    assert fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", platform="cpu").source == "planned"


def _write_keys(directory, worker, count):
    import os
    os.environ["JAX_NATTEN_CACHE_DIR"] = directory
    for i in range(count):
        tune_cache.store({f"worker{worker}-key{i}": {"q_tile": [worker], "kv_tile": [i]}})
        # Every read between writes sees a whole file.
        assert isinstance(json.loads((tune_cache.cache_path()).read_text())["entries"], dict)


def test_concurrent_writers_keep_every_key(cache_dir):
    workers, count = 6, 15
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_keys, args=(str(cache_dir), w, count)) for w in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0] * workers
    found = tune_cache.entries()
    assert set(found) == {f"worker{w}-key{i}" for w in range(workers) for i in range(count)}
    assert not [p for p in cache_dir.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize("text", ["{not json", json.dumps([1, 2]), json.dumps({"format": 99, "entries": {}})],
                         ids=["corrupted", "not-a-cache", "foreign-format"])
def test_unreadable_file_is_ignored_with_a_warning(cache_dir, text):
    (cache_dir / "tune.json").write_text(text)
    with pytest.warns(UserWarning, match="ignoring the tuning cache"):
        assert fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", platform="cpu").source == "planned"
    # The next write replaces it with a readable one.
    with pytest.warns(UserWarning, match="ignoring the tuning cache"):
        tune_cache.store({"k": {"q_tile": [1], "kv_tile": [1]}})
    assert set(tune_cache.entries()) == {"k"}


def test_other_library_version_is_not_used(cache_dir, monkeypatch):
    other = _other_choice()
    monkeypatch.setattr(tune_cache, "library_version", lambda: "0.0.0-other")
    tune_cache.store({_key(): tune_cache.entry(other.q_tile, other.kv_tile, 1.0, "fwd", "t", 1, 2, 5)})
    monkeypatch.undo()
    monkeypatch.setenv("JAX_NATTEN_CACHE_DIR", str(cache_dir))
    assert '"version":"0.0.0-other"' in next(iter(tune_cache.entries()))
    assert fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", platform="cpu").source == "planned"


def test_invalid_entry_falls_back_with_a_warning(cache_dir):
    tune_cache.store({_key(): {"q_tile": [3, 3], "kv_tile": [8, 8], "date": "2026-01-01"}})
    with pytest.warns(UserWarning, match="ignoring the tuning cache's entry"):
        assert fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", platform="cpu").source == "planned"


def _call_tiles(text, target):
    """The (q_tile, kv_tile) attributes of the custom call to `target` in lowered StableHLO."""
    (config,) = re.findall(rf"custom_call @{target}\(.*?mhlo.backend_config = \{{(.*?)\}}", text)
    # MLIR prints a box of equal extents as a splat: `dense<8>`.
    found = [re.search(rf"\b{name} = dense<\[?([0-9, ]+)\]?>", config)[1].split(",") for name in ("q_tile", "kv_tile")]
    return tuple(tuple(int(e) for e in (box if len(box) == 2 else box * 2)) for box in found)


def test_fused_backward_takes_the_forward_tiles(cache_dir):
    """GQA in bfloat16 (the fused backward's case): the backward's tiles are the forward's, planned,
    tuned for the problem (the cache key has the group), and fixed by the tuner."""
    require_emulation()
    q = jnp.zeros((1, *SPATIAL, 4, 64), jnp.bfloat16)
    kv = jnp.zeros((1, *SPATIAL, 2, 64), jnp.bfloat16)
    backend = backends.by_name("fused-emulated")

    def lowered(backend):
        grad = jax.grad(lambda *xs: jnp.sum(backend.attention(*xs, NBHD, 0.125)[0].astype(jnp.float32)),
                        argnums=(0, 1, 2))
        text = jax.jit(grad).lower(q, kv, kv).as_text()
        return _call_tiles(text, "jax_natten_na_fused_forward"), _call_tiles(text, "jax_natten_na_fused_backward")

    ranked = fused_plan.candidates(SPATIAL, NBHD, 64, dtype="bfloat16", platform="cpu")
    planned, other = ranked[0], ranked[1]
    assert (planned.q_tile, planned.kv_tile) != (other.q_tile, other.kv_tile)
    assert lowered(backend) == ((planned.q_tile, planned.kv_tile),) * 2
    key = fused_plan.tune_key(SPATIAL, NBHD, 64, dtype="bfloat16", group=2, platform="cpu")
    tune_cache.store({key: tune_cache.entry(other.q_tile, other.kv_tile, 1.0, "fwd", "t", 1, 2, 5)})
    assert lowered(backend) == ((other.q_tile, other.kv_tile),) * 2
    fixed = ranked[2]
    assert lowered(backend.with_tiles(fixed.q_tile, fixed.kv_tile)) == ((fixed.q_tile, fixed.kv_tile),) * 2


def test_backend_passes_cached_tiles_to_the_kernel(cache_dir):
    require_emulation()
    other = _other_choice()
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((1, *SPATIAL, 2, 64)), jnp.float32) for _ in range(3))
    backend = backends.by_name("fused-emulated")

    def lowered_tiles():
        text = jax.jit(lambda *xs: backend.attention(*xs, NBHD, 0.125)[0]).lower(q, k, v).as_text()
        return _call_tiles(text, "jax_natten_na_fused_forward")

    planned = fused_plan.plan(SPATIAL, NBHD, 64, dtype="float32", platform="cpu")
    planned_text = lowered_tiles()
    planned_out = backend.attention(q, k, v, NBHD, 0.125)[0]
    tune_cache.store({_key(): tune_cache.entry(other.q_tile, other.kv_tile, 1.0, "fwd", "t", 1, 2, 5)})
    tuned_text = lowered_tiles()
    assert planned_text == (planned.q_tile, planned.kv_tile)
    assert tuned_text == (other.q_tile, other.kv_tile)
    assert "tuned on" in backend.describe(backends.make_request("attention", "float32", SPATIAL, 2, 2, 64, 64, NBHD))
    tuned_out = backend.attention(q, k, v, NBHD, 0.125)[0]
    reference = backends.by_name("reference").attention(q, k, v, NBHD, 0.125)[0]
    assert (planned.q_tile, planned.kv_tile) != (other.q_tile, other.kv_tile)
    np.testing.assert_allclose(tuned_out, reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tuned_out, planned_out, rtol=1e-5, atol=1e-6)


def test_tune_cli_end_to_end(cache_dir, capsys):
    require_emulation()
    cli(["tune", "--backend", "fused-emulated", "--size", "12,12", "--kernel-size", "5", "--batch", "1", "--heads",
         "2", "--head-dim", "64", "--dtype", "float32", "--top", "3", "--reps", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    assert "fastest" in out and "stored Q tile" in out
    entry = tune_cache.lookup(_key())
    assert entry["candidates"] == 3 and entry["backend"] == "fused-emulated"
    cli(["plan", "--backend", "fused-emulated", "--size", "12,12", "--kernel-size", "5", "--batch", "1", "--heads",
         "2", "--head-dim", "64", "--dtype", "float32"])
    assert "tiles tuned on " + entry["date"] in capsys.readouterr().out


def test_tune_refuses_a_backend_that_is_not_fused():
    with pytest.raises(SystemExit, match="fused backend"):
        cli(["tune", "--backend", "gemm", "--size", "12,12"])
