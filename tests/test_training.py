"""End-to-end training: examples/train_digits.py trains a small DiNAT on scikit-learn's digits
through the reference backend's gradients and must reach 95% test accuracy (about a minute on
a 2-core CPU)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


def test_dinat_learns_digits(tmp_path):
    out = tmp_path / "curve.json"
    subprocess.run([sys.executable, str(SCRIPT), "--backend", "reference", "--json", str(out)], check=True,
                   capture_output=True, text=True)
    record = json.loads(out.read_text())
    curve = record["curve"]
    assert record["backend"] == "reference" and len(curve) == 12
    assert curve[-1]["train_loss"] < 0.2 * curve[0]["train_loss"]
    assert record["final_test_accuracy"] >= 0.95, curve
