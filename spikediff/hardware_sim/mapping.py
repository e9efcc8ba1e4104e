"""Assign a network's neurons and synapses to the cores of a Loihi-class chip under the profile's per-core rules.

Each population gets cores of its own (as Lava's compilers place layers). Neurons are taken in Lava's order:
an image population (C, H, W) column by column (x slowest, then y, channels fastest), so that a core holds
whole columns with all their channels, as Lava's Loihi 2 compiler slices lava-dl's PilotNet; a flat
population in Lava's order (``layout.population_perms``).

What a core holds (the profile decides which rules apply):

- Loihi 2 (``memory_per_core``): one budget per core for synapses, neuron state and axon tables together.
  A convolution (``conv_kernel_shared``) is stored as its kernel for the output channels on the core, however
  many positions the core holds: one row per (input channel, kernel offset) that has a nonzero weight for one
  of them, each ``synapse_row_bits`` plus its weights dense (``bits_per_weight`` per channel on the core) or
  sparse (its nonzero weights x (bits + index bits)), whichever is smaller. Rows of zeros are not stored: a
  kernel derived for space-to-depth layouts (``models.s2d``) is mostly structural zeros, and storing them made
  a U-Net's decoder cores many times those of the natural network it equals. A convolution from or onto a 1 x 1
  map shares no tap between positions (a dense layer written as one): it is stored as the matrix it is. A dense
  synapse is a dense matrix
  (input axons x (row + neurons x bits)) or a sparse one (input axons x row + nonzero weights x (bits + index
  bits)), whichever is smaller. Neuron state
  is ``neuron_state_bytes`` per neuron. Input axons (a dense synapse's source neurons, a convolution's source
  cores) cost ``axon_in_bytes`` each, routing entries (a source neuron to a destination core; for a
  convolution, a core to a core) ``axon_out_bytes`` each.
- Loihi 1 (``synaptic_memory_per_core``): every synapse stored one by one (``bits_per_synapse``), neuron state
  apart (``neuron_state_bytes`` 0), and fan-in and fan-out axons counted against their own limits.

Policies: ``fewest`` (each core takes the longest run of neurons that fits: the fewest cores), ``lava`` (an
image population cut into slices of whole columns, a power of two wide, the widest that fits, as Lava's
compiler cut PilotNet; flat ones as ``fewest``), ``balanced`` (a given number of cores per population, cut
so that each holds the same work: what the least-energy mapping uses, see ``balance``). ``fewest`` and
``balanced`` take a map held in space-to-depth layout by the natural map's columns (``neuron_order``), so
that its cores reach as few cores of the next map as the natural network's would; ``lava`` by its own.

Routing entries and fan-out depend on where the targets are, so they are counted afterwards; a core over its
budget or its fan-out limit has its population re-split into smaller cores until all fit. Cores fill chips
in order (``cores_per_chip``), tiles within a chip (``cores_per_tile``, ``tiles_per_row``); chips stand in a
row, and a spike between chips crosses ``chip_hops`` chip boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import SpikediffError

POLICIES = ("fewest", "lava", "balanced")


@dataclass
class Core:
    index: int
    population: str
    neurons: int
    synapses: int  # synaptic connections into the core's neurons (nonzero weights, expanded over positions)
    memory_bytes: int  # what counts against the core's budget
    fan_in_axons: int
    fan_out_axons: int = 0  # routing entries (Loihi 2) or core-to-core fan-out edges (Loihi 1)
    synapse_bytes: int = 0
    state_bytes: int = 0
    axon_bytes: int = 0


@dataclass
class Route:
    """The neurons of one source population that send to one target core, by source core: cores all of whose
    neurons send (``whole``) and, for each core that sends partly, its sending neurons (``part``). One boolean per
    source neuron and target core is cores x neurons: past 10 GB at the paper's width, where a convolution's core
    is fed by nearly the whole map before it; a map's cores mostly send whole."""

    whole: np.ndarray  # source core indices, ascending
    part: dict  # source core -> NIR flat indices of its sending neurons (ascending)

    @classmethod
    def of(cls, sends: np.ndarray, owner: np.ndarray, sizes: np.ndarray) -> Route:
        """From ``sends`` (per source neuron: does it send), ``owner`` (per source neuron, its core) and ``sizes``
        (neurons per core, indexed by core)."""
        idx = np.flatnonzero(sends)
        cores = owner[idx]
        used, counts = np.unique(cores, return_counts=True)
        full = counts == sizes[used]
        part = {}
        if not full.all():
            partial = np.zeros(len(sizes), dtype=bool)
            partial[used[~full]] = True
            keep = partial[cores]
            idx, cores = idx[keep], cores[keep]
            order = np.argsort(cores, kind="stable")
            idx, cores = idx[order], cores[order]
            cuts = np.flatnonzero(np.diff(cores)) + 1
            part = {int(c[0]): i for c, i in zip(np.split(cores, cuts), np.split(idx, cuts), strict=True)}
        return cls(used[full], part)

    def union(self, other: Route, sizes: np.ndarray) -> Route:
        whole = np.union1d(self.whole, other.whole)
        part = {}
        for c in set(self.part) | set(other.part):
            if c in whole:
                continue
            idx = np.union1d(self.part.get(c, np.empty(0, np.int64)), other.part.get(c, np.empty(0, np.int64)))
            if len(idx) == sizes[c]:
                whole = np.union1d(whole, [c])
            else:
                part[c] = idx
        return Route(whole, part)

    def _by_core(self, of_whole: np.ndarray, of_part) -> tuple:
        """(source cores ascending, a value per core): ``of_whole`` for the whole cores, ``of_part(neurons)`` for
        each partly sending one."""
        cores = np.concatenate([self.whole, np.fromiter(self.part, np.int64, len(self.part))]).astype(np.int64)
        values = np.concatenate([of_whole, [of_part(i) for i in self.part.values()]])
        order = np.argsort(cores)
        return cores[order], values[order]

    def senders(self, sizes: np.ndarray) -> tuple:
        """(source cores, sending neurons of each), ascending by core."""
        cores, counts = self._by_core(sizes[self.whole], len)
        return cores, counts.astype(np.int64)

    def sums(self, values: np.ndarray, per_core: np.ndarray) -> tuple:
        """(source cores, sum of ``values`` over each one's sending neurons), ``per_core``: ``values`` summed per
        core (for the cores that send whole)."""
        return self._by_core(per_core[self.whole], lambda i: values[i].sum())


