"""An adversarial term for the decoder stage (``spikediff train --model latent-decoder --adversarial W``).

Why: a decoder trained on squared error alone draws the mean of the images a token grid could stand for:
soft, blurred strokes, which FID punishes far more than small misplacements. VQGAN (Esser et al. 2021,
"Taming Transformers") sharpens its decoder with a patch discriminator's verdict added to the reconstruction
loss, weighted adaptively so that neither term drowns the other. Here the weight balances the two terms'
gradients at the decoder's output image (VQGAN balances them at its last layer; the output is the same idea
for any decoder, and costs only the loss's own backward step).

The discriminator is a training-time helper: a small ANN never exported nor deployed. It learns from the
first step (hinge loss, real training images against the decoder's reconstructions of them); the decoder
feels it from step ``start`` on, so that it is not steered by an untrained discriminator. Its weights and
optimizer travel in the run's checkpoints (``Stage.companion``), so a stopped run resumes bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ADAPTIVE_MAX = 1e4  # VQGAN's clamp of the adaptive weight


class PatchDiscriminator(nn.Module):
    """Real-or-reconstructed logits per patch: a grid at a quarter of the image's resolution (7x7 for 28x28)."""

    def __init__(self, in_channels: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Adversary:
    """The discriminator, its optimizer and the weighting of its verdict in the decoder's loss."""

    def __init__(self, in_channels: int, weight: float, start: int, lr: float, seed: int = 0, device="cpu"):
        self.weight, self.start, self.step = weight, start, 0
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            self.net = PatchDiscriminator(in_channels).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr, betas=(0.5, 0.9))

    def before_step(self, step: int) -> None:
        self.step = step

    def loss(self, reconstruction_loss: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
             stats: dict | None = None) -> torch.Tensor:
        """One discriminator step on (``real``, ``fake``), then the decoder's loss: ``reconstruction_loss``, plus
        from step ``start`` on the adaptively weighted generator term (hinge: -D(fake))."""
        d_real, d_fake = self.net(real), self.net(fake.detach())
        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        self.opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt.step()
        if stats is not None:
            stats["reconstruction_mse"] = float(reconstruction_loss.detach())
            stats["disc_loss"] = float(d_loss.detach())
            stats["disc_accuracy"] = float(((d_real > 0).float().mean() + (d_fake < 0).float().mean()) / 2)
        if self.step < self.start:
            return reconstruction_loss
        self.net.requires_grad_(False)
        try:
            g_loss = -self.net(fake).mean()
        finally:
            self.net.requires_grad_(True)
        g_rec = torch.autograd.grad(reconstruction_loss, fake, retain_graph=True)[0].norm()
        g_adv = torch.autograd.grad(g_loss, fake, retain_graph=True)[0].norm()
        balance = (g_rec / (g_adv + 1e-8)).clamp(0, ADAPTIVE_MAX).detach()
        if stats is not None:
            stats["adversarial_balance"] = float(balance)
            stats["generator_loss"] = float(g_loss.detach())
        return reconstruction_loss + self.weight * balance * g_loss

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["optimizer"])
