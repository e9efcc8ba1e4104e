"""The DDIM loop inside one Lava run (Loihi2SimCfg, floating point) against the PyTorch sampler."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from spikediff.diffusion import NoiseSchedule
from spikediff.diffusion.sampler import initial_noise, sample_torch
from spikediff.models import DenoiserConfig, SpikingDenoiser


@pytest.mark.parametrize("images,period,window", [(1, 4, 10), (2, 4, 10), (5, 4, 10), (8, 4, 10), (3, 10, 10),
                                                  (4, 3, 3)])
def test_pipeline_runs_every_step_of_every_image_once_and_in_order(images, period, window):
    from spikediff.export.pipeline import Pipeline

    pipe = Pipeline(images=images, steps=3, num_steps=min(period, 4), period=period, window=window)
    slots = {}
    for slot in range(pipe.slots + 5):
        job = pipe.job(slot)
        if job is not None:
            assert job not in slots
            slots[job] = slot
    assert sorted(slots) == [(i, s) for i in range(images) for s in range(3)]
    for i in range(images):
        for s in range(1, 3):  # the next step's input starts after the previous readout is complete
            assert (slots[i, s] - slots[i, s - 1]) * period >= window
    assert pipe.job(pipe.slots - 1) is not None and pipe.lava_steps == (pipe.slots - 1) * period + window
    # a population at latency 2 computes slot 0's SNN steps at Lava steps 3 .. 3 + T - 1
    assert pipe.phase(2, 2) is None and pipe.phase(3, 2) == (0, 0)
    assert pipe.phase(2 + pipe.num_steps, 2) == (0, pipe.num_steps - 1)
    if images > 1 and period < window:  # pipelined: more than one image in flight
        assert pipe.lanes == min(images, -(-window // period)) > 1


def test_lava_sampler_equals_pytorch_images_and_spikes():
    from spikediff.export.deployment import compile_sampler
    from spikediff.export.nir_graph import sampler_graphs
    from spikediff.runtime.run import sample_lava

    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16)).eval()
    schedule = NoiseSchedule(1000, "v_prediction")
    noise = initial_noise(4, (1, 8, 8), 0)  # 3 images in flight, then a second round with idle slots
    sd = compile_sampler(sampler_graphs(model, schedule))
    result = sample_lava(sd, 4, 3, noise=noise.numpy(), progress=False)
    expected, stats = [], []
    model64 = model.double()  # the float path computes in float64 throughout
    for i in range(len(noise)):
        st = {}
        expected.append(sample_torch(model64, schedule, 1, 3, noise=noise[i:i + 1].double(), progress=False,
                                     stats=st)[0].numpy())
        stats.append(st)
    np.testing.assert_allclose(result["images"], np.stack(expected), rtol=0, atol=1e-6)
    for name in model.spiking_layers:
        per_image = result["counters"][name]["active"].sum(1)
        assert per_image.shape == (4,) and per_image.sum() > 0
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
    assert "2 images in flight, one evaluation every 4 steps" in res.stdout
    ref = run_cli("sample", tiny_checkpoint, "-n", "2", "--steps", "3", "-o", torch_png, "--quiet")
    assert ref.returncode == 0, ref.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(lava_png)), np.asarray(Image.open(torch_png)))
    report = json.loads(lava_png.with_suffix(".counters.json").read_text())
    assert report["images"] == 2 and report["denoising_steps"] == 3 and report["window"] == 10 and report["period"] == 4
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


def test_lava_target_selection(monkeypatch):
    from spikediff import SpikediffError, lava_compat
    from spikediff.runtime import session

    lava_compat.import_lava()
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg

    monkeypatch.setattr(session, "loihi2_available", lambda: False)
    cfg, where = session.run_config("auto")
    assert isinstance(cfg, Loihi2SimCfg) and "simulator" in where
    with pytest.raises(SpikediffError, match="lava-loihi.*not installed.*--lava-target sim"):
        session.run_config("loihi2")
    with pytest.raises(SpikediffError, match="'gpu'"):
        session.run_config("gpu")
    monkeypatch.setattr(session, "loihi2_available", lambda: True)  # what a machine with the extension sees
    cfg, where = session.run_config("auto", "fixed_pt")
    from spikediff.runtime import lava_processes as lp

    # as lava-dl's PilotNet tutorials: no tag, the host processes' fixed-point models named in an exception map
    assert isinstance(cfg, Loihi2HwCfg) and cfg.select_tag is None and "Loihi 2" in where
    assert cfg.exception_proc_model_map[lp.HostLoop] is lp.PyHostLoopFixed
    with pytest.raises(SpikediffError, match="fixed point only"):
        session.run_config("loihi2", "floating_pt")
    assert isinstance(session.run_config("sim")[0], Loihi2SimCfg)
    from lava.proc.conv.process import Conv

    # on the CPU simulator in fixed point, Lava's Conv is computed in torch (same integers, see the next test)
    assert session.run_config("sim", "fixed_pt")[0].exception_proc_model_map[Conv] is lp.PyConvFixedTorch
    assert Conv not in session.run_config("sim", "floating_pt")[0].exception_proc_model_map


@pytest.mark.parametrize("case", [
    # input (x, y, c), out channels, kernel (x, y), stride, padding, dilation, groups, message bits
    ((6, 5, 4), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0),  # binary spikes
    ((7, 6, 4), 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, 8),  # graded, per-axis geometry, groups
    ((5, 4, 6), 4, (1, 1), (1, 1), (0, 0), (1, 1), 1, 8),  # 1x1: flipped axes of length 1 (a negative stride)
])
def test_the_torch_conv_model_equals_lavas_own_integers(case):
    """``PyConvFixedTorch`` stands in for Lava's fixed-point Conv model on the CPU simulator: every step's
    output must be the same integers as Lava's own (scipy) model gives, through real Lava runs of both."""
    from spikediff import lava_compat
    from spikediff.runtime import lava_processes as lp

    lava_compat.import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    shape, out_channels, kernel, stride, padding, dilation, groups, bits = case
    rng = np.random.default_rng(0)
    weight = rng.integers(-128, 128, size=(out_channels, *kernel, shape[2] // groups)).astype(np.int32)
    steps = 4
    if bits:
        data = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(*shape, steps)).astype(np.int32)
    else:
        data = (rng.random((*shape, steps)) < 0.3).astype(np.int32)
    outputs = []
    for exceptions in ({}, {Conv: lp.PyConvFixedTorch}):
        src = RingBuffer(data=data)
        conv = Conv(weight=weight, input_shape=shape, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, num_message_bits=bits)
        src.s_out.connect(conv.s_in)
        monitor = Monitor()
        monitor.probe(conv.a_out, steps)
        try:
            conv.run(condition=RunSteps(num_steps=steps),
                     run_cfg=Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=exceptions))
            outputs.append(monitor.get_data()[conv.name]["a_out"])
        finally:
            conv.stop()
    assert np.abs(outputs[0]).max() > 0
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_cli_lava_target_loihi2_without_the_extension_is_a_clear_error(tiny_checkpoint, tmp_path):
    res = run_cli("sample", tiny_checkpoint, "--backend", "lava", "--lava-target", "loihi2", "-n", "1",
                  "-o", tmp_path / "g.png")
    assert res.returncode != 0 and "lava-loihi" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "g.png").exists()
