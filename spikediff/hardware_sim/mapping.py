"""Assign a network's neurons and synapses to the cores of a Loihi-class chip under per-core limits.

Each population gets cores of its own (as Lava's compilers place layers). Neurons of an image-shaped
population are taken in (row, column, channel) order, so a core holds a patch of the image with all its
channels and its fan-in stays local. Greedily, each core takes the longest run of neurons that fits:

- neurons <= ``max_neurons_per_core``;
- synapses x ``bits_per_synapse`` / 8 + neurons x ``neuron_state_bytes`` <= ``synaptic_memory_per_core``
  (every nonzero weight stored; no weight sharing between a convolution's positions);
- fan-in axons <= ``max_fan_in_axons_per_core``: distinct source neurons (or host inputs) sending to the core.

Fan-out axons (a source neuron's route to one destination core) are counted afterwards; a core with too many
has its population re-split into smaller cores until all fit. Cores are numbered in order and filled into
tiles (``cores_per_tile``) laid out row by row (``tiles_per_row``), which sets the hops a spike travels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import SpikediffError


@dataclass
class Core:
    index: int
    population: str
    neurons: int
    synapses: int
    memory_bytes: int
    fan_in_axons: int
    fan_out_axons: int = 0


@dataclass
class Mapping:
    profile: str
    cores: list  # Core, in order
    core_of: dict  # population -> (neurons,) core index of each neuron (NIR flat order)
    routes: dict  # (source population or input, destination core) -> bool mask of the source neurons that send there
    cores_per_chip: int
    cores_per_tile: int
    tiles_per_row: int
    limits: dict = field(default_factory=dict)  # population -> what bounded its cores' size

    @property
    def chips(self) -> int:
        return -(-len(self.cores) // self.cores_per_chip)

    @property
    def fits_one_chip(self) -> bool:
        return len(self.cores) <= self.cores_per_chip

    @property
    def tiles(self) -> int:
        return -(-len(self.cores) // self.cores_per_tile)

    def tile_xy(self, core) -> tuple:
        tile = np.asarray(core) // self.cores_per_tile
        return tile % self.tiles_per_row, tile // self.tiles_per_row

    def hops(self, a, b) -> tuple:
        """(east-west, north-south) tile hops between cores a and b."""
        (ax, ay), (bx, by) = self.tile_xy(a), self.tile_xy(b)
        return np.abs(ax - bx), np.abs(ay - by)

    def summary(self) -> dict:
        per_pop = {}
        for c in self.cores:
            s = per_pop.setdefault(c.population, {"cores": 0, "neurons": 0, "synapses": 0, "bound_by": self.limits.get(
                c.population, "")})
            s["cores"] += 1
            s["neurons"] += c.neurons
            s["synapses"] += c.synapses
        return {"profile": self.profile, "cores": len(self.cores), "tiles": self.tiles, "chips": self.chips,
                "fits_one_chip": self.fits_one_chip, "cores_per_chip": self.cores_per_chip, "populations": per_pop,
                "max_per_core": {k: max((getattr(c, k) for c in self.cores), default=0)
                                 for k in ("neurons", "memory_bytes", "fan_in_axons", "fan_out_axons")}}


def neuron_order(shape: tuple, lava_perm=None) -> np.ndarray:
    """NIR flat indices in the order cores take them: channels fastest, so that a core holds whole positions.
    ``lava_perm``: for a flat population fed by flattened convs, Lava's order (``population_perms``), which is
    the same thing for the conv's output image."""
    n = int(np.prod(shape))
    if len(shape) == 3:
        c, h, w = shape
        return np.arange(n).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    return np.arange(n) if lava_perm is None else np.asarray(lava_perm)


