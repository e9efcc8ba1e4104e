"""Sequential chains of a fixed-point network as lava-dl netx HDF5 files, loaded by ``netx.hdf5.Network``.

A chain is a run of spiking populations P1 -> P2 -> ... where each one's only input is the previous
one and each one but the last feeds only the next: what netx can build (conv, flatten, dense layers of
CUBA neurons). Branches, delay lines, the readout and the sampler stay plain Lava processes around it.

The file follows what ``netx.hdf5.Network`` reads (lava-dl 0.6): ``layer/<i>`` groups with ``type``,
``shape`` (C, H, W or N), ``weight`` (conv: PyTorch's (out, in, kH, kW) correlation kernel; dense:
(out, in) in C, H, W order after netx's flatten), ``bias`` (mantissas, netx shifts them by 6, one per
neuron in Lava's W, H, C order), ``stride``/``padding``/``dilation`` as (H, W), ``groups``, and a
``neuron`` group: ``type`` CUBA, ``vThMant``, ``iDecay`` (netx subtracts 1), ``vDecay``, ``refDelay``.
netx resets layer i at offset ``reset_offset + 1 + i``: the latency pattern of a chain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .quantize import BIAS_EXP_NETX


def find_chains(folded, fx, min_length: int = 2) -> list:
    """Chains of folded synapses [s1 -> P1, s2 -> P2, ...] that netx can build with ``fx``'s integers."""
    p = folded.plan
    incoming = {name: folded.incoming(name) for name in p.populations}
    outgoing = {name: [f for f in folded.synapses if f.syn.src == name] for name in p.populations}

    outputs = set(p.outputs.values())

    def eligible(f) -> bool:
        dst = f.syn.dst
        return (dst not in outputs and p.populations[dst].spiking and f.syn.src != dst and len(incoming[dst]) == 1
                and not f.syn.flat_out and f.syn.delay == 0 and f.syn.src != "__const__"
                and len(p.shapes[dst]) == (3 if f.conv is not None else 1)
                and bool(np.all(fx.populations[dst].bias_exp == BIAS_EXP_NETX)))

    def successor(f):
        nxt = outgoing[f.syn.dst]
        return nxt[0] if len(nxt) == 1 and eligible(nxt[0]) else None

    starts = [f for f in folded.synapses if eligible(f)
              and not (f.syn.src in p.populations and len(outgoing[f.syn.src]) == 1
                       and incoming[f.syn.src] and eligible(incoming[f.syn.src][0]))]
    chains = []
    for f in starts:
        chain = [f]
        while (nxt := successor(chain[-1])) is not None:
            chain.append(nxt)
        if len(chain) >= min_length:
            chains.append(chain)
    return chains


def export_chains(dep, out_dir: str | Path) -> list:
    """Write the netx file of every sequential chain of the fixed-point deployment ``dep`` into ``out_dir``;
    returns the paths. (The runtime builds the same files itself; this is for people who take them elsewhere.)"""
    return [path for _chain, path in write_chains(dep, out_dir)]


def write_chains(dep, out_dir: str | Path) -> list:
    """Write every chain netx can build into ``out_dir`` (atomically), named ``<first>-<last>.net``;
    returns [(chain, path)]."""
    from ..atomic import atomic_path
    from .layout import chw_to_whc_perm

    folded, fx = dep.folded, dep.fixed
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for chain in find_chains(folded, fx):
        first = chain[0].syn
        cols = chw_to_whc_perm(folded.plan.shapes[first.src]) if chain[0].conv is None and first.flat_in else None
        path = out_dir / f"{first.dst}-{chain[-1].syn.dst}.net"
        with atomic_path(path) as tmp:
            write_chain(tmp, chain, folded, fx, first_cols=cols)
        written.append((chain, path))
    return written


def write_chain(path: str | Path, chain: list, folded, fx, first_cols: np.ndarray | None = None) -> Path:
    """Write one chain as a netx HDF5 file. ``first_cols`` reorders a first dense layer's input columns
    (its input arrives flattened in Lava's order)."""
    import h5py

    from .layout import to_lava_layout

    p = folded.plan
    path = Path(path)
    with h5py.File(path, "w") as h5:
        layers = h5.create_group("layer")
        index = 0
        for position, f in enumerate(chain):
            dst, q = f.syn.dst, fx.populations[f.syn.dst]
            w = np.asarray(fx.weights[f.syn.name])  # a netx file holds dense kernels
            if f.conv is None and f.syn.flat_in and position > 0:
                layers.create_group(str(index)).create_dataset("type", data="flatten")
                index += 1
            g = layers.create_group(str(index))
            index += 1
            g.create_dataset("shape", data=np.array(p.shapes[dst]))
            if f.conv is not None:
                g.create_dataset("type", data="conv")
                g.create_dataset("weight", data=w.astype(np.int64))
                g.create_dataset("stride", data=np.array(f.conv.stride))
                g.create_dataset("padding", data=np.array(f.conv.padding))
                g.create_dataset("dilation", data=np.array(f.conv.dilation))
                g.create_dataset("groups", data=int(f.conv.groups))
            else:
                g.create_dataset("type", data="dense")
                cols = first_cols if position == 0 and first_cols is not None else np.arange(w.shape[1])
                g.create_dataset("weight", data=w[:, cols].astype(np.int64))
            g.create_dataset("bias", data=to_lava_layout(q.bias_mant, p.shapes[dst]).astype(np.int64))
            neuron = g.create_group("neuron")
            neuron.create_dataset("type", data="CUBA")
            neuron.create_dataset("vThMant", data=int(q.vth))
            neuron.create_dataset("iDecay", data=int(q.du) + 1)
            neuron.create_dataset("vDecay", data=int(q.dv))
            neuron.create_dataset("refDelay", data=1)
            neuron.create_dataset("gradedSpike", data=False)
    return path
