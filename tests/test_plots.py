"""Pictures and progress bars of the command line: `bench --plot`, `sweep --plot`,
`neighborhood` (text and `--plot`) write what they say, and progress bars appear on a terminal
only."""

from __future__ import annotations

import dataclasses
import sys

import matplotlib.image
import numpy as np
import pytest

from test_cli import TINY, bench
from jax_natten import bench as bench_module
from jax_natten import plots, progress


def check_png(path, min_side=200):
    image = matplotlib.image.imread(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side, image.shape
    assert np.ptp(image[..., :3]) > 0.5, "a blank picture"


def test_bench_plot_and_no_progress_bar_when_piped(tmp_path):
    png = tmp_path / "bench.png"
    result = bench("bench", "--size", "10,10", "--kernel-size", "3", "--heads", "1", "--head-dim", "4", *TINY,
                   "--no-check", "--plot", str(png))
    check_png(png)
    # stdout is a pipe here: no bar (tqdm draws with carriage returns and "it/s").
    assert "\r" not in result.stderr and "it/s" not in result.stderr, result.stderr


def test_sweep_plot(tmp_path):
    """Records of two problems per rank and kernel size; the baseline is the reference timing
    made twice as slow, so every speedup is 2."""
    problems = [bench_module.Problem(f"{len(s)}d-k{k}", 1, s, 1, 4, (k,) * len(s))
                for s in ((16,), (8, 8)) for k in (3, 5)]
    records = []
    for problem in problems:
        found, _ = bench_module.run(problem, ["reference"], ["fwd"], warmup=1, reps=1, check=False, baseline=False)
        records += [(problem, r) for r in found]
        records += [(problem, dataclasses.replace(r, backend="slow", ms=2 * r.ms)) for r in found]
    assert plots.speedups_by_kernel(records, "slow") == {
        rank: {("reference", "bfloat16", "fwd"): {3: 2.0, 5: 2.0}} for rank in (1, 2)}
    png = tmp_path / "sweep.png"
    plots.sweep_plot(png, "test sweep", records, "slow")
    check_png(png)


def test_sweep_needs_two_backends():
    result = bench("sweep", "--backends", "reference", check=False)
    assert result.returncode != 0 and "name at least two backends" in result.stderr


def test_neighborhood_text():
    result = bench("neighborhood", "--size", "9", "--kernel-size", "3", "--dilation", "2", "--query", "0",
                   "--query", "8")
    lines = result.stdout.splitlines()
    assert lines[0] == "size (9,), kernel (3,), stride (1,), dilation (2,), causal (False,)"
    # Border queries: the window shifts inwards and keeps 3 keys of the query's dilation group.
    assert lines[2:4] == ["query (0,): 3 keys", "Q . # . # . . . ."]
    assert lines[5:7] == ["query (8,): 3 keys", ". . . . # . # . Q"]
    grid = bench("neighborhood", "--size", "4,5", "--kernel-size", "2,3", "--stride", "2,1", "--causal", "true,false",
                 "--query", "3,0").stdout
    assert grid.split("query (3, 0): 6 keys\n")[1].splitlines() == [
        ". . . . .", ". . . . .", "# # # . .", "Q # # . ."]


@pytest.mark.parametrize("args, message", [
    (["--size", "4", "--kernel-size", "5"], "kernel_size * dilation = 5 > input length 4"),
    (["--size", "6", "--query", "6"], "--query 6: not a position of a 6 grid"),
    (["--size", "4,4,4"], "drawing needs a 1-D or 2-D grid"),
])
def test_neighborhood_rejects(args, message):
    result = bench("neighborhood", *args, check=False)
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.parametrize("size", ["15", "12,12"])
def test_neighborhood_plot(tmp_path, size):
    png = tmp_path / "nbhd.png"
    result = bench("neighborhood", "--size", size, "--kernel-size", "5", "--dilation", "2", "--plot", str(png))
    assert f"wrote {png}" in result.stdout
    check_png(png, min_side=100)


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bar_only_on_a_terminal(monkeypatch, capsys, terminal):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    assert list(progress.progress(range(3), desc="steps")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert ("steps" in err and "3/3" in err) == terminal, err
    assert terminal or err == ""
    bar = progress.progress(None, desc="off", total=2, enabled=False)
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err == ""
