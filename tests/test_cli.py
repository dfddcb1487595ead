"""`python -m jax_natten bench`: the table, the JSON records of BENCHMARKS.md's results format and
the effective-FLOP counting, on tiny problems."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# BENCHMARKS.md "Results files": every key of a record.
RECORD_KEYS = {"device", "date", "commit", "command", "problem", "rank", "devices", "backend", "dtype",
               "pass", "ms", "tflops", "baseline", "baseline_ms", "baseline_tflops", "max_rel_err"}
TABLE_COLUMNS = ["backend", "pass", "ms", "TFLOP/s", "vs dense", "rel err"]
TINY = ["--reps", "2", "--warmup", "1"]


def bench(*args, cwd=None, check=True):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-m", "jax_natten", *args], capture_output=True, text=True,
                            env=env, cwd=cwd or REPO, timeout=300)
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def table_rows(stdout):
    """The Markdown table of the output as a list of cell lists (header first, rule dropped)."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert set("".join(rows[1])) <= {"-"}, lines[1]
    return [rows[0]] + rows[2:]


def effective_tflops(batch, heads, tokens, keys, head_dim, passes, ms):
    """BENCHMARKS.md "Counting": 4 * batch * heads * tokens * w * head_dim, x3.5 with backward."""
    flops = 4 * batch * heads * tokens * keys * head_dim * (3.5 if passes == "fwd+bwd" else 1.0)
    return flops / (ms * 1e-3) / 1e12


