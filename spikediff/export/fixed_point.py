"""Loihi 2 fixed point for a folded network: integer weights, thresholds, biases and decays, per population.

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
first layer, with a 2x margin, inside the 24-bit current. Lava's Conv has no weight exponent, so none
is used; the per-layer exponent is S_P.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .nir_to_lava import NirGraphError

DECAY_BITS = 12
ACT_SHIFT = 6  # a_in and vth are shifted left by 6 bits inside the neuron
WEIGHT_MAX = 254  # mixed-sign 8-bit weights: even values in [-256, 254]
CURRENT_MAX = (1 << (23 - ACT_SHIFT)) - 1  # |a_in| that keeps u = a_in << 6 inside 24 bits
VTH_MAX = (1 << 17) - 1
BIAS_MANT_MAX = (1 << 12) - 1
BIAS_EXP_MAX = 7
BIAS_EXP_NETX = 6  # lava-dl netx loads biases as mantissas << 6
INPUT_MARGIN = 2.0


@dataclass
class FixedPopulation:
    scale: int  # integer current units per unit of float current
    du: int  # Lava's 12-bit du (the model decays u by (4096 - du - 1) / 4096)
    dv: int  # Lava's 12-bit dv (decay (4096 - dv) / 4096)
    vth: int | None  # None for the readout
    bias_mant: np.ndarray  # NIR shape
    bias_exp: np.ndarray


@dataclass
class FixedPoint:
    input_scale: int  # Q: host input x is sent as round(x * Q)
    populations: dict  # name -> FixedPopulation
    weights: dict  # synapse (weight node) name -> integer weights, layout of the folded synapse
    errors: dict = field(default_factory=dict)  # per synapse / population: quantization error report

    def readout_scale(self, readout: str) -> int:
        """Readout v units per unit of float v (the current scale shifted by 6)."""
        return self.populations[readout].scale << ACT_SHIFT


def encode_input(x: np.ndarray, scale: int) -> np.ndarray:
    """Host input as graded 24-bit integers: round(x * Q), saturated."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * scale), -(1 << 23), (1 << 23) - 1).astype(np.int32)


def decay_to_lava(decay: float, key: str, node: str) -> int:
    """Float decay (fraction lost per step) -> Lava's 12-bit parameter; du carries Lava's offset of 1."""
    grid = decay * (1 << DECAY_BITS)
    if abs(grid - round(grid)) > 1e-9:
        raise NirGraphError(f"NIR node {node!r}: {key} = {decay!r} is not a multiple of 1/4096; Loihi's 12-bit decay "
                            f"cannot represent it exactly")
    value = int(round(grid)) - (1 if key == "du" else 0)
    if not 0 <= value < (1 << DECAY_BITS):
        hint = "a current that never decays" if key == "du" else "a voltage that forgets everything each step"
        raise NirGraphError(f"NIR node {node!r}: {key} = {decay!r} ({hint}) is outside Loihi's 12-bit decay range")
    return value


