"""`python -m jax_natten bench`: times every backend on one problem, with dense attention as the
baseline measured in the same run, FLOPs counted as in docs/benchmarks.md.

Times are medians over repetitions after warm-up; each repetition times enough back-to-back calls
to fill 5 ms and ends with `jax.block_until_ready` (so short problems are not timed by the host's
dispatch latency), on random inputs that rotate between a few copies when they are small enough
to sit in cache.
The error column is SPEC's `||out - ref|| / ||ref||` against the reference backend run in
float64 (for fwd+bwd: the largest over dQ, dK and dV).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import backends, checks, dense, functional
from jax_natten.progress import progress


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem (the columns of docs/benchmarks.md)."""

    name: str
    batch: int
    spatial: tuple[int, ...]
    heads: int
    head_dim: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...] = None
    dilation: tuple[int, ...] = None
    is_causal: tuple[bool, ...] = None
    heads_kv: int = None
    dtype: str = "bfloat16"

    def __post_init__(self):
        rank = len(self.spatial)
        for field, default in (("stride", 1), ("dilation", 1), ("is_causal", False)):
            if getattr(self, field) is None:
                object.__setattr__(self, field, (default,) * rank)
        if self.heads_kv is None:
            object.__setattr__(self, "heads_kv", self.heads)

    @property
    def rank(self):
        return len(self.spatial)

    @property
    def tokens(self):
        return math.prod(self.spatial)

    def flops(self, keys_per_query, passes):
        """Effective FLOPs: `4 * batch * heads * tokens * keys * head_dim`, 3.5x with backward."""
        forward = 4 * self.batch * self.heads * self.tokens * keys_per_query * self.head_dim
        return forward * (3.5 if passes == "fwd+bwd" else 1.0)


STANDARD_PROBLEMS = {p.name: p for p in (
    Problem("1d-long", 4, (32768,), 16, 128, (2048,)),
    Problem("1d-long-causal", 4, (32768,), 16, 128, (2048,), is_causal=(True,)),
    Problem("2d-large", 2, (128, 128), 16, 128, (32, 32)),
    Problem("2d-dilated", 2, (128, 128), 16, 128, (31, 31), dilation=(2, 2)),
    Problem("3d-video", 1, (16, 48, 80), 16, 128, (8, 16, 16)),
    Problem("3d-video-tcausal", 1, (16, 48, 80), 16, 128, (8, 16, 16), is_causal=(True, False, False)),
    Problem("2d-nat", 128, (56, 56), 2, 32, (7, 7)),
    Problem("2d-dinat", 128, (28, 28), 4, 32, (7, 7), dilation=(4, 4)),
)}

DEFAULT_PROBLEM = Problem("default", 2, (32, 32), 4, 32, (7, 7), dtype="float32")

PASSES = ("fwd", "fwd+bwd")


@dataclasses.dataclass
class Record:
    backend: str
    passes: str
    ms: float
    tflops: float
    max_rel_err: float | None
    failure: str | None = None  # "out of memory": ms and tflops are NaN


def _inputs(problem: Problem, seed: int):
    rng = np.random.default_rng(seed)
    shape = (problem.batch, *problem.spatial)
    q = rng.standard_normal((*shape, problem.heads, problem.head_dim), np.float32)
    k = rng.standard_normal((*shape, problem.heads_kv, problem.head_dim), np.float32)
    v = rng.standard_normal((*shape, problem.heads_kv, problem.head_dim), np.float32)
    d_out = rng.standard_normal((*shape, problem.heads, problem.head_dim), np.float32)
    return q, k, v, d_out


def _input_sets(problem: Problem, dtype, cache_bytes=64 << 20):
    """Copies of the inputs to rotate through, so that small problems are not timed from cache."""
    one = _inputs(problem, 0)
    count = 3 if sum(x.size for x in one) * np.dtype(dtype).itemsize < cache_bytes else 1
    sets = [one] + [_inputs(problem, seed) for seed in range(1, count)]
    return [tuple(jnp.asarray(x, dtype) for x in s) for s in sets]


