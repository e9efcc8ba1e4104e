"""Absorbing-state (mask) discrete diffusion over token grids (Austin et al. 2021; Spiking-Diffusion's SDID).

Forward process: tokens are replaced by the mask token, a growing fraction of them; the denoiser learns to
predict the original token of every masked cell (cross-entropy on the masked cells only). Sampling starts
from an all-masked grid and unmasks cells step by step: ``masked_counts`` says how many cells stay masked
after each step (``linear`` in the step, or ``cosine`` as in MaskGIT: few tokens first, while the model
knows least), and each unmasked cell draws its token from the softmax of its logits. Which cells: by default
a random order per image (``random``), or MaskGIT's choice (``confidence``; Chang et al. 2022): every masked
cell draws a candidate, and the cells whose candidates the model is surest of are kept, with Gumbel noise on
that confidence that fades over the run (``CONFIDENCE_NOISE``), so early choices are not all alike.

Every random number of a sampling run is drawn up front, per image, from the seed (``UnmaskDraws``), and
``unmask_step`` is plain numpy: the PyTorch sampler and the Lava sampler process call the same function
with the same draws, so given the same logits they make the same tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import SpikediffError

MASK_SCHEDULES = ("cosine", "linear")
UNMASK_ORDERS = ("random", "confidence")
# Scale of the Gumbel noise on the log-confidence at the first step (0 at the last): MaskGIT's 4.5. With 1.0
# (and temperature 0.6) mnist-vq's samples collapsed onto the confident background cells: mostly "1"s, FID 89.
CONFIDENCE_NOISE = 4.5
DEFAULT_TEMPERATURE = 0.6  # chosen by FID on MNIST and Fashion-MNIST (README: the second model)


def resolve_temperature(temperature: float | None) -> float:
    """The temperature a sampler uses: ``DEFAULT_TEMPERATURE`` for None; a clear error unless positive."""
    if temperature is None:
        return DEFAULT_TEMPERATURE
    if not temperature > 0:
        raise SpikediffError(f"--temperature must be positive, got {temperature}")
    return float(temperature)


def resolve_order(order: str | None) -> str:
    """The unmasking order a sampler uses: ``random`` for None; a clear error for an unknown one."""
    if order is None:
        return "random"
    if order not in UNMASK_ORDERS:
        raise SpikediffError(f"--unmask {order!r}: choose one of {', '.join(UNMASK_ORDERS)}")
    return order


def masked_fraction(progress, kind: str = "cosine"):
    """Fraction of cells still masked when ``progress`` (0 = start, 1 = end) of the sampling is done."""
    if kind not in MASK_SCHEDULES:
        raise SpikediffError(f"mask schedule {kind!r}: choose one of {', '.join(MASK_SCHEDULES)}")
    p = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
    return 1.0 - p if kind == "linear" else np.cos(p * math.pi / 2)


def masked_counts(steps: int, length: int, kind: str = "cosine") -> np.ndarray:
    """Masked cells before step 0 .. after the last step: ``steps + 1`` counts from ``length`` down to 0,
    each step unmasking at least one cell."""
    if not 1 <= int(steps) <= length:
        raise SpikediffError(f"--steps {steps}: absorbing diffusion over {length} tokens takes 1 to {length} steps")
    counts = np.rint(masked_fraction(np.arange(steps + 1) / steps, kind) * length).astype(np.int64)
    counts[0], counts[-1] = length, 0
    for i in range(1, steps + 1):  # at least one cell per step, and never below what later steps need
        counts[i] = min(counts[i], counts[i - 1] - 1)
        counts[i] = max(counts[i], steps - i)
    return counts


def corrupt(tokens: torch.Tensor, mask_id: int, gen: torch.Generator, kind: str = "cosine"):
    """Training corruption: per grid, a masked fraction r from the sampling schedule at a uniform random
    progress, then that many cells (at least one) masked at random. Returns (masked tokens, mask, r)."""
    n, length = tokens.shape[0], tokens[0].numel()
    progress = torch.rand(n, generator=gen, dtype=torch.float64).numpy()
    count = np.clip(np.ceil(masked_fraction(progress, kind) * length), 1, length).astype(np.int64)
    ranks = torch.rand((n, length), generator=gen).argsort(1).argsort(1)  # a random rank per cell
    mask = ranks < torch.from_numpy(count)[:, None]
    mask = mask.reshape(tokens.shape).to(tokens.device)
    masked = torch.where(mask, torch.full_like(tokens, mask_id), tokens)
    return masked, mask, torch.from_numpy(count / length)


def masked_cross_entropy(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked cells; logits (N, K, G, G), tokens and mask (N, G, G)."""
    per_cell = F.cross_entropy(logits, tokens.long(), reduction="none")
    return (per_cell * mask).sum() / mask.sum().clamp(min=1)


