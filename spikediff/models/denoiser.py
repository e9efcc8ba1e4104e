"""FSDDIM-style fully spiking denoiser: a small spiking U-Net with a synaptic-current readout.

Structure (every hidden population is a Lava-exact LIF, see ``neurons.py``; H = image size)::

    input   = [x_t, time planes]                host tensor, injected as a current every SNN step
    e0      = LIF(conv_in(input))               C  x H   x H     full resolution
    e1      = LIF(conv_e1(e0))                  C  x H   x H     -----------------------------------+
    d1      = LIF(down_1(e1))      3x3 s2       2C x H/2 x H/2                                      |
    d2      = LIF(down_2(d1))      3x3 s2       2C x H/4 x H/4   -----------------+                 |
    g       = LIF(fc_1(d2))        dense        hidden           global           |                 |
    u       = LIF(conv_u(d2))                   2C x H/4 x H/4   decoder          |                 |
    readout = CUBA(fc_out(g) + conv_ro(u) + skip_px(e1))        16 x H/4 x H/4  <--+ 6x6 s4 <--------+
    output  = pixel_shuffle(mean over the T steps of the readout current, 4)

The readout is non-spiking: its synaptic current averaged over the T SNN steps is the real-valued
prediction ("synaptic current learning", FSDDIM). Each readout location holds the 16 pixels of one 4x4
patch (the readout is flat; ``fc_out`` writes the same order), so the decoder never upsamples: a U-Net's
upsampling has no Conv2d form (NIR and Lava have no transposed convolution), while "patch layout" is only the
order in which the host reads the readout currents. The diffusion time step enters as constant input planes
(sinusoidal features of t), so the whole input is one tensor the Lava sampler can inject. Three paths meet at the readout: the two
full-resolution layers give every output pixel a spiking view of its own neighbourhood (without them
samples keep a speckled background), the dense layer sees the whole digit, the decoder places strokes. Only
Conv2d, LIF, a non-spiking CUBA readout and fan-in sums are used: every piece is a NIR node.

Lava's one-step delay per synapse layer (design decision)
---------------------------------------------------------
Training runs the layers without delay: at SNN step t every layer sees its inputs' spikes of step t,
as snnTorch does. On Lava each Dense/Conv adds one step, so a path through k synapse layers arrives k
steps late. Because the input is constant over the T steps and all state starts at zero, a chain of
layers on Lava is an exact time shift of the undelayed run. Where paths of different depth meet (the
readout: 6, 6 and 3 synapse layers) the deployment pads the shorter path with delays so that
every input of a neuron has the same latency; the Lava run is then the undelayed run shifted by the
network depth, and the readout is averaged over the T steps after that shift. Training with the delays
instead would leave the deep layers silent for most of a short (T <= 4) window.
``SpikingDenoiser.depths()`` gives the latency of every population that the deployment must align.

Biases are the one place where "delayed = shifted" needs care: a Lava neuron integrates its bias from
the first step, before its delayed input arrives. Resetting each layer's state at the step its input
starts (Lava's ``LIFReset`` zeroes u and v and then integrates that step's input, with a per-process
``reset_offset``) discards that early build-up and the spikes it could cause, and is also what separates
consecutive denoising steps inside one Lava run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import SpikediffError
from .config import ModelConfig
from .spiking_graph import SpikingGraph

PATCH = 4  # pixels per side of one readout location (two stride-2 stages)


@dataclass
class DenoiserConfig(ModelConfig):
    image_size: int = 28
    in_channels: int = 1
    channels: int = 32  # C: full-resolution width; the strided and decoder layers have 2C
    hidden: int = 256  # neurons of the dense (global) layer
    time_features: int = 8
    num_steps: int = 4  # T: SNN steps per denoiser call
    beta: float = 0.75  # hidden membrane decay, 1 - dv
    threshold: float = 1.0
    readout_alpha: float = 0.5  # readout synaptic-current decay, 1 - du
    max_period: float = 10000.0
    # lateral-selection spiking diffusion (``lateral.py``): off by default, the plain FSDDIM-style denoiser
    lateral: bool = False  # the lateral matrix: a recurrent synapse within the decoder layer u
    selection: bool = False  # the spiking substructure-selection network gating u's channel groups
    groups: int = 4  # G, substructures (channel groups of u)
    local_weight: float = 0.01  # mu, weight of the lateral matrix's local (plasticity) objective
    lateral_decay: float = 8.0  # lambda, its weight decay (keeps the rule's fixed point below threshold)

    positive = ("image_size", "in_channels", "channels", "hidden", "num_steps", "groups")

    def ignored(self) -> tuple:
        return (() if self.lateral else ("local_weight", "lateral_decay")) + (() if self.selection else ("groups",))

    def check(self) -> None:
        if self.image_size % PATCH:
            raise SpikediffError(f"image_size={self.image_size} must be a multiple of {PATCH}")
        if self.selection and (2 * self.channels) % self.groups:
            raise SpikediffError(f"groups={self.groups} must divide the decoder's 2 x channels = {2 * self.channels}")
        if self.local_weight < 0 or self.lateral_decay < 0:
            raise SpikediffError(f"local_weight={self.local_weight} and lateral_decay={self.lateral_decay} must be "
                                 f">= 0")


def time_features(t, dim: int, max_period: float = 10000.0) -> np.ndarray:
    """Sinusoidal features of diffusion steps, (N,) -> (N, dim) float32 (float64 maths).

    The one implementation: the PyTorch model and the Lava sampler both call it, so both backends inject
    bit-identical input currents.
    """
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half)
    angles = t[:, None] * freqs[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


class SpikingDenoiser(SpikingGraph):
    # The network as a graph, in evaluation order: population -> [(synapse layer, source population)].
    # "input" is the host tensor; "readout" is the non-spiking CUBA population; the rest are LIF.
    graph = {
        "e0": [("conv_in", "input")],
        "e1": [("conv_e1", "e0")],
        "d1": [("down_1", "e1")],
        "d2": [("down_2", "d1")],
        "g": [("fc_1", "d2")],
        "u": [("conv_u", "d2")],
        "readout": [("fc_out", "g"), ("conv_ro", "u"), ("skip_px", "e1")],
    }

    def __init__(self, config: DenoiserConfig | None = None):
        super().__init__()
        self.config = cfg = (config or DenoiserConfig()).validate()
        c, quarter = cfg.channels, cfg.image_size // PATCH
        out = cfg.in_channels * PATCH * PATCH
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.time_features, c, 3, padding=1)
        self.conv_e1 = nn.Conv2d(c, c, 3, padding=1)
        self.down_1 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down_2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.fc_1 = nn.Linear(2 * c * quarter * quarter, cfg.hidden)
        self.conv_u = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.fc_out = nn.Linear(cfg.hidden, out * quarter * quarter, bias=False)
        self.conv_ro = nn.Conv2d(2 * c, out, 3, padding=1, bias=False)
        self.skip_px = nn.Conv2d(c, out, 6, stride=4, padding=1, bias=False)
        if cfg.lateral or cfg.selection:
            from .lateral import extend

            extend(self)
        self._make_neurons()
        self._readout_shape = (out, quarter, quarter)
        self.init_weights()
        if cfg.selection:
            from .lateral import open_selection

            open_selection(self)

    def make_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Host-side input tensor: image channels followed by constant time-feature planes."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise SpikediffError(
                f"denoiser expects images of shape (N, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}),"
                f" got {tuple(x.shape)}"
            )
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        feats = torch.from_numpy(time_features(t.cpu().numpy(), cfg.time_features, cfg.max_period)).to(x)
        planes = feats[:, :, None, None].expand(-1, -1, cfg.image_size, cfg.image_size)
        return torch.cat([x, planes], dim=1)

    def readout_current(self, x: torch.Tensor, t: torch.Tensor, stats: dict | None = None,
                        trains: dict | None = None) -> torch.Tensor:
        """Mean readout synaptic current over the T steps, flat in patch order (N, 16*C_in*H/4*W/4).

        If ``stats`` is a dict, spike counts per layer (summed over batch and SNN steps) are added to it;
        ``trains`` as in ``run_graph``.
        """
        return self.run_graph(self.make_input(x, t), stats, trains=trains)

    def forward(self, x: torch.Tensor, t: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Predict from noisy images x (N, C, H, W) at diffusion steps t (N,) or scalar.

        In training mode with a lateral matrix, ``self.local_loss`` is then its local objective for this
        batch (``lateral.local_objective``), which the trainer adds with weight ``local_weight``."""
        cfg = self.config
        trains = {"u": []} if self.training and cfg.lateral and cfg.local_weight > 0 else None
        current = self.readout_current(x, t, stats, trains)
        self.local_loss = None
        if trains is not None:
            from .lateral import local_objective

            self.local_loss = local_objective(trains["u"], self.lateral.weight, cfg.lateral_decay)
        return F.pixel_shuffle(current.reshape(-1, *self._readout_shape), PATCH)

    @property
    def image_shape(self) -> tuple:
        cfg = self.config
        return (cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    def host_metadata(self) -> dict:
        """What the host does around the graph, for the NIR file's metadata (``export.nir_graph``)."""
        return pixel_host_metadata(self.config, PATCH)

    def example_input(self) -> torch.Tensor:
        cfg = self.config
        return self.make_input(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size), torch.zeros(1))


def pixel_host_metadata(cfg, patch: int) -> dict:
    """The host program of every pixel denoiser (patch network or U-Net): image and time planes in, the readout's
    mean over T out, unpatched into the image."""
    return {
        "input": "image channels, then time_features sinusoidal planes of the diffusion step, constant over T",
        "time_features": cfg.time_features,
        "max_period": cfg.max_period,
        "output": "mean over the T steps of the readout state, reshaped to readout_shape, then pixel_shuffle by patch",
        "image_shape": [cfg.in_channels, cfg.image_size, cfg.image_size],
        "patch": patch,
    }
