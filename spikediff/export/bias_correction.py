"""Readout bias correction: the fixed-point network's systematic error at its non-spiking readouts, measured on
calibration inputs and cancelled by a constant input current (the last stage of a fixed-point compile).

Why: rounding every weight to Loihi's 8-bit grid and running the neurons in integers moves each readout
neuron's *mean* output a little, and the same way for every input: on the shipped latent decoder, by up to
0.1 of the [-1, 1] pixel range (a faint grid behind every digit). Image metrics punish
that far beyond its size: cancelling it took the shipped latent sampler from FID 87.9 to 65.3 in fixed point
(float: 55.1; ``benchmarks/bias_correction.py``). A readout is linear in a constant input, so the mean offset
can be cancelled: the empirical bias correction of post-training quantization (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019), here per readout neuron: each one
errs by its own amount (a convolution's border neurons see different inputs from its inner ones).

How: the float and the fixed-point deployments run the calibration inputs on the bit-exact simulator; per
readout neuron, d = mean over inputs and steps of (fixed readout - float readout), in float units. A constant
current c entering the readout every step raises its v at step t by c * (1 + r + ... + r^t), r = 1 - dv / 4096,
so its mean over the T steps by c * G, G = the mean of those sums; c = -d / G. It enters as a synapse from
``CONST`` (the neuron that fires every step, ``export.fold``), quantized like every weight into the readout,
rather than as a neuron bias: a readout without a bias can still be the on-chip neuron that sums its state
(``runtime.build``), and a synapse input reaches that neuron's current exactly as it reaches the readout's.
Only the fixed-point deployment changes; the NIR graph and the float deployment keep the trained network.

Against what: a network trained quantization-aware (``train.qat``; its graph's metadata says
``trained_on_grid``) learned with its weights on the grid, so the network it is meant to be is the float one
with those weights (each integer weight over its scale), not its float weights: it is corrected against that
(``reference="grid"``), and only what the integer neurons add is cancelled. Corrected against the float
weights instead, the correction undoes what the training learned: on a quantization-aware ``mnist-vq``
decoder, it left the fixed-point reconstructions further from the images than no correction did.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .fold import FoldedSynapse
from .plan import CONST, DenseOp, NirGraphError, Synapse, is_merged
from .quantize import DECAY_BITS, WEIGHT_MAX, quantize_weights, weight_error

BATCH = 64  # calibration inputs per simulator batch
SUFFIX = ".bias_correction"  # the name of the correcting synapse: "<readout>.bias_correction"


@dataclass(frozen=True)
class BiasCorrection:
    """What the correction did to one readout: offsets in float units of its mean output, on the calibration
    inputs it was measured on."""

    population: str
    inputs: int
    mean_abs_offset: float  # before: mean over neurons of |fixed - float|
    max_abs_offset: float
    mean_abs_after: float  # the same, measured again with the correction compiled in
    clipped: int  # neurons whose correction did not fit the weight grid (corrected in part)

    def note(self) -> str:
        clipped = f"; {self.clipped} neurons only in part" if self.clipped else ""
        return (f"{self.population}: fixed point's mean offset cancelled by a constant input ({self.population}"
                f"{SUFFIX}), measured on {self.inputs} calibration inputs: mean |offset| {self.mean_abs_offset:.3g}, "
                f"max {self.max_abs_offset:.3g}; after {self.mean_abs_after:.3g}{clipped}")


def _readout_means(dep, inputs: dict, n: int) -> dict:
    """{non-spiking output population: (neurons,) its state averaged over inputs and steps, in float units}."""
    from .simulator import Simulator

    sim, sums = Simulator(dep), {}
    for i in range(0, n, BATCH):
        for name, s in sim.evaluate({k: v[i:i + BATCH] for k, v in inputs.items()})["states"].items():
            total = s.double().sum(dim=(0, 1)).reshape(-1).cpu().numpy() / dep.readout_scale(name)
            sums[name] = sums.get(name, 0.0) + total
    return {name: total / (n * dep.num_steps) for name, total in sums.items()}


def step_gain(dv: int, num_steps: int) -> float:
    """G: how much a constant input of one unit per step raises the readout's v, averaged over the T steps."""
    keep = 1 - dv / (1 << DECAY_BITS)
    return float(np.cumsum(keep ** np.arange(num_steps)).mean())


