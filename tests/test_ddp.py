"""Data-parallel training: `torchrun --nproc_per_node 2 -m spikediff train` (gloo, CPU) takes the steps one
process takes on the same global batch, writes the run as one process would, and resumes with one process."""

import os
import subprocess
import sys

import torch
from conftest import ROOT, run_cli

from spikediff.checkpoint import load_raw

# a batch of 7: the two processes get 4 and 3 images, so the loss weighting and the global batch norm matter
OPTIONS = ["train", "--arch", "tiny", "--data", "digits", "--batch-size", "7", "--checkpoint-every", "2", "--quiet"]


def _torchrun(n: int, *args):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return subprocess.run([torchrun, "--standalone", "--nproc_per_node", str(n), "-m", "spikediff", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _assert_close(a: dict, b: dict, atol: float) -> None:
    for key, x in a.items():
        if isinstance(x, dict):
            _assert_close(x, b[key], atol)
        elif x.is_floating_point():
            torch.testing.assert_close(x, b[key], rtol=0, atol=atol, msg=key)
        else:
            assert torch.equal(x, b[key]), key


def test_two_processes_take_one_process_s_steps_and_resume_in_one(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    res = _torchrun(2, *OPTIONS, "--out", two, "--steps", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("checkpoint:") == 1  # process 0 reports, and writes
    res = run_cli(*OPTIONS, "--out", one, "--steps", "4")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    a, b = load_raw(two / "last.pt"), load_raw(one / "last.pt")
    assert a["step"] == b["step"] == 4
    assert torch.equal(a["generator"], b["generator"])  # the same data, drawn from the same stream
    assert any("running_var" in k for k in a["model"])  # batch norm statistics are compared too
    _assert_close(a["model"], b["model"], atol=1e-5)
    _assert_close(a["ema_full"]["module"], b["ema_full"]["module"], atol=1e-5)
    assert max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"]
               if a["model"][k].is_floating_point()) > 0  # two processes sum in another order: close, not equal

    # the two-process run resumes in one process, and continues as the one-process run does
    res = run_cli(*OPTIONS, "--out", two, "--steps", "6")
    assert res.returncode == 0, res.stderr
    assert f"resuming {two / 'last.pt'} at step 4/6" in res.stdout + res.stderr
    res = run_cli(*OPTIONS, "--out", one, "--steps", "6")
    assert res.returncode == 0, res.stderr
    a, b = load_raw(two / "last.pt"), load_raw(one / "last.pt")
    assert a["step"] == 6 and torch.equal(a["generator"], b["generator"])
    _assert_close(a["model"], b["model"], atol=1e-5)


def test_mixed_precision_and_data_parallel_options_are_checked(tmp_path):
    res = run_cli(*OPTIONS, "--out", tmp_path / "a", "--steps", "1", "--amp", "bf16", "--device", "cpu")
    assert res.returncode != 0 and "mixed precision is for CUDA devices" in res.stderr
    res = run_cli("train", "--model", "spiking-vq", "--data", "digits", "--out", tmp_path / "b", "--steps", "1",
                  env={"WORLD_SIZE": "2"})
    assert res.returncode != 0 and "data-parallel training (torchrun) is for --model fsddim" in res.stderr
