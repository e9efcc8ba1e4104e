"""FID and KID: the formulas against closed forms, and sanity on real data with the standard Inception
features (small N: the values are biased upwards, but their order is not)."""

import json

import numpy as np
import pytest
from conftest import run_cli

from spikediff import SpikediffError
from spikediff.metrics.fid import (
    InceptionFeatures,
    frechet_distance,
    kernel_inception_distance,
    reference_features,
    scores,
    statistics,
)

N = 100


def test_frechet_distance_of_gaussians_has_its_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5 + (1 + 1 + 4))
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 5))
    assert frechet_distance(*statistics(a), *statistics(a + 2)) == pytest.approx(5 * 4, rel=0.01)


def test_frechet_distance_equals_the_sqrtm_form_also_for_singular_covariances():
    from scipy import linalg

    rng = np.random.default_rng(2)
    for n in (500, 12):  # full rank, and fewer samples than dimensions (rank 11 of 40), as FID on a few images
        a, b = rng.normal(size=(n, 40)) @ rng.normal(size=(40, 40)), rng.normal(size=(300, 40)) + 0.3
        (mu1, s1), (mu2, s2) = statistics(a), statistics(b)
        sqrtm_form = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(sqrtm_form, rel=1e-6)
    with pytest.raises(SpikediffError, match="not finite"):
        frechet_distance(mu1, s1 * np.nan, mu2, s2)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=300)
    shifted, _ = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=300)
    assert abs(same) < 0.01 < shifted
    with pytest.raises(SpikediffError, match="at least 2 images"):
        kernel_inception_distance(a[:1], b)


@pytest.fixture(scope="module")
def extractor():
    return InceptionFeatures()


def test_fid_on_real_data_orders_datasets(extractor, mnist_root, fashion_root):
    mnist_test = reference_features("mnist", "test", N, extractor=extractor, progress=False)
    mnist_train = reference_features("mnist", "train", N, extractor=extractor, progress=False)
    fashion = reference_features("fashion-mnist", "test", N, extractor=extractor, progress=False)
    assert mnist_test.shape == (N, 2048) and np.isfinite(mnist_test).all()
    near = scores(mnist_test, mnist_train, kid_subsets=10)
    far = scores(fashion, mnist_train, kid_subsets=10)
    assert near["fid"] < 0.5 * far["fid"] and far["fid"] > 100
    assert near["kid"] < 0.3 * far["kid"]
    # cached: the second call reads the file, and gives the same features
    np.testing.assert_array_equal(reference_features("mnist", "test", N, extractor=None, progress=False), mnist_test)


def test_features_follow_the_pytorch_fid_protocol(extractor):
    # grey images are repeated to 3 channels: the same picture as uint8 grey, float grey and float RGB
    img = (np.arange(28 * 28).reshape(1, 1, 28, 28) % 256).astype(np.uint8)
    grey_u8 = extractor(img)
    grey = extractor(img / 255.0)
    rgb = extractor(np.repeat(img / 255.0, 3, axis=1))
    np.testing.assert_allclose(grey_u8, grey, atol=1e-5)
    np.testing.assert_allclose(grey, rgb, atol=1e-5)
    with pytest.raises(SpikediffError, match=r"expected images \(N, 1 or 3, H, W\)"):
        extractor(np.zeros((2, 28, 28)))


def test_cli_eval_scores_and_resumes(tmp_path, mnist_root):
    out = tmp_path / "ev"
    args = ["eval", "mnist-patch", "-n", "6", "--steps", "2", "--backend", "sim", "--ref-n", str(N),
            "--ref-split", "test", "-o", out]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "eval-sim-2steps.json").read_text())
    assert res["n"] == 6 and res["n_reference"] == N and res["fid"] > 0 and res["backend"] == "sim"
    assert (out / "eval-sim-2steps.png").is_file()
    (folder,) = out.glob("samples-sim-2steps-seed0-fx*")  # named by the compiled integers too
    chunk = folder / "0000000-6.npy"
    feats = chunk.with_name("0000000-6.pool3.npy")  # the chunk's Inception features, kept beside it
    assert np.load(feats).shape == (6, 2048)
    before = chunk.stat().st_mtime_ns, feats.stat().st_mtime_ns
    r = run_cli(*args)
    assert r.returncode == 0 and "reused 6 of 6 samples" in r.stdout + r.stderr
    assert (chunk.stat().st_mtime_ns, feats.stat().st_mtime_ns) == before
    assert json.loads((out / "eval-sim-2steps.json").read_text())["fid"] == pytest.approx(res["fid"])
    r = run_cli("eval", "-n", "2", "--data", "digits", "-o", tmp_path / "bad")
    assert r.returncode == 2 and "--data digits: its images are 8 px" in r.stderr


def test_reference_features_grow_from_the_cached_prefix(tmp_path, monkeypatch, mnist_root):
    from spikediff.data import load_images

    monkeypatch.setenv("SPIKEDIFF_CACHE", str(tmp_path))
    seen = []

    def pixels(images, progress=False, desc=""):  # a cheap stand-in for Inception: features from the pixels
        seen.append(len(images))
        flat = images.reshape(len(images), -1).astype(np.float64)
        return np.tile(flat, 3)[:, :2048]

    everything = pixels(load_images("mnist", "test", limit=130)[0][:, None])
    seen.clear()
    first = reference_features("mnist", "test", 100, extractor=pixels, progress=False, chunk=40)
    assert seen == [40, 40, 20]
    np.testing.assert_array_equal(first, everything[:100])
    # a smaller n slices the cached prefix, a larger one only extracts the images past it
    np.testing.assert_array_equal(reference_features("mnist", "test", 60, extractor=pixels, chunk=40), everything[:60])
    grown = reference_features("mnist", "test", 130, extractor=pixels, progress=False, chunk=40)
    assert seen == [40, 40, 20, 30]
    np.testing.assert_array_equal(grown, everything)
    assert sorted(p.name for p in (tmp_path / "fid").iterdir()) == ["mnist-test-100.npy", "mnist-test-130.npy"]
