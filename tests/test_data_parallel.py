"""examples/data_parallel.py on 4 virtual CPU devices: the sharded-jit and shard_map training
steps give the single-device loss, gradients and updated parameters."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "data_parallel.py"


@pytest.mark.slow
def test_data_parallel_steps_match_single_device(tmp_path):
    out = tmp_path / "dp.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--per-device-batch", "2", "--reps", "1",
                    "--json", str(out)], check=True, env=env, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert result["devices"] == 4
    for step in ("jit", "shard_map"):
        for what in ("loss", "grads", "params"):
            assert result[f"{step}_{what}_rel_diff"] < 1e-5, (step, what, result)