@dataclass
class Mapping:
    profile: str
    cores: list  # Core, in order
    core_of: dict  # population -> (neurons,) core index of each neuron (NIR flat order)
    routes: dict  # (source population, destination core) -> Route: its neurons that send there (host input: none)
    cores_per_chip: int
    cores_per_tile: int
    tiles_per_row: int
    limits: dict = field(default_factory=dict)  # population -> what bounded its cores' size
    policy: str = "fewest"

    @property
    def chips(self) -> int:
        return -(-len(self.cores) // self.cores_per_chip)

    @property
    def fits_one_chip(self) -> bool:
        return len(self.cores) <= self.cores_per_chip

    @property
    def tiles(self) -> int:
        return -(-len(self.cores) // self.cores_per_tile)

    @property
    def tiles_per_chip_used(self) -> int:
        """Tiles in use on the fullest chip (what a chip's barrier spans)."""
        return -(-min(len(self.cores), self.cores_per_chip) // self.cores_per_tile)

    def chip_of(self, core):
        return np.asarray(core) // self.cores_per_chip

    def tile_xy(self, core) -> tuple:
        tile = (np.asarray(core) % self.cores_per_chip) // self.cores_per_tile
        return tile % self.tiles_per_row, tile // self.tiles_per_row

    def hops(self, a, b) -> tuple:
        """(east-west, north-south) tile hops between cores a and b (within their chips' meshes)."""
        (ax, ay), (bx, by) = self.tile_xy(a), self.tile_xy(b)
        return np.abs(ax - bx), np.abs(ay - by)

    def chip_hops(self, a, b):
        """Chip boundaries a spike from core a to core b crosses."""
        return np.abs(self.chip_of(a) - self.chip_of(b))

    def summary(self) -> dict:
        per_pop = {}
        for c in self.cores:
            s = per_pop.setdefault(c.population, {"cores": 0, "neurons": 0, "synapses": 0, "bound_by": self.limits.get(
                c.population, "")})
            s["cores"] += 1
            s["neurons"] += c.neurons
            s["synapses"] += c.synapses
        keys = ("neurons", "memory_bytes", "synapse_bytes", "state_bytes", "axon_bytes", "fan_in_axons",
                "fan_out_axons")
        return {"profile": self.profile, "policy": self.policy, "cores": len(self.cores), "tiles": self.tiles,
                "chips": self.chips, "fits_one_chip": self.fits_one_chip, "cores_per_chip": self.cores_per_chip,
                "populations": per_pop, "max_per_core": {k: max((getattr(c, k) for c in self.cores), default=0)
                                                         for k in keys}}


def neuron_order(shape: tuple, lava_perm=None, s2d: int = 1) -> np.ndarray:
    """NIR flat indices in the order cores take them: an image by columns (x slowest, then y, channels fastest),
    as Lava orders it; a flat population fed by flattened convs in Lava's flatten order (``lava_perm``).

    ``s2d`` > 1: the image is a map held in space-to-depth layout at that factor (``models.s2d``), whose channel
    c r^2 + py r + px at coarse (Y, X) is the natural map's channel c at fine (Y r + py, X r + px). It is taken
    by the natural map's columns: a core then holds neighbouring fine positions, as the natural network's cores
    would, instead of whole coarse positions (every phase of every channel), each of which reaches most cores of
    the next map and fills the routing tables."""
    n = int(np.prod(shape))
    if len(shape) == 3 and s2d > 1:
        c, h, w = shape
        if c % (s2d * s2d):
            raise SpikediffError(f"a map of {c} channels cannot be in space-to-depth layout at factor {s2d}")
        return np.arange(n).reshape(c // (s2d * s2d), s2d, s2d, h, w).transpose(4, 2, 3, 1, 0).reshape(-1)
    if len(shape) == 3:
        c, h, w = shape
        return np.arange(n).reshape(c, h, w).transpose(2, 1, 0).reshape(-1)
    return np.arange(n) if lava_perm is None else np.asarray(lava_perm)


def s2d_factors(folded) -> dict:
    """Population -> its space-to-depth factor, read off the derived convolutions it sends or receives
    (populations no derived convolution touches are absent)."""
    factors = {}
    for f in folded.synapses:
        if f.conv is not None and f.conv.s2d is not None:
            factors.setdefault(f.syn.src, f.conv.s2d.r_in)
            factors.setdefault(f.syn.dst, f.conv.s2d.r_out)
    return factors


class Rules:
    """A profile's per-core rules (see the module docstring)."""

    def __init__(self, profile):
        if not profile.is_chip:
            raise SpikediffError(f"profile {profile.name}: it has no core limits (it is not a chip); it cannot be "
                                 f"mapped")
        g = profile.get
        self.name = profile.name
        self.shared = "memory_per_core" in profile  # Loihi 2: one budget for everything
        self.limit = g("memory_per_core") if self.shared else g("synaptic_memory_per_core", np.inf)
        self.kernels = bool(g("conv_kernel_shared", 0))
        self.weight_bits = g("bits_per_weight")  # None: every synapse at bits_per_synapse (Loihi 1)
        self.synapse_bits = g("bits_per_synapse", 16)
        self.row_bits = g("synapse_row_bits", 0)
        self.state = g("neuron_state_bytes", 0)
        self.axon_in = g("axon_in_bytes", 0)
        self.axon_out = g("axon_out_bytes", 0)
        self.fan_in_limit = g("max_fan_in_axons_per_core", np.inf)
        self.fan_out_limit = g("max_fan_out_axons_per_core", np.inf)
        self.max_neurons = int(g("max_neurons_per_core"))
        self.layout = (int(g("cores_per_chip")), int(g("cores_per_tile", 1)), int(g("tiles_per_row", 1)))

    def stores_kernel(self, conn, f) -> bool:
        """Whether a core stores synapse ``f`` as a shared kernel (the rows of its channels; input axons and routing
        entries per core), rather than synapse by synapse."""
        return self.kernels and conn.shares_kernel(f)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)  # set bits of a byte


class _RunOr:
    """The OR of packed boolean rows over a contiguous run of them, from ORs of whole blocks of rows kept beforehand
    plus the rows at the run's two ends: a run of thousands of neurons reads a few hundred rows."""

    BLOCK = 64

    def __init__(self, rows: np.ndarray):
        self.rows = np.ascontiguousarray(rows)
        whole = len(rows) // self.BLOCK
        self.blocks = np.bitwise_or.reduce(self.rows[:whole * self.BLOCK].reshape(whole, self.BLOCK, -1), axis=1) \
            if whole else self.rows[:0]

    def __call__(self, start: int, stop: int) -> np.ndarray:
        b = self.BLOCK
        first, last = -(-start // b), stop // b  # the whole blocks inside [start, stop)
        if first >= last:
            return np.bitwise_or.reduce(self.rows[start:stop], axis=0)
        parts = (self.blocks[first:last], self.rows[start:first * b], self.rows[last * b:stop])
        return np.bitwise_or.reduce(np.concatenate(parts), axis=0)

    def of_rows(self, positions) -> np.ndarray:
        return np.bitwise_or.reduce(self.rows[positions], axis=0)


class _PopulationCost:
    """What a run of one population's neurons costs a core: synapses, bytes, input axons."""

    def __init__(self, folded, conn, name: str, rules: Rules, core_of: dict, order: np.ndarray):
        """``order``: the mapper's order of the neurons, whose contiguous runs are the candidates it asks about
        (answered from running sums and block ORs over that order, not by gathering each run's neurons)."""
        self.conn, self.rules, self.name, self.core_of = conn, rules, name, core_of
        self.size = conn.size(name)
        self.incoming = folded.incoming(name)
        self.fan_in = {f.syn.name: conn.deliver(f, np.ones(conn.size(f.syn.src))) for f in self.incoming}
        self.order = order
        self._answers = {}  # (start, stop) of a run in ``order`` -> its cost
        self.position = np.empty(self.size, dtype=np.int64)
        self.position[order] = np.arange(len(order))
        # fan-in counts are integers, so a difference of running sums is the run's sum exactly
        self.fan_in_sums = {k: np.concatenate([[0.0], np.cumsum(v[order])]) for k, v in self.fan_in.items()}
        shape = folded.plan.shapes[name]
        self.channel = {}  # conv synapse -> output channel of each neuron (NIR flat order)
        self.kernel_nz = {}  # conv synapse -> (output channels, rows of its group) nonzero weights (not merged ones)
        for f in self.incoming:
            if rules.stores_kernel(conn, f):
                out = f.op.out_shape(f.src_shape)
                self.channel[f.syn.name] = np.arange(int(np.prod(out))) // (out[1] * out[2])
                if f.syn.name not in conn.merged:  # merged taps: rows counted per core (``kernel_rows``)
                    mask = conn.masks32[f.syn.name]
                    self.kernel_nz[f.syn.name] = mask.reshape(mask.shape[0], -1).numpy() != 0
        self.shape = shape
        # A mapper asks for the cost of many candidate runs of neurons; what does not depend on the run is worked
        # out here, once, so that most questions need no convolution: per shared-kernel synapse, which of the
        # source's cores reach each neuron (input axons are counted per source core); per dense synapse, its
        # 0/1 matrix (rows used are read off it).
        self.src_reach, self.dense = {}, {}
        for f in self.incoming:
            if f.syn.name in self.channel:
                owner = core_of.get(f.syn.src)
                if owner is not None:  # (neurons, source cores), packed 8 cores a byte: a run's OR is 8x less work
                    reach = np.packbits(conn.reaches(f, owner, np.unique(owner)), axis=1)
                    self.src_reach[f.syn.name] = _RunOr(reach[order])
            elif not conn.shares_kernel(f):
                self.dense[f.syn.name] = conn.matrix(f)  # (targets, sources)

    @staticmethod
    def reads(folded, conn, name: str, rules: Rules, core_of: dict) -> tuple:
        """What of other populations' mappings this population's costs depend on: the partition into cores of each
        source reached through a shared kernel (its input axons are counted per source core), as bytes (None:
        not mapped yet). The same partition with other core numbers reads the same."""
        out = []
        for f in folded.incoming(name):
            if rules.stores_kernel(conn, f):
                owner = core_of.get(f.syn.src)
                out.append(None if owner is None else (owner - owner.min()).tobytes())
        return tuple(out)

    def _channels(self, f, idx) -> np.ndarray:
        """The output channels (sorted) of a conv synapse that the neurons ``idx`` hold: marked, not sorted, since
        a run holds thousands of neurons of a few channels."""
        channel = self.channel[f.syn.name]
        held = np.zeros(int(channel[-1]) + 1, dtype=bool)
        held[channel[idx]] = True
        return np.flatnonzero(held)

    def _senders(self, f, idx) -> np.ndarray:
        """Per source neuron: does it have a synapse onto any of the neurons ``idx``."""
        if f.syn.name in self.dense:
            return self.dense[f.syn.name][idx].any(axis=0)
        return self.conn.senders(f, idx)

    def _kernel_bits(self, f, channels: np.ndarray) -> float:
        """Bits of a shared kernel's rows for the output ``channels`` (sorted) on one core: per row of a group
        (input channel of the group, kernel offset) with a nonzero weight for one of the group's channels on the
        core, a header plus its weights dense or sparse, whichever is smaller. Kept by the connectivity: a
        mapper's candidate cores share few sets of channels."""
        key = ("kernel bits", self.rules.weight_bits, self.rules.row_bits, f.syn.name, channels.tobytes())
        bits = self.conn.memo.get(key)
        if bits is None:
            bits = self.conn.memo[key] = self._count_kernel_bits(f, channels)
        return bits

    def _count_kernel_bits(self, f, channels: np.ndarray) -> float:
        r = self.rules
        per_group = f.conv.weight.shape[0] // f.conv.groups
        group = channels // per_group
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])  # channels are sorted: groups contiguous
        if f.syn.name in self.kernel_nz:
            count = np.add.reduceat(self.kernel_nz[f.syn.name][channels].astype(np.int64), starts, axis=0)
        else:  # a derived kernel held as merged taps, too large to hold dense at the paper's width
            count = np.stack([self.conn.kernel_rows(f, part) for part in np.split(channels, starts[1:])])
            count = np.rint(count).astype(np.int64)
        width = np.diff(np.r_[starts, len(channels)])[:, None]  # the group's channels on the core
        index_bits = np.ceil(np.log2(np.maximum(width, 2)))
        row = np.minimum(width * r.weight_bits, count * (r.weight_bits + index_bits))
        return float(((r.row_bits + row) * (count > 0)).sum())

    def _run(self, idx) -> tuple | None:
        """(start, stop) in the mapper's order if ``idx`` is that contiguous run of it, else None."""
        if not len(idx):
            return None
        start = int(self.position[idx[0]])
        stop = start + len(idx)
        return (start, stop) if np.array_equal(self.order[start:stop], idx) else None

    def __call__(self, idx) -> dict:
        return self._exact(idx, self._run(idx))

    def _exact(self, idx, run) -> dict:
        got = self._answers.get(run) if run is not None else None
        if got is None:
            got = self._cost(idx, run, exact=True)
            if run is not None:  # a cut asks again for the cost of each run it took (a few thousand at most)
                self._answers[run] = got
        return got

    def _cost(self, idx, run, exact: bool) -> dict:
        """The cost of the run ``idx``; ``exact=False``: a lower bound of its memory and axons that needs no
        convolution, taking a synapse that does not share a kernel to have as few sending neurons as its synapses
        onto the run allow (each sender has at most one synapse onto each of the ``n`` neurons: synapses / n)."""
        r = self.rules
        n = len(idx)
        bits, axons, synapses = 0.0, 0, 0
        for f in self.incoming:
            if run is None:
                nnz = float(self.fan_in[f.syn.name][idx].sum())
            else:
                sums = self.fan_in_sums[f.syn.name]
                nnz = float(sums[run[1]] - sums[run[0]])
            synapses += nnz
            if f.syn.name in self.channel:  # a shared kernel: the rows the core's channels use
                bits += self._kernel_bits(f, self._channels(f, idx))
                reach = self.src_reach.get(f.syn.name)
                if reach is None:
                    axons += 1
                    continue
                # the source cores that reach one of the run's neurons
                hit = reach(*run) if run is not None else reach.of_rows(self.position[idx])
                axons += max(1, int(_POPCOUNT[hit].sum()))
                continue
            rows = int(self._senders(f, idx).sum()) if exact else int(np.ceil(nnz / max(n, 1)))
            if r.weight_bits is not None:  # dense or sparse, whichever is smaller
                index_bits = int(np.ceil(np.log2(max(n, 2))))
                dense = rows * (r.row_bits + n * r.weight_bits)
                sparse = rows * r.row_bits + nnz * (r.weight_bits + index_bits)
                bits += min(dense, sparse)
            else:  # every synapse one by one
                bits += nnz * r.synapse_bits
            axons += rows
        syn_bytes = int(np.ceil(bits / 8))
        state = int(n * r.state)
        axon_bytes = int(axons * r.axon_in)
        return {"synapses": int(round(synapses)), "synapse_bytes": syn_bytes, "state_bytes": state,
                "axon_bytes": axon_bytes, "fan_in_axons": axons, "memory_bytes": syn_bytes + state + axon_bytes}

    def over(self, idx) -> str | None:
        """What a core holding ``idx`` would exceed, or None: "memory" (first) or "fan-in axons" (the neuron cap
        apart)."""
        r = self.rules
        run = self._run(idx)
        if self._cost(idx, run, exact=False)["memory_bytes"] > r.limit:
            return "memory"
        c = self._exact(idx, run)
        if c["memory_bytes"] > r.limit:
            return "memory"
        return "fan-in axons" if c["fan_in_axons"] > r.fan_in_limit else None

    def fits(self, idx, cap: int) -> bool:
        """Whether ``idx`` fits a core. Refused without convolutions where a lower bound (``_cost``) is already over:
        most runs a search for the longest that fits asks about are (for Loihi 1, which stores every synapse, most
        of a U-Net report's time went to those convolutions)."""
        if len(idx) > cap:
            return False
        r, run = self.rules, self._run(idx)

        def within(c: dict) -> bool:
            return c["memory_bytes"] <= r.limit and c["fan_in_axons"] <= r.fan_in_limit

        return within(self._cost(idx, run, exact=False)) and within(self._exact(idx, run))


def _fewest(cost, order, cap, profile_name) -> tuple:
    """Each core the longest run that fits; ([index arrays], what bounded them)."""
    size = len(order)
    chunks, bound, start, guess = [], "", 0, cap

    def fits(k):
        return cost.fits(order[start:start + k], cap)

    while start < size:
        hi = min(cap, size - start)
        if fits(hi):
            k = hi
            bound = bound or ("neurons per core" if hi == cap else "population size")
        else:
            if not fits(1):
                c = cost(order[start:start + 1])
                limit = cost.rules.limit
                raise SpikediffError(f"population {cost.name!r}: one neuron needs {c['memory_bytes']} bytes and "
                                     f"{c['fan_in_axons']} fan-in axons; a {profile_name} core holds {limit:g} bytes "
                                     f"and {cost.rules.fan_in_limit:g} axons")
            if guess < hi and fits(guess):  # neighbouring slices look alike: the previous size first
                lo = guess
                if not fits(guess + 1):
                    hi = guess + 1
            else:
                lo, hi = 1, min(hi, guess)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            k = lo
            bound = "core memory" if cost.over(order[start:start + k + 1]) == "memory" else "fan-in axons"
            if not cost.rules.shared and bound == "core memory":
                bound = "synaptic memory"
        chunks.append(order[start:start + k])
        start, guess = start + k, k
    return chunks, bound


def _lava_columns(cost, order, cap, shape, profile_name) -> tuple | None:
    """Slices of whole columns, the widest power of two that fits (None if not even one column fits)."""
    _c, h, w = shape
    column = len(order) // w
    width = 1 << int(np.floor(np.log2(w)))
    while width >= 1:
        slices = [order[x * column:min(w, x + width) * column] for x in range(0, w, width)]
        if all(cost.fits(s, cap) for s in slices):
            bound = "population size" if width >= w else f"{width}-column slices (power of two)"
            return slices, bound
        width //= 2
    return None


def _balanced(cost, order, cap, cores: int, work: np.ndarray, profile_name) -> tuple:
    """``cores`` runs of equal work (a run that does not fit is split further, fewest-first)."""
    w = np.asarray(work, dtype=np.float64)[order]
    total = w.sum()
    if total <= 0 or cores <= 1:
        cuts = np.linspace(0, len(order), cores + 1).round().astype(int)
    else:
        cum = np.concatenate([[0.0], np.cumsum(w)])
        cuts = np.searchsorted(cum, np.linspace(0, total, cores + 1)[1:-1], side="left")
        cuts = np.concatenate([[0], np.clip(cuts, 1, len(order) - 1), [len(order)]])
    cuts = np.maximum.accumulate(cuts)
    chunks = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        if b <= a:
            continue
        part = order[a:b]
        if cost.fits(part, cap):
            chunks.append(part)
        else:
            chunks.extend(_fewest(cost, part, cap, profile_name)[0])
    return chunks, "balanced work"


def map_to_cores(folded, conn, profile, policy: str = "fewest", cores: dict | None = None,
                 work: dict | None = None, kept: dict | None = None) -> Mapping:
    """``conn``: ``connectivity.Connectivity`` of the fixed-point weights; ``profile``: a chip profile;
    ``policy``: fewest, lava or balanced (``cores``: {population: cores}, ``work``: {population: per-neuron
    work, NIR order}). ``kept``: cuts and routes of earlier mappings of the same network, profile and ``work``,
    reused where they are what this one would compute (``balance`` shares one across its budgets)."""
    if policy not in POLICIES:
        raise SpikediffError(f"mapping policy {policy!r}: expected one of {', '.join(POLICIES)}")
    rules = Rules(profile)
    from ..export.layout import population_perms

    p = folded.plan
    caps = {name: rules.max_neurons for name in p.populations}
    perms = population_perms(folded)
    # Lava's compiler slices a derived convolution's map by its own (coarse) columns; our policies place a map in
    # space-to-depth layout by the natural map's columns (``neuron_order``)
    factors = {} if policy == "lava" else s2d_factors(folded)
    split, kept = set(), {} if kept is None else kept
    for _attempt in range(32):
        mapping, over = _map_once(folded, conn, rules, caps, perms, policy, cores, work, factors, kept)
        if not over:
            mapping.limits.update({name: "routing tables" if rules.shared else "fan-out axons" for name in split})
            return mapping
        for name in over:
            if caps[name] == 1:
                raise SpikediffError(f"population {name!r}: one neuron's routing does not fit a core of {profile.name} "
                                     f"(fan-out axons or axon tables); it cannot be mapped")
            caps[name] = max(1, min(caps[name], max(c.neurons for c in mapping.cores if c.population == name)) // 2)
            split.add(name)
    raise SpikediffError(f"could not satisfy the routing limits of {profile.name} for {', '.join(over)}")


def _cut(folded, conn, name: str, rules: Rules, core_of: dict, cap: int, perms: dict, policy: str, cores, work,
         factors: dict) -> tuple:
    """(runs of neurons, one per core; what bounded them; each run's cost) for one population."""
    p = folded.plan
    order = neuron_order(p.shapes[name], perms.get(name), factors.get(name, 1))
    cost = _PopulationCost(folded, conn, name, rules, core_of, order)
    chunks = None
    if policy == "balanced" and cores and name in cores:
        chunks, limit = _balanced(cost, order, cap, int(cores[name]), work[name], rules.name)
    elif policy == "lava" and len(p.shapes[name]) == 3:
        got = _lava_columns(cost, order, cap, p.shapes[name], rules.name)
        if got is not None:
            chunks, limit = got
    if chunks is None:
        chunks, limit = _fewest(cost, order, cap, rules.name)
    return chunks, limit, [cost(idx) for idx in chunks]


def _feeds(f, conn, core_of: dict, sizes: np.ndarray, kept: dict) -> list:
    """[(target core, Route of the source's neurons that feed it)] of synapse ``f``, in ``conn.feeds``' order. Kept in
    ``kept`` with the two populations' cuts (core numbers from 0) they were asked for: an attempt or budget that
    cuts them alike asks no convolution again. One set per synapse, the last: routes at the paper's width take
    gigabytes."""
    src, dst = core_of[f.syn.src], core_of[f.syn.dst]
    s0, d0 = int(src.min()), int(dst.min())
    cuts = ((src - s0).tobytes(), (dst - d0).tobytes())
    held = kept.get(("feeds", f.syn.name))
    if held is not None and held[0] == cuts:
        local = held[1]
    else:
        n_src = int(src.max()) - s0 + 1
        dst_cores = list(range(d0, int(dst.max()) + 1))
        local = [(index - d0, Route.of(sends, src - s0, sizes[s0:s0 + n_src]))
                 for index, sends in conn.feeds(f, dst, dst_cores)]
        kept[("feeds", f.syn.name)] = (cuts, local)
    return [(index + d0, Route(route.whole + s0, {c + s0: i for c, i in route.part.items()}))
            for index, route in local]


def _map_once(folded, conn, rules: Rules, caps: dict, perms: dict, policy: str, cores, work, factors: dict,
              kept: dict) -> tuple:
    """One mapping at the given neuron caps. ``kept``: population -> (what its cut depended on, its cut, its cores'
    costs), from the attempts before: an attempt re-splits only the populations over their routing limits, and a
    population whose cap and sources' cuts are unchanged is cut as before (mapping each again cost Loihi 1 most of
    a U-Net report's time)."""
    p = folded.plan
    out_cores, core_of, limits = [], {}, {}
    for name in sorted(p.populations, key=lambda k: (p.latency[k], k)):
        balanced = int(cores[name]) if policy == "balanced" and cores and name in cores else None
        key = (policy, balanced, caps[name], _PopulationCost.reads(folded, conn, name, rules, core_of))
        if name in kept and kept[name][0] == key:
            chunks, limits[name], costs = kept[name][1]
        else:
            chunks, limits[name], costs = _cut(folded, conn, name, rules, core_of, caps[name], perms, policy, cores,
                                               work, factors)
            kept[name] = (key, (chunks, limits[name], costs))
        owner = np.full(conn.size(name), -1)
        for idx, c in zip(chunks, costs, strict=True):
            owner[idx] = len(out_cores)
            out_cores.append(Core(len(out_cores), name, len(idx), c["synapses"], c["memory_bytes"], c["fan_in_axons"],
                                  0, c["synapse_bytes"], c["state_bytes"], c["axon_bytes"]))
        core_of[name] = owner

    routes, per_core_entry = {}, {}  # per_core_entry: (src, dst core) -> a convolution's kernel (one entry per core)
    sizes = np.array([c.neurons for c in out_cores], dtype=np.int64)
    for f in folded.synapses:
        if f.syn.src not in core_of:
            continue  # host input arrives from outside the mesh
        for index, route in _feeds(f, conn, core_of, sizes, kept):
            key = (f.syn.src, index)
            routes[key] = route if key not in routes else routes[key].union(route, sizes)
            shared = rules.stores_kernel(conn, f)
            per_core_entry[key] = per_core_entry.get(key, True) and shared
    over = set()
    for key, route in routes.items():
        for core, count in zip(*route.senders(sizes), strict=True):
            out_cores[core].fan_out_axons += 1 if per_core_entry[key] and rules.shared else int(count)
    for c in out_cores:
        if rules.shared:
            extra = int(c.fan_out_axons * rules.axon_out)
            c.axon_bytes += extra
            c.memory_bytes += extra
            if c.memory_bytes > rules.limit:
                over.add(c.population)
        elif c.fan_out_axons > rules.fan_out_limit:
            over.add(c.population)
    chips, per_tile, per_row = rules.layout
    m = Mapping(rules.name, out_cores, core_of, routes, chips, per_tile, per_row, limits, policy)
    return m, sorted(over)


def allocate(work: dict, minimum: dict, sizes: dict, budget: int) -> dict:
    """Cores per population for a budget: from ``minimum``, each next core to the population with the most work
    per core (which lowers the busiest core's work the most), never more cores than neurons."""
    alloc = dict(minimum)
    while sum(alloc.values()) < budget:
        open_ = [k for k in alloc if alloc[k] < sizes[k] and work[k] > 0]
        if not open_:
            break
        k = max(open_, key=lambda name: work[name] / alloc[name])
        alloc[k] += 1
    return alloc


def balance(folded, conn, profile, work: dict, base: Mapping, price, chips_more: int = 1,
            budgets: list | None = None) -> tuple:
    """The least-energy mapping: cores given to populations by their work (``allocate``), for core budgets from
    ``base``'s count up to full chips (``base``'s chips and ``chips_more`` more; or the given ``budgets``), each
    mapped with the ``balanced`` policy and priced by ``price(mapping) -> joules``; ``base`` itself where none is
    cheaper (at the paper's width the balanced cores, split further to fit, spread over 20% more chips, whose
    crossings cost more than the balance saved). Returns (mapping, [(cores, joules)] of the budgets)."""
    minimum: dict = {}
    for c in base.cores:
        minimum[c.population] = minimum.get(c.population, 0) + 1
    sizes = {name: conn.size(name) for name in minimum}
    totals = {name: float(np.sum(work[name])) for name in minimum}
    per_chip = base.cores_per_chip
    if budgets is None:
        budgets = [per_chip * (base.chips + k) for k in range(chips_more + 1)]
    budgets = sorted({len(base.cores), *[min(sum(sizes.values()), max(len(base.cores), b)) for b in budgets]})
    best, tried = (base, float(price(base))), []  # spreading may cost more than it saves (chip crossings)
    kept: dict = {}  # most populations get the same cores at several budgets: cut once
    for budget in budgets:
        m = map_to_cores(folded, conn, profile, "balanced", allocate(totals, minimum, sizes, budget), work, kept)
        joules = float(price(m))
        tried.append((len(m.cores), joules))
        if joules < best[1]:
            best = (m, joules)
    return best[0], tried
