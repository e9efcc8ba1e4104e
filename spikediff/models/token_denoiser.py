"""SDID (Spiking-Diffusion's spiking denoiser for absorbing-state discrete diffusion) over a grid of tokens.

Input, constant over the T SNN steps: the one-hot code of every grid cell (K codes plus the mask token,
K + 1 channels) and sinusoidal planes of the masked fraction. A one-hot input times a convolution is an
embedding lookup followed by a convolution, so no embedding table is needed on the chip: the host sends
the one-hot planes, the first synapse layer holds the embeddings. Then, as in the FSDDIM denoiser: LIF
convs on the grid (local), one dense LIF layer (global: which digit, which garment), and a non-spiking
readout whose mean synaptic current over the T steps is the K logits of each cell (``(K, G, G)`` order).

With ``feedback``, the dense layer also drives the last grid layer, so each cell's features know the global
choice rather than only adding to its logits. A dense layer into a grid is written as two plain convolutions
that every backend already runs: the dense layer as a G x G convolution without padding onto a 1 x 1 map
(``(hidden, 1, 1)``), and its feedback as a G x G convolution with padding G - 1 from that map back onto the
G x G grid (an output cell (i, j) meets the one input pixel at kernel tap (G - 1 - i, G - 1 - j): every tap is
one weight of the dense matrix, none is wasted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import SpikediffError
from .config import ModelConfig
from .denoiser import time_features
from .spiking_graph import SpikingGraph
from .spiking_vq import token_onehot

RATIO_SCALE = 1000.0  # the masked fraction r enters as time_features(r * RATIO_SCALE), like a DDPM step


class DenseConv(nn.Conv2d):
    """A dense layer between a G x G grid and a 1 x 1 map, held as the Conv2d that the exporter writes (module
    docstring) and computed as the matrix product it equals: torch's convolution of a 1 x 1 map with padding
    G - 1 took 30 times as long as the product in training."""

    def __init__(self, c_in: int, c_out: int, grid: int, onto_grid: bool, bias: bool = True):
        super().__init__(c_in, c_out, grid, padding=grid - 1 if onto_grid else 0, bias=bias)
        self.onto_grid = onto_grid

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        n, (c_out, c_in, g, _) = x.shape[0], weight.shape
        if not self.onto_grid:  # the grid onto the 1 x 1 map: each output is a dot product with the flat grid
            return F.linear(x.flatten(1), weight.flatten(1), bias).view(n, c_out, 1, 1)
        # from the 1 x 1 map: output cell (i, j) meets the one input pixel at tap (G - 1 - i, G - 1 - j)
        matrix = weight.flip(2, 3).permute(0, 2, 3, 1).reshape(c_out * g * g, c_in)
        y = F.linear(x.flatten(1), matrix).view(n, c_out, g, g)
        return y if bias is None else y + bias.view(1, -1, 1, 1)


@dataclass
class TokenDenoiserConfig(ModelConfig):
    codebook_size: int = 128  # K; token id K is the mask
    grid: int = 7  # G
    channels: int = 64
    hidden: int = 128
    time_features: int = 8
    num_steps: int = 4
    beta: float = 0.75
    threshold: float = 1.0
    readout_alpha: float = 0.5
    max_period: float = 10000.0
    feedback: bool = False  # the dense layer also drives the grid layer u (module docstring)

    positive = ("codebook_size", "grid", "channels", "hidden", "num_steps")


def token_input(tokens, ratio, codebook_size: int, time_dim: int, max_period: float = 10000.0,
                dtype="float32") -> np.ndarray:
    """Token grids (N, G, G) (id ``codebook_size`` = mask) at masked fractions ``ratio`` (N,) or scalar -> the
    SDID's host input (N, K + 1 + time_dim, G, G): one-hot planes, then time-feature planes.

    The one implementation: the PyTorch model, the Lava token sampler and the fixed-point simulator all
    call it, so every backend injects the same currents.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n, g = tokens.shape[0], tokens.shape[-1]
    ratio = np.broadcast_to(np.asarray(ratio, dtype=np.float64).reshape(-1), (n,))
    onehot = token_onehot(tokens, codebook_size + 1, dtype)
    feats = time_features(ratio * RATIO_SCALE, time_dim, max_period).astype(dtype)
    return np.concatenate([onehot, np.broadcast_to(feats[:, :, None, None], (n, time_dim, g, g))], axis=1)


