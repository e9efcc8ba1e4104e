"""lava-dl netx HDF5 networks read back without Lava: into a NIR graph, and straight into a fixed-point
``Deployment`` that carries the file's own integers (so the bit-exact simulator and the cost model run
networks trained and published with lava-dl, such as its PilotNet tutorials).

What a file means is what ``netx.hdf5.Network`` (lava-dl 0.6) builds from it:

- ``layer/<i>`` groups in order, ``type`` input, conv, flatten, dense (pool, average, concat, convT and
  dense_rec are refused, as netx refuses most of them); ``shape`` in (C, H, W) or (N,) / (N, 1, 1);
- conv ``weight`` is PyTorch's (out, in, kH, kW) correlation kernel, with ``stride``/``padding``/``dilation``
  as (H, W) and ``groups``; Lava runs it as stored (8-bit weights, no exponent);
- dense ``weight`` is (out, in) over the source flattened in (C, H, W) order (netx transposes Lava's
  (W, H, C) output back before flattening). netx rescales it into Lava's weight bits and exponent
  (``optimize_weight_bits``), an exact shift: the stored integers are what a neuron receives;
- ``bias`` is a mantissa with exponent 6, per channel (conv) or per neuron (in Lava's (W, H, C) order);
- ``neuron/type`` LOIHI or CUBA is Lava's LIF: ``vth = vThMant``, ``du = iDecay - 1``, ``dv = vDecay``;
  ``refDelay`` and ``gradedSpike`` are ignored, as netx ignores them. SDNN (sigma-delta, graded spikes) is
  not a LIF: such a file is read for its structure only (``to_deployment(..., structure_only=True)``);
- an ``input`` layer with a neuron is a population of its own; its ``a_in`` is the network's input port
  (here: a host input through weights of 1), and lava-dl's benchmarks write a frame into its bias
  (``input_bias``).

netx resets layer i every ``reset_interval`` steps at an offset growing by one per layer: one evaluation of
T steps pipelined layer by layer, which is how spikediff times any network (``deployment.timing``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .. import SpikediffError

LIF_TYPES = ("LOIHI", "CUBA")
DECAY_UNITY = 4096
BIAS_EXP = 6  # netx loads every bias as mantissa << 6


class NetxError(SpikediffError):
    pass


@dataclass(frozen=True)
class NetxLayer:
    index: int  # the file's layer number
    kind: str  # "input", "conv" or "dense"
    shape: tuple  # NIR: (C, H, W) or (N,)
    neuron: dict | None  # type, vth, du, dv (Lava's integers); None: an input layer without neurons
    weight: np.ndarray | None = None  # integers, NIR layout
    bias: np.ndarray | None = None  # mantissas (exponent 6), NIR layout, full shape
    conv: dict = field(default_factory=dict)  # stride, padding, dilation (H, W), groups


@dataclass(frozen=True)
class NetxNetwork:
    path: str
    input_shape: tuple  # NIR (C, H, W) or (N,)
    layers: tuple  # NetxLayer: an optional input layer, then conv and dense layers
    steps: int | None  # simulation/tSample, when the file gives it

    @property
    def neuron_types(self) -> set:
        return {layer.neuron["type"] for layer in self.layers if layer.neuron is not None}

    @property
    def is_lif(self) -> bool:
        return self.neuron_types <= set(LIF_TYPES)


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def _ints(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise NetxError(f"{name}: holds values that are not integers; a netx file stores Loihi integers")
    return arr.astype(np.int64)


def _pair(value) -> tuple:
    return tuple(int(v) for v in np.broadcast_to(np.ravel(value), (2,)))


def _neuron(group, where: str) -> dict:
    kind = _text(group["type"][()]).upper()
    if kind in LIF_TYPES:
        keys = ("vThMant", "iDecay", "vDecay")
        missing = [k for k in keys if k not in group]
        if missing:
            raise NetxError(f"{where}: a {kind} neuron needs {', '.join(missing)}")
        i_decay, v_decay = int(group["iDecay"][()]), int(group["vDecay"][()])
        if not (1 <= i_decay <= DECAY_UNITY and 0 <= v_decay <= DECAY_UNITY):
            raise NetxError(f"{where}: iDecay {i_decay} and vDecay {v_decay} must lie in [1, 4096] and [0, 4096]")
        return {"type": kind, "vth": int(group["vThMant"][()]), "du": i_decay - 1, "dv": v_decay,
                "graded": bool(group["gradedSpike"][()]) if "gradedSpike" in group else False}
    out = {"type": kind}
    if "vThMant" in group:
        out["vth"] = int(group["vThMant"][()])
    return out


def _bias(raw, shape: tuple, where: str) -> np.ndarray:
    """A netx bias (scalar, per channel, or per neuron in Lava's (W, H, C) order) -> NIR layout, full shape."""
    b = _ints(f"{where}/bias", raw)
    if b.size == 1:
        return np.full(shape, int(b.reshape(-1)[0]), np.int64)
    if len(shape) == 3 and b.size == shape[0]:
        return np.broadcast_to(b.reshape(-1, 1, 1), shape).copy()
    if b.size == int(np.prod(shape)):
        return b.reshape(tuple(reversed(shape))).transpose(2, 1, 0).copy() if len(shape) == 3 else b.reshape(shape)
    raise NetxError(f"{where}/bias: {b.size} values for a layer of shape {shape}")


def read_netx(path: str | Path, input_shape: tuple | None = None) -> NetxNetwork:
    """Read a netx HDF5 network; errors name the layer and the problem. ``input_shape`` (NIR order): for a file
    without an input layer (netx's own ``input_shape`` argument), such as the chains ``netx_hdf5`` writes."""
    import h5py

    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise NetxError(f"{path}: not a readable HDF5 file ({exc})") from None
    with h5:
        if "layer" not in h5:
            raise NetxError(f"{path}: no 'layer' group; not a lava-dl netx network")
        group = h5["layer"]
        order = sorted(group, key=int)
        layers, flat_next = [], False
        shape = input_shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
        for key in order:
            g, where = group[key], f"{path.name}: layer {key}"
            kind = _text(g["type"][()])
            if kind == "flatten":
                flat_next = True
                continue
            if kind not in ("input", "conv", "dense"):
                raise NetxError(f"{where}: type {kind!r} is not supported (netx builds input, conv, flatten, dense)")
            if "shape" not in g:
                raise NetxError(f"{where}: no shape")
            raw_shape = tuple(int(d) for d in np.ravel(g["shape"][()]))
            neuron = _neuron(g["neuron"], where) if "neuron" in g else None
            if kind == "input":
                if layers or shape is not None:
                    raise NetxError(f"{where}: an input layer after the first layer")
                input_shape = shape = raw_shape if len(raw_shape) == 3 else (int(np.prod(raw_shape)),)
                if neuron is not None:
                    layers.append(NetxLayer(int(key), "input", shape, neuron))
                continue
            if shape is None:
                raise NetxError(f"{where}: the first layer is not an input layer; its input shape is unknown")
            if neuron is None:
                raise NetxError(f"{where}: a {kind} layer without a neuron group")
            bias = g["bias"][()] if "bias" in g else 0
            if kind == "conv":
                if len(shape) != 3 or flat_next:
                    raise NetxError(f"{where}: a conv layer needs an image-shaped input, got {shape}")
                w = _ints(f"{where}/weight", g["weight"][()])
                w = w.reshape(w.shape[:4])
                out = raw_shape if len(raw_shape) == 3 else None
                conv = {"stride": _pair(g["stride"][()]), "padding": _pair(g["padding"][()]),
                        "dilation": _pair(g["dilation"][()]), "groups": int(g["groups"][()])}
                if w.shape[1] * conv["groups"] != shape[0]:
                    raise NetxError(f"{where}: weight {w.shape} with groups {conv['groups']} does not fit the input "
                                    f"{shape}")
                from .plan import ConvOp

                expect = ConvOp(w, conv["stride"], conv["padding"], conv["dilation"], conv["groups"]).out_shape(shape)
                if out is not None and tuple(out) != tuple(expect):
                    raise NetxError(f"{where}: shape {out} does not match its convolution's output {expect}")
                layer_shape = tuple(expect)
                layers.append(NetxLayer(int(key), "conv", layer_shape, neuron, w,
                                        _bias(bias, layer_shape, where), conv))
            else:
                n_in = int(np.prod(shape))
                n_out = int(np.prod(raw_shape))
                w = _ints(f"{where}/weight", g["weight"][()]).reshape(n_out, -1)
                if w.shape[1] != n_in:
                    raise NetxError(f"{where}: weight {w.shape} for an input of {n_in} values")
                layer_shape = (n_out,)
                layers.append(NetxLayer(int(key), "dense", layer_shape, neuron, w, _bias(bias, layer_shape, where)))
            shape, flat_next = layer_shape, False
        steps = int(h5["simulation/tSample"][()]) if "simulation/tSample" in h5 else None
    if input_shape is None:
        raise NetxError(f"{path}: no input layer (give input_shape)")
    if not any(layer.kind != "input" for layer in layers):
        raise NetxError(f"{path}: no conv or dense layer")
    return NetxNetwork(str(path), input_shape, tuple(layers), steps)


def _nir_neuron(layer: NetxLayer, dt: float, bias: np.ndarray | None, lif_only: bool):
    """The NIR node whose Euler step is Lava's LIF with the layer's integers at scale 1 (weights, threshold and
    bias as they are): decay dv/4096, gain 1. u without memory (du = 4095) is LIF (or IF without leak), else
    CubaLIF. ``bias``: a per-neuron bias carried by the neuron itself (LIF: v_leak)."""
    import nir

    n = layer.neuron
    shape = layer.shape
    if n["type"] not in LIF_TYPES:
        if lif_only:
            raise NetxError(f"layer {layer.index}: a {n['type']} neuron is not a LIF; spikediff runs LIF (LOIHI, CUBA) "
                            f"networks (read it with structure_only=True for its chip mapping)")
        n = {"vth": n.get("vth", 1) or 1, "du": DECAY_UNITY - 1, "dv": 0}  # a stand-in of the same shape
    full = lambda v: np.full(shape, float(v))  # noqa: E731
    thr = full(max(n["vth"], 1))
    a_mem = n["dv"] / DECAY_UNITY
    if n["du"] == DECAY_UNITY - 1:
        if a_mem == 0:
            if bias is not None and np.any(bias):
                raise NetxError(f"layer {layer.index}: a per-neuron bias into a neuron without leak has no NIR form")
            return nir.IF(r=full(1.0), v_threshold=thr, v_reset=full(0.0))
        tau = dt / a_mem
        leak = np.zeros(shape) if bias is None else bias / a_mem
        return nir.LIF(tau=full(tau), r=full(tau / dt), v_leak=leak, v_threshold=thr, v_reset=full(0.0))
    if a_mem == 0:
        raise NetxError(f"layer {layer.index}: a current-based neuron without voltage leak (vDecay 0) is not supported")
    a_syn = (n["du"] + 1) / DECAY_UNITY
    leak = np.zeros(shape) if bias is None else bias / a_mem
    return nir.CubaLIF(tau_syn=full(dt / a_syn), tau_mem=full(dt / a_mem), r=full(1.0 / a_mem), v_leak=leak,
                       v_threshold=thr, v_reset=full(0.0), w_in=full(1.0 / a_syn))


def to_nir(net: NetxNetwork, dt: float = 1e-4, input_bias: np.ndarray | None = None, lif_only: bool = True):
    """The network as a NIR graph whose float model, at weight scale 1, is the file's integer model: nodes
    ``input`` (Input), ``w<i>`` (weights of layer i), ``n<i>`` (its neurons), ``output``. ``input_bias``: a bias
    for the input layer's neurons, NIR layout (a frame written into it, as lava-dl's benchmarks do)."""
    import nir

    nodes = {"input": nir.Input(input_type={"input": np.array(net.input_shape)})}
    edges, prev, shape = [], "input", net.input_shape
    for layer in net.layers:
        name, w_name = f"n{layer.index}", f"w{layer.index}"
        per_neuron = None
        if layer.kind == "input":
            # the population's a_in is the input port: a host input through weights of 1
            c = shape[0]
            if len(shape) == 3:
                nodes[w_name] = nir.Conv2d(input_shape=np.array(shape[1:]), weight=np.ones((c, 1, 1, 1)),
                                           stride=np.array([1, 1]), padding=np.array([0, 0]),
                                           dilation=np.array([1, 1]), groups=c, bias=np.zeros(c))
            else:
                nodes[w_name] = nir.Linear(weight=np.eye(c))
            if input_bias is not None:
                per_neuron = np.broadcast_to(np.asarray(input_bias, np.float64), layer.shape)
        elif layer.kind == "conv":
            channel = layer.bias[:, :1, :1].reshape(-1)
            per_channel = bool(np.all(layer.bias == channel[:, None, None]))
            c = layer.conv
            nodes[w_name] = nir.Conv2d(input_shape=np.array(shape[1:]), weight=layer.weight.astype(np.float64),
                                       stride=np.array(c["stride"]), padding=np.array(c["padding"]),
                                       dilation=np.array(c["dilation"]), groups=c["groups"],
                                       bias=channel.astype(np.float64) if per_channel else np.zeros(len(channel)))
            per_neuron = None if per_channel else layer.bias.astype(np.float64)
        else:
            if len(shape) > 1:
                nodes[f"flat{layer.index}"] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0,
                                                          end_dim=-1)
                edges.append((prev, f"flat{layer.index}"))
                prev = f"flat{layer.index}"
            nodes[w_name] = nir.Affine(weight=layer.weight.astype(np.float64), bias=layer.bias.astype(np.float64))
        nodes[name] = _nir_neuron(layer, dt, per_neuron, lif_only)
        edges += [(prev, w_name), (w_name, name)]
        prev, shape = name, layer.shape
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    meta = {"dt": dt, "source": f"lava-dl netx: {Path(net.path).name}"}
    if net.steps:
        meta["snn_steps"] = net.steps
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def to_deployment(net: NetxNetwork | str | Path, num_steps: int | None = None, input_bias: np.ndarray | None = None,
                  structure_only: bool = False, skip_input_layer: bool = False, dt: float = 1e-4):
    """A fixed-point ``Deployment`` with the file's integers (no rescaling, no rounding): what the bit-exact
    simulator, the mapping and the cost model take. ``num_steps``: T per evaluation (default: the file's
    tSample); ``input_bias``: the input layer's bias mantissas, NIR layout, or (W, H, C) as lava-dl datasets
    give frames; ``structure_only``: accept neurons that are not LIF (sigma-delta), standing in for them with
    silent LIF neurons, for the chip mapping only (its events would mean nothing); ``skip_input_layer``: leave
    the input layer's neurons off the chip, the host sending to the first layer (netx's ``skip_layers=1``)."""
    from .deployment import Deployment, timing
    from .fold import fold
    from .plan import plan
    from .quantize import FixedPoint, FixedPopulation

    if not isinstance(net, NetxNetwork):
        net = read_netx(net)
    if skip_input_layer and net.layers[0].kind == "input":
        net = NetxNetwork(net.path, net.input_shape, net.layers[1:], net.steps)
    first = net.layers[0]
    if input_bias is not None:
        if first.kind != "input":
            raise NetxError(f"{net.path}: input_bias needs an input layer with neurons; this file has none")
        input_bias = _ints("input bias", input_bias)
        if input_bias.shape != first.shape:
            if len(first.shape) == 3 and input_bias.reshape(-1).size == int(np.prod(first.shape)):
                input_bias = input_bias.reshape(tuple(reversed(first.shape))).transpose(2, 1, 0)
            else:
                raise NetxError(f"input bias of shape {input_bias.shape} for an input layer of shape {first.shape}")
    steps = int(num_steps or net.steps or 0)
    if steps < 1:
        raise NetxError(f"{net.path}: the file gives no tSample; say how many steps an evaluation has (num_steps)")
    graph = to_nir(net, dt, input_bias, lif_only=not structure_only)
    p = plan(graph, dt)
    folded = fold(p, dt)
    populations, weights = {}, {}
    for layer in net.layers:
        n = layer.neuron if layer.neuron["type"] in LIF_TYPES else {"vth": 1 << 16, "du": 4095, "dv": 0}
        bias = input_bias if layer.kind == "input" else layer.bias
        bias = np.zeros(layer.shape, np.int64) if bias is None else np.asarray(bias, np.int64)
        populations[f"n{layer.index}"] = FixedPopulation(1, int(n["du"]), int(n["dv"]), int(n["vth"]), bias,
                                                         np.full(layer.shape, BIAS_EXP, np.int64))
        weights[f"w{layer.index}"] = (np.ones((layer.shape[0], 1, 1, 1), np.int64) if layer.kind == "input"
                                      and len(layer.shape) == 3 else np.eye(layer.shape[0], dtype=np.int64)
                                      if layer.kind == "input" else layer.weight)
    syn_names = {f.syn.name for f in folded.synapses}
    if syn_names != set(weights):
        raise NetxError(f"{net.path}: compiled synapses {sorted(syn_names)} do not match the file's layers")
    fixed = FixedPoint({"input": 1}, populations, weights, {})
    notes = [f"read from the lava-dl netx file {Path(net.path).name}: the file's integers, weight scale 1"]
    if structure_only and not net.is_lif:
        notes.append(f"neurons {', '.join(sorted(net.neuron_types - set(LIF_TYPES)))} are not LIF: stand-ins for the "
                     f"chip mapping only; do not simulate")
    return Deployment(graph, MappingProxyType(dict(graph.metadata)), dt, p, folded, fixed, timing(p, steps), False,
                      tuple(notes))