def on_grid(dep):
    """The float deployment of a fixed-point one's weights (every integer weight over its scale): the network a
    quantization-aware run trained."""
    fx = dep.fixed
    def grid(f):
        w, scale = fx.weights[f.syn.name], fx.weight_scale(f.syn)
        return w.map(lambda v: v / scale) if is_merged(w) else w / scale

    synapses = tuple(replace(f, op=f.op.with_weight(grid(f))) for f in dep.folded.synapses)
    return replace(dep, fixed=None, folded=replace(dep.folded, synapses=synapses))


REFERENCES = ("float", "grid")


def correct_readout_bias(dep, inputs, reference: str = "float") -> tuple:
    """(the fixed-point ``Deployment`` with its readouts' offsets cancelled, [BiasCorrection]); ``inputs``: its
    calibration inputs, (N, *input shape) or {Input: (N, *shape)}, constant or (N, T, ...) series.
    ``reference``: the float network the offsets are measured against: ``"float"`` its float weights,
    ``"grid"`` its weights on the fixed-point grid (``on_grid``; for a quantization-aware network)."""
    if dep.fixed is None:
        raise NirGraphError("bias correction is for a fixed-point deployment")
    if reference not in REFERENCES:
        raise NirGraphError(f"bias correction: reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    if not isinstance(inputs, dict):
        inputs = {dep.plan.input: inputs}
    inputs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    n = len(next(iter(inputs.values())))
    fixed_means = _readout_means(dep, inputs, n) if n else {}
    if not fixed_means:
        return dep, []
    float_means = _readout_means(on_grid(dep) if reference == "grid" else replace(dep, fixed=None), inputs, n)
    folded, fx = dep.folded, dep.fixed
    synapses, weights, errors = list(folded.synapses), dict(fx.weights), dict(fx.errors)
    clipped = {}  # corrected readout -> its neurons whose correction did not fit the weight grid
    offsets = {name: fixed_means[name] - float_means[name] for name in fixed_means}
    for name, offset in offsets.items():
        q = fx.populations[name]
        if not np.any(offset):
            continue
        current = -offset / step_gain(q.dv, dep.num_steps)  # float current units, NIR flat order
        # a readout fed by its own CONST synapse already (a current-based readout's synaptic bias): add to it
        existing = next((f for f in synapses if f.syn.src == CONST and f.syn.dst == name), None)
        base = existing.weight[:, 0] if existing is not None else np.zeros_like(current)
        limit = WEIGHT_MAX / q.scale
        clipped[name] = int((np.abs(base + current) > limit).sum())
        weight = np.clip(base + current, -limit, limit).reshape(-1, 1)
        if existing is not None:
            synapses[synapses.index(existing)] = replace(existing, op=DenseOp(weight))
            key = existing.syn.name
        else:
            syn = Synapse(name + SUFFIX, CONST, name, DenseOp(np.zeros_like(weight)), None, 0, (name,))
            synapses.append(FoldedSynapse(syn, DenseOp(weight), (1,), tuple(dep.plan.shapes[name])))
            key = syn.name
        weights[key] = quantize_weights(weight, q.scale)
        errors[key] = weight_error(weight, weights[key], q.scale)
    if not clipped:  # nothing corrected
        return dep, []
    corrected = replace(dep, folded=replace(folded, synapses=tuple(synapses)),
                        fixed=replace(fx, weights=weights, errors=errors))
    after = _readout_means(corrected, inputs, n)
    report = [BiasCorrection(name, n, float(np.abs(offsets[name]).mean()), float(np.abs(offsets[name]).max()),
                             float(np.abs(after[name] - float_means[name]).mean()), clipped[name])
              for name in clipped]
    return corrected, report
