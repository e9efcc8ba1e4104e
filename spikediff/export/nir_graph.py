"""Any spikediff network (a ``SpikingGraph``: the denoisers, the VQ-SVAE decoder) -> NIR graph, built from
the model's own ``graph`` table.

The NIR graph is the trained network itself, one NIR time step per SNN step and no synapse delays
(aligning paths for Lava is the Lava converter's job). Parameters follow snnTorch's NIR conventions
(dt = 1e-4) so that other NIR tools read them the way snnTorch writes them:

- hidden LIF (snnTorch ``Leaky``, beta, threshold, hard reset): ``tau = dt / (1 - beta)``, ``r = tau / dt``,
  ``v_leak = 0``, ``v_threshold = threshold``, ``v_reset = 0``;
- a recurrent (lateral) synapse is a pair of edges population -> weight node -> the same population;
- readout: ``LI`` with ``tau = dt / (1 - alpha)``, ``r = tau / dt``; its state is the synaptic current
  ``I_t = alpha I_{t-1} + drive_t`` that the model averages over the T steps;
- every synapse layer is a ``Conv2d``, ``Affine`` (dense with bias) or ``Linear`` (dense without), a
  depthwise 1x1 convolution a ``Scale``;
  ``Flatten`` nodes (``start_dim`` 0: NIR shapes have no batch axis) join image-shaped and flat layers.

What the host does around the graph (time features, averaging, the 4x4 patch layout of the readout)
is written into ``graph.metadata`` so the file alone is enough to run the denoiser.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import SpikediffError
from ..atomic import atomic_path
from ..models.spiking_graph import SpikingGraph, deployable

DT = 1e-4  # snnTorch's NIR time step


def _synapse(layer: torch.nn.Module, in_shape: tuple, geometry=None):
    """The NIR node of one deployable synapse layer; ``geometry``: the space-to-depth form its kernel was derived
    for (``S2DSynapse.geometry``), written into the Conv2d's metadata."""
    import nir

    w = layer.weight.detach().cpu().numpy().astype(np.float32)
    b = None if layer.bias is None else layer.bias.detach().cpu().numpy().astype(np.float32)
    if isinstance(layer, torch.nn.Linear):
        return nir.Linear(weight=w) if b is None else nir.Affine(weight=w, bias=b)
    if b is None and layer.groups == layer.in_channels == layer.out_channels and w.shape[2:] == (1, 1):
        # a per-channel scale (depthwise 1x1): NIR's Scale, since its Conv2d type check ignores groups
        return nir.Scale(scale=np.broadcast_to(w.reshape(-1, 1, 1), in_shape).astype(np.float32).copy())
    if b is None:
        b = np.zeros(w.shape[0], dtype=np.float32)
    return nir.Conv2d(input_shape=np.array(in_shape[1:]), weight=w, stride=np.array(layer.stride),
                      padding=np.array(layer.padding), dilation=np.array(layer.dilation),
                      groups=layer.groups, bias=b, metadata={"s2d": geometry.to_metadata()} if geometry else {})


def _compact_conv(layer, in_shape: tuple):
    """A derived Conv2d node whose weight is a ``models.s2d.DerivedKernel`` (the natural kernel, the dense one
    on request): NIR's type check reads only its shape; ``write_nir`` stores the dense kernel."""
    import nir

    kernel, b, stride, pad = layer.compact()
    return nir.Conv2d(input_shape=np.array(in_shape[1:]), weight=kernel, stride=np.array((stride, stride)),
                      padding=np.array((pad, pad)), dilation=np.array((1, 1)), groups=1,
                      bias=np.zeros(kernel.shape[0], dtype=np.float32) if b is None else b,
                      metadata={"s2d": layer.geometry.to_metadata()})


def _flatten(shape: tuple):
    import nir

    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)