class SpikingTokenDenoiser(SpikingGraph):
    graph = {
        "e0": [("conv_in", "input")],
        "e1": [("conv_e1", "e0")],
        "g": [("fc_1", "e1")],
        "u": [("conv_u", "e1")],
        "readout": [("fc_out", "g"), ("conv_ro", "u"), ("skip_ro", "e1")],
    }

    def __init__(self, config: TokenDenoiserConfig | None = None):
        super().__init__()
        self.config = cfg = (config or TokenDenoiserConfig()).validate()
        c, k, g = cfg.channels, cfg.codebook_size, cfg.grid
        self.conv_in = nn.Conv2d(k + 1 + cfg.time_features, c, 3, padding=1)
        self.conv_e1 = nn.Conv2d(c, c, 3, padding=1)
        if cfg.feedback:  # the dense layer as a convolution onto a 1 x 1 map, and back (module docstring)
            self.graph = {**self.graph, "u": [*self.graph["u"], ("fc_gu", "g")]}
            self.fc_1 = DenseConv(c, cfg.hidden, g, onto_grid=False)
            self.fc_gu = DenseConv(cfg.hidden, c, g, onto_grid=True, bias=False)
        else:
            self.fc_1 = nn.Linear(c * g * g, cfg.hidden)
        self.conv_u = nn.Conv2d(c, c, 3, padding=1)
        self.fc_out = nn.Linear(cfg.hidden, k * g * g, bias=False)
        self.conv_ro = nn.Conv2d(c, k, 3, padding=1, bias=False)
        self.skip_ro = nn.Conv2d(c, k, 1, bias=False)
        self._make_neurons()
        self._readout_shape = (k, g, g)
        # One-hot inputs: a single active channel per cell (plus the time planes) must reach the threshold.
        self.init_weights(input_gain=6.0, readout_gain=0.3)
        if cfg.feedback:  # each output cell meets `hidden` weights of its kernel, not all G x G taps of each
            nn.init.normal_(self.fc_gu.weight, 0.0, 3.0 / (2 * cfg.hidden) ** 0.5)

    @property
    def mask_id(self) -> int:
        return self.config.codebook_size

    def make_input(self, tokens: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """Host input: one-hot tokens (K + 1 channels) and time-feature planes of the masked fraction."""
        cfg = self.config
        if tokens.ndim != 3 or tokens.shape[1:] != (cfg.grid, cfg.grid):
            raise SpikediffError(f"SDID expects token grids of shape (N, {cfg.grid}, {cfg.grid}), got {tuple(tokens.shape)}")
        ratio = torch.as_tensor(ratio, dtype=torch.float64).cpu().numpy()
        inp = token_input(tokens.cpu().numpy(), ratio, cfg.codebook_size, cfg.time_features, cfg.max_period)
        return torch.from_numpy(inp).to(device=self.conv_in.weight.device, dtype=self.conv_in.weight.dtype)

    def example_input(self) -> torch.Tensor:
        cfg = self.config
        return self.make_input(torch.full((1, cfg.grid, cfg.grid), self.mask_id), torch.ones(1))

    def host_metadata(self) -> dict:
        cfg = self.config
        return {
            "input": "one-hot tokens (codebook_size + 1 channels, the last is the mask), then time_features "
                     "sinusoidal planes of masked fraction * ratio_scale, constant over T",
            "codebook_size": cfg.codebook_size,
            "grid": cfg.grid,
            "time_features": cfg.time_features,
            "max_period": cfg.max_period,
            "ratio_scale": RATIO_SCALE,
            "output": "mean over the T steps of the readout state: logits, reshaped to readout_shape (K, G, G)",
        }

    def forward(self, tokens: torch.Tensor, ratio: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Logits (N, K, G, G) for token grids with masks (id K) at masked fraction ``ratio`` (N,) or scalar."""
        return self.run_graph(self.make_input(tokens, ratio), stats).reshape(-1, *self._readout_shape)
