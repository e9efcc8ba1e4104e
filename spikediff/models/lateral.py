"""Lateral-selection spiking diffusion: learnable lateral connections that refine a substructure-selection
network over the SNN's inner time loop, on the FSDDIM-style denoiser.

Feng, Zhao, Shen and Zeng (2025), "Biologically Inspired Spiking Diffusion Model with Adaptive Lateral
Selection Mechanism", are known here only by their abstract: a learnable lateral matrix and a lateral
mapping function, both spiking, update lateral connections over the inner time loop and iteratively refine
a substructure selection network; under a local objective the lateral update matches an STDP-like rule.
This module is our design from that description; ``DenoiserConfig(lateral=..., selection=...)`` switches
its two halves on. We read "update lateral connections over the inner time loop" as the lateral input
(W applied to the previous step's spikes) and the states it drives changing at every step; W itself is
learned in training, partly by the plasticity rule, and fixed within a run, as a Loihi synapse is
without on-chip learning.

Where. Both act on the denoiser's decoder layer ``u`` (2C channels on the H/4 x H/4 grid: the layer that
places strokes just before the readout; see ``denoiser.py``).

Lateral matrix. W (2C x 2C) is a recurrent 1x1 synapse of ``u`` onto itself: at SNN step t, neuron i of
``u`` at grid position p receives sum_j W_ij s_j(t-1, p) from the other feature channels at the same
position (lateral = the same layer and place, across features: the mutual excitation and inhibition of
feature detectors that lateral connections give cortex). It starts at zero, so training starts from the
feedforward denoiser.

Lateral mapping. ``m = LIF(phi(s_u))``, phi a learnable 1x1 synapse from u's 2C channels to G channels:
spiking neurons that turn the lateral layer's activity into one signal per substructure and position.

Substructure. One of G channel groups of ``u`` (2C/G channels each) at one position of the grid.

Selection network. ``sel = LIF(conv3x3(s_d2) + V m + R s_sel(t-1))``, G channels on the grid: one selection
neuron per substructure and position. It starts open (a bias that makes every selection neuron fire, so
training starts from the base denoiser). Its recurrent synapse R (a self-loop, like W) carries the
selection from step to step; the lateral signal m refines it. At t = 0 the selection sees only the encoder's evidence
(d2) and ``u`` has no lateral input; at every later step ``u`` has its lateral input from step t-1, and
the selection integrates m(t) on top of its own state: the T steps iteratively refine it.

Gating, in spikes. The readout reads ``ug = u AND sel[group(u)]``: a LIF with almost no memory (beta
1/4096, the least Loihi allows), threshold 1 and fixed synapses of weight 0.75 from ``u`` (one-to-one)
and from the selection neuron of its group. One spike alone (0.75, and at most 0.75 * 4096/4095 with the
residue of earlier lone spikes) stays below threshold, both (1.5) cross it: exactly the product of two
binary spikes, built from Lava synapses and a LIF, so nothing moves to the host. Surrogate gradients flow through
it to both inputs in training.

Local objective and plasticity. With spikes held fixed (a local signal: nothing but W sees it),
    l_local(W) = -(1/Z) sum_{t >= 1} sum_{n, p} s_u(t)^T W s_u(t-1) + (lambda / 2) ||W||^2,
Z the number of post-synaptic neuron-steps (t >= 1, n, i, p), whose negative gradient is
    -dl/dW_ij = (1/Z) sum_t sum_{n, p} s_i(t) s_j(t-1) - lambda W_ij:
a causal spike-timing product (pre-synaptic spike at t-1, post-synaptic at t potentiates, pair-based STDP
with a one-step window) with weight decay; ``causal_pairs`` computes that product from the spike trains and
the tests check the identity with autograd. Training minimises MSE + mu l_local (``local_weight`` mu,
``lateral_decay`` lambda): W learns from the surrogate gradient of the denoising loss and from the
plasticity rule. At inference W is fixed.

Stability. Pure Hebbian potentiation feeds on itself: more firing, larger products, larger W, more firing.
The rule's fixed point is W_ij = c_ij / (lambda n), c_ij = P(s_i(t) s_j(t-1)) <= r_i (i's firing rate) and
n = 2C presynaptic channels (hence Z counts i), so at that point a neuron's lateral input is at most
r_i / lambda and the membrane it sustains (leak beta) at most r_i / (lambda (1 - beta)). The default
lambda = 8 keeps that at r_i / 2 for beta = 0.75: below the threshold, so the rule alone never makes ``u``
fire itself into saturation. (Normalised per (t, n, p) only and with lambda = 1, it did: with the selection
gate taking ``u``'s saturation out of the denoising loss, ``u`` went from 0.27 to 0.59 spikes per step in
175 training steps on MNIST.)

Ablation (the same training budget each): base; + lateral (W on ``u``, no mapping or selection); +
selection (``sel`` from d2 and its own recurrence, gating ``u``; no W or m); both.

On Lava. W and R become Lava self-loop synapses: a Lava synapse delays by one step, which is the t-1 of
the model, so they need no alignment. A population with a self-loop is cleared on the step before each
evaluation reaches it (``lava_processes.LIFClear``): otherwise its last spike of the previous evaluation
would arrive through the loop in the first step of the next one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GATE = 0.75  # weight of each AND-gate input: one alone stays below the threshold 1, both cross it
# (beta, threshold) of the gate: the least memory Loihi allows (dv = 4095/4096; dv = 1 is outside its 12-bit
# range). A lone input then builds up to at most 0.75 * 4096/4095 < 1: the gate stays an exact AND.
GATE_NEURON = (1 / 4096, 1.0)


def _fixed(layer: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    layer.weight.data.copy_(weight)
    layer.weight.requires_grad_(False)
    return layer


def extend(model) -> None:
    """Add the lateral matrix, the lateral mapping and the selection network that ``model.config`` asks for
    to a ``SpikingDenoiser`` under construction (before its neurons and weights are made)."""
    cfg = model.config
    two_c, groups = 2 * cfg.channels, cfg.groups
    graph = {name: list(synapses) for name, synapses in model.graph.items()}
    readout = graph.pop("readout")
    if cfg.lateral:
        model.lateral = nn.Conv2d(two_c, two_c, 1, bias=False)  # the lateral matrix W
        graph["u"].append(("lateral", "u"))
    if cfg.selection:
        model.sel_in = nn.Conv2d(two_c, groups, 3, padding=1)
        model.sel_rec = nn.Conv2d(groups, groups, 1, bias=False)  # R
        selection = [("sel_in", "d2"), ("sel_rec", "sel")]
        if cfg.lateral:
            model.lat_map = nn.Conv2d(two_c, groups, 1)  # phi, into the mapping neurons m
            graph["m"] = [("lat_map", "u")]
            model.sel_lat = nn.Conv2d(groups, groups, 1, bias=False)  # V
            selection.append(("sel_lat", "m"))
        graph["sel"] = selection
        member = torch.zeros(two_c, groups, 1, 1)
        member[torch.arange(two_c), torch.arange(two_c) // (two_c // groups)] = GATE
        model.gate_u = _fixed(nn.Conv2d(two_c, two_c, 1, groups=two_c, bias=False), torch.full((two_c, 1, 1, 1), GATE))
        model.gate_sel = _fixed(nn.Conv2d(groups, two_c, 1, bias=False), member)
        graph["ug"] = [("gate_u", "u"), ("gate_sel", "sel")]
        readout = [(syn, "ug" if src == "u" else src) for syn, src in readout]
        model.neuron_params = {**model.neuron_params, "ug": GATE_NEURON}
    graph["readout"] = readout
    model.graph = graph


def open_selection(model) -> None:
    """Start with every substructure selected: a selection bias of 1.5 thresholds makes the selection
    neurons fire unless their input is clearly negative, so the gate passes u and training starts from the
    base denoiser (as the lateral matrix starts at zero)."""
    nn.init.constant_(model.sel_in.bias, 1.5 * model.config.threshold)


def causal_pairs(train: list) -> torch.Tensor:
    """(C, C): (1/Z) sum_{t >= 1} sum_{n, p} s_i(t) s_j(t-1) over a population's spike trains (a list of
    (N, C, H, W) per step), Z the number of post-synaptic neuron-steps (t >= 1, n, i, p): the spike-timing
    product of the plasticity rule, pre at t-1 and post at t."""
    post, pre = torch.stack(train[1:]), torch.stack(train[:-1])
    return torch.einsum("tnixy,tnjxy->ij", post.double(), pre.double()) / post.numel()


def local_objective(train: list, weight: torch.Tensor, decay: float) -> torch.Tensor:
    """l_local of the module docstring for the lateral weight (C, C, 1, 1), spikes held fixed."""
    if len(train) < 2:
        return 0.5 * decay * weight.pow(2).sum()
    post, pre = torch.stack(train[1:]).detach(), torch.stack(train[:-1]).detach()
    drive = F.conv2d(pre.flatten(0, 1).to(weight.dtype), weight)  # the lateral input of steps 1 .. T-1
    return -(post.flatten(0, 1).to(weight.dtype) * drive).sum() / post.numel() + 0.5 * decay * weight.pow(2).sum()