def _neighborhood_fn(problem: Problem, backend):
    def attend(q, k, v):
        return functional.neighborhood_attention(
            q, k, v, problem.kernel_size, problem.stride, problem.dilation, problem.is_causal,
            backend=backend)
    return attend


def _flat_tokens(x):
    return x.reshape(x.shape[0], -1, *x.shape[-2:])


def _dense_fn(implementation):
    def attend(q, k, v):
        flat = [_flat_tokens(x) for x in (q, k, v)]
        return jax.nn.dot_product_attention(*flat, implementation=implementation).reshape(q.shape)
    return attend


def _passes_fn(attend, passes):
    if passes == "fwd":
        return jax.jit(lambda q, k, v, d_out: attend(q, k, v))
    return jax.jit(lambda q, k, v, d_out: jax.vjp(attend, q, k, v)[1](d_out))


def _time_ms(fn, input_sets, warmup, reps, min_sample_ms=5.0, max_calls=50):
    """Median over `reps` samples of the time per call. A sample times back-to-back calls on
    rotating inputs, then waits for the last: enough calls to fill `min_sample_ms`, so that a
    short kernel is timed on the device rather than by the host's dispatch and wake-up latency
    (about 0.4 ms on the lent GPU machines)."""
    for i in range(warmup):
        jax.block_until_ready(fn(*input_sets[i % len(input_sets)]))
    start = time.perf_counter()
    jax.block_until_ready(fn(*input_sets[0]))
    single_ms = 1e3 * (time.perf_counter() - start)
    calls = max(1, min(max_calls, math.ceil(min_sample_ms / max(single_ms, 1e-3))))
    samples = []
    for i in range(reps):
        start = time.perf_counter()
        for j in range(calls):
            result = fn(*input_sets[(i * calls + j) % len(input_sets)])
        jax.block_until_ready(result)
        samples.append((time.perf_counter() - start) / calls)
    return 1e3 * statistics.median(samples)


def _time_or_oom(fn, input_sets, warmup, reps):
    """`(_time_ms(...), None)`, or `(nan, "out of memory")` when the device cannot hold what `fn`
    allocates (dense attention in float32 materializes tokens x tokens scores: 256 GiB on 1d-long),
    so that the other backends of the run are still timed."""
    try:
        return _time_ms(fn, input_sets, warmup, reps), None
    except jax.errors.JaxRuntimeError as error:
        _raise_unless_out_of_memory(error)
        return math.nan, "out of memory"


def _raise_unless_out_of_memory(error):
    if "RESOURCE_EXHAUSTED" not in str(error):
        raise error


def _relative_error(result, reference):
    leaves = jax.tree_util.tree_leaves(result)
    ref_leaves = jax.tree_util.tree_leaves(reference)
    errors = []
    for x, ref in zip(leaves, ref_leaves):
        x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
        if not np.all(np.isfinite(x)):
            return float("nan")
        errors.append(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-300))
    return max(errors)


def _float64_reference(problem: Problem, passes, args):
    """The float64 reference result, or None (with a note on stderr) when the device cannot hold
    it (1d-long forward+backward asks 32 GiB at once): the timings still count, unchecked."""
    fn = _passes_fn(_neighborhood_fn(problem, "reference"), passes)
    try:
        return fn(*(jnp.asarray(np.asarray(x, np.float32), jnp.float64) for x in args))
    except jax.errors.JaxRuntimeError as error:
        _raise_unless_out_of_memory(error)
        print(f"{problem.name} {passes}: the float64 reference does not fit in device memory; "
              "errors not checked", file=sys.stderr)
        return None


