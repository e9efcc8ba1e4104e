"""``spikediff eval``: generate samples with a backend (resumable, chunk by chunk) and score them by FID/KID.

Samples are written as ``.npy`` chunks, each atomically; a rerun (or a larger ``-n``) reuses every chunk
already there, because image i always starts from the same noise (``initial_noise`` with the seed). The
backends: ``torch`` (the float model), ``sim`` (Loihi fixed point, bit-exact simulator: what the
deployed model computes) and ``lava`` (the fixed-point Lava run itself; slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import SpikediffError
from ..atomic import write_json_atomic

BACKENDS = ("torch", "sim", "lava")
CHUNK = 256


def samples_folder(out_dir, backend: str, steps: int, seed: int, options: dict, deployed=None) -> Path:
    """Where ``generate`` keeps its chunks, named by what changes the samples: the spiking-vq temperature and
    unmasking order, a
    solver other than DDIM, and for the deployed backends the compiled integers (``deployed``: the compiled
    sampler), so samples of an older compile of the same checkpoint are never reused."""
    artifact = "" if deployed is None else f"-fx{deployed.digest()[:12]}"
    return Path(out_dir) / f"samples-{backend}-{steps}steps-seed{seed}{_suffix(options)}{artifact}"


def deploy(model, schedule, backend: str, bias_correction: bool = True):
    """The compiled fixed-point sampler the sim and lava backends run (None for torch)."""
    if backend == "torch":
        return None
    from ..export.deployment import compile_sampler
    from ..export.nir_graph import sampler_graphs

    # compact: a U-Net's derived kernels as merged taps, never dense (the same integers, ``export.plan``)
    return compile_sampler(sampler_graphs(model, schedule, compact=True), fixed_point=True,
                           bias_correction=bias_correction)


def _suffix(options: dict) -> str:
    temp = "" if options.get("temperature") is None else f"-temp{options['temperature']:g}"
    solver = "" if options.get("solver", "ddim") == "ddim" else f"-{options['solver']}"
    order = "" if options.get("unmask", "random") == "random" else f"-{options['unmask']}"
    return temp + solver + order


def _features_path(chunk_path: Path) -> Path:
    return chunk_path.with_name(chunk_path.stem + ".pool3.npy")


def chunk_features(folder: Path, samples: np.ndarray, extractor, chunk: int = CHUNK,
                   progress: bool = True) -> np.ndarray:
    """Inception features of ``samples``, computed per sample chunk of ``folder`` and kept beside it, so a
    rerun or a larger ``-n`` only extracts what is new (the extractor is the slow part on a CPU)."""
    from ..atomic import save_npy_atomic
    from .fid import FEATURES

    out = np.zeros((len(samples), FEATURES))
    for start in range(0, len(samples), chunk):
        stop = min(start + chunk, len(samples))
        path = _features_path(Path(folder) / f"{start:07d}-{stop - start}.npy")
        got = np.load(path) if path.is_file() else None
        if got is None or got.shape != (stop - start, FEATURES):
            got = extractor((samples[start:stop] + 1) / 2, progress=progress,
                            desc=f"inception features of samples [{start}:{stop}] of {len(samples)}")
            save_npy_atomic(got, path)
        out[start:stop] = got
    return out


def generate(model, schedule, out_dir: Path, n: int, steps: int, backend: str, seed: int = 0, device: str = "cpu",
             chunk: int = CHUNK, progress: bool = True, log=print, deployed=None, **options) -> np.ndarray:
    """(n, C, H, W) samples in [-1, 1], generated chunk by chunk into ``out_dir`` (reused when present). Image i
    of a chunk starting at ``start`` is image ``start + i`` of the run (its noise and draws), so chunks add up to
    one run. ``options``: the kind's sampling options (spiking-vq: temperature)."""
    import torch
    from tqdm.auto import tqdm

    from ..atomic import save_npy_atomic
    from ..diffusion import kinds

    if backend not in BACKENDS:
        raise SpikediffError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    kind = kinds.of_model(model)
    options = kind.options(**options)
    shape = model.image_shape
    sd = deployed if deployed is not None else deploy(model, schedule, backend)  # compiled once for every chunk
    folder = samples_folder(out_dir, backend, steps, seed, options, sd)
    folder.mkdir(parents=True, exist_ok=True)
    noise = _run_noise(model, kind, n, seed)
    out = np.zeros((n, *shape), np.float32)
    reused = 0
    with tqdm(total=n, desc=f"samples ({backend}, {steps} steps)", unit="image", disable=not progress) as bar:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            path = folder / f"{start:07d}-{stop - start}.npy"
            if path.is_file():
                got = np.load(path)
                if got.shape == (stop - start, *shape):
                    out[start:stop], reused = got, reused + len(got)
                    bar.update(len(got))
                    continue
            extra = dict(options, first=start)
            if noise is not None:
                extra["noise"] = noise[start:stop]
            if backend == "torch":
                with torch.no_grad():
                    images = kind.sample_torch(model, schedule, stop - start, steps, seed=seed, device=device,
                                               progress=False, **extra).numpy()
            elif backend == "sim":
                from ..hardware_sim.sampler import sample_sim

                images = sample_sim(sd, stop - start, steps, seed=seed, device=device, **extra)["images"]
            else:
                from ..runtime.run import sample_lava

                images = sample_lava(sd, stop - start, steps, seed=seed, target="sim", progress=False, **extra)["images"]
            save_npy_atomic(images.astype(np.float32), path)
            _features_path(path).unlink(missing_ok=True)  # features of an older chunk under this name
            out[start:stop] = images
            bar.update(stop - start)
    if reused:
        log(f"reused {reused} of {n} samples already in {folder}")
    return out


