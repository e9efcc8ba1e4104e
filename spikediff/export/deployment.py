"""The deployment compiler's one entry point: a NIR graph -> a ``Deployment``, compiled once per command and
handed to every backend (the Lava builder, the bit-exact simulator, event counting and the cost model).

``compile_graph`` runs the stages in order: ``plan`` (populations, composed synapses, latencies), ``fold``
(discrete neurons, gains and biases in the weights), ``quantize`` (Loihi integers, when asked for) and the
timing of one evaluation on Lava. The result is frozen and checked when it is built; nothing downstream
folds, quantizes or re-reads the graph's metadata again. This package never imports Lava.

Time on Lava. Every Lava synapse adds one step, so population P computes NIR step t at Lava step
t + latency(P), where latency is the longest synapse path from an input; a shorter path into P waits in a
delay line (longer still by any NIR Delay on it). One evaluation spans ``window`` = latency(outputs) + T
Lava steps; the network is a pipeline, each population reset every ``period`` steps, so a new evaluation
starts every period while earlier ones are still on their way: T for a feedforward graph, T + 1 with
self-loops (the looped population is cleared in the extra step). A graph with NIR Delay nodes runs one
evaluation at a time (period = window), its delay lines cleared as each evaluation enters them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from .. import SpikediffError
from .fold import Folded, fold
from .plan import NirGraphError, Plan, fixed_point_kernels, plan
from .quantize import FixedPoint, calibrate, quantize
from .split import check_factor, split_readouts

DEFAULT_DT = 1e-4  # snnTorch's NIR convention; ``spikediff export`` writes its dt into the metadata


@dataclass(frozen=True)
class Timing:
    num_steps: int  # T, NIR steps per evaluation
    window: int  # Lava steps from an evaluation's first input to its last output step
    period: int  # Lava steps between the starts of two evaluations
    pipelined: bool

    def __post_init__(self):
        if not 1 <= self.num_steps <= self.period <= self.window:
            raise SpikediffError(f"inconsistent timing {self}")


@dataclass(frozen=True)
class Deployment:
    """One network, compiled: what every backend runs."""

    graph: object  # the nir.NIRGraph it was compiled from
    metadata: MappingProxyType  # the graph's metadata (host-side facts for samplers)
    dt: float
    plan: Plan
    folded: Folded
    fixed: FixedPoint | None  # Loihi integers, or None for the floating-point deployment
    timing: Timing
    strict: bool = False
    notes: tuple = field(default=())  # what compiling changed or assumed, one line each
    bias_corrections: tuple = field(default=())  # the readout bias corrections made (export.bias_correction)

    @property
    def fixed_point(self) -> bool:
        return self.fixed is not None

    @property
    def num_steps(self) -> int:
        return self.timing.num_steps

    @property
    def latency(self) -> dict:
        return self.plan.latency

    def readout_scale(self, population: str | None = None) -> int:
        """Readout state units per unit of the float model's state (1 in floating point)."""
        if self.fixed is None:
            return 1
        return self.fixed.readout_scale(population or self.plan.readout)

    def input_scale(self, name: str | None = None) -> int:
        if self.fixed is None:
            return 1
        return self.fixed.input_scales[name or self.plan.input]

    def rounding(self) -> dict:
        """Per layer, the largest error that fixed point's rounding causes (empty in floating point)."""
        return {} if self.fixed is None else dict(self.fixed.errors)


def input_series(x: np.ndarray, shape: tuple, num_steps: int, name: str) -> np.ndarray:
    """Inputs (N, *shape) constant over the T steps, or (N, T, *shape) -> (N, T, *shape)."""
    shape = tuple(shape)
    if x.ndim >= 1 and tuple(x.shape[1:]) == shape:
        return np.broadcast_to(x[:, None], (len(x), num_steps, *shape))
    if x.ndim >= 2 and tuple(x.shape[2:]) == shape and x.shape[1] == num_steps:
        return x
    raise SpikediffError(f"input {name!r}: expected shape (N, {', '.join(map(str, shape))}) or (N, {num_steps}, "
                         f"{', '.join(map(str, shape))}), got {tuple(x.shape)}")


def timing(p: Plan, num_steps: int, pipelined: bool = True) -> Timing:
    window = max(p.latency[pop] for pop in p.outputs.values()) + num_steps
    if p.max_delay > 0 or not pipelined:
        return Timing(num_steps, window, window, False)
    return Timing(num_steps, window, num_steps + (1 if p.recurrent else 0), True)


def graph_dt(graph, dt: float | None = None) -> float:
    if dt is not None:
        return float(dt)
    value = (graph.metadata or {}).get("dt", DEFAULT_DT)
    try:
        dt = float(value)
    except (TypeError, ValueError):
        raise NirGraphError(f"NIR graph: metadata dt = {value!r} is not a number") from None
    if not np.isfinite(dt) or dt <= 0:
        raise NirGraphError(f"NIR graph: metadata dt = {dt} must be a positive number")
    return dt


