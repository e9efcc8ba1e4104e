"""Quantization-aware training: a sampler's network trains with the weights it will have on Loihi.

Every synapse layer runs, in the forward pass, with its deployed weight on the fixed-point grid
(``models.spiking_graph.quantized_forward``: even 8-bit mantissas at the destination population's scale,
divided by the input scale for the host input; a batch-normalised convolution folded with frozen
statistics, as export folds it), with the straight-through estimator for the gradient: the optimizer moves
the float weights, the loss sees the quantized ones. The scales are the quantizer's own, read off a
fixed-point compile of the network's graph (calibrated as ``compile_sampler`` calibrates it) and refreshed
every ``refresh`` steps, so the grid the network learns on is the one the chip runs. Any network role of the
sampler's kind can train so: the denoiser (the loop) or the decoder of a latent DDIM or a spiking-vq sampler.
A network deployed in a folded form trains in that form (``net``, the module that trains, runs the deployed
weights): the spiking-vq decoder trains as the token decoder it is deployed as (``TokenDecoder(tied=True)``),
its first layer's weight the codebook folded in, computed from the decoder's own parameters, so that weight is
the one on the grid.
"""

from __future__ import annotations

import torch


class QAT:
    """Fake quantization of one network of a sampler (``kind.networks(model)[role]``)."""

    def __init__(self, sampler, schedule=None, refresh: int = 100, role: str = "denoiser", net=None):
        from .. import SpikediffError
        from ..diffusion import kinds

        self.kind = kinds.of_model(sampler)
        networks = self.kind.networks(sampler)
        if role not in networks:
            raise SpikediffError(f"quantization-aware training: a {self.kind.name} sampler has no {role!r} network "
                                 f"(it has {', '.join(networks)})")
        self.sampler, self.schedule, self.refresh, self.role = sampler, schedule, int(refresh), role
        self.net = networks[role][0] if net is None else net  # the module that trains

    def update_scales(self) -> dict:
        """The quantizer's scale of every synapse layer of the network, from a fixed-point compile of its graph."""
        from ..export.deployment import compile_graph
        from ..export.nir_graph import sampler_graphs
        from ..export.split import split_synapses

        was = self.net.training
        self.net.qat_scales = None
        self.net.eval()
        try:
            with torch.no_grad():
                graph = sampler_graphs(self.sampler, self.schedule, roles=(self.role,))[self.role]
                dep = compile_graph(graph, fixed_point=True, bias_correction=False,  # the scales are all it needs
                                    calibration=self.kind.calibration(self.role, dict(graph.metadata or {})))
        finally:
            self.net.train(was)
        self.net.qat_scales = {f.syn.name: dep.fixed.weight_scale(f.syn) for f in dep.folded.synapses
                               if hasattr(self.net, f.syn.name)}
        self.net.qat_split = {k: v for k, v in split_synapses(dep.folded).items() if k in self.net.qat_scales}
        return self.net.qat_scales

    def step(self, step: int) -> None:
        """Call before each optimizer step: refreshes the scales every ``refresh`` steps."""
        if not getattr(self.net, "qat_scales", None) or step % self.refresh == 0:
            self.update_scales()


def ran(cfg, last_step: int) -> bool:
    """Whether a run of ``cfg`` that ends at ``last_step`` trained quantization-aware (``checkpoint.mark_on_grid``
    records it)."""
    return cfg.qat_from is not None and cfg.qat_from < last_step


def check_options(cfg) -> None:
    """The quantization-aware options of a trainer config (``qat_from``, ``qat_refresh``), checked."""
    from .. import SpikediffError

    if cfg.qat_from is not None and cfg.qat_from < 0:
        raise SpikediffError(f"--qat-from must be >= 0, got {cfg.qat_from}")
    if cfg.qat_refresh < 1:
        raise SpikediffError(f"qat_refresh must be >= 1, got {cfg.qat_refresh}")


def before_step_hook(cfg, sampler, schedule=None, role: str = "denoiser", net=None):
    """``Stage.before_step`` for a run quantization-aware from ``cfg.qat_from`` on (None if it is not): the
    network of ``role`` trains on the scales of its fixed-point compile, refreshed every ``cfg.qat_refresh``."""
    if cfg.qat_from is None:
        return None
    qat = QAT(sampler, schedule, refresh=cfg.qat_refresh, role=role, net=net)

    def before_step(_model, step):
        if step >= cfg.qat_from:
            qat.step(step)

    return before_step
