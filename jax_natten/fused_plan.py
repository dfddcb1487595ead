"""Dry-run planner of the fused forward kernel (cuda/include/jax_natten/fused/): for given
inputs, without a GPU, what the kernel would do — tile boxes, launch grid, KV tiles visited per
Q tile, tile efficiency (attended / computed score pairs), fast-path share, shared memory and
registers per CTA — and the tile boxes that the handler is given (the most efficient ones).

The kernel's tile arithmetic (scheduler.h) factorizes over the axes: a CTA is one (dilation
group, Q tile) per axis, its KV box the per-axis union of its windows. So every total here is a
product of per-axis sums, exact and cheap for any problem size. Windows come from
`neighborhood.window`, the one Python copy of the window rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import math
import pathlib
import warnings

import numpy as np

from jax_natten.neighborhood import Neighborhood, window

# The input dtypes of the fused kernel (CMakeLists.txt's FUSED_DTYPES builds one unit per dtype and
# head-dim class; cuda/ffi/fused.cu dispatches them): the one Python list, which the backends read.
# float32 runs split TF32 on the tensor cores (3 TF32 MMAs per product): float32 accuracy.
ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
DTYPES = tuple(ELEMENT_BYTES)
# kernel.h's default tile shape: 4 warps x 16 query rows by 64 keys while a K/V row has at most 256
# bytes, proportionally fewer for wider rows (kv_tile_rows).
DEFAULT_Q_TILE_ROWS = 64
DEFAULT_KV_TILE_ROWS = 64
KV_ROW_BYTES = 256
THREADS_PER_Q_ROW = 2  # a warp of 32 threads per 16 query rows
STAGES = 2  # K/V tiles in flight
KEY_TABLE_BYTES = 12  # mask.h: KeyTable, an int and an int64 per key of a KV tile
HEAD_DIM_CLASSES = (32, 64, 128, 256)
STATIC_TABLE = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "fused_static.json"


def tile_rows(head_dim_class: int, dtype: str, platform: str = "CUDA") -> tuple[int, int]:
    """(Q, KV) tile rows of the head-dim class and dtype: those the installed fused forward of the
    XLA `platform` was built with (kernel.h's JAX_NATTEN_FUSED_WARPS and JAX_NATTEN_FUSED_KV_ROWS;
    "CUDA": the extension, "cpu": the host emulation), else kernel.h's defaults."""
    from jax_natten import cuda
    module = cuda.fused_extension(platform)
    classes = () if module is None else tuple(module.fused_head_dim_classes())
    if head_dim_class in classes:
        rows = module.fused_kv_tile_rows(ELEMENT_BYTES[dtype])
        return module.fused_q_tile_rows(), rows[classes.index(head_dim_class)]
    row_bytes = head_dim_class * ELEMENT_BYTES[dtype]
    return DEFAULT_Q_TILE_ROWS, DEFAULT_KV_TILE_ROWS * KV_ROW_BYTES // max(KV_ROW_BYTES, row_bytes)


def head_dim_class(head_dim: int, head_dim_v: int) -> int | None:
    """The smallest instantiated head-dim class holding both head dims (None: none does)."""
    return next((c for c in HEAD_DIM_CLASSES if max(head_dim, head_dim_v) <= c), None)


@dataclasses.dataclass(frozen=True)
class AxisTiling:
    """Per-axis sums over the axis's (group, Q tile) pairs that hold queries."""

    ctas: int            # (group, tile) pairs with queries
    launched: int        # grid extent along this axis (groups x tiles of the longest group)
    computed: int        # sum of q_tile * kv_tile * kv tiles (score pairs computed, this axis)
    attended: int        # sum over queries of their window length (pairs in windows, this axis)
    kv_tiles: int        # sum over CTAs of KV tiles visited
    kv_tiles_max: int
    unmasked: int        # sum over CTAs of KV tiles inside every window of the Q tile


