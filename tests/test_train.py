import json
import signal
import subprocess
import sys
import time

import torch
from conftest import ROOT

from spikediff.checkpoint import load_model, load_raw
from spikediff.data import load_images, to_model_range
from spikediff.diffusion import NoiseSchedule
from spikediff.models import DenoiserConfig, SpikingDenoiser
from spikediff.train import TrainConfig, train

TINY = dict(image_size=8, channels=8, hidden=64)


def _eval_loss(model, schedule):
    x0 = to_model_range(load_images("digits", "test")[0][:256])
    gen = torch.Generator().manual_seed(123)
    t = torch.randint(0, 1000, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    with torch.no_grad():
        target = schedule.target(x0, noise, t)
        return float(torch.nn.functional.mse_loss(model(schedule.add_noise(x0, noise, t), t), target))


def test_short_training_run_lowers_held_out_loss(tmp_path):
    cfg = TrainConfig(data="digits", steps=150, batch_size=64, lr=2e-3, warmup=10, checkpoint_every=150,
                      log_every=10, model=DenoiserConfig(**TINY))
    torch.manual_seed(cfg.seed)
    schedule = NoiseSchedule(prediction_type=cfg.prediction_type)
    before = _eval_loss(SpikingDenoiser(DenoiserConfig(**TINY)), schedule)
    path = train(cfg, tmp_path, progress=False, log=lambda _m: None)
    raw = load_raw(tmp_path / "last.pt")
    trained = SpikingDenoiser(DenoiserConfig(**TINY))
    trained.load_state_dict(raw["model"])
    after = _eval_loss(trained, schedule)
    assert after < 0.8 * before, (before, after)
    model, _, ckpt = load_model(path)  # the small EMA checkpoint loads on its own
    assert ckpt["train"]["step"] == 150
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(10, 151, 10))
    assert all(0 < rate < 1 for rate in log[-1]["rates"].values())


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    def cfg(steps):
        return TrainConfig(data="digits", steps=steps, batch_size=16, checkpoint_every=7,
                           model=DenoiserConfig(image_size=8, channels=4, hidden=16))

    train(cfg(20), tmp_path / "straight", progress=False, log=lambda _m: None)
    train(cfg(9), tmp_path / "resumed", progress=False, log=lambda _m: None)
    messages = []
    train(cfg(20), tmp_path / "resumed", progress=False, log=messages.append)
    assert messages == [f"resuming {tmp_path / 'resumed' / 'last.pt'} at step 9/20"]
    a, b = load_raw(tmp_path / "straight" / "last.pt"), load_raw(tmp_path / "resumed" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema_full"]["module"]:
        assert torch.equal(a["ema_full"]["module"][key], b["ema_full"]["module"][key]), key


def test_resume_refuses_different_options(tmp_path):
    import pytest

    from spikediff import SpikediffError

    small = DenoiserConfig(image_size=8, channels=4, hidden=16)
    train(TrainConfig(data="digits", steps=2, batch_size=4, model=small), tmp_path, progress=False,
          log=lambda _m: None)
    with pytest.raises(SpikediffError, match="batch_size=4"):
        train(TrainConfig(data="digits", steps=4, batch_size=8, model=small), tmp_path, progress=False)
    wider = DenoiserConfig(image_size=8, channels=8, hidden=16)
    with pytest.raises(SpikediffError, match=r"channels=4 \(this command: 8\)"):
        train(TrainConfig(data="digits", steps=4, batch_size=4, model=wider), tmp_path, progress=False)
    # the lateral matrix's options do not shape a model without one: such a run resumes
    ignored = DenoiserConfig(image_size=8, channels=4, hidden=16, lateral_decay=3.0, local_weight=0.5, groups=2)
    messages = []
    train(TrainConfig(data="digits", steps=4, batch_size=4, model=ignored), tmp_path, progress=False,
          log=messages.append)
    assert messages[0].startswith("resuming"), messages
    with pytest.raises(SpikediffError, match=r"lateral=False \(this command: True\)"):
        train(TrainConfig(data="digits", steps=6, batch_size=4, model=DenoiserConfig(
            image_size=8, channels=4, hidden=16, lateral=True)), tmp_path, progress=False)


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path):
    cmd = [sys.executable, "-m", "spikediff", "train", "--data", "digits", "--out", str(tmp_path),
           "--channels", "4", "--hidden", "16", "--batch-size", "8", "--checkpoint-every", "100000",
           "--steps", "100000", "--quiet"]
    # Ctrl-C reaches a foreground process; a shell's background job (CI started with `&`) would pass SIGINT
    # on as ignored, and Python then installs no KeyboardInterrupt handler: restore the default first.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        log = tmp_path / "log.jsonl"
        deadline = time.time() + 120
        while not (log.exists() and log.stat().st_size > 0) and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # no orphan if anything above failed
    assert proc.returncode == 130, err
    assert "run the same command to resume" in out
    step = load_raw(tmp_path / "last.pt")["step"]
    assert step >= 25
    cmd[cmd.index("--steps") + 1] = str(step + 3)
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"resuming {tmp_path / 'last.pt'} at step {step}/{step + 3}" in again.stdout
    assert load_raw(tmp_path / "last.pt")["step"] == step + 3


