"""The fused forward's dry-run planner (`jax_natten.fused_plan`, `python -m jax_natten plan`)."""

from __future__ import annotations

import json
import math

import pytest

from jax_natten import __main__ as cli
from jax_natten import fused_plan
from jax_natten.neighborhood import Neighborhood, token_slot_tables

CASES = [
    ((37,), Neighborhood((7,), (1,), (1,), (False,))),
    ((29,), Neighborhood((6,), (3,), (2,), (True,))),
    ((13, 17), Neighborhood((3, 4), (1, 2), (2, 3), (False, True))),
    ((9, 10, 11), Neighborhood((3, 2, 5), (1, 2, 1), (2, 1, 1), (True, False, False))),
]


@pytest.mark.parametrize("spatial, nbhd", CASES)
def test_pairs_counted_exactly(spatial, nbhd):
    p = fused_plan.plan(spatial, nbhd, 64)
    _, valid, _ = token_slot_tables(spatial, nbhd)
    attended = int(valid.sum())
    # Computed pairs, CTA by CTA from the per-axis tilings (every (group, tile) combination).
    axes = [fused_plan.axis_tiling(length, *params, tq, tk)
            for length, params, tq, tk in zip(spatial, nbhd.axes(), p.q_tile, p.kv_tile)]
    assert math.isclose(p.tile_efficiency, attended / math.prod(a.computed for a in axes))
    assert 0 < p.tile_efficiency <= 1
    assert math.prod(p.q_tile) == 64 and math.prod(p.kv_tile) == 64
    assert 1 <= p.kv_tiles_mean <= p.kv_tiles_max
    assert 0 <= p.fast_path_fraction <= 1


def test_best_tiles_beat_the_others():
    spatial, nbhd = (40, 40), Neighborhood((5, 5), (1, 1), (1, 1), (False, False))
    best = fused_plan.plan(spatial, nbhd, 32)
    for q_tile in ((64, 1), (1, 64), (16, 4)):
        assert fused_plan.plan(spatial, nbhd, 32, q_tile=q_tile).tile_efficiency <= best.tile_efficiency


def test_one_axis_window_covers_the_kv_box():
    # 1-D, stride 1, k = 65: a Q tile of 64 sees 64 + 65 - 1 = 128 keys (clamped windows too), and the KV
    # box starts at its first key, so exactly 2 KV tiles of 64: efficiency 65 / 128.
    p = fused_plan.plan((4096,), Neighborhood((65,), (1,), (1,), (False,)), 64)
    assert p.kv_tiles_max == 2 and p.kv_tiles_mean == 2
    assert math.isclose(p.tile_efficiency, 65 / 128)


def test_rejects_bad_tiles():
    nbhd = Neighborhood((3,), (1,), (1,), (False,))
    with pytest.raises(ValueError, match="q_tile"):
        fused_plan.plan((10,), nbhd, 32, q_tile=(32,))
    with pytest.raises(ValueError, match="head_dim"):
        fused_plan.plan((10,), nbhd, 512)


def test_plan_command_every_standard_problem(tmp_path, capsys):
    out = tmp_path / "plan.json"
    cli.main(["plan", "--json", str(out)])
    printed = capsys.readouterr().out
    plans = json.loads(out.read_text())
    assert set(plans) >= {"1d-long", "2d-large", "3d-video", "2d-nat", "2d-dinat"}
    for name, p in plans.items():
        assert name in printed and 0 < p["tile_efficiency"] <= 1
    cli.main(["plan", "--problem", "2d-nat", "--head-dim", "64"])
    assert "2d-nat-custom" in capsys.readouterr().out


def test_plan_command_all_problems_in_another_dtype(tmp_path, capsys):
    # 1d-long has head dim 128: float32 K/V rows of 512 bytes get KV tiles of 32 keys, bfloat16 64.
    out = tmp_path / "plan.json"
    cli.main(["plan", "--all", "--dtype", "float32", "--json", str(out)])
    assert math.prod(json.loads(out.read_text())["1d-long"]["kv_tile"]) == 32
    cli.main(["plan", "--all", "--json", str(out)])
    assert math.prod(json.loads(out.read_text())["1d-long"]["kv_tile"]) == 64
    with pytest.raises(SystemExit, match="--all takes no problem options"):
        cli.main(["plan", "--all", "--head-dim", "64"])


@pytest.mark.parametrize("head_dim, kv_rows", [(32, 64), (64, 64), (128, 32), (256, 16)])
def test_float32_tiles_and_shared_memory(head_dim, kv_rows):
    # kernel.h: KV tiles of 64 keys up to 256-byte K/V rows, fewer for wider ones (float32 rows are
    # twice the bytes), so that a CTA's Q tile and two K/V stages stay within 128 KiB.
    nbhd = Neighborhood((7,), (1,), (1,), (False,))
    p = fused_plan.plan((300,), nbhd, head_dim, dtype="float32")
    assert math.prod(p.kv_tile) == kv_rows
    assert p.smem_bytes == (64 + 4 * kv_rows) * head_dim * 4 + fused_plan.KEY_TABLE_BYTES * kv_rows
    assert p.smem_bytes <= 128 * 1024 + fused_plan.KEY_TABLE_BYTES * kv_rows
    half = fused_plan.plan((300,), nbhd, head_dim, dtype="bfloat16")
    assert math.prod(half.kv_tile) == (32 if head_dim == 256 else 64)
    with pytest.raises(ValueError, match="float64"):
        fused_plan.plan((300,), nbhd, head_dim, dtype="float64")