def run(problem: Problem, backend_names, passes_list, warmup=2, reps=10, check=True, baseline=True,
        show_progress=False):
    """Times each backend and pass; returns (records, baseline records by pass). With
    `show_progress`, a progress bar over the timed (pass, backend) pairs (on a terminal)."""
    dtype = jnp.dtype(problem.dtype)
    input_sets = _input_sets(problem, dtype)
    records, baselines = [], {}
    bar = progress(None, desc=problem.name, total=len(passes_list) * (len(backend_names) + baseline), leave=False,
                   enabled=show_progress)
    for passes in passes_list:
        reference = _float64_reference(problem, passes, input_sets[0]) if check else None
        if baseline:
            implementation = dense.implementation(*(_flat_tokens(x) for x in input_sets[0][:3]))
            fn = _passes_fn(_dense_fn(implementation), passes)
            ms, failure = _time_or_oom(fn, input_sets, warmup, reps)
            baselines[passes] = Record(f"dense-{implementation}", passes, ms,
                                       problem.flops(problem.tokens, passes) / ms / 1e9, None, failure)
            bar.update()
        for name in backend_names:
            bar.set_postfix_str(f"{name} {passes}")
            fn = _passes_fn(_neighborhood_fn(problem, name), passes)
            ms, failure = _time_or_oom(fn, input_sets, warmup, reps)
            error = (_relative_error(fn(*input_sets[0]), reference)
                     if reference is not None and failure is None else None)
            records.append(Record(name, passes, ms, problem.flops(math.prod(problem.kernel_size), passes) / ms / 1e9,
                                  error, failure))
            bar.update()
    bar.close()
    return records, baselines


def format_table(problem: Problem, records, baselines):
    header = (f"problem {problem.name}: batch {problem.batch}, spatial {problem.spatial}, heads "
              f"{problem.heads}/{problem.heads_kv}, head_dim {problem.head_dim}, kernel "
              f"{problem.kernel_size}, stride {problem.stride}, dilation {problem.dilation}, causal "
              f"{problem.is_causal}, {problem.dtype}, device {jax.devices()[0].device_kind}")
    rows = [("backend", "pass", "ms", "TFLOP/s", "vs dense", "rel err")]
    for r in list(baselines.values()) + records:
        base = baselines.get(r.passes)
        ratio = f"{r.tflops / base.tflops:.3f}" if base and base.failure is None and r.failure is None else "-"
        error = "-" if r.max_rel_err is None else f"{r.max_rel_err:.2e}"
        ms, tflops = (r.failure, "-") if r.failure else (f"{r.ms:.3f}", f"{r.tflops:.4g}")
        rows.append((r.backend, r.passes, ms, tflops, ratio, error))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [header, ""]
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def record_header(command):
    """The fields every docs/benchmarks.md record starts with: device, date, commit, command."""
    commit = os.environ.get("JAX_NATTEN_COMMIT")
    if commit is None:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    return {"device": jax.devices()[0].device_kind, "date": datetime.date.today().isoformat(),
            "commit": commit, "command": command}


def json_records(problem: Problem, records, baselines, command):
    common = {**record_header(command), "problem": problem.name, "rank": problem.rank, "devices": 1,
              "dtype": problem.dtype}
    out = []
    for r in records:
        base = baselines.get(r.passes)
        base = base if base and base.failure is None else None
        out.append({**common, "backend": r.backend, "pass": r.passes,
                    "ms": None if r.failure else r.ms, "tflops": None if r.failure else r.tflops,
                    "baseline": base.backend if base else None, "baseline_ms": base.ms if base else None,
                    "baseline_tflops": base.tflops if base else None, "max_rel_err": r.max_rel_err,
                    **({"failure": r.failure} if r.failure else {})})
    return out


def _ints(text):
    return tuple(int(x) for x in text.split(","))


def _bools(text):
    values = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        return tuple(values[x.lower()] for x in text.split(","))
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r}: give true/false per axis, comma-separated") from None


def _per_axis(values, rank, name):
    if values is None:
        return None
    if len(values) == 1:
        return values * rank
    if len(values) != rank:
        raise SystemExit(f"--{name} has {len(values)} entries for {rank} spatial axes")
    return values


def add_problem_arguments(parser: argparse.ArgumentParser):
    """The options that pick a problem (`problem_from_args`); also used by `plan`."""
    parser.add_argument("--problem", choices=sorted(STANDARD_PROBLEMS), help="a standard problem of docs/benchmarks.md")
    parser.add_argument("--size", type=_ints, help="spatial shape, e.g. 32,32 (default 32,32)")
    parser.add_argument("--kernel-size", type=_ints, help="per axis or one for all (default 7)")
    parser.add_argument("--stride", type=_ints)
    parser.add_argument("--dilation", type=_ints)
    parser.add_argument("--causal", type=_bools, help="per axis or one for all, e.g. true,false")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--heads-kv", type=int, help="key/value heads (GQA); default: --heads")
    parser.add_argument("--head-dim", type=int)
    parser.add_argument("--dtype", choices=checks.FLOAT_DTYPES[:3])