def test_two_runs_cannot_share_a_directory(tmp_path):
    import fcntl

    import pytest

    from spikediff import SpikediffError

    with open(tmp_path / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242")
        lock.flush()
        with pytest.raises(SpikediffError, match=r"another training run \(pid 4242\)"):
            train(TrainConfig(data="digits", steps=1, batch_size=2), tmp_path, progress=False)


def test_compact_resume_file_continues_a_run_in_an_empty_directory(tmp_path):
    """A pixel run, as a long run stopped on one machine: its resume.pt carries it on elsewhere, with the
    learning rate on its cosine decay from the step it had reached."""
    from spikediff.train.trainer import learning_rate

    def cfg(steps):
        return TrainConfig(data="digits", steps=steps, batch_size=8, warmup=2, decay_steps=12, lr_min=1e-5,
                           checkpoint_every=5, model=DenoiserConfig(image_size=8, channels=4, hidden=16))

    train(cfg(5), tmp_path / "first", progress=False, log=lambda _m: None)
    messages = []
    train(cfg(10), tmp_path / "moved", progress=False, log=messages.append,
          resume_from=tmp_path / "first" / "resume.pt")
    assert messages[0].startswith(f"continuing from the compact file {tmp_path / 'first' / 'resume.pt'} at step 5/10")
    start, end = load_raw(tmp_path / "first" / "resume.pt"), load_raw(tmp_path / "moved" / "last.pt")
    assert end["step"] == 10 and end["train_config"]["decay_steps"] == 12
    assert any(not torch.equal(start["model"][k].float(), v) for k, v in end["model"].items() if v.is_floating_point())
    assert learning_rate(cfg(10), 12) == 1e-5 and learning_rate(cfg(10), 7, warm_start=5) < 1e-3
    # a compact file is a sampler too (its EMA), and says what it was trained on (eval scores it against that)
    from spikediff.checkpoint import trained_on

    assert "train" not in start and trained_on(start) == "digits" and trained_on(end) == "digits"
    assert trained_on(load_raw(tmp_path / "moved" / "model.pt")) == "digits" and trained_on({}) is None
    import pytest

    from spikediff import SpikediffError

    with pytest.raises(SpikediffError, match="decay_steps=12"):  # the decay is part of the run
        train(TrainConfig(data="digits", steps=12, batch_size=8, warmup=2, checkpoint_every=5,
                          model=DenoiserConfig(image_size=8, channels=4, hidden=16)), tmp_path / "moved",
              progress=False)


def test_init_starts_a_fresh_run_from_another_checkpoints_weights_at_another_t(tmp_path):
    """--init for the pixel denoiser (e.g. a U-Net trained at T = 4, fine-tuned at T = 8): the run starts from the
    init's (EMA) weights, T and the other options that shape no weight are the run's; a network of other shapes,
    or a checkpoint of another kind, is refused in one line before the run starts."""
    import pytest
    from conftest import run_main

    from spikediff import SpikediffError

    first = train(TrainConfig(data="digits", steps=3, batch_size=8, model=DenoiserConfig(**TINY)),
                  tmp_path / "first", progress=False, log=lambda _m: None)
    cfg = TrainConfig(data="digits", steps=1, batch_size=8, lr=1e-9, init=str(first),
                      model=DenoiserConfig(**TINY, num_steps=2))
    second = train(cfg, tmp_path / "second", progress=False, log=lambda _m: None)
    source, _, _ = load_model(first)
    tuned, _, ckpt = load_model(second)
    assert tuned.config.num_steps == 2 and source.config.num_steps == 4
    assert ckpt["train"]["init"] == str(first)
    for name, value in source.state_dict().items():
        torch.testing.assert_close(tuned.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    wider = TrainConfig(data="digits", steps=1, batch_size=8, init=str(first),
                        model=DenoiserConfig(**{**TINY, "channels": 16}))
    with pytest.raises(SpikediffError, match=r"--init .*model.pt: .* is \(.*\), these options declare \(.*16"):
        train(wider, tmp_path / "wider", progress=False, log=lambda _m: None)
    out = tmp_path / "cli"
    res = run_main("train", "--data", "digits", "--init", "mnist-vq", "--steps", "1", "--out", out, "--quiet")
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--init mnist-vq: a spiking-vq checkpoint, not a pixel denoiser" in res.stderr
    # a resumed run has its own weights: it does not read --init again, wherever the file went
    (first.parent / "moved.pt").write_bytes(first.read_bytes())
    again = TrainConfig(data="digits", steps=2, batch_size=8, lr=1e-9, init=str(first.parent / "moved.pt"),
                        model=DenoiserConfig(**TINY, num_steps=2))
    train(again, tmp_path / "again", progress=False, log=lambda _m: None)
    (first.parent / "moved.pt").unlink()
    res = run_main("train", "--data", "digits", "--init", first.parent / "moved.pt", "--steps", "3",
                   "--batch-size", "8", "--lr", "1e-9", "--snn-steps", "2", "--channels", "8", "--hidden", "64",
                   "--out", tmp_path / "again", "--quiet")
    assert res.returncode == 0, res.stderr
    assert not (out / "model.pt").exists()
    res = run_main("train", "--data", "digits", "--init", first, "--channels", "16", "--steps", "1", "--out", out,
                   "--quiet")
    assert res.returncode == 2 and "these options declare" in res.stderr, res.stderr