class UnmaskDraws:
    """The random numbers of a sampling run, per image from (seed, image index): the order in which cells
    are unmasked, one uniform per cell for drawing its token, and one Gumbel variate per cell for the
    ``confidence`` order. Independent of batch size and backend."""

    def __init__(self, n: int, length: int, seed: int, first: int = 0):
        rngs = [np.random.default_rng([int(seed), first + i]) for i in range(n)]
        self.order = np.stack([r.permutation(length) for r in rngs])  # (n, length)
        self.uniform = np.stack([r.random(length) for r in rngs])  # (n, length), float64
        self.gumbel = np.stack([r.gumbel(size=length) for r in rngs])  # drawn last: the two above as before

    def __getitem__(self, sl: slice) -> UnmaskDraws:
        part = object.__new__(UnmaskDraws)
        part.order, part.uniform, part.gumbel = self.order[sl], self.uniform[sl], self.gumbel[sl]
        return part


def _draw(logits: np.ndarray, cells: np.ndarray, uniform: np.ndarray, temperature: float) -> tuple:
    """(tokens, their log-probabilities) of ``cells`` (N, k), drawn from softmax(logits / temperature) by
    inverse CDF with each cell's uniform."""
    z = np.take_along_axis(np.asarray(logits, dtype=np.float64), cells[:, None, :], axis=2) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(z, axis=1)
    u = np.take_along_axis(uniform, cells, axis=1) * cdf[:, -1]
    chosen = np.minimum((cdf < u[:, None, :]).sum(axis=1), logits.shape[1] - 1)  # (N, k)
    p = np.take_along_axis(z, chosen[:, None, :], axis=1)[:, 0] / cdf[:, -1]
    return chosen, np.log(np.maximum(p, 1e-300))


def unmask_step(tokens: np.ndarray, logits: np.ndarray, step: int, counts: np.ndarray, draws: UnmaskDraws,
                temperature: float = 1.0, order: str = "random") -> np.ndarray:
    """Tokens after sampling step ``step``: ``counts[step] - counts[step + 1]`` masked cells get a token drawn
    from softmax(logits / temperature) by inverse CDF with their uniform. ``random``: the cells
    ``draws.order[:, L - counts[step] : L - counts[step + 1]]``; ``confidence``: every masked cell draws, and
    those with the highest log-probability of their draw plus fading Gumbel noise keep theirs.

    tokens (N, L) int64 with the mask id where masked; logits (N, K, L). float64 maths throughout.
    """
    length = tokens.shape[1]
    if order == "confidence":
        masked = tokens >= logits.shape[1]  # the mask id is K
        every = np.broadcast_to(np.arange(length), tokens.shape)
        drawn, logp = _draw(logits, every, draws.uniform, temperature)
        fade = CONFIDENCE_NOISE * (1.0 - step / (len(counts) - 1))
        score = np.where(masked, logp + fade * draws.gumbel, -np.inf)
        cells = np.argsort(-score, axis=1, kind="stable")[:, :counts[step] - counts[step + 1]]
        chosen = np.take_along_axis(drawn, cells, axis=1)
    elif order == "random":
        cells = draws.order[:, length - counts[step]:length - counts[step + 1]]  # (N, k)
        chosen = _draw(logits, cells, draws.uniform, temperature)[0]
    else:
        raise SpikediffError(f"unmasking order {order!r}: choose one of {', '.join(UNMASK_ORDERS)}")
    out = tokens.copy()
    np.put_along_axis(out, cells, chosen, axis=1)
    return out


@torch.no_grad()
def sample_tokens(denoiser, n: int, steps: int, seed: int = 0, schedule: str = "cosine",
                  temperature: float | None = None, order: str | None = None,
                  batch_size: int = 64, device="cpu", progress: bool = True, stats: dict | None = None,
                  first: int = 0) -> torch.Tensor:
    """Token grids (n, G, G) from the spiking denoiser, all masked at the start, unmasked over ``steps``.

    Image i uses the draws of image ``first + i`` of the seed, so a run cut into chunks equals one run."""
    temperature, order = resolve_temperature(temperature), resolve_order(order)
    g = denoiser.config.grid
    length = g * g
    counts = masked_counts(steps, length, schedule)
    draws = UnmaskDraws(n, length, seed, first)
    denoiser = denoiser.to(device).eval()
    out = []
    with tqdm(total=-(-n // batch_size) * steps, desc="unmasking", unit="step", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            part = draws[start:start + batch_size]
            tokens = np.full((len(part.order), length), denoiser.mask_id, dtype=np.int64)
            for s in range(steps):
                grid = torch.from_numpy(tokens.reshape(-1, g, g)).to(device)
                ratio = torch.full((len(tokens),), counts[s] / length, dtype=torch.float64)
                logits = denoiser(grid, ratio, stats=stats).reshape(len(tokens), -1, length)
                tokens = unmask_step(tokens, logits.double().cpu().numpy(), s, counts, part, temperature, order)
                bar.update(1)
            out.append(torch.from_numpy(tokens.reshape(-1, g, g)))
    return torch.cat(out)