def axis_tiling(length, kernel_size, stride, dilation, is_causal, q_tile, kv_tile) -> AxisTiling:
    ctas = computed = attended = kv_total = kv_max = unmasked = 0
    per_group = -(-(-(-length // dilation)) // q_tile)
    for group in range(dilation):
        positions = np.arange(group, length, dilation)
        starts, ends = window(positions, length, kernel_size, stride, dilation, is_causal)
        attended += int((ends - starts).sum())
        for u0 in range(0, len(positions), q_tile):
            last = min(u0 + q_tile, len(positions)) - 1
            first_v, end_v = int(starts[u0]), int(ends[last])
            common_start, common_end = int(starts[last]), int(ends[u0])
            tiles = -(-(end_v - first_v) // kv_tile)
            origins = first_v + kv_tile * np.arange(tiles)
            ctas += 1
            computed += q_tile * kv_tile * tiles
            kv_total += tiles
            kv_max = max(kv_max, tiles)
            unmasked += int(((origins >= common_start) & (origins + kv_tile <= common_end)).sum())
    return AxisTiling(ctas, dilation * per_group, computed, attended, kv_total, kv_max, unmasked)


@dataclasses.dataclass(frozen=True)
class FusedPlan:
    q_tile: tuple[int, ...]
    kv_tile: tuple[int, ...]
    head_dim_class: int
    grid: tuple[int, int, int]      # (Q tiles, heads, batch), as launched
    ctas_with_work: int             # per (batch, head)
    kv_tiles_mean: float            # per Q tile that holds queries
    kv_tiles_max: int
    tile_efficiency: float          # attended / computed score pairs
    fast_path_fraction: float       # KV tiles computed without a per-element mask
    smem_bytes: int
    registers: int | None           # per thread, from the static gate table (None: not built)
    spill_bytes: int | None
    source: str = "planned"         # "planned" (the efficiency rule), or "tuned on <date>" (tune_cache)

    def as_dict(self):
        return dataclasses.asdict(self)


def _boxes(rank: int, rows: int):
    """Per-axis power-of-two extents with product `rows`."""
    exponent = int(math.log2(rows))
    for split in itertools.product(range(exponent + 1), repeat=rank):
        if sum(split) == exponent:
            yield tuple(2 ** e for e in split)


def _static_entry(dtype: str, head_class: int):
    if not STATIC_TABLE.exists():
        return None
    table = json.loads(STATIC_TABLE.read_text())
    return next((e for e in table.get("kernels", []) if e.get("dtype") == dtype and e.get("head_dim") == head_class
                 and e.get("arch") == "sm_90a" and e.get("kernel") == "forward"), None)


def _check(spatial_shape, nbhd: Neighborhood, head_dim: int, head_dim_v: int, dtype: str) -> int:
    """The head-dim class of the problem, after checking that the fused kernel takes it."""
    head_class = head_dim_class(head_dim, head_dim_v)
    if head_class is None:
        raise ValueError(f"head_dim {head_dim} / head_dim_v {head_dim_v}: the fused kernel takes at most 256")
    if nbhd.rank != len(spatial_shape):
        raise ValueError(f"spatial_shape has {len(spatial_shape)} axes, the neighborhood {nbhd.rank}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype}: the fused kernel takes {', '.join(DTYPES)}")
    return head_class


@functools.lru_cache(maxsize=256)
def _ranked(spatial_shape, nbhd: Neighborhood, head_dim: int, head_dim_v: int, batch: int, heads: int, dtype: str,
            q_tile, kv_tile, platform: str) -> tuple[FusedPlan, ...]:
    """The plans of every (Q box, KV box) pair (only the given box where one is), most efficient
    first (ties: fewer KV tiles visited, then the larger boxes)."""
    head_class = _check(spatial_shape, nbhd, head_dim, head_dim_v, dtype)
    rank = len(spatial_shape)
    q_rows, kv_rows = tile_rows(head_class, dtype, platform)
    q_choices = [tuple(q_tile)] if q_tile is not None else list(_boxes(rank, q_rows))
    kv_choices = [tuple(kv_tile)] if kv_tile is not None else list(_boxes(rank, kv_rows))
    for name, boxes, rows in (("q_tile", q_choices, q_rows), ("kv_tile", kv_choices, kv_rows)):
        if any(len(b) != rank or math.prod(b) != rows for b in boxes):
            raise ValueError(f"{name}: {rank} per-axis extents with product {rows}")
    entry = _static_entry(dtype, head_class)

    def plan_of(q_box, kv_box):
        axes = [axis_tiling(length, *params, tq, tk)
                for length, params, tq, tk in zip(spatial_shape, nbhd.axes(), q_box, kv_box)]
        ctas = math.prod(a.ctas for a in axes)
        kv_sum = math.prod(a.kv_tiles for a in axes)
        return FusedPlan(
            q_tile=q_box, kv_tile=kv_box, head_dim_class=head_class,
            grid=(math.prod(a.launched for a in axes), heads, min(batch, 65535)),
            ctas_with_work=ctas, kv_tiles_mean=kv_sum / ctas, kv_tiles_max=math.prod(a.kv_tiles_max for a in axes),
            tile_efficiency=math.prod(a.attended for a in axes) / math.prod(a.computed for a in axes),
            fast_path_fraction=math.prod(a.unmasked for a in axes) / kv_sum,
            smem_bytes=(q_rows + 2 * STAGES * kv_rows) * head_class * ELEMENT_BYTES[dtype] + KEY_TABLE_BYTES * kv_rows,
            registers=None if entry is None else entry["registers"],
            spill_bytes=None if entry is None else entry["spill_bytes"])

    # Per axis the choices are independent except for the products: search the pairs of boxes.
    plans = [plan_of(qb, kb) for qb in q_choices for kb in kv_choices]
    return tuple(sorted(plans, key=lambda p: (p.tile_efficiency, -round(p.ctas_with_work * p.kv_tiles_mean), p.q_tile,
                                              p.kv_tile), reverse=True))


def candidates(spatial_shape, nbhd: Neighborhood, head_dim: int, head_dim_v: int | None = None, *, batch: int = 1,
               heads: int = 1, dtype: str = "bfloat16", platform: str = "CUDA") -> tuple[FusedPlan, ...]:
    """The plans of every pair of tile boxes the kernel takes for the problem, most efficient first
    (the first is the planner's choice): what `python -m jax_natten tune` times."""
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    return _ranked(tuple(spatial_shape), nbhd, head_dim, head_dim_v, batch, heads, dtype, None, None, platform)


def tune_key(spatial_shape, nbhd: Neighborhood, head_dim: int, head_dim_v: int | None = None, *,
             dtype: str = "bfloat16", group: int = 1, platform: str = "CUDA") -> str | None:
    """The tuning cache's key of the problem on the first device of `platform` (None: JAX has no
    such device)."""
    from jax_natten import tune_cache
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    device = tune_cache.device_for(platform)
    if device is None:
        return None
    rows = tile_rows(_check(spatial_shape, nbhd, head_dim, head_dim_v, dtype), dtype, platform)
    return tune_cache.signature(device, rows, spatial_shape, nbhd, head_dim, head_dim_v, dtype, group)


def plan(spatial_shape, nbhd: Neighborhood, head_dim: int, head_dim_v: int | None = None, *, batch: int = 1,
         heads: int = 1, dtype: str = "bfloat16", group: int = 1, q_tile=None, kv_tile=None,
         platform: str = "CUDA") -> FusedPlan:
    """What the fused forward does for `[batch, *spatial_shape, heads, head_dim]` inputs (GQA:
    `group` query heads per KV head) with the tile shape built for the XLA `platform`
    (`tile_rows`). The tile boxes are those given, else the tuning cache's for the problem on this
    device (`tune_cache`; `source` says "tuned on <date>"), else the most efficient ones ("planned")."""
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    spatial_shape = tuple(spatial_shape)
    if q_tile is None and kv_tile is None:
        tuned = _tuned(spatial_shape, nbhd, head_dim, head_dim_v, batch, heads, dtype, group, platform)
        if tuned is not None:
            return tuned
    q_tile = None if q_tile is None else tuple(q_tile)
    kv_tile = None if kv_tile is None else tuple(kv_tile)
    return _ranked(spatial_shape, nbhd, head_dim, head_dim_v, batch, heads, dtype, q_tile, kv_tile, platform)[0]


def _tuned(spatial_shape, nbhd, head_dim, head_dim_v, batch, heads, dtype, group, platform) -> FusedPlan | None:
    """The plan of the tuning cache's tile boxes for the problem, or None (no entry, or reading disabled)."""
    from jax_natten import tune_cache
    if not tune_cache.reading_enabled():
        return None
    key = tune_key(spatial_shape, nbhd, head_dim, head_dim_v, dtype=dtype, group=group, platform=platform)
    found = None if key is None else tune_cache.lookup(key)
    if found is None:
        return None
    try:
        chosen = _ranked(spatial_shape, nbhd, head_dim, head_dim_v, batch, heads, dtype, tuple(found["q_tile"]),
                         tuple(found["kv_tile"]), platform)[0]
    except (KeyError, TypeError, ValueError) as error:
        warnings.warn(f"jax_natten: ignoring the tuning cache's entry for {key}: {error!r}", stacklevel=3)
        return None
    return dataclasses.replace(chosen, source=f"tuned on {found.get('date', 'an unknown date')}")


def add_arguments(parser: argparse.ArgumentParser):
    from jax_natten import bench
    bench.add_problem_arguments(parser)
    parser.add_argument("--all", action="store_true", help="every standard problem of BENCHMARKS.md (the default "
                        "when no problem option is given)")
    parser.add_argument("--backend", choices=("fused", "fused-emulated"), default="fused",
                        help="whose compiled tile shape and tuning cache entries to plan with (default fused)")
    parser.add_argument("--json", type=pathlib.Path, help="write the plans to this JSON file")


def backend_platform(name: str) -> str:
    """The XLA platform of the fused backend `name`'s FFI targets ("CUDA" or "cpu")."""
    from jax_natten import backends
    return backends.by_name(name).gemm.kernels.shards.platform


def format_plan(name: str, p: FusedPlan) -> str:
    registers = "not in the static table" if p.registers is None else f"{p.registers} registers/thread, " \
        f"{p.spill_bytes} spill bytes"
    return (f"{name}: Q tile {'x'.join(map(str, p.q_tile))}, KV tile {'x'.join(map(str, p.kv_tile))}, head-dim class "
            f"{p.head_dim_class}, grid {p.grid[0]}x{p.grid[1]}x{p.grid[2]} ({p.ctas_with_work} Q tiles with work per "
            f"batch and head), KV tiles per Q tile {p.kv_tiles_mean:.1f} mean / {p.kv_tiles_max} max, tile efficiency "
            f"{p.tile_efficiency:.3f}, unmasked KV tiles {p.fast_path_fraction:.3f}, smem {p.smem_bytes // 1024} KiB/CTA "
            f"({THREADS_PER_Q_ROW * math.prod(p.q_tile)} threads), {registers}; tiles {p.source}")


def problems_from_args(args, command: str):
    """The problems of `plan` and `tune`: every standard problem with --all or no problem option,
    else the one the options describe (`bench.problem_from_args`)."""
    from jax_natten import bench
    chosen = [f for f in ("problem", "size", "kernel_size", "stride", "dilation", "causal", "batch", "heads",
                          "heads_kv", "head_dim", "dtype") if getattr(args, f) is not None]
    if args.all or not chosen:
        # --all: the standard problems as defined, or all in another dtype; other options would
        # contradict their definitions.
        if set(chosen) - {"dtype"}:
            raise SystemExit(f"{command} --all takes no problem options but --dtype (got {', '.join(chosen)})")
        return [dataclasses.replace(problem, dtype=args.dtype or problem.dtype)
                for problem in bench.STANDARD_PROBLEMS.values()]
    return [bench.problem_from_args(args)]


def main(args):
    from jax_natten import checks
    plans = {}
    for problem in problems_from_args(args, "plan"):
        nbhd = checks.neighborhood(problem.spatial, problem.kernel_size, problem.stride, problem.dilation,
                                   problem.is_causal)
        plans[problem.name] = plan(problem.spatial, nbhd, problem.head_dim, batch=problem.batch,
                                   heads=problem.heads, dtype=problem.dtype, group=problem.heads // problem.heads_kv,
                                   platform=backend_platform(args.backend))
        print(format_plan(problem.name, plans[problem.name]))
    if args.json:
        args.json.write_text(json.dumps({n: p.as_dict() for n, p in plans.items()}, indent=1) + "\n")
