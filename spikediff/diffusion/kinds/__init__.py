"""Sampler kinds: the only code that knows a DDIM sampler from a token sampler.

A kind is one module behind one interface (``Kind``), registered by name:

- ``networks(model)``: the spiking networks a sampler deploys, by role ("denoiser", "decoder"), with the
  host-side facts each graph's metadata must carry;
- ``calibration(role, meta)``: host inputs that set a network's fixed-point input scale, from its metadata
  alone (so every backend compiles the same integers);
- ``program(metas, ...)``: a ``HostProgram``, the numpy host side of one sampling run: what the Lava host
  process and the bit-exact simulator both execute, so their images agree bit for bit;
- ``sample_torch(model, ...)``: the float PyTorch sampler, the reference.

The Lava runtime, the simulator, the cost model and the CLI ask the registry for a kind and never branch on
one. Adding a kind is one new module here and one line in ``_REGISTRY``.
"""

from __future__ import annotations

import numpy as np

from ... import SpikediffError


class HostProgram:
    """The host side of one sampling run, in numpy, over a batch of images at a time.

    State is one array per image, ``(k, *state_shape)`` float64 (token ids are stored as floats, exactly):
    a backend may hold it for all images and hand in any slice; ``update`` writes into the slice it gets.
    Every function acts on each image alone (no reductions across the batch), so the results do not depend
    on how images are batched or pipelined.
    """

    loop = "denoiser"  # the role evaluated ``steps`` times per image
    final: str | None = None  # the role evaluated once per image at the end (a decoder), if any
    steps: int
    state_shape: tuple

    def start(self, index: np.ndarray) -> np.ndarray:
        """Initial state of images ``index`` (their numbers in the run)."""
        raise NotImplementedError

    def inputs(self, state: np.ndarray, index: np.ndarray, step: int) -> np.ndarray:
        """The loop network's host input (k, *input shape), NIR layout, for denoising step ``step``."""
        raise NotImplementedError

    def update(self, state: np.ndarray, index: np.ndarray, step: int, readout: np.ndarray) -> None:
        """Apply the readout (k, *readout shape: the mean over T, float units) to the state, in place."""
        raise NotImplementedError

    def final_inputs(self, state: np.ndarray, index: np.ndarray) -> np.ndarray:
        """The final network's host input (k, *input shape)."""
        raise NotImplementedError

    def images(self, state: np.ndarray, final_readout: np.ndarray | None = None) -> np.ndarray:
        """Images (k, C, H, W) in [-1, 1], float32, from the state (and the final network's mean readout)."""
        raise NotImplementedError

    def extras(self, state: np.ndarray) -> dict:
        """Other per-image results worth returning (e.g. token grids)."""
        return {}


class Kind:
    name: str
    roles: tuple = ("denoiser",)
    description: str = ""
    step_name: str = "DDIM steps"  # what one evaluation of the loop network is, for people

    def networks(self, model) -> dict:
        """{role: (SpikingGraph, extra metadata)} of a loaded sampler."""
        raise NotImplementedError

    def calibration(self, role: str, meta: dict) -> np.ndarray:
        raise NotImplementedError

    def program(self, metas: dict, n: int, steps: int, seed: int = 0, first: int = 0, dtype="float32",
                **options) -> HostProgram:
        raise NotImplementedError

    def sample_torch(self, model, schedule, n: int, steps: int, seed: int = 0, batch_size: int = 64,
                     device="cpu", progress: bool = True, stats: dict | None = None, first: int = 0, **options):
        raise NotImplementedError

    def options(self, **given) -> dict:
        """The sampling options this kind takes (others given are an error)."""
        unknown = {k for k, v in given.items() if v is not None}
        if unknown:
            raise SpikediffError(f"{', '.join('--' + k for k in sorted(unknown))}: not an option of {self.name} "
                                 f"samplers")
        return {}


def _registry() -> dict:
    from .latent import LatentKind
    from .pixel import PixelKind
    from .tokens import TokenKind

    return {k.name: k for k in (PixelKind(), TokenKind(), LatentKind())}


_REGISTRY: dict | None = None


def registry() -> dict:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _registry()
    return _REGISTRY


def get(name: str) -> Kind:
    kinds = registry()
    if name not in kinds:
        raise SpikediffError(f"unknown sampler kind {name!r} (known: {', '.join(kinds)})")
    return kinds[name]


# NIR files written before graphs carried their kind name it by their network
_LEGACY = {"SpikingDenoiser": "fsddim", "SpikingTokenDenoiser": "spiking-vq", "TokenDecoder": "spiking-vq"}


def of_metadata(meta: dict) -> Kind | None:
    """The kind a spikediff graph belongs to, from its metadata; None for a graph from elsewhere."""
    name = meta.get("kind") or _LEGACY.get(meta.get("network"))
    return get(name) if name else None


def of_model(model) -> Kind:
    for kind in registry().values():
        if kind.owns(model):
            return kind
    raise SpikediffError(f"no sampler kind for a {type(model).__name__}")
