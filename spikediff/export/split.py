"""A finer fixed-point grid for non-spiking readouts: each incoming synapse split into parallel parts.

Why: a population's fixed-point scale is set by its largest incoming weight (``quantize``: S = 254 / max |w|),
so a readout fed by a few large weights and many small ones rounds the small ones to nothing. On the
shipped ``mnist-vq`` decoder the skip synapse into the readout has max |w| 0.54 and median 0.0017: at its
scale (470) more than half of its weights round to 0, and that rounding cost the sampler more than every
other layer's. Split 4 ways, its fixed-point FID went from 51.20 to 42.12 (float 41.42; README).

How: with factor K, the readout's weights are cut at L = max |w| / K: part 0 is clip(w, -L, L), part k the
residual clip(w - part 0 - ... - part k-1, -L, L), until nothing is left (at most K parts). The parts are
parallel synapses from the same source into the same readout (named ``<synapse>.part<k>``), so they sum to
the trained weights and the float network is unchanged; the quantizer then sees max |w| = L and gives the
readout a scale K times larger. Part 0 keeps every small weight; the later parts hold only the large ones
(their few nonzero weights are the extra synapses). Only the fixed-point deployment is split; Loihi 2 sums
parallel synapses into a neuron's current as it sums any two synapses, and so do Lava and the simulator.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .plan import NirGraphError

MAX_FACTOR = 64
PART = ".part"  # the name of part k of synapse s: f"{s}{PART}{k}" (part 0 keeps the synapse's name)


def check_factor(factor, where: str = "readout_split") -> int:
    """A readout split factor (an integer in [1, MAX_FACTOR]), or a one-line error naming ``where``."""
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, (int, np.integer)) or not \
            1 <= int(factor) <= MAX_FACTOR:
        raise NirGraphError(f"{where}: expected an integer from 1 to {MAX_FACTOR}, got {factor!r}")
    return int(factor)


def part_of(name: str) -> str:
    """The synapse a (part) synapse belongs to: ``s`` for ``s`` and ``s.part<k>``."""
    return name.partition(PART)[0]


def split_synapses(folded) -> dict:
    """{synapse: (parts, cut)} of the synapses ``split_readouts`` split in ``folded`` (what quantization-aware
    training needs to run them as deployed): the cut is the largest weight of a first part into the target,
    the L every part of that target was cut at."""
    counts = {}
    for f in folded.synapses:
        if f.syn.name != part_of(f.syn.name):
            counts[part_of(f.syn.name)] = counts.get(part_of(f.syn.name), 1) + 1
    cut = {}
    for f in folded.synapses:
        if f.syn.name in counts and f.syn.dst not in cut:
            cut[f.syn.dst] = max(float(np.abs(g.weight).max()) for g in folded.incoming(f.syn.dst)
                                 if g.syn.name == part_of(g.syn.name) and g.weight.size)
    return {f.syn.name: (counts[f.syn.name], cut[f.syn.dst]) for f in folded.synapses if f.syn.name in counts}


def split_readouts(folded, factor: int):
    """``folded`` with the synapses into every non-spiking population split into parts that each fit
    max |w| / ``factor`` (host inputs' synapses are left whole: their grid is the input's scale)."""
    factor = check_factor(factor)
    if factor == 1:
        return folded
    inputs = set(folded.plan.inputs)
    readouts = {name for name, n in folded.neurons.items() if not n.spiking}
    synapses = []
    for name in readouts:
        incoming = [f for f in folded.incoming(name) if f.syn.src not in inputs]
        peak = max((float(np.abs(f.weight).max()) for f in incoming if f.weight.size), default=0.0)
        if peak == 0.0:
            continue
        limit = peak / factor
        for f in incoming:
            rest, parts = np.asarray(f.weight, dtype=np.float64), []
            while len(parts) < factor and np.any(rest):  # models.spiking_graph.fake_quantize cuts alike
                part = np.clip(rest, -limit, limit)
                parts.append(part)
                rest = rest - part
            synapses.append((f, parts))
    if not synapses:
        return folded
    split = {f.syn.name: parts for f, parts in synapses}
    out = []
    for f in folded.synapses:
        parts = split.get(f.syn.name)
        if not parts:
            out.append(f)
            continue
        out.append(replace(f, op=f.op.with_weight(parts[0])))
        out += [replace(f, syn=replace(f.syn, name=f"{f.syn.name}{PART}{k}"), op=f.op.with_weight(w))
                for k, w in enumerate(parts[1:], 1)]
    return replace(folded, synapses=tuple(out))
