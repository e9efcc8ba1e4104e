"""Function-preserving widening of a trained network (Net2Net's idea, Chen et al. 2016, with zeros).

Why: a sampler's decoder or token denoiser that has stopped improving at its width is grown rather than
trained again from scratch: the wider network starts as the trained one, so a fine-tuning run spends its
steps on what the added neurons can add.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def widen(old: torch.nn.Module, new: torch.nn.Module) -> None:
    """Every parameter of ``new`` takes ``old``'s values in the block they share; the weights from the added
    neurons to the old ones and to the readout are zero, so ``new`` computes what ``old`` did, while the added
    neurons' own inputs keep their random start and their outgoing weights get gradients from the first step.

    A dense layer that reads a flattened (C, H, W) grid widens the same way, since its first C x H x W inputs
    are the old channels' (flattening is channel-major); one that became a convolution over the whole grid
    (weight (out, C, H, W)) takes the same weights. A synapse layer ``old`` lacks starts at zero: it adds
    nothing until trained. ``new``'s parameters must be at least ``old``'s in every dimension.
    """
    before = old.state_dict()
    for name, value in new.state_dict().items():
        was = before.get(name)
        if was is None:
            owner = new.get_submodule(name.rpartition(".")[0])
            if not isinstance(owner, (torch.nn.Conv2d, torch.nn.Linear)):
                raise ValueError(f"widen: {name} is new and not a synapse layer's; it has no silent start")
            value.zero_()
            continue
        if was.ndim == 2 and value.ndim == 4:  # dense -> a convolution over the whole (C, H, W) grid
            area = value.shape[2] * value.shape[3]
            if was.shape[1] % area:
                raise ValueError(f"widen: {name} reads {was.shape[1]} values, not channels of a "
                                 f"{value.shape[2]}x{value.shape[3]} grid")
            was = was.reshape(was.shape[0], was.shape[1] // area, *value.shape[2:])
        if value.ndim == 0:
            value.copy_(was)
            continue
        if any(n < w for n, w in zip(value.shape, was.shape)):
            raise ValueError(f"widen: {name} is {tuple(value.shape)} in the new network, narrower than {tuple(was.shape)}")
        block = tuple(slice(0, d) for d in was.shape)
        if value.ndim > 1:
            value[: was.shape[0], was.shape[1]:] = 0  # added inputs into old outputs (the readout's too)
        value[block] = was