def _run_noise(model, kind, n: int, seed: int):
    """The initial noise of a whole run of a DDIM kind (drawn once, so chunks are slices of one run), or None."""
    from ..diffusion.sampler import initial_noise

    shape = getattr(model, "latent_shape", None) or (model.image_shape if kind.name == "fsddim" else None)
    return None if shape is None else initial_noise(n, tuple(shape), seed).numpy()


def evaluate(model, schedule, out_dir, data: str, n: int, steps: int, backend: str, seed: int = 0,
             ref_split: str = "train", ref_n: int = 10000, device: str = "cpu", progress: bool = True,
             kid_subsets: int = 100, source: str = "", log=print, bias_correction: bool = True, **options) -> dict:
    """Generate (or reuse) n samples, score them against ``ref_n`` images of ``data``/``ref_split``; writes
    ``eval-<backend>-<steps>steps.json`` and a grid of the first 64 samples into ``out_dir``.
    ``bias_correction=False``: the deployed backends run the compile without readout bias correction."""
    import torch

    from ..images import save_grid
    from .fid import InceptionFeatures, reference_features, scores

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SpikediffError(f"output {out}: exists and is not a directory")
    from ..data.datasets import image_size

    if image_size(data) != model.image_shape[-1]:
        raise SpikediffError(f"--data {data}: its images are {image_size(data)} px, the model makes "
                             f"{model.image_shape[-1]} px")
    extractor = InceptionFeatures(device=device)
    reference = reference_features(data, ref_split, ref_n, extractor=extractor, progress=progress)
    from ..diffusion import kinds

    options = kinds.of_model(model).options(**options)
    sd = deploy(model, schedule, backend, bias_correction)
    samples = generate(model, schedule, out, n, steps, backend, seed=seed, device=device, progress=progress, log=log,
                       deployed=sd, **options)
    feats = chunk_features(samples_folder(out, backend, steps, seed, options, sd), samples,
                           extractor, progress=progress)
    result = {"source": source, "backend": backend, "denoising_steps": steps,
              "snn_steps": model.num_steps,
              "seed": seed, "data": data, "reference": f"{data} {ref_split}, first {len(reference)} images",
              **scores(feats, reference, kid_subsets=kid_subsets)}
    if sd is not None:
        result["artifact_sha256"] = sd.digest()
        result["bias_correction"] = bias_correction
    name = f"eval-{backend}-{steps}steps{_suffix(options)}" + ("" if bias_correction else "-no-bias-correction")
    result.update(options)
    save_grid(torch.from_numpy(samples[:64]), out / f"{name}.png")
    write_json_atomic(result, out / f"{name}.json")
    result["json"] = str(out / f"{name}.json")
    return result
