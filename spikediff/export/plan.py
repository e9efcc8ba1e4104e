"""A NIR graph read into populations and synapses: the first stage of the deployment compiler.

Populations are the neuron nodes (LIF, IF, CubaLIF spike; LI, CubaLI, I do not and must feed an Output).
Everything between two populations (or between an Input and a population) is one *synapse*: the linear
nodes on that path (Conv2d, Linear, Affine, SumPool2d, AvgPool2d, Scale, Flatten) composed into one
convolution or one dense matrix, plus the steps of any Delay nodes on it. Lava, the simulator and a chip
all run one weight layer per synapse, so composing is what lets a Sinabs-style ``LIF -> SumPool2d ->
Conv2d`` or a ``Conv2d -> Flatten -> Affine`` run at all. Composition is exact up to floating-point rounding
of the products; where it is not exact (a pooling window that overhangs the image) or would be too large
as a dense matrix, the graph is refused with the nodes named.

Fan-in is a sum; fan-out is allowed; a synapse from a population to itself is recurrent (it delivers the
previous step's spikes); longer cycles are refused. Every number is checked on the way in: non-finite
weights or parameters, thresholds that are not positive and Outputs that declare the wrong size are
errors that name the node. Shapes come from the neuron parameters where they are full arrays and are
otherwise inferred from the weights (snnTorch writes scalar parameters).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import numpy as np

from .. import SpikediffError

SPIKING = ("LIF", "IF", "CubaLIF")
NONSPIKING = ("LI", "CubaLI", "I")
WEIGHTS = ("Conv2d", "Linear", "Affine", "SumPool2d", "AvgPool2d", "Scale")
PASSING = ("Flatten", "Delay")
CONST = "__const__"  # the source of constant currents (a neuron that fires at every step; see ``fold``)
DENSE_LIMIT = 1 << 24  # entries of a composed dense matrix (128 MB in float64)


class NirGraphError(SpikediffError):
    pass


def is_compact(weight) -> bool:
    """``weight`` is a derived kernel held in a compact form: as its natural kernel (``models.s2d.DerivedKernel``)
    or as its merged taps (``models.s2d.MergedKernel``, fixed point). Checked without importing that module (and
    torch): if it is not loaded, no such kernel exists."""
    s2d = sys.modules.get(__name__.rsplit(".", 2)[0] + ".models.s2d")
    return s2d is not None and isinstance(weight, (s2d.DerivedKernel, s2d.MergedKernel))


def is_merged(weight) -> bool:
    """``weight`` is a derived kernel held as its merged taps (``models.s2d.MergedKernel``)."""
    s2d = sys.modules.get(__name__.rsplit(".", 2)[0] + ".models.s2d")
    return s2d is not None and isinstance(weight, s2d.MergedKernel)


def abs_max(weight) -> float:
    """max |w| of a weight array or compact kernel (0 for an empty one), without making a compact one dense."""
    if is_merged(weight):
        return weight.abs_max()
    w = np.asarray(weight)
    return float(np.abs(w).max()) if w.size else 0.0


@dataclass(frozen=True)
class ConvOp:
    """A convolution in NIR layout (correlation, (C_out, C_in / groups, kH, kW) weights)."""

    weight: np.ndarray
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    s2d: object = None  # models.s2d.S2DGeometry when the NIR node says the kernel is derived for s2d layouts

    def out_shape(self, in_shape: tuple) -> tuple:
        _c, h, w = in_shape
        k = self.weight.shape
        size = [(n + 2 * self.padding[i] - self.dilation[i] * (k[2 + i] - 1) - 1) // self.stride[i] + 1
                for i, n in enumerate((h, w))]
        return (k[0], int(size[0]), int(size[1]))

    @property
    def compact(self) -> bool:
        """The kernel is held as its natural one (``models.s2d.DerivedKernel``)."""
        return is_compact(self.weight)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(B, C, H, W) -> (B, C_out, H', W'), float64."""
        import torch

        if is_merged(self.weight):
            from .natural_conv import MergedConv

            return MergedConv.of(self.weight)(torch.as_tensor(np.asarray(x, np.float64))).numpy()
        if self.compact:
            from .natural_conv import NaturalConv

            kernel = torch.from_numpy(np.asarray(self.weight.natural, np.float64))
            return NaturalConv(kernel, self.weight.geometry)(torch.as_tensor(np.asarray(x, np.float64))).numpy()
        return torch.nn.functional.conv2d(torch.as_tensor(np.asarray(x, np.float64)), torch.as_tensor(self.weight),
                                          None, self.stride, self.padding, self.dilation, self.groups).numpy()

    def with_weight(self, weight: np.ndarray) -> ConvOp:
        return ConvOp(weight, self.stride, self.padding, self.dilation, self.groups, self.s2d)

    def scaled(self, per_out: np.ndarray) -> ConvOp:
        """Output channel c times ``per_out[c]`` (a compact kernel stays compact where it can)."""
        if self.compact:
            return self.with_weight(self.weight.scaled(per_out))
        return self.with_weight(self.weight * np.asarray(per_out).reshape(-1, 1, 1, 1))

    def matrix(self, in_shape: tuple):
        """The convolution as a sparse (out, in) matrix over flat NIR-order arrays (scipy CSR; zero weights
        dropped): for synapses that must be one matrix, such as Loihi's delayed sparse synapses."""
        from scipy.sparse import csr_matrix

        c_in, h, w = in_shape
        weight = np.asarray(self.weight)
        co, ci_g, kh, kw = weight.shape
        out = self.out_shape(in_shape)
        o, oy, ox, j, ky, kx = np.meshgrid(np.arange(co), np.arange(out[1]), np.arange(out[2]), np.arange(ci_g),
                                           np.arange(kh), np.arange(kw), indexing="ij")
        y = oy * self.stride[0] - self.padding[0] + ky * self.dilation[0]
        x = ox * self.stride[1] - self.padding[1] + kx * self.dilation[1]
        ci = (o // (co // self.groups)) * ci_g + j
        keep = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        values = weight[o, j, ky, kx]
        keep &= values != 0
        rows = ((o * out[1] + oy) * out[2] + ox)[keep]
        cols = ((ci * h + y) * w + x)[keep]
        return csr_matrix((values[keep], (rows, cols)), shape=(int(np.prod(out)), c_in * h * w))


@dataclass(frozen=True)
class DenseOp:
    """A dense matrix (out, in) over the source flattened in NIR (C-order) layout."""

    weight: np.ndarray

    def out_shape(self, in_shape: tuple) -> tuple:
        return (int(self.weight.shape[0]),)

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return x.reshape(len(x), -1) @ self.weight.T

    def with_weight(self, weight: np.ndarray) -> DenseOp:
        return DenseOp(weight)

    def scaled(self, per_out: np.ndarray) -> DenseOp:
        return DenseOp(self.weight * np.asarray(per_out).reshape(-1, 1))


@dataclass(frozen=True)
class Synapse:
    """One weight layer between a source (an Input, a population or ``CONST``) and a population."""

    name: str  # the NIR weight node(s) it is made of, joined with "+"
    src: str
    dst: str
    op: ConvOp | DenseOp
    bias: np.ndarray | None  # constant input current, the destination's NIR shape (before its input gain)
    delay: int = 0  # NIR Delay steps on the path (beyond the step every synapse takes on Lava)
    nodes: tuple = ()  # every NIR node on the path
    flat_in: bool = False  # a dense layer reading an image-shaped source (flattened in NIR order)
    flat_out: bool = False  # a convolution into a flat population (its output flattened in NIR order)

    @property
    def is_conv(self) -> bool:
        return isinstance(self.op, ConvOp)

    @property
    def recurrent(self) -> bool:
        return self.src == self.dst


@dataclass(frozen=True)
class Population:
    name: str
    node: object  # the NIR neuron node
    kind: str  # its NIR type
    shape: tuple

    @property
    def spiking(self) -> bool:
        return self.kind in SPIKING

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Plan:
    inputs: dict  # Input node -> NIR shape
    populations: dict  # name -> Population, in topological order
    synapses: tuple
    outputs: dict  # Output node -> the population that feeds it
    latency: dict = field(default_factory=dict)  # population -> longest synapse path from an input

    @property
    def shapes(self) -> dict:
        return {**self.inputs, **{k: p.shape for k, p in self.populations.items()}, CONST: (1,)}

    @property
    def input(self) -> str:
        """The one Input (samplers have one; a graph with several has no single answer)."""
        if len(self.inputs) != 1:
            raise NirGraphError(f"NIR graph: has {len(self.inputs)} Input nodes, one was expected")
        return next(iter(self.inputs))

    @property
    def readout(self) -> str:
        """The one output population (samplers read one non-spiking readout)."""
        pops = set(self.outputs.values())
        if len(pops) != 1:
            raise NirGraphError(f"NIR graph: has {len(pops)} output populations, one was expected")
        return pops.pop()

    def incoming(self, population: str) -> list:
        return [s for s in self.synapses if s.dst == population]

    def outgoing(self, source: str) -> list:
        return [s for s in self.synapses if s.src == source]

    @property
    def recurrent(self) -> set:
        return {s.dst for s in self.synapses if s.recurrent}

    @property
    def max_delay(self) -> int:
        return max((s.delay for s in self.synapses), default=0)


def kind_of(node) -> str:
    return type(node).__name__


def _pair(v) -> tuple:
    return tuple(int(x) for x in np.broadcast_to(np.ravel(v), (2,)))


def _finite(name: str, field_name: str, value) -> np.ndarray:
    if is_compact(value):  # checked in its compact form, and kept so
        _finite(name, field_name, value.held)
        return value
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise NirGraphError(f"NIR node {name!r}: {field_name} holds non-finite values (NaN or inf)")
    return arr


def _check_node(name: str, node) -> None:
    """Every number a node carries is finite; thresholds are positive."""
    for key in ("weight", "bias", "scale", "tau", "tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset",
                "w_in", "delay"):
        value = getattr(node, key, None)
        if value is not None and not isinstance(value, (str, dict)):
            _finite(name, key, value)
    if kind_of(node) in SPIKING:
        thr = np.asarray(node.v_threshold, dtype=np.float64)
        if thr.size == 0 or np.any(thr <= 0):
            raise NirGraphError(f"NIR node {name!r}: v_threshold must be positive, got min {thr.min() if thr.size else 'none'}")


def _param_shape(node) -> tuple | None:
    """The population shape its parameters declare, or None when they are scalars (to be inferred)."""
    for key in ("tau", "tau_mem", "r", "v_threshold"):
        if hasattr(node, key) and getattr(node, key) is not None:
            shape = tuple(np.shape(getattr(node, key)))
            if int(np.prod(shape)) > 1:
                return shape
    return None


def _declared_shape(node, key: str) -> tuple | None:
    t = getattr(node, f"{key}_type", None) or {}
    value = t.get(key) if isinstance(t, dict) else None
    if value is None:
        return None
    shape = tuple(int(d) for d in np.ravel(value))
    return shape if shape and all(d > 0 for d in shape) else None


def _node_op(name: str, node, in_shape: tuple):
    """(op, bias or None, out shape) of one weight node applied to ``in_shape``."""
    kind = kind_of(node)
    if kind in ("Linear", "Affine"):
        w = _finite(name, "weight", node.weight)
        n_in = int(np.prod(in_shape))
        if w.ndim != 2 or w.shape[1] != n_in:
            raise NirGraphError(f"NIR node {name!r}: {kind} weight has shape {w.shape}, its input has {n_in} values "
                                f"(shape {in_shape})")
        bias = _finite(name, "bias", node.bias).reshape(-1) if kind == "Affine" else None
        if bias is not None and bias.size not in (1, w.shape[0]):
            raise NirGraphError(f"NIR node {name!r}: bias has {bias.size} values for {w.shape[0]} outputs")
        op = DenseOp(w)
        return op, (None if bias is None else np.broadcast_to(bias, (w.shape[0],)).copy()), op.out_shape(in_shape)
    if kind == "Scale" and len(in_shape) == 1:  # on a flat input: a diagonal matrix
        scale = np.broadcast_to(_finite(name, "scale", node.scale).reshape(-1), in_shape)
        op = DenseOp(np.diag(scale))
        return op, None, in_shape
    if len(in_shape) != 3:
        raise NirGraphError(f"NIR node {name!r}: {kind} needs an image-shaped (C, H, W) input, got shape {in_shape}")
    c = in_shape[0]
    if kind == "Conv2d":
        w = _finite(name, "weight", node.weight)
        groups = int(node.groups)
        if w.ndim != 4 or w.shape[1] * groups != c:
            raise NirGraphError(f"NIR node {name!r}: Conv2d weight {w.shape} with groups={groups} does not fit its "
                                f"input shape {in_shape}")
        op = ConvOp(w, _pair(node.stride), _pair(node.padding), _pair(node.dilation), groups, _s2d(name, node, w))
        bias = None
        if node.bias is not None and np.any(np.asarray(node.bias) != 0):
            b = np.broadcast_to(_finite(name, "bias", node.bias).reshape(-1), (w.shape[0],))
            bias = np.broadcast_to(b[:, None, None], op.out_shape(in_shape)).copy()
        return op, bias, op.out_shape(in_shape)
    if kind in ("SumPool2d", "AvgPool2d"):
        kh, kw = _pair(node.kernel_size)
        value = 1.0 if kind == "SumPool2d" else 1.0 / (kh * kw)
        op = ConvOp(np.full((c, 1, kh, kw), value), _pair(node.stride), _pair(node.padding), (1, 1), c)
        return op, None, op.out_shape(in_shape)
    if kind == "Scale":
        scale = np.broadcast_to(_finite(name, "scale", node.scale), in_shape).reshape(c, -1)
        if np.ptp(scale, axis=1).max() > 0:
            raise NirGraphError(f"NIR node {name!r}: Scale varies within a channel of an image; a synapse can scale "
                                f"images per channel only (flatten first)")
        op = ConvOp(scale[:, 0].reshape(c, 1, 1, 1).copy(), (1, 1), (0, 0), (1, 1), c)
        return op, None, in_shape
    raise NirGraphError(f"NIR node {name!r}: {kind} is not a weight node")


def _s2d(name: str, node, w: np.ndarray):
    """The node's space-to-depth geometry (``metadata["s2d"]``, written by spikediff's exporter), checked against
    its Conv2d; None when it has none."""
    from ..models.s2d import S2DGeometry

    meta = (getattr(node, "metadata", None) or {}).get("s2d")
    if meta is None:
        return None
    try:
        geometry = S2DGeometry.from_metadata(meta)
    except SpikediffError as e:
        raise NirGraphError(f"NIR node {name!r}: its s2d metadata {meta!r}: {e}") from None
    if is_compact(w) and w.geometry != geometry:
        raise NirGraphError(f"NIR node {name!r}: its s2d metadata {geometry.to_metadata()} is not the geometry its "
                            f"compact kernel was derived for ({w.geometry.to_metadata()})")
    why = geometry.mismatch(w.shape, _pair(node.stride), _pair(node.padding), _pair(node.dilation), int(node.groups))
    if why:
        raise NirGraphError(f"NIR node {name!r}: its s2d metadata {geometry.to_metadata()} does not describe its "
                            f"Conv2d: {why}")
    return geometry


def _identity(shape: tuple):
    if len(shape) == 3:
        return ConvOp(np.ones((shape[0], 1, 1, 1)), (1, 1), (0, 0), (1, 1), shape[0])
    return DenseOp(np.eye(int(np.prod(shape))))


def _compose(names: list, nodes: dict, src_shape: tuple, dt: float, label: str) -> tuple:
    """(op, bias, delay, out shape) of the path's nodes (weights, Flatten, Delay) applied in order."""
    steps: list = []  # (name, op, bias, out shape) of each weight node
    delay = 0
    shape = src_shape
    for name in names:
        node = nodes[name]
        kind = kind_of(node)
        if kind == "Flatten":
            shape = (int(np.prod(shape)),)
            continue
        if kind == "Delay":
            biased = [s[0] for s in steps if s[2] is not None and np.any(s[2] != 0)]
            if biased:
                raise NirGraphError(f"NIR node {biased[0]!r}: its bias passes through the Delay {name!r}; a delayed "
                                    f"constant current (zero for the first steps) has no exact synapse form "
                                    f"(move the Delay before the weights)")
            d = _finite(name, "delay", node.delay)
            k = np.unique(np.round(d / dt))
            if len(k) != 1 or np.abs(d / dt - k[0]).max() > 1e-6 or k[0] < 0:
                raise NirGraphError(f"NIR node {name!r}: Delay must be one non-negative multiple of dt={dt:g} for all "
                                    f"its elements, got {np.unique(d)[:4]}")
            delay += int(k[0])
            continue
        if kind in ("Linear", "Affine") and len(shape) > 1:
            shape = (int(np.prod(shape)),)  # an implicit flatten (NIR shapes of some exporters omit it)
        op, bias, out = _node_op(name, node, shape)
        steps.append((name, op, bias, shape, out))
        shape = out
    if not steps:
        return _identity(src_shape), None, delay, src_shape
    if len(steps) == 1:
        return steps[0][1], steps[0][2], delay, shape
    op = _compose_conv(steps, label)
    if op is None:
        op = _compose_dense(steps, src_shape, label)
    bias = _compose_bias(steps)
    return op, bias, delay, shape


def _run(steps: list, x: np.ndarray, with_bias: bool) -> np.ndarray:
    for _name, op, bias, in_shape, out in steps:
        x = op.apply(x.reshape(len(x), *in_shape)).reshape(len(x), *out)
        if with_bias and bias is not None:
            x = x + bias
    return x


def _compose_bias(steps: list) -> np.ndarray | None:
    if all(bias is None for _n, _op, bias, _i, _o in steps):
        return None
    return _run(steps, np.zeros((1, *steps[0][3])), True)[0]


def _scale_inputs(op: ConvOp, factor: np.ndarray) -> ConvOp:
    """The convolution applied to an input scaled per channel by ``factor``."""
    co, ci = op.weight.shape[:2]
    per_out = np.repeat(np.asarray(factor).reshape(op.groups, ci), co // op.groups, axis=0)  # (co, ci)
    return op.with_weight(op.weight * per_out[:, :, None, None])


def _compose_conv(steps: list, label: str) -> ConvOp | None:
    """Per-channel scales around one convolution, or a non-overlapping pooling before one: still a
    convolution (what keeps its weights shared); None when the path is not of that form."""
    if any(not isinstance(s[1], ConvOp) for s in steps):
        return None
    core = [s for s in steps if not _is_channel_scale(s[1])]
    pools = [s for s in core if _is_pool(s[1])]
    convs = [s for s in core if not _is_pool(s[1])]
    if len(convs) > 1 or len(pools) > 1 or (pools and convs and core.index(pools[0]) > core.index(convs[0])):
        return None
    pre = np.ones(steps[0][3][0])
    post = None
    op = pool_shape = None
    for _name, s_op, _b, in_shape, _out in steps:
        if _is_channel_scale(s_op):
            factor = s_op.weight.reshape(-1)
            if op is None:
                pre = pre * factor
            else:
                post = factor if post is None else post * factor
        elif op is None:
            op, pool_shape = _scale_inputs(s_op, pre), in_shape
        else:  # a convolution after a pooling
            op = _pool_then_conv(op, s_op, pool_shape, label)
            if op is None:
                return None
    if op is None:  # only scales
        op = steps[0][1].with_weight(pre.reshape(-1, 1, 1, 1))
    if post is not None:
        op = op.with_weight(op.weight * post.reshape(-1, 1, 1, 1))
    return op


def _is_pool(op) -> bool:
    w = op.weight
    return isinstance(op, ConvOp) and op.groups == w.shape[0] and w.shape[1] == 1 and w.shape[2:] != (1, 1) \
        and np.ptp(w.reshape(w.shape[0], -1), axis=1).max() == 0


def _is_channel_scale(op) -> bool:
    return isinstance(op, ConvOp) and op.groups == op.weight.shape[0] and op.weight.shape[1:] == (1, 1, 1) \
        and op.stride == (1, 1) and op.padding == (0, 0)


def _pool_then_conv(pool: ConvOp, conv: ConvOp, in_shape: tuple, label: str) -> ConvOp | None:
    """Pooling with kernel = stride and no padding over an image it tiles exactly, then a convolution:
    one convolution with the kernel spread over the pooling windows (exact: a padded pooled position is a
    window wholly outside the image)."""
    kh, kw = pool.weight.shape[2:]
    if pool.stride != (kh, kw) or pool.padding != (0, 0) or in_shape[1] % kh or in_shape[2] % kw \
            or conv.dilation != (1, 1):
        return None
    value = pool.weight[:, 0, 0, 0]  # per channel (1, 1/k^2, or a folded scale)
    w = conv.weight  # (Co, Ci/g, a, b)
    ci = w.shape[1]
    per_in = value.reshape(conv.groups, ci) if conv.groups > 1 else value.reshape(1, -1)
    scaled = w * np.repeat(per_in, w.shape[0] // conv.groups, axis=0)[:, :, None, None]
    big = np.kron(scaled, np.ones((1, 1, kh, kw)))
    return ConvOp(big, (conv.stride[0] * kh, conv.stride[1] * kw), (conv.padding[0] * kh, conv.padding[1] * kw),
                  (1, 1), conv.groups)


def _compose_dense(steps: list, src_shape: tuple, label: str) -> DenseOp:
    n_in = int(np.prod(src_shape))
    n_out = int(np.prod(steps[-1][4]))
    if n_in * n_out > DENSE_LIMIT:
        raise NirGraphError(f"NIR nodes {label}: weight layers in a row compose into a {n_out} x {n_in} matrix, "
                            f"larger than {DENSE_LIMIT} entries; put a neuron between them")
    eye = np.eye(n_in).reshape(n_in, *src_shape)
    return DenseOp(_run(steps, eye, False).reshape(n_in, n_out).T.copy())


def plan(graph, dt: float = 1e-4) -> Plan:
    """Read a NIR graph into a ``Plan``; errors name the node and the problem. ``dt``: the graph's time step
    (Delay nodes are converted to steps with it)."""
    nodes = graph.nodes
    succ: dict = {name: [] for name in nodes}
    for a, b in graph.edges:
        for end in (a, b):
            if end not in nodes:
                raise NirGraphError(f"NIR edge ({a!r}, {b!r}): no node named {end!r}")
        succ[a].append(b)
    known = SPIKING + NONSPIKING + WEIGHTS + PASSING + ("Input", "Output")
    for name, node in nodes.items():
        kind = kind_of(node)
        if kind not in known:
            why = {"NIRGraph": "nested graphs are not supported (flatten the subgraph into the parent)",
                   "Threshold": "a threshold without a neuron has no Lava process (use an IF neuron)",
                   "Conv1d": "1-d convolutions are not supported (write it as a Conv2d with height 1)"}
            raise NirGraphError(f"NIR node {name!r}: {kind} is not supported: "
                                f"{why.get(kind, 'supported: ' + ', '.join(SPIKING + NONSPIKING + WEIGHTS + PASSING))}")
        _check_node(name, node)
    inputs = [n for n, node in nodes.items() if kind_of(node) == "Input"]
    outputs = [n for n, node in nodes.items() if kind_of(node) == "Output"]
    if not inputs or not outputs:
        raise NirGraphError(f"NIR graph: needs at least one Input and one Output node, has {inputs} and {outputs}")
    pops = {n: node for n, node in nodes.items() if kind_of(node) in SPIKING + NONSPIKING}
    for name in inputs:
        if any(name in succ[o] for o in nodes):
            raise NirGraphError(f"NIR node {name!r}: an edge leads into the Input node")

    # paths from every source to the populations (and Outputs) they reach
    paths = []  # (src, dst, [node names between])
    feeds_output: dict = {}
    for src in inputs + list(pops):
        stack = [(nxt, []) for nxt in succ[src]]
        while stack:
            name, between = stack.pop()
            kind = kind_of(nodes[name])
            if kind == "Output":
                if between:
                    raise NirGraphError(f"NIR node {name!r}: fed through {between[-1]!r}; an Output must be fed "
                                        f"directly by a neuron node")
                if src in inputs:
                    raise NirGraphError(f"NIR node {name!r}: fed directly by the Input {src!r}")
                feeds_output[name] = feeds_output.get(name, []) + [src]
                continue
            if kind == "Input":
                raise NirGraphError(f"NIR node {name!r}: an edge leads into the Input node")
            if name in pops:
                paths.append((src, name, between))
                continue
            if name in between:
                raise NirGraphError(f"NIR node {name!r}: lies on a cycle with no neuron node")
            stack.extend((nxt, between + [name]) for nxt in succ[name])
    for out in outputs:
        if len(feeds_output.get(out, [])) != 1:
            raise NirGraphError(f"NIR node {out!r}: an Output must be fed by exactly one neuron node, got "
                                f"{feeds_output.get(out, [])}")
    for p, node in pops.items():
        if kind_of(node) in NONSPIKING and not any(p in f for f in feeds_output.values()):
            raise NirGraphError(f"NIR node {p!r}: a non-spiking {kind_of(node)} that feeds no Output: Lava neurons "
                                f"send spikes, so nothing downstream could read it")
        if kind_of(node) in NONSPIKING and any(src == p for src, _dst, _b in paths):
            raise NirGraphError(f"NIR node {p!r}: a non-spiking {kind_of(node)} feeds neurons (itself or others); only "
                                f"spikes travel between populations")

    # shapes: inputs as declared (or from their first weight), populations from parameters or weights
    shapes: dict = {}
    for name in inputs:
        shapes[name] = _declared_shape(nodes[name], "input") or _input_shape_from(name, paths, nodes)
    declared = {p: _param_shape(node) for p, node in pops.items()}
    synapses, pending = [], list(paths)
    bias_seen: dict = {}
    while pending:
        progress = False
        for item in list(pending):
            src, dst, between = item
            if src not in shapes:
                continue
            label = " -> ".join(repr(n) for n in [src, *between, dst])
            op, bias, delay, out = _compose(between, nodes, shapes[src], dt, label)
            weights = [n for n in between if kind_of(nodes[n]) in WEIGHTS]
            biased = [n for n in weights if kind_of(nodes[n]) in ("Affine", "Conv2d")
                      and getattr(nodes[n], "bias", None) is not None and np.any(np.asarray(nodes[n].bias) != 0)]
            for n in biased:
                if bias_seen.setdefault(n, (src, dst)) != (src, dst):
                    raise NirGraphError(f"NIR node {n!r}: has a bias and is reached from several sources or reaches "
                                        f"several neurons; its constant current would be counted more than once")
            shape = declared[dst] or out
            if int(np.prod(shape)) != int(np.prod(out)):
                raise NirGraphError(f"NIR node {dst!r}: has {int(np.prod(shape))} neurons, its input {label} gives "
                                    f"{int(np.prod(out))} values")
            if dst in shapes and shapes[dst] != shape and int(np.prod(shapes[dst])) != int(np.prod(shape)):
                raise NirGraphError(f"NIR node {dst!r}: its inputs disagree about its shape ({shapes[dst]} and {shape})")
            if len(shape) != len(out) and len(out) == 3 and len(shape) == 1:
                pass  # a conv into a flat population: flattened in NIR order
            shapes.setdefault(dst, shape)
            if bias is not None:
                bias = bias.reshape(-1).reshape(shapes[dst]) if bias.size == int(np.prod(shapes[dst])) else bias
            synapses.append(Synapse("+".join(weights) or f"{src}->{dst}", src, dst, op, bias, delay, tuple(between)))
            pending.remove(item)
            progress = True
        if not progress:
            missing = sorted({dst for _s, dst, _b in pending})
            raise NirGraphError(f"NIR node {missing[0]!r}: not reachable from an Input")
    for p in pops:
        if p not in shapes:
            raise NirGraphError(f"NIR node {p!r}: not reachable from an Input")
    outs = {}
    for out, (p,) in feeds_output.items():
        declared_out = _declared_shape(nodes[out], "output")
        if declared_out is not None and int(np.prod(declared_out)) != int(np.prod(shapes[p])):
            raise NirGraphError(f"NIR node {out!r}: declares {int(np.prod(declared_out))} values (shape "
                                f"{declared_out}), its population {p!r} has {int(np.prod(shapes[p]))}")
        outs[out] = p
    populations = {p: Population(p, pops[p], kind_of(pops[p]), tuple(shapes[p])) for p in pops}
    synapses = [replace(s, flat_in=not s.is_conv and len(shapes[s.src]) > 1,
                        flat_out=s.is_conv and len(shapes[s.dst]) == 1) for s in synapses]
    result = Plan({n: tuple(shapes[n]) for n in inputs}, populations, tuple(synapses), outs)
    latency = _latencies(result)
    order = sorted(populations, key=lambda p: (latency[p], list(pops).index(p)))
    return Plan(result.inputs, {p: populations[p] for p in order}, result.synapses, outs, latency)


def _input_shape_from(name: str, paths: list, nodes: dict) -> tuple:
    for src, _dst, between in paths:
        if src != name or not between:
            continue
        node = nodes[between[0]]
        kind = kind_of(node)
        if kind == "Conv2d" and getattr(node, "input_shape", None) is not None:
            hw = tuple(int(d) for d in np.ravel(node.input_shape))
            return (int(np.shape(node.weight)[1]) * int(node.groups), *hw)
        if kind in ("Linear", "Affine"):
            return (int(np.shape(node.weight)[1]),)
    raise NirGraphError(f"NIR node {name!r}: the Input declares no shape and none can be read off its first layer")


def _latencies(p: Plan) -> dict:
    """Longest synapse path from an input to each population; only self-loops may close a cycle."""
    incoming: dict = {name: [] for name in p.populations}
    for s in p.synapses:
        if not s.recurrent:
            incoming[s.dst].append(s)
    latency = {name: 0 for name in p.inputs}
    visiting: set = set()

    def visit(name):
        if name in latency:
            return latency[name]
        if name in visiting:
            raise NirGraphError(f"NIR node {name!r}: lies on a cycle longer than one population; Lava adds a step "
                                f"per synapse, so such a loop cannot match the NIR time step (only self-loops can)")
        visiting.add(name)
        if not incoming[name]:
            raise NirGraphError(f"NIR node {name!r}: not reachable from an Input")
        latency[name] = max(visit(s.src) + 1 for s in incoming[name])
        visiting.discard(name)
        return latency[name]

    for name in p.populations:
        visit(name)
    return latency


def fixed_point_kernels(p: Plan) -> Plan:
    """``p`` with every compact kernel held as Loihi fixed point needs it: Loihi quantizes the derived kernel weight
    by weight, and an up-sampling's dense weight is the sum of the natural taps landing on one coarse pixel, so
    a natural kernel cannot stand for it. A synapse into a spiking population takes the merged taps
    (``models.s2d.MergedKernel``: each dense weight is one of them, bit for bit the exporter's float32 kernel,
    so the integers are the ones its NIR file would give); one into a readout (which the readout split and the
    bias correction rework weight by weight), or with a geometry that has no merged form, the dense array."""
    def held(s: Synapse):
        if not (s.is_conv and s.op.compact) or is_merged(s.op.weight):
            return s
        merged = s.op.weight.merged() if p.populations[s.dst].spiking else None
        return replace(s, op=s.op.with_weight(merged if merged is not None else np.asarray(s.op.weight)))

    return replace(p, synapses=tuple(held(s) for s in p.synapses))