def check_records(records, *, rank, batch, heads, tokens, window, head_dim, command_part):
    assert {r["pass"] for r in records} == {"fwd", "fwd+bwd"}
    assert "reference" in {r["backend"] for r in records}
    for r in records:
        assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
        assert r["rank"] == rank and r["devices"] == 1 and r["dtype"] == "float32"
        assert r["problem"] == "default-custom"
        assert isinstance(r["device"], str) and r["device"]
        assert isinstance(r["commit"], str) and r["commit"]
        datetime.date.fromisoformat(r["date"])
        assert r["command"].startswith("python -m jax_natten bench") and command_part in r["command"]
        assert isinstance(r["baseline"], str) and r["baseline"].startswith("dense-")
        for key in ("ms", "tflops", "baseline_ms", "baseline_tflops"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
        assert math.isclose(r["tflops"], effective_tflops(batch, heads, tokens, window, head_dim, r["pass"], r["ms"]),
                            rel_tol=1e-9)
        assert math.isclose(r["baseline_tflops"],
                            effective_tflops(batch, heads, tokens, tokens, head_dim, r["pass"], r["baseline_ms"]),
                            rel_tol=1e-9)
        assert isinstance(r["max_rel_err"], float) and 0 <= r["max_rel_err"] < 1e-5, r["max_rel_err"]


def test_bench_2d_table_and_json(tmp_path):
    out = tmp_path / "r.json"
    args = ["bench", "--size", "12,12", "--kernel-size", "3", "--heads", "2", "--head-dim", "8", *TINY, "--json", str(out)]
    result = bench(*args)
    assert "problem default-custom" in result.stdout and "spatial (12, 12)" in result.stdout
    rows = table_rows(result.stdout)
    assert rows[0] == TABLE_COLUMNS
    body = rows[1:]
    assert {(r[0], r[1]) for r in body} >= {("reference", "fwd"), ("reference", "fwd+bwd")}
    assert sum(r[0].startswith("dense-") for r in body) == 2
    for row in body:
        assert float(row[2]) > 0 and float(row[3]) > 0
        if row[0] == "reference":
            assert float(row[5]) < 1e-5
            assert float(row[4]) > 0
        if row[0].startswith("dense-"):
            assert row[4] == "1.000" and row[5] == "-"

    records = json.loads(out.read_text())
    assert len(records) == len(body) - 2  # baselines are fields of the records, not records
    check_records(records, rank=2, batch=2, heads=2, tokens=144, window=9, head_dim=8,
                  command_part="--size 12,12")
    markdown = out.with_suffix(".md").read_text()
    assert "python -m jax_natten bench --size 12,12" in markdown and "| backend" in markdown

    # A second run appends to the same files.
    bench(*args)
    assert len(json.loads(out.read_text())) == 2 * len(records)
    assert out.with_suffix(".md").read_text().count("| backend") == 2


def test_bench_1d_custom_problem(tmp_path):
    out = tmp_path / "r1.json"
    bench("bench", "--size", "40", "--kernel-size", "5", "--dilation", "2", "--stride", "2", "--causal", "true",
          "--batch", "1", "--heads", "4", "--heads-kv", "2", "--head-dim", "8", *TINY, "--json", str(out))
    records = json.loads(out.read_text())
    check_records(records, rank=1, batch=1, heads=4, tokens=40, window=5, head_dim=8, command_part="--causal true")


def test_bench_3d_custom_problem(tmp_path):
    out = tmp_path / "r3.json"
    result = bench("bench", "--size", "6,6,5", "--kernel-size", "3,3,2", "--stride", "1,2,1", "--causal", "true,false,false",
                   "--batch", "1", "--heads", "2", "--head-dim", "4", *TINY, "--json", str(out))
    assert "causal (True, False, False)" in result.stdout and "stride (1, 2, 1)" in result.stdout
    records = json.loads(out.read_text())
    check_records(records, rank=3, batch=1, heads=2, tokens=180, window=18, head_dim=4, command_part="--size 6,6,5")


def test_bench_fwd_only_without_check_or_baseline(tmp_path):
    out = tmp_path / "r.json"
    bench("bench", "--size", "10", "--kernel-size", "3", "--heads", "1", "--head-dim", "4", "--passes", "fwd",
          "--no-check", "--no-baseline", *TINY, "--json", str(out))
    records = json.loads(out.read_text())
    assert records and all(r["pass"] == "fwd" for r in records)
    assert all(r["max_rel_err"] is None and r["baseline"] is None for r in records)


@pytest.mark.parametrize("args,message", [
    (["--size", "8,8,8", "--kernel-size", "3,3"], "--kernel-size has 2 entries for 3 spatial axes"),
    (["--size", "8", "--passes", "backward"], "'backward' is not one of"),
    (["--size", "8", "--causal", "maybe"], "give true/false per axis"),
])
def test_bench_rejects_bad_options(args, message):
    result = bench("bench", *args, "--no-check", "--no-baseline", *TINY, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_help():
    top = bench("--help")
    assert "bench" in top.stdout
    sub = bench("bench", "--help")
    for option in ("--problem", "--size", "--kernel-size", "--stride", "--dilation", "--causal", "--heads-kv",
                   "--head-dim", "--dtype", "--backends", "--passes", "--reps", "--warmup", "--json"):
        assert option in sub.stdout, option


def out_of_memory(gib):
    """A function that fails as XLA does when an allocation of `gib` GiB does not fit."""
    import jax

    def fn(*args):
        raise jax.errors.JaxRuntimeError(f"RESOURCE_EXHAUSTED: Out of memory while trying to allocate {gib}GiB")
    return fn


def test_bench_records_out_of_memory_and_times_the_rest(monkeypatch, tmp_path):
    """Dense float32 attention on 1d-long asks an H200 for 256 GiB: the run goes on with the other
    backends, the table and records say "out of memory" and carry no ratio."""
    from jax_natten import bench as bench_module

    monkeypatch.setattr(bench_module, "_dense_fn", lambda implementation: out_of_memory(256.02))
    problem = bench_module.Problem("tiny", 1, (16,), 1, 4, (3,), dtype="float32")
    records, baselines = bench_module.run(problem, ["reference"], ["fwd"], warmup=1, reps=1, check=False)
    assert baselines["fwd"].failure == "out of memory" and math.isnan(baselines["fwd"].ms)
    assert records[0].failure is None and records[0].ms > 0
    table = bench_module.format_table(problem, records, baselines)
    dense_row = next(line for line in table.splitlines() if line.startswith("| dense"))
    assert "out of memory" in dense_row
    reference_row = next(line for line in table.splitlines() if line.startswith("| reference"))
    assert reference_row.split("|")[5].strip() == "-"  # no ratio to a failed baseline
    [record] = bench_module.json_records(problem, records, baselines, "bench")
    assert record["baseline"] is None and record["baseline_ms"] is None and "failure" not in record
    assert set(record) == RECORD_KEYS


def test_bench_times_unchecked_when_the_float64_reference_does_not_fit(monkeypatch, capsys):
    """1d-long forward+backward's float64 reference asks an H200 for 32 GiB at once: the backends
    are still timed, their error is left unchecked, and stderr says why."""
    from jax_natten import bench as bench_module

    real_neighborhood_fn = bench_module._neighborhood_fn

    def neighborhood_fn(problem, backend):
        return out_of_memory(32.02) if backend == "reference" else real_neighborhood_fn(problem, backend)

    monkeypatch.setattr(bench_module, "_neighborhood_fn", neighborhood_fn)
    problem = bench_module.Problem("tiny", 1, (16,), 1, 4, (3,), dtype="float32")
    records, _ = bench_module.run(problem, ["blocked"], ["fwd"], warmup=1, reps=1, baseline=False)
    assert records[0].ms > 0 and records[0].max_rel_err is None
    assert "float64 reference does not fit" in capsys.readouterr().err


def test_bench_problem_keeps_its_name_when_options_repeat_its_values():
    from jax_natten import bench as bench_module
    parser = argparse.ArgumentParser()
    bench_module.add_arguments(parser)
    named = bench_module.problem_from_args(parser.parse_args(["--problem", "2d-large", "--dtype", "bfloat16"]))
    assert named == bench_module.STANDARD_PROBLEMS["2d-large"]
    changed = bench_module.problem_from_args(parser.parse_args(["--problem", "2d-large", "--dtype", "float16"]))
    assert changed.name == "2d-large-custom" and changed.dtype == "float16"


def test_paper_sweep_covers_every_rank_with_valid_problems():
    from jax_natten import bench as bench_module
    problems = bench_module.paper_sweep()
    assert {p.rank for p in problems} == {1, 2, 3}
    assert len({p.name for p in problems}) == len(problems)
    for p in problems:
        assert all(k * d <= n for k, d, n in zip(p.kernel_size, p.dilation, p.spatial)), p.name
