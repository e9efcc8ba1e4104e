"""Quantization-aware training: the loop network trains with the weights it will have on Loihi.

Every synapse layer runs, in the forward pass, with its deployed weight on the fixed-point grid
(``models.spiking_graph.quantized_forward``: even 8-bit mantissas at the destination population's scale,
divided by the input scale for the host input; a batch-normalised convolution folded with frozen
statistics, as export folds it), with the straight-through estimator for the gradient: the optimizer moves
the float weights, the loss sees the quantized ones. The scales are the quantizer's own, read off a
fixed-point compile of the model's graphs (``compile_sampler``) and refreshed every ``refresh`` steps, so the
grid the network learns on is the one the chip runs.
"""

from __future__ import annotations

import torch


class QAT:
    """Fake quantization of a sampler's loop network (``kind.networks(model)["denoiser"]``)."""

    def __init__(self, sampler, schedule=None, refresh: int = 100):
        from ..diffusion import kinds

        self.sampler, self.schedule, self.refresh = sampler, schedule, int(refresh)
        self.net = kinds.of_model(sampler).networks(sampler)["denoiser"][0]

    def update_scales(self) -> dict:
        """The quantizer's scale of every synapse layer of the loop network, from a fixed-point compile."""
        from ..export.deployment import compile_sampler
        from ..export.nir_graph import sampler_graphs

        was = self.net.training
        self.net.qat_scales = None
        self.net.eval()
        try:
            with torch.no_grad():
                dep = compile_sampler(sampler_graphs(self.sampler, self.schedule), fixed_point=True).loop
        finally:
            self.net.train(was)
        fx, p = dep.fixed, dep.plan
        self.net.qat_scales = {f.syn.name: fx.populations[f.syn.dst].scale / (fx.input_scales[f.syn.src]
                                                                               if f.syn.src in p.inputs else 1)
                               for f in dep.folded.synapses if hasattr(self.net, f.syn.name)}
        return self.net.qat_scales

    def step(self, step: int) -> None:
        """Call before each optimizer step: refreshes the scales every ``refresh`` steps."""
        if not getattr(self.net, "qat_scales", None) or step % self.refresh == 0:
            self.update_scales()