def quantize_weights(w: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(2 * np.round(np.asarray(w) * scale / 2), -256, WEIGHT_MAX).astype(np.int64)


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


def quantize(folded, input_current_max: dict | None = None) -> FixedPoint:
    """Fixed-point parameters for ``folded`` (``export.folded``).

    ``input_current_max``: for each population fed by the host input, the largest |current| that input
    gives it on calibration data (``calibrate``); without it, the input is assumed to be at most 1.
    """
    p = folded.plan
    populations, weights, errors = {}, {}, {}
    graded = {f.syn.dst for f in folded.synapses if f.syn.src == p.input}
    spiking_max = {name: 0.0 for name in p.populations}
    input_max = {name: 0.0 for name in p.populations}
    worst = {name: np.zeros(int(np.prod(p.shapes[name]))) for name in p.populations}
    for f in folded.synapses:
        m = float(np.abs(f.weight).max()) if f.weight.size else 0.0
        if f.syn.src == p.input:
            input_max[f.syn.dst] = max(input_max[f.syn.dst], m)
            continue
        spiking_max[f.syn.dst] = max(spiking_max[f.syn.dst], m)
        worst[f.syn.dst] = worst[f.syn.dst] + _worst_case(folded, f)

    # Input scale: the largest power of two that leaves the calibrated first-layer current inside u.
    q = 1 << 20
    for name in graded:
        current = (input_current_max or {}).get(name)
        if current is None:
            current = float(sum(np.abs(f.weight).reshape(f.weight.shape[0], -1).sum(1).max()
                                for f in folded.incoming(name) if f.syn.src == p.input))
        limit = CURRENT_MAX * input_max[name] / (WEIGHT_MAX * INPUT_MARGIN * max(current, 1e-12))
        q = min(q, 1 << max(0, int(np.floor(np.log2(max(limit, 1.0))))))

    for name, n in folded.neurons.items():
        m = max(spiking_max[name], input_max[name] / q)
        scale = int(np.floor(WEIGHT_MAX / m)) if m > 0 else 1
        peak = float(worst[name].max()) if worst[name].size else 0.0
        if peak * scale > CURRENT_MAX:
            scale = int(np.floor(CURRENT_MAX / peak))
        if scale < 1:
            raise NirGraphError(f"NIR node {name!r}: its input weights are too large for Loihi's 24-bit current")
        vth = None
        if n.spiking:
            theta = float(np.ravel(n.v_threshold)[0])
            vth = int(round(theta * scale))
            if not 0 <= vth <= VTH_MAX:
                raise NirGraphError(f"NIR node {name!r}: threshold {theta} at scale {scale} is outside Loihi's 17 bits")
        mant, exp = bias_to_lava(folded.bias[name] * (scale << ACT_SHIFT))
        populations[name] = FixedPopulation(scale, decay_to_lava(float(np.ravel(n.du)[0]), "du", name),
                                            decay_to_lava(float(np.ravel(n.dv)[0]), "dv", name), vth, mant, exp)
        bias_err = np.abs(mant * (1 << exp) / (scale << ACT_SHIFT) - folded.bias[name])
        errors[name] = {"scale": scale, "vth": vth, "threshold_error": abs(vth / scale - theta) if vth else 0.0,
                        "max_bias_error": float(bias_err.max()) if bias_err.size else 0.0}

    for f in folded.synapses:
        scale = populations[f.syn.dst].scale / (q if f.syn.src == p.input else 1)
        w_int = quantize_weights(f.weight, scale)
        weights[f.syn.name] = w_int
        err = np.abs(w_int / scale - f.weight)
        errors[f.syn.name] = {"max_abs_error": float(err.max()), "rms_error": float(np.sqrt((err ** 2).mean())),
                              "max_abs_weight": float(np.abs(f.weight).max()), "max_int": int(np.abs(w_int).max())}
    return FixedPoint(q, populations, weights, errors)


def _worst_case(folded, f) -> np.ndarray:
    """Per target neuron (channel for convs), the largest |sum| of its weights when all inputs of one sign fire."""
    w = f.weight.reshape(f.weight.shape[0], -1)
    worst = np.maximum(np.clip(w, 0, None).sum(1), -np.clip(w, None, 0).sum(1))
    if f.conv is not None:  # one value per output channel: spread over its positions
        size = int(np.prod(folded.plan.shapes[f.syn.dst]))
        worst = np.repeat(worst, size // len(worst))
    return worst


def calibrate(folded, inputs: np.ndarray) -> dict:
    """Largest |current| the host ``inputs`` (N, *input shape, NIR layout) send into each population they feed."""
    from .folded import synaptic_input

    out: dict = {}
    for f in folded.synapses:
        if f.syn.src == folded.plan.input:
            cur = synaptic_input(f, inputs)
            out[f.syn.dst] = out.get(f.syn.dst, 0.0) + (float(np.abs(cur).max()) if cur.size else 0.0)
    return out


def for_graph(graph, folded=None) -> FixedPoint:
    """The fixed point of a graph written by ``spikediff export``, its input scale calibrated on a fixed set
    of inputs that depends on the graph alone, not on what a run is asked for: for a DDIM denoiser standard
    normal images at ten time steps; for the SDID random token grids (masks included) at ten masked
    fractions; for the token decoder every code on the whole grid."""
    from .folded import fold

    folded = folded if folded is not None else fold(graph)
    return quantize(folded, calibrate(folded, calibration_inputs(graph)))


def calibration_inputs(graph) -> np.ndarray:
    """The host inputs ``for_graph`` calibrates the input scale on (NIR layout, float64)."""
    from ..runtime.decode import host_input
    from .nir_graph import read_metadata

    network = (graph.metadata or {}).get("network")
    rng = np.random.default_rng(0)
    if network == "SpikingTokenDenoiser":
        from ..models.token_denoiser import token_input

        meta = read_metadata(graph, ("codebook_size", "grid", "time_features", "max_period"))
        k, g = int(meta["codebook_size"]), int(meta["grid"])
        tokens = rng.integers(0, k + 1, (16, g, g))
        return np.concatenate([token_input(tokens, r, k, int(meta["time_features"]), float(meta["max_period"]),
                                           "float64") for r in np.linspace(0, 1, 10)])
    if network == "TokenDecoder":
        from ..models.spiking_vq import token_onehot

        meta = read_metadata(graph, ("codebook_size", "image_shape", "patch"))
        k, g = int(meta["codebook_size"]), int(meta["image_shape"][-1]) // int(meta["patch"])
        return token_onehot(np.repeat(np.arange(k), g * g).reshape(k, g, g), k, "float64")
    meta = read_metadata(graph, ("image_shape", "num_train_timesteps", "time_features", "max_period"))
    c, h, w = (int(d) for d in meta["image_shape"])
    x = rng.standard_normal((16, c, h, w))
    ts = np.linspace(0, int(meta["num_train_timesteps"]) - 1, 10).round().astype(int)
    return np.concatenate([host_input(x, int(t), int(meta["time_features"]), float(meta["max_period"]), "float64")
                           for t in ts])
