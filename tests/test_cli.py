import functools
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from spikediff.checkpoint import SHIPPED, SHIPPED_MODELS, CheckpointError, load_model, resolve, trained_on, trained_steps


def test_sample_from_the_shipped_checkpoint(tmp_path):
    out = tmp_path / "grid.png"
    res = run_cli("sample", "-n", "4", "--steps", "3", "-o", out)
    assert res.returncode == 0, res.stderr
    assert f"wrote 4 samples to {out}" in res.stdout
    assert "\nd0_out " in res.stdout and "(3 DDIM steps x T=4)" in res.stdout  # the spike summary, U-Net layers
    img = np.asarray(Image.open(out))
    assert img.ndim == 2 and img.std() > 10  # a 2x2 grid of non-blank images


DATASETS = ("mnist", "fashion-mnist")


def _dataset(name):
    """The dataset a shipped model was trained on ("mnist-vq": the spiking-vq model of MNIST)."""
    return name.removesuffix("-vq").removesuffix("-latent").removesuffix("-patch")


@functools.cache
def _samples(name):
    from spikediff.diffusion import kinds

    model, schedule, _ = load_model(name)
    x = kinds.of_model(model).sample_torch(model, schedule, 64, 20, seed=1, progress=False)
    return ((x + 1) / 2).clamp(0, 1).numpy()[:, 0]


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_checkpoint_samples_have_their_datasets_statistics(mnist_root, fashion_root, name):
    """Not noise, and not the other dataset: brightness and background share near the model's own data
    (MNIST: mean 0.12, 84% background; Fashion-MNIST: 0.29, 54%) and nearer to it than to the other's."""
    from spikediff.data import load_images

    x, own = _samples(name), _dataset(name)
    stats = {d: (load_images(d, "test", limit=1000)[0] / 255.0) for d in DATASETS}
    mean = {d: abs(x.mean() - r.mean()) for d, r in stats.items()}
    background = {d: abs((x < 0.1).mean() - (r < 0.1).mean()) for d, r in stats.items()}
    assert mean[own] < 0.08 and background[own] < 0.15, (mean, background)
    assert mean[own] == min(mean.values()) and background[own] == min(background.values())


@pytest.mark.parametrize("name, bar", [("mnist", 0.10), ("mnist-patch", 0.15), ("mnist-vq", 0.35),
                                       ("mnist-latent", 0.25)])
def test_shipped_checkpoint_samples_are_recognisable_digits(mnist_root, name, bar):
    """The digit probe is confident on about 64% of real test digits, 29% of the patch DDIM's samples,
    19% of the U-Net's (its FID is the better one: 256 samples; 16% of these 64),
    51% of the spiking-vq sampler's, 36% of the latent DDIM's (64 samples)
    and about 3% of speckle (benchmarks/results/digit_probe.md, README):
    far from noise, not yet real digits. The bars catch a broken checkpoint or sampler, and the classes
    must all be covered."""
    from spikediff.metrics import digit_probe_score, fit_digit_probe

    score = digit_probe_score(fit_digit_probe(), _samples(name))
    assert score["confident"] > bar, score
    assert score["classes"] >= 8


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_checkpoints_are_small_and_were_made_by_spikediff_train(name):
    # every shipped sampler is in the repository's history (an asset copies a committed checkpoint blob, which
    # costs the repository nothing more): the largest, fashion-mnist-vq with its 256-wide SDID (with feedback) and
    # 128-wide decoder in float16, is 7.7 MiB
    assert SHIPPED_MODELS[name].stat().st_size < 8 * 2**20
    model, schedule, ckpt = load_model(name)
    # a sampler's model.pt records its run in "train"; the U-Net is shipped as its run's compact resume file
    assert trained_on(ckpt) == _dataset(name) and trained_steps(ckpt) >= 1000
    if schedule is None:  # spiking-vq: both stages trained, both networks at T <= 4
        assert ckpt["train"]["vq_step"] >= 1000
        assert model.image_shape == (1, 28, 28)
        assert model.sdid.config.num_steps <= 4 and model.vq.config.num_steps <= 4
    elif ckpt.get("kind") == "latent-ddim":  # the denoiser over the 7x7 latents and the decoder, both at T <= 4
        assert model.image_shape == (1, 28, 28) and model.latent_shape == (16, 7, 7)
        assert model.num_steps <= 4 and model.vq.config.num_steps <= 4
    else:
        assert model.config.image_size == 28 and model.config.num_steps <= 4
        assert (getattr(model.config, "arch", None) == "small") == (name == "mnist")  # MNIST's is the U-Net


def test_the_shipped_unet_is_the_committed_run_file():
    """The README says where `mnist` came from: the committed compact resume file of its run, byte for byte (one
    blob in the repository's history)."""
    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoints" / "unet-small.resume.pt"
    assert SHIPPED_MODELS["mnist"].read_bytes() == committed.read_bytes()


def test_a_shipped_name_resolves_unless_a_file_has_it(tmp_path, monkeypatch):
    assert resolve(None) == SHIPPED == resolve("mnist")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").write_text("not a checkpoint")
    assert resolve("mnist") == Path("mnist")
    with pytest.raises(CheckpointError, match="checkpoint mnist: not a readable PyTorch file"):
        load_model("mnist")


def test_missing_checkpoint(tmp_path):
    res = run_cli("sample", tmp_path / "nope.pt", "-o", tmp_path / "x.png")
    assert res.returncode == 2
    assert f"checkpoint {tmp_path / 'nope.pt'}: no such file" in res.stderr
    assert "Traceback" not in res.stderr


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    res = run_cli("sample", bad, "-o", tmp_path / "x.png")
    assert res.returncode == 2 and "not a readable PyTorch file" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["sample", "-n", "0"], "argument -n/--num: 0 must be >= 1"),
    (["sample", "--backend", "loihi"], "argument --backend: invalid choice"),
    (["sample", "-o", "grid.jpg"], "output grid.jpg: must end in .png"),
    (["train", "--data", "cifar10", "--out", "x"], "argument --data: invalid choice"),
    (["train", "--data", "digits", "--out", "x", "--beta", "0.7"], "beta=0.7 must be in [0, 1] and a multiple"),
    (["data", "fetch", "mnist", "--from", "/nonexistent/dir"], "--from /nonexistent/dir: no such directory"),
])
def test_bad_options_give_clear_errors(args, message, tmp_path):
    res = run_cli(*args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_train_into_a_file_path_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = run_cli("train", "--data", "digits", "--out", f, "--steps", "1")
    assert res.returncode == 2 and "exists and is not a directory" in res.stderr


def test_data_info_lists_the_bundled_digits():
    res = run_cli("data", "info")
    assert res.returncode == 0, res.stderr
    assert "digits" in res.stdout and "1438" in res.stdout