def map_to_cores(folded, conn, profile) -> Mapping:
    """``conn``: ``connectivity.Connectivity`` of the fixed-point weights; ``profile``: a chip profile."""
    if not profile.is_chip:
        raise SpikediffError(f"profile {profile.name}: it has no core limits (it is not a chip); it cannot be mapped")
    p = folded.plan
    from ..export.layout import population_perms

    caps = {name: int(profile.get("max_neurons_per_core")) for name in p.populations}
    perms = population_perms(folded)
    split, cache = set(), {}
    for _attempt in range(32):
        mapping, over = _map_once(folded, conn, profile, caps, perms, cache)
        if not over:
            mapping.limits.update({name: "fan-out axons" for name in split})
            return mapping
        for name in over:
            if caps[name] == 1:
                raise SpikediffError(f"population {name!r}: one neuron sends to more cores than "
                                     f"max_fan_out_axons_per_core allows; it cannot be mapped on {profile.name}")
            caps[name] = max(1, caps[name] // 2)
            split.add(name)
    raise SpikediffError(f"could not satisfy the fan-out limit of {profile.name} for {', '.join(over)}")


def _map_once(folded, conn, profile, caps: dict, perms: dict, cache: dict) -> tuple:
    p = folded.plan
    mem_limit = profile.get("synaptic_memory_per_core", np.inf)
    bits = profile.get("bits_per_synapse", 16)
    state = profile.get("neuron_state_bytes", 0)
    fan_in_limit = profile.get("max_fan_in_axons_per_core", np.inf)
    fan_out_limit = profile.get("max_fan_out_axons_per_core", np.inf)
    cores, core_of, limits = [], {}, {}
    for name in sorted(p.populations, key=lambda k: (p.latency[k], k)):
        if (name, caps[name]) not in cache:  # (a re-split for fan-out changes only the populations it names)
            cache[name, caps[name]] = _split_population(folded, conn, name, caps[name], perms.get(name), mem_limit,
                                                        bits, state, fan_in_limit, profile.name)
        chunks, limits[name] = cache[name, caps[name]]
        owner = np.full(conn.size(name), -1)
        for idx, syn, mem, axons in chunks:
            owner[idx] = len(cores)
            cores.append(Core(len(cores), name, len(idx), syn, mem, axons))
        core_of[name] = owner

    routes = {}
    for f in folded.synapses:
        for c in cores:
            if c.population != f.syn.dst:
                continue
            mask = (core_of[f.syn.dst] == c.index).astype(np.float64)
            sends = conn.pull(f, mask) > 0
            key = (f.syn.src, c.index)
            routes[key] = sends if key not in routes else routes[key] | sends
    over = set()
    for (src, _dst), sends in routes.items():
        if src in core_of:
            for core, count in zip(*np.unique(core_of[src][sends], return_counts=True)):
                cores[core].fan_out_axons += int(count)
    for c in cores:
        if c.fan_out_axons > fan_out_limit:
            over.add(c.population)
    m = Mapping(profile.name, cores, core_of, routes, int(profile.get("cores_per_chip")),
                int(profile.get("cores_per_tile", 1)), int(profile.get("tiles_per_row", 1)), limits)
    return m, sorted(over)


def _split_population(folded, conn, name, cap, perm, mem_limit, bits, state, fan_in_limit, profile_name) -> tuple:
    """Cores for one population: ([(neuron indices, synapses, memory bytes, fan-in axons)], what bounded them)."""
    size = conn.size(name)
    fan_in = conn.fan_in(name)
    incoming = folded.incoming(name)
    order = neuron_order(folded.plan.shapes[name], perm)

    def cost(idx):
        mask = np.zeros(size)
        mask[idx] = 1
        syn = int(round(fan_in[idx].sum()))
        axons = sum(int((conn.pull(f, mask) > 0).sum()) for f in incoming)
        return syn, int(np.ceil(syn * bits / 8 + len(idx) * state)), axons

    def fits(k):
        _syn, mem, axons = cost(order[start:start + k])
        return mem <= mem_limit and axons <= fan_in_limit

    chunks, bound, start, guess = [], "", 0, cap
    while start < size:
        hi = min(cap, size - start)
        if fits(hi):
            k = hi
            bound = bound or ("neurons per core" if hi == cap else "population size")
        else:
            if not fits(1):
                _syn, mem, axons = cost(order[start:start + 1])
                raise SpikediffError(f"population {name!r}: one neuron needs {mem} bytes and {axons} fan-in axons; "
                                     f"a {profile_name} core holds {mem_limit:g} bytes and {fan_in_limit:g} axons")
            # the previous core's size is a good first guess: neighbouring patches look alike
            if guess < hi and fits(guess):
                lo = guess
                if not fits(guess + 1):  # the common case: the same size again
                    hi = guess + 1
            else:
                lo, hi = 1, min(hi, guess)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid)
            k = lo
            _syn, mem, _axons = cost(order[start:start + k + 1])
            bound = "synaptic memory" if mem > mem_limit else "fan-in axons"
        idx = order[start:start + k]
        chunks.append((idx, *cost(idx)))
        start, guess = start + k, k
    return chunks, bound
