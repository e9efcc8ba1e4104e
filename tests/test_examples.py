import subprocess
import sys

from conftest import ROOT


def test_train_and_sample_example_runs(tmp_path):
    res = subprocess.run([sys.executable, "examples/train_and_sample.py", "--steps", "20", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert (tmp_path / "model.pt").exists()
