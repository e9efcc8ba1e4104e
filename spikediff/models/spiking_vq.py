"""VQ-SVAE (Spiking-Diffusion, Liu et al. 2023): a spiking VQ-VAE whose discrete latents the absorbing
diffusion model learns.

Encoder (training only, never deployed): direct-encoded image currents -> LIF convs with two stride-2 stages
down to the latent grid (H/4 x H/4: 7x7 for 28x28 images). The paper takes image features from both the
firing rate and the membrane (postsynaptic) potential; here the latent ``z_e`` at each grid cell is a 1x1
projection of the last layer's firing rates plus the mean synaptic current of a non-spiking readout
driven by the same spikes (its postsynaptic potential).

Quantizer: a codebook of K code vectors of D dimensions; nearest-neighbour lookup, straight-through
gradient to the encoder, codebook and commitment losses as in VQ-VAE (van den Oord et al. 2017).
Codes that no latent chose in a batch are restarted at a random latent of that batch (``restart_dead``),
the usual remedy for codebook collapse in small VQ-VAEs.

Decoder (deployed on Lava): the code vectors of the grid are the host input. The adaptive spike generator
(ASG) is the first population: LIF neurons driven by a learned 1x1 projection (gain and bias per channel)
of the code vectors, so how codes become spike trains is learned with the rest rather than fixed (rate or
threshold coding). Then LIF 3x3 convs on the latent grid and a non-spiking readout whose mean synaptic
current holds, at each grid cell, the 4x4 pixels of its patch (read out with ``pixel_shuffle``, as the
FSDDIM denoiser does: no transposed convolution exists in NIR or Lava). Every piece is a NIR node, and
the decoder is a ``SpikingGraph`` like the denoisers, so the same exporter and Lava converter serve it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import SpikediffError
from .config import ModelConfig
from .denoiser import PATCH
from .spiking_graph import SpikingGraph

# The decoder's readout is deployed on a 4x finer fixed-point grid, its few large weights spread over parallel
# synapses (``export.split``): at the plain grid most of its small weights round to zero.
READOUT_SPLIT = 4


@dataclass
class VQConfig(ModelConfig):
    image_size: int = 28
    in_channels: int = 1
    channels: int = 32  # C: encoder full-resolution width; the latent-grid layers have 2C
    codebook_size: int = 128  # K
    code_dim: int = 16  # D
    num_steps: int = 4  # T
    beta: float = 0.75
    threshold: float = 1.0
    readout_alpha: float = 0.5
    commitment: float = 0.25  # weight of ||z_e - sg(e)||^2
    decoder_channels: int = 0  # the decoder's width; 0: 2C, as the latent-grid layers of the encoder

    @property
    def grid(self) -> int:
        return self.image_size // PATCH

    @property
    def decoder_width(self) -> int:
        return self.decoder_channels or 2 * self.channels

    positive = ("image_size", "in_channels", "channels", "codebook_size", "code_dim", "num_steps")

    def check(self) -> None:
        if self.codebook_size < 2:
            raise SpikediffError(f"codebook_size={self.codebook_size} must be at least 2")
        if self.image_size % PATCH:
            raise SpikediffError(f"image_size={self.image_size} must be a multiple of {PATCH}")
        if self.decoder_channels < 0:
            raise SpikediffError(f"decoder_channels={self.decoder_channels} must be a positive integer (0: 2C)")


class SpikingEncoder(SpikingGraph):
    graph = {
        "e0": [("conv_in", "input")],
        "e1": [("down_1", "e0")],
        "e2": [("down_2", "e1")],
        "e3": [("conv_e3", "e2")],
        "readout": [("psp", "e3")],
    }

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = cfg = config
        c = cfg.channels
        self.conv_in = nn.Conv2d(cfg.in_channels, c, 3, padding=1)
        self.down_1 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down_2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.conv_e3 = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.psp = nn.Conv2d(2 * c, cfg.code_dim, 1)
        self.rate = nn.Conv2d(2 * c, cfg.code_dim, 1, bias=False)  # on the firing rates, outside the graph
        self._make_neurons()
        self.init_weights(readout_gain=1.0)

    def example_input(self) -> torch.Tensor:
        cfg = self.config
        return torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] -> latents z_e (N, D, H/4, W/4): rate features + PSP features."""
        cfg = self.config
        psp, rates = self.run_graph(x, stats, rates=("e3",))
        return psp.reshape(-1, cfg.code_dim, cfg.grid, cfg.grid) + self.rate(rates["e3"])