def compile_graph(graph, *, fixed_point: bool = False, num_steps: int | None = None, calibration=None,
                  strict: bool = False, dt: float | None = None, pipelined: bool = True,
                  bias_correction: bool = True, readout_split: int | None = None) -> Deployment:
    """Compile a NIR graph for every backend.

    ``num_steps``: T, NIR steps per evaluation (default: the metadata's ``snn_steps``). ``calibration``: host
    inputs that set each Input's fixed-point scale ({Input: (N, *shape)} or one array); without them the
    scale assumes inputs of at most 1. ``strict``: refuse values fixed point cannot represent instead of
    rounding them. ``dt``: the graph's time step (default: the metadata's ``dt``, else 1e-4).
    ``bias_correction``: in fixed point with calibration inputs, cancel the mean offset of each non-spiking
    readout with a constant input current (``export.bias_correction``), measured against the float network, or
    against its weights on the grid if its metadata says ``trained_on_grid`` (it was trained quantization-aware).
    ``readout_split``: in fixed point, give each non-spiking readout a grid this many times finer, its large
    weights spread over parallel synapses (``export.split``; default: the metadata's ``readout_split``, else 1).
    """
    meta = dict(graph.metadata or {})
    if num_steps is None:
        if "snn_steps" not in meta:
            raise NirGraphError("NIR graph: no snn_steps in its metadata; say how many steps an evaluation has")
        num_steps = meta["snn_steps"]
    try:
        num_steps = int(num_steps)
    except (TypeError, ValueError):
        raise NirGraphError(f"NIR graph: snn_steps = {num_steps!r} is not an integer") from None
    if num_steps < 1:
        raise NirGraphError(f"NIR graph: an evaluation needs at least one step, got {num_steps}")
    dt = graph_dt(graph, dt)
    p = plan(graph, dt)
    if fixed_point:
        p = fixed_point_kernels(p)
    folded = fold(p, dt)
    notes = []
    fixed = None
    if fixed_point:
        if readout_split is None:
            readout_split = check_factor(meta.get("readout_split", 1), "NIR graph metadata: readout_split")
        folded = split_readouts(folded, readout_split)
        current = calibrate(folded, calibration) if calibration is not None else None
        fixed = quantize(folded, current, strict=strict)
        for name, err in fixed.errors.items():
            if err.get("du_error", 0) > 1e-9 or err.get("dv_error", 0) > 1e-9:
                notes.append(f"{name}: decays rounded to Loihi's 12-bit grid (du error {err['du_error']:.3g}, dv error "
                             f"{err['dv_error']:.3g})")
    dep = Deployment(graph, MappingProxyType(meta), dt, p, folded, fixed, timing(p, num_steps, pipelined), strict,
                     tuple(notes))
    if fixed is not None and calibration is not None and bias_correction:
        from .bias_correction import correct_readout_bias

        dep, report = correct_readout_bias(dep, calibration, "grid" if meta.get("trained_on_grid") else "float")
        dep = replace(dep, notes=dep.notes + tuple(r.note() for r in report), bias_corrections=tuple(report))
    return dep


@dataclass(frozen=True)
class SamplerDeployment:
    """A spikediff sampler, compiled: its kind (the host program) and one ``Deployment`` per network role."""

    kind: object  # diffusion.kinds.Kind
    networks: MappingProxyType  # role -> Deployment

    @property
    def fixed_point(self) -> bool:
        return next(iter(self.networks.values())).fixed_point

    @property
    def metas(self) -> dict:
        return {role: dict(dep.metadata) for role, dep in self.networks.items()}

    @property
    def loop(self) -> Deployment:
        return self.networks["denoiser"]

    def digest(self) -> str:
        """SHA-256 over the roles' fixed-point integers (``FixedPoint.digest``): names what a chip would run."""
        import hashlib

        if not self.fixed_point:
            raise SpikediffError("a floating-point deployment has no integers to digest")
        return hashlib.sha256(";".join(f"{role}={dep.fixed.digest()}"
                                       for role, dep in sorted(self.networks.items())).encode()).hexdigest()

    def program(self, n: int, steps: int, seed: int = 0, first: int = 0, dtype: str | None = None, **options):
        """The host program of one run of ``n`` images (arithmetic: float64 in floating point, float32 in
        fixed point, unless ``dtype`` says otherwise)."""
        dtype = dtype or ("float32" if self.fixed_point else "float64")
        return self.kind.program(self.metas, n, steps, seed=seed, first=first, dtype=dtype, **options)


def compile_sampler(graphs: dict, *, fixed_point: bool = False, strict: bool = False,
                    pipelined: bool = True, bias_correction: bool = True) -> SamplerDeployment:
    """Compile a spikediff sampler's graphs ({role: NIR graph}, as ``nir_graph.sampler_graphs`` writes them);
    in fixed point each network's input scale is calibrated on its kind's fixed inputs, and so is its readout
    bias correction (``bias_correction=False``: none). ``pipelined=False``: one evaluation at a time on Lava
    (for comparison)."""
    from ..diffusion import kinds

    if "denoiser" not in graphs:
        raise SpikediffError(f"a sampler needs a 'denoiser' graph, got {sorted(graphs)}")
    kind = kinds.of_metadata(dict(graphs["denoiser"].metadata or {}))
    if kind is None:
        raise SpikediffError("NIR graph: not a spikediff sampler (its metadata names no kind); run it with "
                             "`spikediff run GRAPH.nir --input X.npy`")
    missing = set(kind.roles) - set(graphs)
    if missing:
        raise SpikediffError(f"a {kind.name} sampler needs the {', '.join(kind.roles)} graphs; missing "
                             f"{', '.join(sorted(missing))}")
    deps = {}
    for role in kind.roles:
        graph = graphs[role]
        calibration = kind.calibration(role, dict(graph.metadata or {})) if fixed_point else None
        deps[role] = compile_graph(graph, fixed_point=fixed_point, calibration=calibration, strict=strict,
                                   pipelined=pipelined, bias_correction=bias_correction)
    return SamplerDeployment(kind, MappingProxyType(deps))
