"""Loihi 2 fixed point for a folded network: integer weights, thresholds, biases and decays, per population
(the third stage of the deployment compiler).

What the integers mean is fixed by Lava's bit-accurate models (``lava.proc.lif.models``,
``lava.proc.dense.models``, ``lava.proc.conv.models``): a synapse sends sum(w_int * s) for binary spikes s
(graded host input: integers); the neuron shifts it left by 6 into the 24-bit current u, decays u and v
with 12-bit factors (truncating towards zero), adds ``bias_mant << bias_exp`` to v and fires when
``v > vth << 6``. Weights are 8-bit mantissas; with mixed signs Lava keeps the even values in [-256, 254].

Choice of scale. Population P gets one integer scale S_P (current units per unit of the float model's
current). Its threshold is vth = theta * S_P, and the largest incoming weight uses the whole mantissa:
S_P = floor(254 / max |w|), lowered if the worst case input (every positive or every negative input
active) could wrap the 24-bit current. The host input is sent as graded integers x_int = x * Q with one
power-of-two Q for the whole input; Q is the largest that keeps the calibrated input current of the
first layer, with a 2x margin, inside the 24-bit current (one Q per Input). Lava's Conv has no weight
exponent, so none is used; the per-layer exponent is S_P.

What cannot be represented is rounded to the nearest value that can, and the error is reported per layer
(``FixedPoint.errors``): decays that are not multiples of 1/4096, thresholds theta * S_P that are not
integers. ``strict=True`` refuses such a graph instead, naming the node (for thresholds it first looks for a
scale at which the threshold is exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .plan import NirGraphError, abs_max, is_merged

DECAY_BITS = 12
ACT_SHIFT = 6  # a_in and vth are shifted left by 6 bits inside the neuron
WEIGHT_MAX = 254  # mixed-sign 8-bit weights: even values in [-256, 254]
CURRENT_MAX = (1 << (23 - ACT_SHIFT)) - 1  # |a_in| that keeps u = a_in << 6 inside 24 bits
VTH_MAX = (1 << 17) - 1
BIAS_MANT_MAX = (1 << 12) - 1
BIAS_EXP_MAX = 7
BIAS_EXP_NETX = 6  # lava-dl netx loads biases as mantissas << 6
BIAS_V_MAX = (BIAS_MANT_MAX + 0.5) * (1 << BIAS_EXP_MAX)  # |bias| in v units that rounds into the mantissa
INPUT_MARGIN = 2.0


@dataclass(frozen=True)
class FixedPopulation:
    scale: int  # integer current units per unit of float current
    du: int  # Lava's 12-bit du (the model decays u by (4096 - du - 1) / 4096)
    dv: int  # Lava's 12-bit dv (decay (4096 - dv) / 4096)
    vth: int | None  # None for the readout
    bias_mant: np.ndarray  # NIR shape
    bias_exp: np.ndarray


@dataclass(frozen=True)
class FixedPoint:
    input_scales: dict  # Input -> Q: host input x is sent as round(x * Q)
    populations: dict  # name -> FixedPopulation
    weights: dict  # synapse name -> integer weights, layout of the folded synapse
    errors: dict = field(default_factory=dict)  # per synapse / population: quantization error report

    @property
    def input_scale(self) -> int:
        """Q of the one Input (samplers have one)."""
        if len(self.input_scales) != 1:
            raise NirGraphError(f"this network has {len(self.input_scales)} inputs, each with its own scale")
        return next(iter(self.input_scales.values()))

    def weight_scale(self, syn) -> float:
        """Integer weight units per unit of float weight of synapse ``syn`` (a ``plan.Synapse``): its target's
        current scale, divided by the input scale when a host Input sends it."""
        return self.populations[syn.dst].scale / self.input_scales.get(syn.src, 1)

    def readout_scale(self, readout: str) -> int:
        """Readout v units per unit of float v (the current scale shifted by 6)."""
        return self.populations[readout].scale << ACT_SHIFT

    def digest(self) -> str:
        """SHA-256 of every integer the chip is given (scales, decays, thresholds, biases, weights): two compiles
        that run alike have the same digest."""
        import hashlib

        h = hashlib.sha256()
        for name, q in sorted(self.input_scales.items()):
            h.update(f"input {name} {q};".encode())
        for name, q in sorted(self.populations.items()):
            h.update(f"population {name} {q.scale} {q.du} {q.dv} {q.vth};".encode())
            for a in (q.bias_mant, q.bias_exp):
                h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
        for name, w in sorted(self.weights.items()):
            h.update(f"synapse {name} {np.shape(w)};".encode())
            for block in w.blocks() if is_merged(w) else (w,):  # the dense bytes, a merged kernel's in blocks
                h.update(np.ascontiguousarray(block, dtype=np.int64).tobytes())
        return h.hexdigest()


def encode_input(x: np.ndarray, scale: int) -> np.ndarray:
    """Host input as graded 24-bit integers: round(x * Q), saturated."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * scale), -(1 << 23), (1 << 23) - 1).astype(np.int32)