class Quantizer(nn.Module):
    def __init__(self, config: VQConfig):
        super().__init__()
        self.codebook = nn.Embedding(config.codebook_size, config.code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / config.codebook_size, 1.0 / config.codebook_size)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code per grid cell: (N, D, G, G) -> (N, G, G) int64."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        book = self.codebook.weight
        dist = (flat * flat).sum(1, keepdim=True) - 2 * flat @ book.t() + (book * book).sum(1)[None]
        return dist.argmin(1).reshape(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """Code vectors of a token grid: (N, G, G) -> (N, D, G, G)."""
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook.num_embeddings):
            raise SpikediffError(f"token ids must be in [0, {self.codebook.num_embeddings}), got "
                                 f"[{int(idx.min())}, {int(idx.max())}]")
        return self.codebook(idx).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor):
        """(z_q with straight-through gradient, indices, codebook loss, commitment loss)."""
        idx = self.indices(z.detach())
        e = self.lookup(idx)
        codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        return z + (e - z).detach(), idx, codebook_loss, commitment_loss

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, idx: torch.Tensor, gen: torch.Generator) -> int:
        """Move codes no cell of this batch chose onto random latents of the batch; returns how many."""
        used = torch.zeros(self.codebook.num_embeddings, dtype=torch.bool, device=idx.device)
        used[idx.reshape(-1)] = True
        dead = (~used).nonzero().reshape(-1)
        if len(dead):
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            pick = torch.randint(0, len(flat), (len(dead),), generator=gen).to(flat.device)
            self.codebook.weight[dead] = flat[pick]
        return len(dead)