def to_nir(model: SpikingGraph, schedule=None, metadata: dict | None = None, compact: bool = False):
    """The network as a type-checked ``nir.NIRGraph`` (nodes named as in ``model.graph``).

    ``compact``: a synapse between space-to-depth layouts keeps its kernel as the natural one
    (``models.s2d.DerivedKernel``), so that a U-Net too large for its dense derived kernels still compiles and
    runs on Lava in floating point; the graph means the same either way.

    The model's ``host_metadata()`` (how the host builds the input and reads the output) goes into the
    graph's metadata; with a denoiser's ``NoiseSchedule`` the graph carries everything a DDIM sampler
    needs (``runtime.sample_lava``). ``metadata`` adds entries (the SDID's mask schedule).
    """
    import nir

    cfg = model.config
    shapes = model.synapse_shapes()
    nodes, edges = {}, []
    first = next(syn for synapses in model.graph.values() for syn, src in synapses if src == "input")
    nodes["input"] = nir.Input(input_type={"input": np.array(shapes[first][0])})
    pop_shape = {"input": shapes[first][0]}
    for target, synapses in model.graph.items():
        flat_target = target == "readout" or any(isinstance(getattr(model, s), torch.nn.Linear) for s, _ in synapses)
        for syn, src in synapses:
            module, src_name = getattr(model, syn), src
            if isinstance(module, torch.nn.Linear) and len(pop_shape[src]) > 1:
                src_name = f"{syn}_flatten_in"
                nodes[src_name] = _flatten(pop_shape[src])
                edges.append((src, src_name))
            geometry = getattr(module, "geometry", None)
            if compact and geometry is not None:
                nodes[syn] = _compact_conv(module, shapes[syn][0])
            else:
                nodes[syn] = _synapse(deployable(module), shapes[syn][0], geometry)
            edges.append((src_name, syn))
            out_shape = shapes[syn][1]
            if flat_target and len(out_shape) > 1:
                nodes[f"{syn}_flatten"] = _flatten(out_shape)
                edges += [(syn, f"{syn}_flatten"), (f"{syn}_flatten", target)]
                out_shape = (int(np.prod(out_shape)),)
            else:
                edges.append((syn, target))
        pop_shape[target] = out_shape
        full = lambda v, shape=out_shape: np.full(shape, v, dtype=np.float32)  # noqa: E731
        if target == "readout":
            tau = DT / (1.0 - cfg.readout_alpha)
            nodes[target] = nir.LI(tau=full(tau), r=full(tau / DT), v_leak=full(0.0))
        else:
            beta, threshold = model.neuron_params.get(target, (cfg.beta, cfg.threshold))
            tau = DT / (1.0 - beta)
            nodes[target] = nir.LIF(tau=full(tau), r=full(tau / DT), v_leak=full(0.0),
                                    v_threshold=full(threshold), v_reset=full(0.0))
    nodes["output"] = nir.Output(output_type={"output": np.array(pop_shape["readout"])})
    edges.append(("readout", "output"))
    metadata = {
        "producer": "spikediff",
        "network": type(model).__name__,
        "dt": DT,
        "snn_steps": cfg.num_steps,
        "readout_shape": list(model._readout_shape),
        "reset": "hard reset to zero in the step of the spike (Lava LIF)",
        **model.host_metadata(),
        **(metadata or {}),
    }
    if schedule is not None:
        metadata.update(num_train_timesteps=int(schedule.num_train_timesteps),
                        prediction_type=str(schedule.prediction_type))
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=True)
    except Exception as exc:  # nir raises plain ValueErrors; say which model it was
        raise SpikediffError(f"NIR type check failed for the exported {type(model).__name__}: {exc}") from None


