"""examples/dinat_demo.py runs end to end (a reduced setting that fits a CPU)."""

from __future__ import annotations

import math
import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "dinat_demo.py"


@pytest.mark.slow
def test_dinat_demo_runs():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "nat_mini", "--image-size", "96", "--kernel-size", "3",
         "--batch", "1", "--steps", "1", "--backend", "reference"],
        check=True, capture_output=True, text=True)
    out = result.stdout
    assert len(re.findall(r"^level \d: .* -> \w+$", out, re.M)) == 4, out
    assert "inference: logits (1, 10) float32" in out
    loss = float(re.search(r"train step 1: loss (\S+)", out).group(1))
    assert math.isfinite(loss)
