"""The Spiking-Diffusion sampler (``spiking-vq``): absorbing diffusion over the VQ-SVAE's token grid with the
SDID denoiser, then one pass of the spiking token decoder.

Host side, in numpy: the SDID input is the one-hot grid (mask included) and time planes of the masked
fraction; its mean readout is the logits; ``absorbing.unmask_step`` draws the scheduled cells' tokens with
the run's pre-drawn random numbers (per image, from the seed). The decoder's input is the one-hot grid of
the final tokens (the codebook is folded into its first synapses); its mean readout, read in patch layout,
is the image.
"""

from __future__ import annotations

import numpy as np

from .. import absorbing
from . import HostProgram, Kind
from .pixel import unpatch


class TokenProgram(HostProgram):
    final = "decoder"

    def __init__(self, metas: dict, n: int, steps: int, seed: int, first: int, temperature: float, order: str):
        from ...models.token_denoiser import token_input

        ms, md = metas["denoiser"], metas["decoder"]
        self.k, self.g = int(ms["codebook_size"]), int(ms["grid"])
        self.length = self.g * self.g
        self.time_dim, self.max_period = int(ms["time_features"]), float(ms["max_period"])
        self.counts = absorbing.masked_counts(steps, self.length, str(ms["mask_schedule"]))
        self.steps = int(steps)
        self.draws = absorbing.UnmaskDraws(n, self.length, seed, first)
        self.temperature, self.order = float(temperature), order
        self.readout_shape, self.patch = tuple(int(d) for d in md["readout_shape"]), int(md["patch"])
        self.state_shape = (self.length,)
        self._token_input = token_input

    def start(self, index):
        return np.full((len(index), self.length), float(self.k))

    def inputs(self, state, index, step):
        grid = state.astype(np.int64).reshape(-1, self.g, self.g)
        return self._token_input(grid, self.counts[step] / self.length, self.k, self.time_dim,
                                 self.max_period).astype(np.float64)

    def update(self, state, index, step, readout):
        logits = np.asarray(readout, dtype=np.float64).reshape(len(state), self.k, self.length)
        state[...] = absorbing.unmask_step(state.astype(np.int64), logits, step, self.counts, self.draws[index],
                                           self.temperature, self.order)

    def final_inputs(self, state, index):
        from ...models.spiking_vq import token_onehot

        return token_onehot(state.astype(np.int64).reshape(-1, self.g, self.g), self.k, "float64")

    def images(self, state, final_readout=None):
        return unpatch(final_readout.mean(1), 1, self.readout_shape, self.patch).clip(-1, 1).astype(np.float32)

    def extras(self, state):
        return {"tokens": state.astype(np.int64).reshape(-1, self.g, self.g)}


class TokenKind(Kind):
    name = "spiking-vq"
    roles = ("denoiser", "decoder")
    description = "Spiking-Diffusion: absorbing diffusion over VQ-SVAE tokens, then the spiking decoder"
    step_name = "unmasking steps"

    def owns(self, model) -> bool:
        from ...models import SpikingVQDiffusion

        return isinstance(model, SpikingVQDiffusion)

    def networks(self, model) -> dict:
        from ...models.spiking_vq import TokenDecoder

        decoder = TokenDecoder(model.vq.decoder, model.vq.quantizer.codebook.weight.detach())
        return {"denoiser": (model.sdid, {"mask_schedule": model.mask_schedule}), "decoder": (decoder, {})}

    def calibration(self, role, meta):
        rng = np.random.default_rng(0)
        if role == "denoiser":
            from ...models.token_denoiser import token_input

            k, g = int(meta["codebook_size"]), int(meta["grid"])
            tokens = rng.integers(0, k + 1, (16, g, g))
            return np.concatenate([token_input(tokens, r, k, int(meta["time_features"]), float(meta["max_period"]),
                                               "float64") for r in np.linspace(0, 1, 10)])
        from ...models.spiking_vq import token_onehot

        k, g = int(meta["codebook_size"]), int(meta["image_shape"][-1]) // int(meta["patch"])
        return token_onehot(np.repeat(np.arange(k), g * g).reshape(k, g, g), k, "float64")

    def options(self, temperature=None, unmask=None, **given) -> dict:
        super().options(**given)
        return {"temperature": absorbing.resolve_temperature(temperature), "unmask": absorbing.resolve_order(unmask)}

    def program(self, metas, n, steps, seed=0, first=0, dtype="float32", temperature=None, unmask=None, **options):
        return TokenProgram(metas, n, steps, seed, first, absorbing.resolve_temperature(temperature),
                            absorbing.resolve_order(unmask))

    def sample_torch(self, model, schedule, n, steps, seed=0, batch_size=64, device="cpu", progress=True, stats=None,
                     first=0, temperature=None, unmask=None, **options):
        """Tokens by absorbing diffusion with the SDID network, then the spiking decoder; ``stats`` collects
        the spike counts of both networks (their layer names differ)."""
        tokens = absorbing.sample_tokens(model.sdid, n, steps, seed=seed, schedule=model.mask_schedule,
                                         temperature=temperature, order=unmask, batch_size=batch_size, device=device,
                                         progress=progress, stats=stats, first=first)
        return model.decode(tokens, batch_size, device, stats)
