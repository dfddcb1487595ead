"""`python -m jax_natten tune`: times the fused forward (or forward+backward) of a problem with
every pair of tile boxes the kernel takes (or the `--top` N by planned tile efficiency) and
stores the fastest in the tuning cache (`jax_natten.tune_cache`), which the fused backend then
uses for every call of the same signature on this device (`plan` and `jax_natten.explain` say
"tuned on <date>"; $JAX_NATTEN_TUNE_CACHE=off ignores the cache).

The tile boxes are runtime attributes of the kernel's FFI call: trying one costs an XLA
compilation of the small program around the call, not a kernel build. A candidate whose output
differs from the planner's choice by more than the dtype's tolerance is reported and never
stored (a tile bug must not become the fastest configuration). Times as in `bench` (medians of
back-to-back calls on rotating inputs).
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp

from jax_natten import backends, bench, checks, fused_plan, tune_cache
from jax_natten.progress import progress

# Largest ||out - out_planned|| / ||out_planned|| accepted: tilings differ only in the order of the
# online softmax's accumulation, within a few roundings of the output dtype.
TOLERANCE = {"bfloat16": 3e-2, "float16": 5e-3, "float32": 1e-4}


@dataclasses.dataclass
class Trial:
    plan: fused_plan.FusedPlan
    ms: float
    difference: float  # relative to the planner's choice (the first trial)

    def accepted(self, dtype):
        return self.difference <= TOLERANCE[dtype]


def fused_backend(name: str):
    backend = backends.by_name(name)
    if backend is None or not hasattr(backend, "with_tiles"):
        fused = [b.name for b in backends.BACKENDS if hasattr(b, "with_tiles")]
        raise SystemExit(f"--backend {name}: the tuner times a fused backend ({', '.join(fused)})")
    return backend


def tune_problem(problem: bench.Problem, backend, passes: str = "fwd", top: int | None = None, warmup: int = 2,
                 reps: int = 10, show_progress: bool = False):
    """The trials of the problem's candidate tile boxes on `backend` (a fused backend), in the
    planner's order, and the cache key of the problem on this device."""
    nbhd = checks.neighborhood(problem.spatial, problem.kernel_size, problem.stride, problem.dilation,
                               problem.is_causal)
    request = backends.make_request("attention", problem.dtype, problem.spatial, problem.heads, problem.heads_kv,
                                    problem.head_dim, problem.head_dim, nbhd)
    reason = backend.unsupported(request)
    if reason is not None:
        raise SystemExit(f"{problem.name}: backend {backend.name} cannot run it: {reason}")
    platform = backend.gemm.kernels.shards.platform
    plans = fused_plan.candidates(problem.spatial, nbhd, problem.head_dim, batch=problem.batch, heads=problem.heads,
                                  dtype=problem.dtype, platform=platform)[:top]
    key = fused_plan.tune_key(problem.spatial, nbhd, problem.head_dim, dtype=problem.dtype,
                              group=problem.heads // problem.heads_kv, platform=platform)
    input_sets = bench._input_sets(problem, jnp.dtype(problem.dtype))
    scale = problem.head_dim ** -0.5
    trials, planned_out = [], None
    for p in progress(plans, desc=f"tune {problem.name}", enabled=show_progress):
        candidate = backend.with_tiles(p.q_tile, p.kv_tile)

        def attend(q, k, v, candidate=candidate):
            return candidate.attention(q, k, v, nbhd, scale)[0]

        fn = bench._passes_fn(attend, passes)
        ms = bench._time_ms(fn, input_sets, warmup, reps)
        out = jax.jit(attend)(*input_sets[0][:3])
        planned_out = out if planned_out is None else planned_out
        trials.append(Trial(p, ms, bench._relative_error(out, planned_out)))
    return trials, key


def fastest(trials, dtype):
    accepted = [t for t in trials if t.accepted(dtype)]
    return min(accepted, key=lambda t: t.ms) if accepted else None


def _box(box):
    return "x".join(map(str, box))


def format_trials(problem: bench.Problem, backend_name, passes, trials, best) -> str:
    rows = [("rank", "Q tile", "KV tile", "tile eff.", "ms", "vs planned", "rel diff", "")]
    planned_ms = trials[0].ms
    for i, t in enumerate(trials):
        mark = "fastest" if t is best else ("" if t.accepted(problem.dtype) else "rejected: differs")
        rows.append((str(i), _box(t.plan.q_tile), _box(t.plan.kv_tile), f"{t.plan.tile_efficiency:.3f}",
                     f"{t.ms:.3f}", f"{planned_ms / t.ms:.3f}x", f"{t.difference:.1e}", mark))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    header = (f"tune {problem.name} ({passes}, {backend_name}, {problem.dtype}, device "
              f"{jax.devices()[0].device_kind}): {len(trials)} candidates, rank 0 is the planner's choice")
    return "\n".join([header] + ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows])


def add_arguments(parser: argparse.ArgumentParser):
    bench.add_problem_arguments(parser)
    parser.add_argument("--all", action="store_true", help="every standard problem of BENCHMARKS.md (the default "
                        "when no problem option is given)")
    parser.add_argument("--backend", default="fused", help="the fused backend to time: fused (GPU) or "
                        "fused-emulated (the host emulation on the CPU; slow) (default fused)")
    parser.add_argument("--passes", choices=bench.PASSES, default="fwd", help="time the forward (default) or "
                        "forward+backward")
    parser.add_argument("--top", type=int, help="time only the N candidates of highest planned tile efficiency")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)


def main(args):
    backend = fused_backend(args.backend)
    if args.top is not None and args.top < 1:
        raise SystemExit(f"--top {args.top}: time at least one candidate")
    for problem in fused_plan.problems_from_args(args, "tune"):
        trials, key = tune_problem(problem, backend, args.passes, args.top, args.warmup, args.reps,
                                   show_progress=True)
        best = fastest(trials, problem.dtype)
        print(format_trials(problem, backend.name, args.passes, trials, best))
        if best is None:
            print("no candidate matches the planner's output: nothing stored")
            continue
        path = tune_cache.store({key: tune_cache.entry(best.plan.q_tile, best.plan.kv_tile, best.ms, args.passes,
                                                       backend.name, problem.batch, problem.heads, len(trials))})
        print(f"stored Q tile {_box(best.plan.q_tile)}, KV tile {_box(best.plan.kv_tile)} "
              f"({trials[0].ms / best.ms:.3f}x the planner's choice) in {path}")