def decay_to_lava(decay: float, key: str, node: str, strict: bool = True) -> int:
    """Float decay (fraction lost per step) -> Lava's 12-bit parameter; du carries Lava's offset of 1. Off the
    1/4096 grid: an error with ``strict``, else the nearest grid value."""
    grid = decay * (1 << DECAY_BITS)
    if strict and abs(grid - round(grid)) > 1e-9:
        raise NirGraphError(f"NIR node {node!r}: {key} = {decay!r} is not a multiple of 1/4096; Loihi's 12-bit decay "
                            f"cannot represent it exactly (without --strict it is rounded, and the error reported)")
    value = int(round(grid)) - (1 if key == "du" else 0)
    if not 0 <= value < (1 << DECAY_BITS):
        hint = "a current that never decays" if key == "du" else "a voltage that forgets everything each step"
        raise NirGraphError(f"NIR node {node!r}: {key} = {decay!r} ({hint}) is outside Loihi's 12-bit decay range")
    return value


def quantize_weights(w, scale: float):
    """Loihi's even 8-bit weights of ``w`` at ``scale``; a merged kernel (``models.s2d.MergedKernel``) stays one."""
    if is_merged(w):
        return w.map(lambda v: quantize_weights(v, scale))
    return np.clip(2 * np.round(np.asarray(w) * scale / 2), -256, WEIGHT_MAX).astype(np.int64)


def weight_error(w, w_int, scale: float) -> dict:
    """The error report of one synapse's quantized weights (``FixedPoint.errors``), over every dense weight (a
    merged kernel's taps counted as often as the dense kernel holds them)."""
    if is_merged(w):
        err = np.abs(w_int.values / scale - w.values)
        rms = np.sqrt(w.dense_sum(err ** 2) / w.size) if w.size else 0.0
        return {"max_abs_error": float(err.max()), "rms_error": float(rms), "max_abs_weight": w.abs_max(),
                "max_int": int(w_int.abs_max())}
    err = np.abs(w_int / scale - w)
    return {"max_abs_error": float(err.max()), "rms_error": float(np.sqrt((err ** 2).mean())),
            "max_abs_weight": float(np.abs(w).max()), "max_int": int(np.abs(w_int).max())}


def bias_to_lava(bias_v: np.ndarray, min_exp: int = BIAS_EXP_NETX) -> tuple:
    """Bias in v units -> (13-bit mantissa, 3-bit exponent) per neuron: the exponent is ``min_exp`` (lava-dl
    netx fixes it at 6) unless the mantissa needs a larger one."""
    bias_v = np.asarray(bias_v, dtype=np.float64)
    exp = np.full(bias_v.shape, min_exp, dtype=np.int64)
    mag = np.abs(bias_v)
    while True:
        over = np.round(mag / (1 << exp)) > BIAS_MANT_MAX
        if not over.any():
            break
        if (exp[over] >= BIAS_EXP_MAX).any():
            raise NirGraphError(f"bias {mag.max():.4g} (v units) exceeds Loihi's 13-bit mantissa << 7")
        exp[over] += 1
    return np.round(bias_v / (1 << exp)).astype(np.int64), exp


