"""FSDDIM-style fully spiking denoiser with a synaptic-current readout.

Structure (all hidden neurons are Lava-exact LIF, see ``neurons.py``)::

    input  = [x_t, time planes]          host-side tensor, injected as a current every SNN step
    s_in   = LIF(conv_in(input))          C  x H   x W
    s_1    = LIF(conv_1(s_in))            C  x H   x W     --- local path ---------------------+
    s_d1   = LIF(down_1(s_1))  stride 2   2C x H/2 x W/2                                       |
    s_d2   = LIF(down_2(s_d1)) stride 2   2C x H/4 x W/4                                       |
    s_g    = LIF(fc_1(flatten(s_d2)))     hidden           --- global path -------------+      |
    I_t    = a * I_{t-1} + fc_out(s_g) + flatten(conv_out(s_1))      fan-in (sum) <-----+------+
    output = mean over the T steps of I_t, reshaped to the image

The readout is non-spiking: its synaptic current averaged over the T SNN steps is the real-valued
prediction ("synaptic current learning", FSDDIM). The diffusion time step enters as constant input planes
(sinusoidal features of t), so the whole input is one tensor the Lava sampler can inject. Only Conv2d,
Linear, Flatten, LIF, a non-spiking CUBA readout and a fan-in sum are used: every piece is a NIR node.

Lava's one-step delay per synapse layer (design decision)
---------------------------------------------------------
Training runs the layers without delay: at SNN step t every layer sees its inputs' spikes of step t,
as snnTorch does. On Lava each Dense/Conv adds one step, so a path through k synapse layers arrives k
steps late. Because the input is constant over the T steps and all state starts at zero, a chain of
layers on Lava is an exact time shift of the undelayed run. Where paths of different depth meet (here the
readout: 3 synapse layers on the local path, 6 on the global path) the deployment pads the shorter path
with delays so that every input of a neuron has the same latency; the Lava run is then the undelayed run
shifted by the network depth, and the readout is averaged over the T steps after that shift. Training
with the delays instead would leave the deep layers silent for most of a short (T <= 4) window.
``SpikingDenoiser.path_depths`` states the depths the deployment must align.

Biases are the one place where "delayed = shifted" needs care: a Lava neuron integrates its bias from
the first step, before its delayed input arrives. Resetting each layer's state at the step its input
starts (Lava's ``LIFReset`` zeroes u and v and then integrates that step's input, with a per-process
``reset_offset``) discards that early build-up and the spikes it could cause, and is also what separates
consecutive denoising steps inside one Lava run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .. import SpikediffError
from .neurons import check_dyadic, lava_lif


@dataclass
class DenoiserConfig:
    image_size: int = 28
    in_channels: int = 1
    channels: int = 32
    hidden: int = 256
    time_features: int = 8
    num_steps: int = 4  # T: SNN steps per denoiser call
    beta: float = 0.75  # hidden membrane decay, 1 - dv
    threshold: float = 1.0
    readout_alpha: float = 0.5  # readout synaptic-current decay, 1 - du
    max_period: float = 10000.0

    def validate(self) -> "DenoiserConfig":
        for name in ("image_size", "in_channels", "channels", "hidden", "num_steps"):
            if int(getattr(self, name)) < 1:
                raise SpikediffError(f"model option {name}={getattr(self, name)} must be a positive integer")
        if self.time_features < 2 or self.time_features % 2:
            raise SpikediffError(f"time_features={self.time_features} must be an even number >= 2")
        if self.threshold <= 0:
            raise SpikediffError(f"threshold={self.threshold} must be positive")
        check_dyadic("beta", self.beta)
        check_dyadic("readout_alpha", self.readout_alpha)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DenoiserConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise SpikediffError(f"unknown model options in checkpoint: {sorted(unknown)}")
        return cls(**d).validate()


def _down(size: int) -> int:
    return (size - 1) // 2 + 1  # 3x3 conv, stride 2, padding 1


def time_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the diffusion step, (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    angles = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class SpikingDenoiser(nn.Module):
    # Synapse layers from the input to the readout on each path (see "one-step delay" above).
    path_depths = {"local": ("conv_in", "conv_1", "conv_out"),
                   "global": ("conv_in", "conv_1", "down_1", "down_2", "fc_1", "fc_out")}

    spiking_layers = ("lif_in", "lif_1", "lif_d1", "lif_d2", "lif_g")

    def __init__(self, config: DenoiserConfig | None = None):
        super().__init__()
        self.config = cfg = (config or DenoiserConfig()).validate()
        c, h = cfg.channels, cfg.image_size
        mid = _down(h)
        low = _down(mid)
        self._neurons = dict(zip(self.spiking_layers, (c * h * h, c * h * h, 2 * c * mid * mid,
                                                       2 * c * low * low, cfg.hidden)))
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.time_features, c, 3, padding=1)
        self.conv_1 = nn.Conv2d(c, c, 3, padding=1)
        self.down_1 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down_2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.fc_1 = nn.Linear(2 * c * low * low, cfg.hidden)
        self.fc_out = nn.Linear(cfg.hidden, cfg.in_channels * h * h)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1, bias=False)
        self.lif_in, self.lif_1, self.lif_d1, self.lif_d2, self.lif_g = (
            lava_lif(cfg.beta, cfg.threshold) for _ in range(5)
        )
        # Binary, sparse inputs need larger weights than PyTorch's default init to reach the threshold:
        # std = gain / sqrt(fan_in) gives every hidden layer a firing rate of about 0.2-0.4 at init.
        for layer, gain in ((self.conv_in, 2.0), (self.conv_1, 3.0), (self.down_1, 3.0), (self.down_2, 3.0),
                            (self.fc_1, 3.0)):
            nn.init.normal_(layer.weight, 0.0, gain / layer.weight[0].numel() ** 0.5)
            nn.init.zeros_(layer.bias)
        # The readout starts near zero so the untrained model predicts "no noise" rather than garbage.
        nn.init.zeros_(self.fc_out.bias)
        self.fc_out.weight.data.mul_(0.1)
        self.conv_out.weight.data.mul_(0.1)

    def make_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Host-side input tensor: image channels followed by constant time-feature planes."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise SpikediffError(
                f"denoiser expects images of shape (N, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}),"
                f" got {tuple(x.shape)}"
            )
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        feats = time_features(t, cfg.time_features, cfg.max_period).to(x.dtype)
        planes = feats[:, :, None, None].expand(-1, -1, cfg.image_size, cfg.image_size)
        return torch.cat([x, planes], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Predict from noisy images x (N, C, H, W) at diffusion steps t (N,) or scalar.

        If ``stats`` is a dict, spike counts per layer (summed over batch and SNN steps) are added to it.
        """
        cfg = self.config
        inp = self.make_input(x, t)
        cur_in = self.conv_in(inp)  # constant input: its current is the same at every SNN step
        mems = [torch.zeros((), dtype=x.dtype, device=x.device)] * 5
        current = torch.zeros((), dtype=x.dtype, device=x.device)
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        n = x.shape[0]
        for _ in range(cfg.num_steps):
            s_in, mems[0] = self.lif_in(cur_in, mems[0].expand_as(cur_in))
            s_1, mems[1] = self.lif_1(self.conv_1(s_in), mems[1].expand_as(s_in))
            a = self.down_1(s_1)
            s_d1, mems[2] = self.lif_d1(a, mems[2].expand_as(a))
            a = self.down_2(s_d1)
            s_d2, mems[3] = self.lif_d2(a, mems[3].expand_as(a))
            a = self.fc_1(s_d2.flatten(1))
            s_g, mems[4] = self.lif_g(a, mems[4].expand_as(a))
            drive = self.fc_out(s_g) + self.conv_out(s_1).flatten(1)
            current = cfg.readout_alpha * current + drive
            total = total + current
            if stats is not None:
                for name, s in zip(self.spiking_layers, (s_in, s_1, s_d1, s_d2, s_g)):
                    stats[name] = stats.get(name, 0.0) + float(s.detach().sum())
        return (total / cfg.num_steps).reshape(n, cfg.in_channels, cfg.image_size, cfg.image_size)

    def neuron_counts(self) -> dict:
        """Neurons per spiking layer (for firing rates)."""
        return dict(self._neurons)