class SpikingDecoder(SpikingGraph):
    graph = {
        "asg": [("gen", "input")],  # the adaptive spike generator
        "h1": [("conv_h1", "asg")],
        "h2": [("conv_h2", "h1")],
        "h3": [("conv_h3", "h2")],
        "readout": [("conv_ro", "h3"), ("skip_ro", "h1")],
    }

    def __init__(self, config: VQConfig):
        super().__init__()
        self.config = cfg = config
        c2, out = cfg.decoder_width, cfg.in_channels * PATCH * PATCH
        self.gen = nn.Conv2d(cfg.code_dim, c2, 1)
        self.conv_h1 = nn.Conv2d(c2, c2, 3, padding=1)
        self.conv_h2 = nn.Conv2d(c2, c2, 3, padding=1)
        self.conv_h3 = nn.Conv2d(c2, c2, 3, padding=1)
        self.conv_ro = nn.Conv2d(c2, out, 3, padding=1, bias=False)
        self.skip_ro = nn.Conv2d(c2, out, 3, padding=1, bias=False)
        self._make_neurons()
        self._readout_shape = (out, cfg.grid, cfg.grid)
        self.init_weights()

    def example_input(self) -> torch.Tensor:
        cfg = self.config
        return torch.zeros(1, cfg.code_dim, cfg.grid, cfg.grid)

    def host_metadata(self) -> dict:
        cfg = self.config
        return {
            "input": "the code vectors of the token grid (code_dim, grid, grid), constant over T",
            "code_dim": cfg.code_dim,
            "output": "mean over the T steps of the readout state, reshaped to readout_shape, then pixel_shuffle by patch",
            "image_shape": [cfg.in_channels, cfg.image_size, cfg.image_size],
            "patch": PATCH,
            "readout_split": READOUT_SPLIT,
        }

    def host_input(self, reads: torch.Tensor) -> torch.Tensor:
        """What the decoder stage hands it (code vectors, ``decoder_reads``) -> its input: the same."""
        return reads

    def forward(self, codes: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Code vectors (N, D, G, G) -> images (N, C, H, W)."""
        current = self.run_graph(codes, stats)
        return F.pixel_shuffle(current.reshape(-1, *self._readout_shape), PATCH)


class CodebookConv(nn.Module):
    """The decoder's first layer (a 1x1 conv on code vectors) seen from one-hot tokens: its weight is
    ``W_gen @ codebook.T``, computed from the live ``W_gen`` and a frozen codebook. It holds the decoder's own
    ``weight`` and ``bias`` parameters (shared, same state-dict keys), so training it trains the decoder, while
    ``folded()`` hands quantization-aware training the weight the chip gets (``spiking_graph.quantized_forward``)
    and ``fused()`` hands export a plain Conv2d."""

    stride, padding, dilation, groups = (1, 1), (0, 0), (1, 1), 1

    def __init__(self, conv: nn.Conv2d, codebook: torch.Tensor):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias  # the decoder's parameters, not copies
        self.register_buffer("codebook", codebook.detach().to(conv.weight), persistent=False)

    def folded(self) -> tuple:
        return (self.weight[:, :, 0, 0] @ self.codebook.t())[:, :, None, None], self.bias

    def fused(self) -> nn.Conv2d:
        w, b = self.folded()
        conv = nn.Conv2d(w.shape[1], w.shape[0], 1).to(w)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, *self.folded())


class TokenDecoder(SpikingDecoder):
    """The decoder as deployed: its host input is the one-hot token grid (K channels), and the first
    synapse layer holds ``gen`` applied to every code vector (``W_gen @ codebook``), so the codebook lookup
    happens in the synapses and the chip gets the same kind of input as the SDID denoiser. The adaptive
    spike generator is still the first LIF population; only where its input weights come from changed.

    By default it holds copies of the decoder's weights, with the folded first layer (what export reads).
    ``tied=True`` shares the decoder's layers instead, the first one folded live (``CodebookConv``): the form
    the decoder stage trains, so that quantization-aware training puts the folded weight, the one the chip
    gets, on its fixed-point grid, and the decoder's parameters are what moves."""

    def __init__(self, decoder: SpikingDecoder, codebook: torch.Tensor, tied: bool = False):
        cfg = decoder.config
        super().__init__(cfg)
        k = codebook.shape[0]
        if tied:
            for name, module in decoder.named_children():
                setattr(self, name, module)
            self.gen = CodebookConv(decoder.gen, codebook)
        else:
            self.to(decoder.gen.weight.dtype).load_state_dict(decoder.state_dict())
            self.gen = CodebookConv(decoder.gen, codebook).fused()
        self.codebook_size = k
        self._synapse_shapes = None

    def example_input(self) -> torch.Tensor:
        cfg = self.config
        return torch.zeros(1, self.codebook_size, cfg.grid, cfg.grid)

    def host_metadata(self) -> dict:
        return {**super().host_metadata(), "codebook_size": self.codebook_size,
                "input": "one-hot tokens (codebook_size channels, grid x grid), constant over T"}

    def one_hot(self, tokens) -> torch.Tensor:
        """Token grids (N, G, G), numpy or torch -> this network's input (N, K, G, G), on its device."""
        return torch.from_numpy(token_onehot(torch.as_tensor(tokens).cpu(), self.codebook_size)).to(self.gen.weight)

    host_input = one_hot  # what the decoder stage hands it (token grids, ``decoder_reads``) -> its input


def token_onehot(tokens, k: int, dtype="float32"):
    """Token grids (N, G, G) -> one-hot planes (N, k, G, G), numpy (the decoder's host input on every backend)."""
    import numpy as np

    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= k):
        raise SpikediffError(f"token ids must be in [0, {k}), got [{tokens.min()}, {tokens.max()}]")
    return (tokens[:, None] == np.arange(k)[None, :, None, None]).astype(dtype)


class SpikingVQVAE(nn.Module):
    def __init__(self, config: VQConfig | None = None):
        super().__init__()
        self.config = cfg = (config or VQConfig()).validate()
        self.encoder = SpikingEncoder(cfg)
        self.quantizer = Quantizer(cfg)
        self.decoder = SpikingDecoder(cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> token grid (N, G, G)."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise SpikediffError(f"VQ-SVAE expects images of shape (N, {cfg.in_channels}, {cfg.image_size}, "
                                 f"{cfg.image_size}), got {tuple(x.shape)}")
        return self.quantizer.indices(self.encoder(x))

    def decode(self, tokens: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Token grid (N, G, G) -> images (N, C, H, W), clamped to [-1, 1]."""
        return self.decoder(self.quantizer.lookup(tokens), stats).clamp(-1, 1)

    def forward(self, x: torch.Tensor, stats: dict | None = None):
        """(reconstruction, indices, codebook loss, commitment loss, z_e) for images x."""
        z = self.encoder(x, stats)
        zq, idx, cb, commit = self.quantizer(z)
        return self.decoder(zq, stats), idx, cb, commit, z