def quantize(folded, input_current_max: dict | None = None, strict: bool = False) -> FixedPoint:
    """Fixed-point parameters for ``folded`` (``export.fold``).

    ``input_current_max``: for each population fed by a host input, the largest |current| that input gives it
    on calibration data (``calibrate``); without it, the worst case of an input of at most 1.
    """
    p = folded.plan
    populations, weights, errors = {}, {}, {}
    inputs = set(p.inputs)
    spiking_max = {name: 0.0 for name in p.populations}
    input_max = {name: {} for name in p.populations}  # population -> {input: max |w|}
    worst = {name: np.zeros(int(np.prod(p.shapes[name]))) for name in p.populations}
    for f in folded.synapses:
        m = abs_max(f.weight)
        if f.syn.src in inputs:
            input_max[f.syn.dst][f.syn.src] = max(input_max[f.syn.dst].get(f.syn.src, 0.0), m)
            continue
        spiking_max[f.syn.dst] = max(spiking_max[f.syn.dst], m)
        worst[f.syn.dst] = worst[f.syn.dst] + _worst_case(folded, f)

    # Input scale per Input: the largest power of two that leaves the calibrated current inside u.
    scales = {name: 1 << 20 for name in p.inputs}
    for f in folded.synapses:
        if f.syn.src not in inputs:
            continue
        name, src = f.syn.dst, f.syn.src
        current = (input_current_max or {}).get(name)
        if current is None:
            current = float(sum(np.abs(g.weight).reshape(g.weight.shape[0], -1).sum(1).max()
                                for g in folded.incoming(name) if g.syn.src in inputs))
        limit = CURRENT_MAX * input_max[name][src] / (WEIGHT_MAX * INPUT_MARGIN * max(current, 1e-12))
        scales[src] = min(scales[src], 1 << max(0, int(np.floor(np.log2(max(limit, 1.0))))))

    for name, n in folded.neurons.items():
        m = max([spiking_max[name]] + [w / scales[src] for src, w in input_max[name].items()])
        scale = int(np.floor(WEIGHT_MAX / m)) if m > 0 else 1
        peak = float(worst[name].max()) if worst[name].size else 0.0
        if peak * scale > CURRENT_MAX:
            scale = int(np.floor(CURRENT_MAX / peak))
        if scale < 1:
            raise NirGraphError(f"NIR node {name!r}: its input weights are too large for Loihi's 24-bit current")
        bias_peak = float(np.abs(folded.bias[name]).max()) if np.size(folded.bias[name]) else 0.0
        if bias_peak * (scale << ACT_SHIFT) >= BIAS_V_MAX:  # small weights, large bias: the bias sets the scale
            scale = int(np.ceil(BIAS_V_MAX / (bias_peak * (1 << ACT_SHIFT)))) - 1  # strictly below the limit
            if scale < 1:
                raise NirGraphError(f"NIR node {name!r}: bias {bias_peak:.4g} exceeds Loihi's 13-bit mantissa << 7 "
                                    f"at any weight scale")
        vth = None
        theta = folded.scalar(name, "v_threshold") if n.spiking else 0.0
        if n.spiking:
            scale = min(scale, max(1, int(VTH_MAX // theta)))  # tiny weights: the threshold still fits 17 bits
            scale = _exact_threshold_scale(name, theta, scale) if strict else scale
            vth = int(round(theta * scale))
            if not 0 <= vth <= VTH_MAX:
                raise NirGraphError(f"NIR node {name!r}: threshold {theta} at scale {scale} is outside Loihi's 17 bits")
        mant, exp = bias_to_lava(folded.bias[name] * (scale << ACT_SHIFT))
        du, dv = folded.scalar(name, "du"), folded.scalar(name, "dv")
        q_du, q_dv = decay_to_lava(du, "du", name, strict), decay_to_lava(dv, "dv", name, strict)
        populations[name] = FixedPopulation(scale, q_du, q_dv, vth, mant, exp)
        bias_err = np.abs(mant * (1 << exp) / (scale << ACT_SHIFT) - folded.bias[name])
        errors[name] = {"scale": scale, "vth": vth, "threshold_error": abs(vth / scale - theta) if vth else 0.0,
                        "max_bias_error": float(bias_err.max()) if bias_err.size else 0.0,
                        "du_error": abs((q_du + 1) / (1 << DECAY_BITS) - du),
                        "dv_error": abs(q_dv / (1 << DECAY_BITS) - dv)}

    fixed = FixedPoint(scales, populations, weights, errors)  # its weights and errors are filled in below
    for f in folded.synapses:
        scale = fixed.weight_scale(f.syn)
        weights[f.syn.name] = w_int = quantize_weights(f.weight, scale)
        errors[f.syn.name] = weight_error(f.weight, w_int, scale)
    return fixed


def _exact_threshold_scale(name: str, theta: float, scale: int) -> int:
    """The largest scale <= ``scale`` at which theta * scale is an integer (``strict``), or an error."""
    for s in range(scale, max(0, scale // 4), -1):
        if abs(theta * s - round(theta * s)) <= 1e-9 * max(1.0, theta * s):
            return s
    raise NirGraphError(f"NIR node {name!r}: threshold {theta} is not an integer at any weight scale from {scale // 4 + 1} "
                        f"to {scale}; Loihi's integer threshold cannot represent it (without --strict it is rounded)")


def _worst_case(folded, f) -> np.ndarray:
    """Per target neuron (channel for convs), the largest |sum| of its weights when all inputs of one sign fire."""
    if is_merged(f.weight):
        v = f.weight.values
        worst = np.maximum(f.weight.per_channel(np.clip(v, 0, None)), -f.weight.per_channel(np.clip(v, None, 0)))
    else:
        w = f.weight.reshape(f.weight.shape[0], -1)
        worst = np.maximum(np.clip(w, 0, None).sum(1), -np.clip(w, None, 0).sum(1))
    if f.conv is not None:  # one value per output channel: spread over its positions
        size = int(np.prod(folded.plan.shapes[f.syn.dst]))
        worst = np.repeat(worst, size // len(worst))
    return worst


def calibrate(folded, inputs) -> dict:
    """Largest |current| host inputs send into each population they feed: ``inputs`` is {Input: (N, *shape)}
    in NIR layout, or one array for a graph with one Input (a time axis, if any, folded into N)."""
    from .fold import synaptic_input

    if not isinstance(inputs, dict):
        inputs = {folded.plan.input: inputs}
    out: dict = {}
    for f in folded.synapses:
        if f.syn.src in inputs:
            x = np.asarray(inputs[f.syn.src], dtype=np.float64).reshape(-1, *f.src_shape)
            cur = synaptic_input(f, x)
            out[f.syn.dst] = out.get(f.syn.dst, 0.0) + (float(np.abs(cur).max()) if cur.size else 0.0)
    return out
