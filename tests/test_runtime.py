"""The DDIM loop inside one Lava run (Loihi2SimCfg, floating point) against the PyTorch sampler."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from spikediff.diffusion import NoiseSchedule
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.export.nir_graph import to_nir
from spikediff.models import DenoiserConfig, SpikingDenoiser


def test_lava_sampler_equals_pytorch_images_and_spikes():
    from spikediff.runtime.lava_sampler import sample_lava

    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16)).eval()
    schedule = NoiseSchedule(1000, "v_prediction")
    noise = initial_noise(2, (1, 8, 8), 0)
    expected, stats = [], []
    for i in range(len(noise)):
        st = {}
        expected.append(sample_torch(model, schedule, 1, 4, noise=noise[i:i + 1], progress=False, stats=st)[0].numpy())
        stats.append(st)
    result = sample_lava(to_nir(model, schedule), noise.numpy(), 4, progress=False)
    np.testing.assert_allclose(result["images"], np.stack(expected), rtol=0, atol=1e-4)
    for name in model.spiking_layers:
        per_image = result["counters"][name]["total"].sum(1)
        assert per_image.shape == (2,) and per_image.sum() > 0
        np.testing.assert_array_equal(per_image, [s[name] for s in stats], err_msg=name)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    res = run_cli("train", "--data", "digits", "--out", out, "--steps", "5", "--channels", "4", "--hidden", "16",
                  "--batch-size", "8", "--quiet")
    assert res.returncode == 0, res.stderr
    return out / "model.pt"


def test_cli_lava_backend_writes_the_same_grid_and_counters(tiny_checkpoint, tmp_path):
    lava_png, torch_png = tmp_path / "lava.png", tmp_path / "torch.png"
    res = run_cli("sample", tiny_checkpoint, "--backend", "lava", "-n", "2", "--steps", "3", "-o", lava_png)
    assert res.returncode == 0, res.stderr
    assert "Lava window 10 steps" in res.stdout
    ref = run_cli("sample", tiny_checkpoint, "-n", "2", "--steps", "3", "-o", torch_png, "--quiet")
    assert ref.returncode == 0, ref.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(lava_png)), np.asarray(Image.open(torch_png)))
    report = json.loads(lava_png.with_suffix(".counters.json").read_text())
    assert report["images"] == 2 and report["denoising_steps"] == 3 and report["window"] == 10
    e0 = report["populations"]["e0"]
    assert len(e0["spikes_per_denoising_step"]) == 3 and e0["spikes_per_image"] > 0
    assert e0["synaptic_ops_per_image"] == e0["spikes_per_image"] * e0["fanout"]


def _group_alive(pgid: int) -> list:
    import subprocess

    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout.split("\n")
    return [line for line in out if line.split()[1:2] == [str(pgid)] and not line.split()[2].startswith("Z")]


def test_ctrl_c_stops_every_lava_process(tiny_checkpoint, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    out = tmp_path / "grid.png"
    proc = subprocess.Popen([sys.executable, "-m", "spikediff", "sample", str(tiny_checkpoint), "--backend", "lava",
                             "-n", "50", "--steps", "50", "-o", str(out)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(_group_alive(proc.pid)) < 5 and time.time() < deadline:  # Lava's workers are up
            time.sleep(0.5)
        assert len(_group_alive(proc.pid)) >= 5, "Lava never started"
        time.sleep(2)
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    time.sleep(1)
    assert _group_alive(proc.pid) == []
    assert not out.exists()  # nothing half-written