def sampler_graphs(model, schedule=None, roles=None, compact: bool = False) -> dict:
    """A loaded sampler as the NIR graphs it deploys, {role: graph}, each carrying its kind and role and the
    host-side facts its kind needs (``diffusion.kinds``); the files alone are enough to sample. ``roles``: only
    these networks (quantization-aware training compiles one). ``compact``: see ``to_nir``."""
    from ..diffusion import kinds

    kind = kinds.of_model(model)
    on_grid = getattr(model, "trained_on_grid", ())  # trained quantization-aware (checkpoint.mark_on_grid)
    return {role: to_nir(net, schedule if role == "denoiser" else None,
                         metadata={"kind": kind.name, "role": role, **extra,
                                   **({"trained_on_grid": True} if role in on_grid else {})}, compact=compact)
            for role, (net, extra) in kind.networks(model).items() if roles is None or role in roles}


def read_graph(path: str | Path):
    """A NIR file, read with NIR's type check, and without it if that fails (other tools' files do not
    always pass it: Rockpool's Output shapes, for one); errors name the file."""
    import nir

    path = Path(path)
    if not path.exists():
        raise SpikediffError(f"NIR file {path}: no such file")
    if not path.is_file():
        raise SpikediffError(f"NIR file {path}: not a regular file")
    try:
        return nir.read(path)
    except Exception:  # nir raises many kinds for bad files; retry without the type check
        pass
    try:
        return nir.read(path, type_check=False)
    except Exception as exc:
        raise SpikediffError(f"NIR file {path}: not a readable NIR graph ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def read_sampler(path: str | Path) -> dict:
    """A spikediff sampler's graphs, {role: graph}, from one of its NIR files: the other roles are read from the
    files beside it (``NAME.denoiser.nir``, ``NAME.decoder.nir``, as ``spikediff export`` writes them)."""
    from ..diffusion import kinds

    path = Path(path)
    graph = read_graph(path)
    meta = dict(graph.metadata or {})
    kind = kinds.of_metadata(meta)
    if kind is None:
        raise SpikediffError(f"NIR file {path}: not a spikediff sampler (its metadata names no kind); run it with "
                             f"`spikediff run {path} --input X.npy`")
    role = meta.get("role", "denoiser" if meta.get("network") != "TokenDecoder" else "decoder")
    graphs = {role: graph}
    stem = path.name[:-len(f".{role}.nir")] if path.name.endswith(f".{role}.nir") else None
    for other in kind.roles:
        if other in graphs:
            continue
        sibling = path.with_name(f"{stem}.{other}.nir") if stem is not None else None
        if sibling is None or not sibling.exists():
            raise SpikediffError(f"NIR file {path}: a {kind.name} sampler also needs its {other} graph "
                                 f"({sibling or 'NAME.' + other + '.nir'})")
        graphs[other] = read_graph(sibling)
    return graphs


def write_nir(graph, out: str | Path) -> Path:
    """A NIR graph to a .nir file, written atomically."""
    import nir

    out = Path(out)
    if out.suffix != ".nir":
        raise SpikediffError(f"output {out}: NIR files end in .nir")
    with atomic_path(out) as tmp:
        nir.write(tmp, _dense(graph))
    return out


def _dense(graph):
    """The graph with every compact kernel (``to_nir(..., compact=True)``) as the dense array a NIR file holds."""
    import copy

    from .plan import is_compact

    compact = {k for k, n in graph.nodes.items() if is_compact(getattr(n, "weight", None))}
    if not compact:
        return graph
    nodes = dict(graph.nodes)
    for k in compact:
        nodes[k] = copy.copy(nodes[k])
        nodes[k].weight = np.asarray(nodes[k].weight)
    dense = copy.copy(graph)
    dense.nodes = nodes
    return dense


def export_sampler(model, schedule, out: str | Path) -> list:
    """A loaded sampler's graphs as NIR files: ``out`` itself for a one-network sampler, else
    ``STEM.<role>.nir`` beside it for each network; written atomically. Returns the paths."""
    out = Path(out)
    if out.suffix != ".nir":
        raise SpikediffError(f"output {out}: NIR files end in .nir")
    graphs = sampler_graphs(model, schedule)
    if len(graphs) == 1:
        return [write_nir(next(iter(graphs.values())), out)]
    return [write_nir(graph, out.with_suffix(f".{role}.nir")) for role, graph in graphs.items()]
