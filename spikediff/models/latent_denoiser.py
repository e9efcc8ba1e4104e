"""Latent spiking DDIM denoiser: an FSDDIM-style spiking residual network over the latent grid of a spiking
autoencoder (16 x 7 x 7 for 28 x 28 images), where every denoiser call is a small 7 x 7 network.

Structure (every hidden population is a Lava-exact LIF; ``B`` residual blocks; D = latent channels)::

    input    = [z_t (D planes), time planes]         host tensor, constant over the T SNN steps
    temb     = LIF(time_in(input))      1x1           the spiking time branch: reads only the time planes
    x0       = LIF(BN(conv_in(input)))  3x3           the input, encoded in spikes
    s0       = LIF(BN(conv_s(x0))      + cond_s0(temb))
    a_b      = LIF(BN(conv_a_b(s_b))   + cond_a_b(temb))                 b = 0 .. B-1
    s_{b+1}  = LIF(BN(conv_s_b(a_b))   + res_b(s_b) + cond_s_{b+1}(temb))  residual: a sum of synaptic input
    g        = LIF(fc_1(s_B))           dense         global context
    readout  = CUBA(conv_ro(s_B) + fc_out(g) + skip_ro(x0))             D x G x G, mean current over T

Time reaches every block through the spiking time branch (``cond_*``, a learned nonlinear function of t as
current), and the input through ``x0``. Only ``temb`` and ``x0`` read the host input, and nothing else feeds
them: in Loihi fixed point a population has one weight scale, and its host-input synapses then keep the whole
8-bit mantissa instead of sharing it with synapses of larger weights (the quantizer reports each synapse's
integers: ``spikediff inspect --fixed-point``).

Batch norm (``ConvBN``) normalizes each main convolution's drive with statistics over the batch and the T
steps (threshold-dependent BN, as FSDDIM trains); at export it is folded into the convolution's weights and
bias (``ConvBN.fused``), so the deployed graph holds only Conv2d, Linear, LIF and the CUBA readout. The
residual synapses skip one population, so paths of depth k and k + 1 meet: the deployment aligns them
with delays as for the pixel-space denoiser (``SpikingDenoiser`` docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .. import SpikediffError
from .config import ModelConfig
from .denoiser import time_features
from .spiking_graph import SpikingGraph


@dataclass
class LatentDenoiserConfig(ModelConfig):
    latent_channels: int = 16  # D, the autoencoder's latent channels
    grid: int = 7  # G, the latent grid
    channels: int = 64  # C, width of every block
    blocks: int = 2  # B, residual blocks
    hidden: int = 256  # neurons of the dense (global) layer
    time_channels: int = 32  # the spiking time branch
    time_features: int = 16
    num_steps: int = 4  # T
    beta: float = 0.75
    threshold: float = 1.0
    readout_alpha: float = 0.5
    max_period: float = 10000.0
    norm: bool = True  # batch norm on the main convolutions (folded at export)

    positive = ("latent_channels", "grid", "channels", "blocks", "hidden", "time_channels", "num_steps")


class ConvBN(nn.Module):
    """A convolution followed by batch norm over (T x N) samples; ``fused()`` is the one Conv2d it equals in
    eval mode (what export writes)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    @property
    def bias(self):
        return self.conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def folded(self) -> tuple:
        """(weight, bias) of the convolution with batch norm folded in with its running statistics, as
        differentiable tensors (quantization-aware training runs this; ``fused`` is its plain-layer form)."""
        bn = self.bn
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = self.conv.bias if self.conv.bias is not None else torch.zeros_like(bn.running_mean)
        return self.conv.weight * gain.reshape(-1, 1, 1, 1), (bias - bn.running_mean) * gain + bn.bias

    def fused(self) -> nn.Conv2d:
        conv = fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
        if parametrize.is_parametrized(conv):
            parametrize.remove_parametrizations(conv, "weight")
        return conv


class _KeepInputs(nn.Module):
    """Parametrization zeroing the weights of the input channels not in ``keep`` (the time branch must see
    only the time planes); the exported weight is the masked one."""

    def __init__(self, in_channels: int, keep: slice):
        super().__init__()
        mask = torch.zeros(1, in_channels, 1, 1)
        mask[:, keep] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask.to(w)


