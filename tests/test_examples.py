import subprocess
import sys

from conftest import ROOT


def test_train_and_sample_example_runs(tmp_path):
    res = subprocess.run([sys.executable, "examples/train_and_sample.py", "--steps", "20", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert (tmp_path / "model.pt").exists()


def test_export_and_run_on_lava_example_runs(tmp_path):
    # on a small model the example trains (the shipped 28x28 one takes minutes in fixed point on Lava's CPU
    # models; `make demo` runs that)
    trained = tmp_path / "trained"
    res = subprocess.run([sys.executable, "examples/train_and_sample.py", "--steps", "2", "--out", str(trained)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "examples/export_and_run_on_lava.py", "--checkpoint",
                          str(trained / "model.pt"), "-n", "2", "--steps", "2", "--out", str(tmp_path),
                          "--fixed-point"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sampler.nir").stat().st_size > 0 and (tmp_path / "samples.png").stat().st_size > 0
    assert "total synaptic ops per image" in res.stdout
    assert "bit-exact simulator gives the same images: True" in res.stdout
