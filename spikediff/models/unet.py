"""FSDDIM's spiking U-Net as a ``SpikingGraph``: every synapse one plain Conv2d at export, every population a
Lava LIF, the readout FSDDIM's synaptic current.

The architecture follows FSDDIM's ``SpikingUNetV2`` (github.com/mil-tokyo/FSDDIM, ``snn_model.py`` and
``configs/MNIST.yaml``): channels ``C * mult`` over levels that halve the resolution, ``blocks`` residual blocks
per level, two residual blocks in the middle, a decoder that concatenates the encoder's maps (skip connections)
and up-samples by nearest neighbour + 3 x 3 convolution, and a 1 x 1 readout over the last block, the input
convolution and the first level's encoder and decoder blocks. In graph form, with every map a population::

    x0            = LIF(BN(conv_in(image planes)))                                       level 0, natural layout
    block a       = LIF(BN(conv1(x)) [+ BN(conv1'(skip))] + cond(time map))           residual block: sums of
    block b       = LIF(BN(conv2(a)) + shortcut(x) [+ shortcut'(skip)])               synaptic input; a skip is
    down          = LIF(BN(conv 3x3 stride 2))                                        another synapse (fan-in)
    up            = LIF(BN(conv 3x3(nearest up-sampling)))       decoder maps in s2d layout (``s2d.py``)
    readout       = CUBA(sum of 1 x 1 convs of fb, x0, the level-0 encoder and decoder blocks)  in s2d layout
    time map t_g  = LIF(time_in(time planes)) [then LIF(time_mlp(.))], one per grid g, spatially constant

What differs from the published model, and why:

- FSDDIM's MNIST run keeps its input convolution and its down/up-sampling layers non-spiking (currents fed
  straight into the next convolution) and down-samples by 2 x 2 average pooling; its code's other options,
  ``activate_first_conv`` and ``spike_up_down`` with ``3x3conv`` down-sampling, make each of them a spiking
  layer (BN + LIF), which is what is built here: every synapse is then one natural operation between two
  populations, so each derives one Conv2d.
- FSDDIM adds its time embedding (a 2-layer spiking MLP of a 512-wide sinusoid, broadcast over the image) before
  the first batch norm of each block. A neuromorphic chip has no broadcast: time is a spiking map per grid the
  blocks live on, computed from the host's constant time planes by the same (shared) weights, so every position
  of every map fires alike; each block's first population reads it through a 1 x 1 synapse (``cond``), not
  normalized. ``time_channels`` is smaller than FSDDIM's 512 because each channel costs a neuron per position.
- An identical-width shortcut is a learned per-channel scale (FSDDIM: batch norm, whose shift is a bias here
  carried by the other synapses' folded batch norm); the readout has no bias.
- Decays are Lava's dyadic ones (beta 0.75 for FSDDIM's tau 0.8); the readout current decays by
  ``readout_alpha`` between steps (FSDDIM averages instantaneous currents, alpha 0).

Layouts: the encoder and middle are natural (factor 1). All decoder maps sit on the bottleneck grid: a map
k up-samplings above the bottleneck has factor 2^k (``s2d.py`` says why no Conv2d form can do with less), so the
readout is (C_in 4^(L-1), G, G) and the host reads it with ``patch`` = 2^(L-1), as it reads the patch denoiser's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .. import SpikediffError
from .config import ModelConfig
from .denoiser import pixel_host_metadata, time_features
from .s2d import S2DSynapse
from .spiking_graph import SpikingGraph


@dataclass
class UNetConfig(ModelConfig):
    arch: str = "small"  # the preset it was built from (``PRESETS``), or "custom"
    image_size: int = 28  # the side the network runs at (the data is padded to it, see ``padded_size``)
    in_channels: int = 1
    channels: int = 32  # C
    channel_mult: tuple = (1, 2, 2)  # one entry per level; the resolution halves from one level to the next
    blocks: int = 1  # residual blocks per level (the decoder has as many, each reading one encoder map)
    time_channels: int = 32
    time_layers: int = 1  # spiking layers of the time branch (1 or 2)
    time_features: int = 16
    num_steps: int = 4
    beta: float = 0.75
    threshold: float = 1.0
    readout_alpha: float = 0.5
    max_period: float = 10000.0
    norm: bool = True  # batch norm on the convolutions (folded at export)

    positive = ("image_size", "in_channels", "channels", "blocks", "time_channels", "num_steps")

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    @property
    def patch(self) -> int:
        """The s2d factor of the readout: pixels per side of one readout location."""
        return 1 << (self.levels - 1)

    def check(self) -> None:
        mult = self.channel_mult
        if not isinstance(mult, (tuple, list)) or not mult or not all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in mult):
            raise SpikediffError(f"channel_mult={mult!r} must be a non-empty list of positive integers")
        self.channel_mult = tuple(mult)
        if self.image_size % self.patch:
            raise SpikediffError(f"image_size={self.image_size} must be a multiple of {self.patch} for "
                                 f"{self.levels} levels")
        if self.time_layers not in (1, 2):
            raise SpikediffError(f"time_layers={self.time_layers} must be 1 or 2")

    def padded_size(self, size: int) -> int:
        """The side a dataset of ``size`` runs at: the next multiple of 2^(levels - 1) (FSDDIM pads MNIST to 32)."""
        return -(-size // self.patch) * self.patch


#: the presets of ``spikediff train --arch``: ``tiny`` for tests, ``small`` trains on a CPU, ``fsddim`` is the
#: published model (configs/MNIST.yaml: 128 channels, multipliers 1 2 3 4, 2 blocks per level, T = 8, 32 x 32)
PRESETS = {
    "tiny": dict(channels=4, channel_mult=(1, 2), blocks=1, time_channels=4, time_features=4, num_steps=4),
    "small": dict(channels=32, channel_mult=(1, 2, 2), blocks=1, time_channels=32, time_features=16, num_steps=4),
    "fsddim": dict(channels=128, channel_mult=(1, 2, 3, 4), blocks=2, time_channels=64, time_layers=2,
                   time_features=32, num_steps=8),
}


def preset(name: str, **overrides) -> UNetConfig:
    """The config of a preset, with options overridden (None values ignored); not yet sized to a dataset."""
    if name not in PRESETS:
        raise SpikediffError(f"unknown U-Net preset {name!r} (presets: {', '.join(PRESETS)})")
    given = {k: v for k, v in overrides.items() if v is not None}
    return UNetConfig(arch=name, **{**PRESETS[name], **given})


@dataclass
class _Pop:
    """A map while the graph is being built: its channels, layout factor and grid."""

    name: str
    channels: int
    r: int
    grid: int

    @property
    def res(self) -> int:
        return self.r * self.grid


@dataclass
class _Builder:
    model: nn.Module
    graph: dict = field(default_factory=dict)

    def synapse(self, name: str, src: _Pop | str, layer: S2DSynapse) -> tuple:
        setattr(self.model, name, layer)
        return (name, src.name if isinstance(src, _Pop) else src)


class SpikingUNet(SpikingGraph):
    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = cfg = (config or UNetConfig()).validate()
        c, mult, size, norm = cfg.channels, cfg.channel_mult, cfg.image_size, cfg.norm
        chans = [c] + [c * m for m in mult]
        n_in = cfg.in_channels + cfg.time_features
        b = _Builder(self)
        graph = b.graph
        bottom = size >> (cfg.levels - 1)  # the bottleneck grid: every decoder map lives on it

        # the time branch: one spatially constant map per grid that a block lives on, all from shared weights
        time_in = nn.Parameter(torch.empty(cfg.time_channels, n_in, 1, 1))
        nn.init.normal_(time_in, 0.0, 2.0 / cfg.time_features ** 0.5)
        time_in_bias = nn.Parameter(torch.zeros(cfg.time_channels))
        time_mlp = None
        if cfg.time_layers == 2:
            time_mlp = nn.Parameter(torch.empty(cfg.time_channels, cfg.time_channels, 1, 1))
            nn.init.normal_(time_mlp, 0.0, 3.0 / cfg.time_channels ** 0.5)
        self.time_in_weight, self.time_in_bias, self.time_mlp_weight = time_in, time_in_bias, time_mlp
        time_maps: dict = {}

        def time_map(grid: int) -> _Pop:
            if grid not in time_maps:
                first = _Pop(f"t{grid}", cfg.time_channels, 1, grid)
                layer = S2DSynapse(n_in, cfg.time_channels, 1, stride=size // grid,
                                   keep=slice(cfg.in_channels, n_in))
                layer.weight, layer.bias = time_in, time_in_bias
                graph[first.name] = [b.synapse(f"time_in_{grid}", "input", layer)]
                time_maps[grid] = first
                if time_mlp is not None:
                    second = _Pop(f"t{grid}b", cfg.time_channels, 1, grid)
                    layer = S2DSynapse(cfg.time_channels, cfg.time_channels, 1, bias=False)
                    layer.weight = time_mlp
                    graph[second.name] = [b.synapse(f"time_mlp_{grid}", first, layer)]
                    time_maps[grid] = second
            return time_maps[grid]

        def conv(name, src: _Pop, c_out, r_out, k=3, **kw):
            return b.synapse(name, src, S2DSynapse(src.channels, c_out, k, r_in=src.r, r_out=r_out, norm=norm,
                                                   bias=not norm, **kw))

        def block(name: str, sources: list, c_out: int, r: int, grid: int) -> _Pop:
            """A residual block reading the concatenation of ``sources`` (each its own synapses)."""
            a, out = _Pop(f"{name}a", c_out, r, grid), _Pop(f"{name}b", c_out, r, grid)
            t = time_map(grid)
            graph[a.name] = [conv(f"{name}_conv1_{i}", s, c_out, r, stride=s.res // a.res) for i, s in
                             enumerate(sources)]
            graph[a.name].append(b.synapse(f"{name}_cond", t, S2DSynapse(t.channels, c_out, 1, r_out=r, bias=False,
                                                                         constant_source=True)))
            graph[out.name] = [conv(f"{name}_conv2", a, c_out, r)]
            if len(sources) == 1 and sources[0].channels == c_out and sources[0].r == r:
                layer = S2DSynapse(c_out, c_out, 1, r_in=r, r_out=r, bias=False, depthwise=True)
                graph[out.name].append(b.synapse(f"{name}_skip", sources[0], layer))
            else:
                graph[out.name] += [conv(f"{name}_skip_{i}", s, c_out, r, k=1, stride=s.res // out.res) for i, s in
                                    enumerate(sources)]
            return out

        x0 = _Pop("x0", c, 1, size)
        graph["x0"] = [b.synapse("conv_in", "input", S2DSynapse(n_in, c, 3, norm=norm, bias=not norm,
                                                                   keep=slice(0, cfg.in_channels)))]
        hs, x, first_level = [x0], x0, []
        for i in range(cfg.levels):
            for j in range(cfg.blocks):
                x = block(f"e{i}_{j}", [x], chans[i], 1, x.grid)
                hs.append(x)
                if i == 0:
                    first_level.append(x)
            if i < cfg.levels - 1:
                down = _Pop(f"e{i}_down", chans[i + 1], 1, x.grid // 2)
                graph[down.name] = [conv(f"e{i}_down_conv", x, chans[i + 1], 1, stride=2)]
            else:
                down = _Pop(f"e{i}_out", chans[i + 1], 1, x.grid)
                graph[down.name] = [conv(f"e{i}_out_conv", x, chans[i + 1], 1)]
            x = down
        for j in range(2):
            x = block(f"m{j}", [x], chans[-1], 1, bottom)
        for k in range(cfg.levels):
            i = cfg.levels - 1 - k  # the level, from the bottom up
            r = 1 << k
            for j in range(cfg.blocks):
                x = block(f"d{i}_{j}", [x, hs.pop()], chans[i + 1], r, bottom)
                if i == 0:
                    first_level.append(x)
            if i > 0:
                up = _Pop(f"d{i}_up", chans[i], 2 * r, bottom)
                graph[up.name] = [conv(f"d{i}_up_conv", x, chans[i], 2 * r, upsample=2)]
            else:
                up = _Pop(f"d{i}_out", chans[0], r, bottom)
                graph[up.name] = [conv(f"d{i}_out_conv", x, chans[0], r)]
            x = up
        x = block("f", [x, hs.pop()], chans[0], cfg.patch, bottom)
        assert not hs
        self.readout_sources = [x, x0, *first_level]
        graph["readout"] = [b.synapse(f"conv_out_{n}", s, S2DSynapse(s.channels, cfg.in_channels, 1, r_in=s.r,
                                                                      r_out=cfg.patch, bias=False,
                                                                      stride=s.res // size))
                            for n, s in enumerate(self.readout_sources)]
        self.graph = graph
        self._make_neurons()
        self._readout_shape = (cfg.in_channels * cfg.patch ** 2, bottom, bottom)
        self.init_weights()
        self._init_synapses()

    @torch.no_grad()
    def _init_synapses(self) -> None:
        """After ``init_weights`` (std gain / sqrt(fan-in)): the time branch keeps its own init (shared
        parameters), conditioning currents start at the scale of the normalized convolutions, identical
        shortcuts at FSDDIM's 1 / sqrt(2)."""
        cfg = self.config
        nn.init.normal_(self.time_in_weight, 0.0, 2.0 / cfg.time_features ** 0.5)
        if self.time_mlp_weight is not None:
            nn.init.normal_(self.time_mlp_weight, 0.0, 3.0 / cfg.time_channels ** 0.5)
        for name, module in self.named_children():
            if not isinstance(module, S2DSynapse):
                continue
            if name.endswith("_cond"):
                nn.init.normal_(module.weight, 0.0, 1.0 / cfg.time_channels ** 0.5)
            elif module.depthwise:
                module.weight.fill_(2 ** -0.5)

    def make_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Host input: image channels followed by constant time-feature planes (as the patch denoiser's)."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise SpikediffError(f"U-Net expects images of shape (N, {cfg.in_channels}, {cfg.image_size}, "
                                 f"{cfg.image_size}), got {tuple(x.shape)}")
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        feats = torch.from_numpy(time_features(t.cpu().numpy(), cfg.time_features, cfg.max_period)).to(x)
        return torch.cat([x, feats[:, :, None, None].expand(-1, -1, cfg.image_size, cfg.image_size)], dim=1)

    def readout_current(self, x: torch.Tensor, t: torch.Tensor, stats: dict | None = None,
                        trains: dict | None = None) -> torch.Tensor:
        """Mean readout current over the T steps, flat in s2d order (N, C_in * H * W)."""
        return self.run_graph(self.make_input(x, t), stats, trains=trains)

    def forward(self, x: torch.Tensor, t: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        current = self.readout_current(x, t, stats)
        return F.pixel_shuffle(current.reshape(-1, *self._readout_shape), self.config.patch)

    @property
    def image_shape(self) -> tuple:
        cfg = self.config
        return (cfg.in_channels, cfg.image_size, cfg.image_size)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    def host_metadata(self) -> dict:
        cfg = self.config
        return {**pixel_host_metadata(cfg, cfg.patch), "architecture": f"spiking U-Net ({cfg.arch})"}

    def example_input(self) -> torch.Tensor:
        return self.make_input(torch.zeros(1, *self.image_shape), torch.zeros(1))

    def sizes(self) -> dict:
        """Parameters (natural kernels), neurons, the derived (exported) weights' entries, and synapses: a
        derived weight's nonzero entries counted over the target positions (what a chip stores)."""
        shapes = self.synapse_shapes()
        derived, synapses = 0, 0
        for synapses_in in self.graph.values():
            for name, _src in synapses_in:
                layer = getattr(self, name)
                entries = 1
                for d in layer.derived_shape:
                    entries *= d
                derived += entries
                out = shapes[name][1]
                positions = out[-1] * out[-2] if len(out) == 3 else 1
                synapses += natural_fan_in(layer) * layer.c_out * layer.r_out ** 2 * positions
        return {"parameters": sum(p.numel() for p in self.parameters()),
                "neurons": sum(self.neuron_counts().values()), "derived_weight_entries": derived,
                "synapses": synapses}


def natural_fan_in(layer: S2DSynapse) -> int:
    """Inputs one output neuron of a synapse sums (its natural kernel's taps; the boundary's padding counted)."""
    if layer.depthwise:
        return 1
    keep = int(layer.mask.sum())
    return keep * layer.k * layer.k


def build(config) -> SpikingGraph:
    """The pixel-space denoiser a config describes: a U-Net for ``UNetConfig``, else the patch denoiser."""
    if isinstance(config, UNetConfig):
        return SpikingUNet(config)
    from .denoiser import SpikingDenoiser

    return SpikingDenoiser(config)


def sized(config: UNetConfig, dataset_size: int) -> UNetConfig:
    """The config run on a dataset of ``dataset_size`` x ``dataset_size`` images (padded to ``padded_size``)."""
    return replace(config, image_size=config.padded_size(dataset_size))