def add_arguments(parser: argparse.ArgumentParser):
    add_problem_arguments(parser)
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated, from {', '.join(backends.names())} (default: all that can run)")
    parser.add_argument("--passes", default="fwd,fwd+bwd", help="fwd, fwd+bwd or both")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-check", action="store_true", help="skip the float64 reference error")
    parser.add_argument("--no-baseline", action="store_true", help="skip dense attention")
    parser.add_argument("--json", type=pathlib.Path, help="append records to this JSON file (and a .md table)")
    parser.add_argument("--plot", type=pathlib.Path,
                        help="write a PNG of each backend's time and speedup over dense here (needs matplotlib)")


def problem_from_args(args) -> Problem:
    """The standard problem named by --problem (default: a small CPU-friendly one), changed by
    the other options; per-axis options given once apply to every axis."""
    base = STANDARD_PROBLEMS[args.problem] if args.problem else DEFAULT_PROBLEM
    spatial = args.size or base.spatial
    rank = len(spatial)
    same_rank = rank == base.rank
    changes = {
        "spatial": spatial,
        "kernel_size": _per_axis(args.kernel_size, rank, "kernel-size")
        or (base.kernel_size if same_rank else base.kernel_size[:1] * rank),
        "stride": _per_axis(args.stride, rank, "stride") or (base.stride if same_rank else None),
        "dilation": _per_axis(args.dilation, rank, "dilation") or (base.dilation if same_rank else None),
        "is_causal": _per_axis(args.causal, rank, "causal") or (base.is_causal if same_rank else None),
    }
    for field in ("batch", "heads", "heads_kv", "head_dim", "dtype"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    if args.heads is not None and args.heads_kv is None:
        changes["heads_kv"] = args.heads
    problem = dataclasses.replace(base, **changes)
    return problem if problem == base else dataclasses.replace(problem, name=f"{base.name}-custom")


def usable_backends(problem: Problem):
    nbhd = checks.neighborhood(problem.spatial, problem.kernel_size, problem.stride,
                               problem.dilation, problem.is_causal)
    request = backends.make_request("attention", problem.dtype, problem.spatial, problem.heads, problem.heads_kv,
                                    problem.head_dim, problem.head_dim, nbhd)
    return [b.name for b in backends.BACKENDS
            if not getattr(b, "explicit_only", False) and b.unsupported(request) is None]


def main(args):
    problem = problem_from_args(args)
    names = args.backends.split(",") if args.backends else usable_backends(problem)
    passes_list = args.passes.split(",")
    for p in passes_list:
        if p not in PASSES:
            raise SystemExit(f"--passes: {p!r} is not one of {PASSES}")
    if not args.no_check:
        jax.config.update("jax_enable_x64", True)
    records, baselines = run(problem, names, passes_list, args.warmup, args.reps,
                             check=not args.no_check, baseline=not args.no_baseline, show_progress=True)
    table = format_table(problem, records, baselines)
    print(table)
    if args.plot:
        from jax_natten import plots

        plots.bench_plot(args.plot, table.splitlines()[0], records, baselines)
    if args.json:
        existing = json.loads(args.json.read_text()) if args.json.exists() else []
        command = "python -m jax_natten " + " ".join(sys.argv[1:])
        args.json.write_text(json.dumps(existing + json_records(problem, records, baselines, command), indent=1))
        with args.json.with_suffix(".md").open("a") as md:
            md.write(f"`{command}`\n\n{table}\n\n")


def paper_sweep():
    """The documented sweep for comparing our backends with each other (the seed paper's
    GEMM-over-naive and fused-over-naive figures): 1-D, 2-D and 3-D problems, kernel sizes 3 to
    63, dilation 1 to 8, several resolutions and batch/head counts, head_dim 64."""
    problems = []
    # 1-D problems are larger than 2-D ones: below ~64K query rows, both backends' times are
    # dominated by the fixed cost of a call (launches, the softmax in XLA), not by the kernels.
    for length, batch, heads in ((4096, 4, 8), (16384, 2, 8)):
        for k in (3, 7, 15, 31, 63):
            for d in (1, 8):
                if k * d <= length:
                    problems.append(Problem(f"1d-{length}-k{k}-d{d}", batch, (length,), heads, 64, (k,), dilation=(d,)))
    for side, batch, heads in ((32, 4, 4), (64, 2, 8)):
        for k in (3, 7, 13, 31):
            for d in (1, 2, 4):
                if k * d <= side:
                    problems.append(Problem(f"2d-{side}-k{k}-d{d}", batch, (side, side), heads, 64, (k, k), dilation=(d, d)))
    for depth, side, batch, heads in ((8, 32, 2, 4), (16, 32, 1, 8)):
        for k in (3, 5, 7):
            for d in (1, 2):
                if k * d <= depth:
                    problems.append(Problem(f"3d-{depth}x{side}x{side}-k{k}-d{d}", batch, (depth, side, side), heads, 64,
                                            (k, k, k), dilation=(d, d, d)))
    return problems


def sweep_main(args):
    """Times `--backends` on every problem of `paper_sweep()` in each dtype and pass, and reports
    each backend's average speedup over the last one named (e.g. gemm,naive: GEMM over naive)."""
    names = args.backends.split(",")
    if len(set(names)) < 2:
        raise SystemExit(f"--backends {args.backends}: name at least two backends, the last one being the baseline.")
    baseline = names[-1]
    records = []
    problems = [dataclasses.replace(problem, dtype=dtype) for dtype in args.dtypes.split(",")
                for problem in paper_sweep() if not args.rank or problem.rank == args.rank]
    for problem in progress(problems, desc="sweep"):
        found, _ = run(problem, names, args.passes.split(","), args.warmup, args.reps, check=False, baseline=False)
        records.extend((problem, r) for r in found)
    lines = [f"sweep of {len(paper_sweep())} problems (`paper_sweep` in jax_natten/bench.py), device "
             f"{jax.devices()[0].device_kind}; speedup = baseline ms / backend ms, averaged (arithmetic mean)",
             "", "| backend | over | rank | dtype | pass | problems | mean speedup | min | max |", "|---|---|---|---|---|---|---|---|---|"]
    times = {(p.name, p.dtype, r.passes, r.backend): r.ms for p, r in records}
    groups = {}
    for (name, dtype, passes, backend), ms in times.items():
        if backend == baseline:
            continue
        groups.setdefault((backend, name[:2], dtype, passes), []).append(times[(name, dtype, passes, baseline)] / ms)
    for (backend, rank, dtype, passes), speedups in sorted(groups.items()):
        lines.append(f"| {backend} | {baseline} | {rank} | {dtype} | {passes} | {len(speedups)} | "
                     f"{statistics.mean(speedups):.2f}x ({100 * (statistics.mean(speedups) - 1):+.0f}%) | "
                     f"{min(speedups):.2f}x | {max(speedups):.2f}x |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        command = "python -m jax_natten " + " ".join(sys.argv[1:])
        out = []
        for problem, r in records:
            out.extend(json_records(problem, [r], {}, command))
        args.json.write_text(json.dumps(out, indent=1))
        args.json.with_suffix(".md").write_text(f"`{command}`\n\n{table}\n")
    if args.plot:
        from jax_natten import plots

        plots.sweep_plot(args.plot, lines[0], records, baseline)


def add_sweep_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--backends", default="reference,naive", help="comma-separated; the last is the baseline")
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--passes", default="fwd,fwd+bwd")
    parser.add_argument("--rank", type=int, choices=(1, 2, 3), help="only this rank")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=pathlib.Path, help="write the records here (and a .md table)")
    parser.add_argument("--plot", type=pathlib.Path,
                        help="write a PNG of each backend's speedup over the baseline against kernel size")