class SpikingLatentDenoiser(SpikingGraph):
    def __init__(self, config: LatentDenoiserConfig | None = None):
        super().__init__()
        self.config = cfg = (config or LatentDenoiserConfig()).validate()
        d, c, g, tc = cfg.latent_channels, cfg.channels, cfg.grid, cfg.time_channels
        n_in = d + cfg.time_features

        def main(cin, cout):
            conv = nn.Conv2d(cin, cout, 3, padding=1, bias=not cfg.norm)
            return ConvBN(conv) if cfg.norm else conv

        graph = {"temb": [("time_in", "input")], "x0": [("conv_in", "input")],
                 "s0": [("conv_s", "x0"), ("cond_s0", "temb")]}
        self.time_in = nn.Conv2d(n_in, tc, 1)
        self.conv_in = main(n_in, c)
        self.conv_s = main(c, c)
        self.cond_s0 = nn.Conv2d(tc, c, 1, bias=False)
        for b in range(cfg.blocks):
            graph[f"a{b}"] = [(f"conv_a{b}", f"s{b}"), (f"cond_a{b}", "temb")]
            graph[f"s{b + 1}"] = [(f"conv_s{b}", f"a{b}"), (f"res_{b}", f"s{b}"), (f"cond_s{b + 1}", "temb")]
            setattr(self, f"conv_a{b}", main(c, c))
            setattr(self, f"conv_s{b}", main(c, c))
            setattr(self, f"res_{b}", nn.Conv2d(c, c, 1, bias=False))
            setattr(self, f"cond_a{b}", nn.Conv2d(tc, c, 1, bias=False))
            setattr(self, f"cond_s{b + 1}", nn.Conv2d(tc, c, 1, bias=False))
        last = f"s{cfg.blocks}"
        graph["g"] = [("fc_1", last)]
        graph["readout"] = [("conv_ro", last), ("fc_out", "g"), ("skip_ro", "x0")]
        self.fc_1 = nn.Linear(c * g * g, cfg.hidden)
        self.conv_ro = nn.Conv2d(c, d, 3, padding=1, bias=False)
        self.fc_out = nn.Linear(cfg.hidden, d * g * g, bias=False)
        self.skip_ro = nn.Conv2d(c, d, 1, bias=False)
        self.graph = graph
        self._make_neurons()
        self._readout_shape = (d, g, g)
        self.init_weights()
        with torch.no_grad():
            for name, _src in (syn for synapses in graph.values() for syn in synapses):
                if name.startswith("cond_"):  # time's currents start at the scale of the folded convolutions'
                    nn.init.normal_(getattr(self, name).weight, 0.0, 1.0 / tc ** 0.5)
            for b in range(cfg.blocks):  # residual synapses start as a scaled identity
                res = getattr(self, f"res_{b}").weight
                res.zero_()
                res[:, :, 0, 0].copy_(0.5 * torch.eye(c))
        parametrize.register_parametrization(self.time_in, "weight", _KeepInputs(n_in, slice(d, n_in)))

    def make_input(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Host input: the noisy latent planes followed by constant time-feature planes."""
        cfg = self.config
        shape = (cfg.latent_channels, cfg.grid, cfg.grid)
        if z.ndim != 4 or tuple(z.shape[1:]) != shape:
            raise SpikediffError(f"latent denoiser expects latents of shape (N, {', '.join(map(str, shape))}), "
                                 f"got {tuple(z.shape)}")
        t = torch.as_tensor(t).reshape(-1).expand(z.shape[0])
        feats = torch.from_numpy(time_features(t.cpu().numpy(), cfg.time_features, cfg.max_period)).to(z)
        return torch.cat([z, feats[:, :, None, None].expand(-1, -1, cfg.grid, cfg.grid)], dim=1)

    def forward(self, z: torch.Tensor, t: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Prediction (N, D, G, G) for noisy latents z (N, D, G, G) at diffusion steps t (N,) or scalar."""
        return self.run_graph(self.make_input(z, t), stats).reshape(-1, *self._readout_shape)

    @property
    def latent_shape(self) -> tuple:
        cfg = self.config
        return (cfg.latent_channels, cfg.grid, cfg.grid)

    def example_input(self) -> torch.Tensor:
        return self.make_input(torch.zeros(1, *self.latent_shape), torch.zeros(1))

    def host_metadata(self) -> dict:
        cfg = self.config
        return {
            "input": "noisy latent planes, then time_features sinusoidal planes of the diffusion step, constant over T",
            "time_features": cfg.time_features,
            "max_period": cfg.max_period,
            "output": "mean over the T steps of the readout state, reshaped to readout_shape (the latent's shape)",
            "latent_shape": list(self.latent_shape),
        }
