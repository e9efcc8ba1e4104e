"""Who connects to whom in a folded network, counted exactly through its own convolutions.

A chip stores a synapse for each nonzero integer weight (a zero weight is dropped by the compiler), so
connectivity is the pattern of nonzero weights of ``fixed_point`` as a 0/1 kernel. Pushing a vector
through that kernel (``deliver``) counts, per target neuron, the synapses reached by a source activity
(spikes x synapses = synaptic ops); pulling one back (``pull``) gives, per source neuron, how many marked
targets it reaches (fan-out; with a 0/1 target mask: which sources feed a core). Convolutions count
padding, stride and groups exactly, with no index bookkeeping of our own.
"""

from __future__ import annotations

import numpy as np
import torch

from ..export.natural_conv import MergedConv
from ..models.s2d import MergedKernel

BATCH = 256  # cores asked in one convolution (each answer is a boolean per neuron across the synapse)


def _merged_mask(w):
    """The 0/1 merged taps of a derived kernel held compact (``models.s2d``), or None: a kernel at the paper's
    width is too large to be made dense, and its merged taps' pattern is the dense kernel's."""
    from ..export.plan import is_compact, is_merged

    if not is_compact(w):
        return None
    merged = w if is_merged(w) else w.merged()
    return None if merged is None else merged.map(lambda v: (v != 0).astype(np.float64))


class Connectivity:
    def __init__(self, folded, fx=None):
        """``fx``: a FixedPoint whose nonzero integer weights are the synapses (None: the folded float weights:
        an ANN's MACs)."""
        self.folded, self.plan = folded, folded.plan
        self.masks, self.masks32, self.out_shapes = {}, {}, {}
        self.merged = {}  # synapse held as merged taps -> (0/1 MergedKernel, its float64 and float32 convolutions)
        # A mapper asks the same questions of these weights for thousands of candidate cores (at the paper's width,
        # most of its time): answers that depend only on the weights and the question are kept here, by question.
        self.memo = {}
        for f in folded.synapses:
            w = f.weight if fx is None else fx.weights[f.syn.name]
            if f.conv is not None:
                self.out_shapes[f.syn.name] = f.op.out_shape(f.src_shape)
            merged = _merged_mask(w)
            if merged is not None:
                self.merged[f.syn.name] = (merged, MergedConv.of(merged, torch.float64),
                                           MergedConv.of(merged, torch.float32))
                continue
            mask = np.asarray(w) != 0
            self.masks[f.syn.name] = torch.as_tensor(mask, dtype=torch.float64)
            self.masks32[f.syn.name] = torch.as_tensor(mask, dtype=torch.float32)  # for 0/1 counts (exact)

    def _merged_forward(self, f, x: torch.Tensor) -> torch.Tensor:
        _mask, conv64, _conv32 = self.merged[f.syn.name]
        return conv64(x.reshape(-1, *self.plan.shapes[f.syn.src]))

    def _merged_back(self, f, t: torch.Tensor) -> torch.Tensor:
        """The transposed convolution of a merged kernel (its input gradient), for K target vectors ``t``."""
        _mask, conv64, conv32 = self.merged[f.syn.name]
        conv = conv32 if t.dtype == torch.float32 else conv64
        with torch.no_grad():
            x = conv.transpose(t.reshape(len(t), *self.out_shapes[f.syn.name]), self.plan.shapes[f.syn.src])
        return x.reshape(len(t), -1)

    def kernel_rows(self, f, channels: np.ndarray) -> np.ndarray:
        """Per row of a kernel held as merged taps (input channel, kernel offset): how many of the output
        ``channels`` have a nonzero weight there."""
        return self.merged[f.syn.name][0].row_counts(channels)

    def size(self, name: str) -> int:
        return int(np.prod(self.plan.shapes[name]))

    def _forward(self, f, x: torch.Tensor) -> torch.Tensor:
        if f.syn.name in self.merged:
            return self._merged_forward(f, x).reshape(-1)
        mask = self.masks[f.syn.name]
        x = x.reshape(1, *self.plan.shapes[f.syn.src])
        if f.conv is not None:
            c = f.conv
            return torch.nn.functional.conv2d(x, mask, None, c.stride, c.padding, c.dilation, c.groups).reshape(-1)
        return mask @ x.reshape(-1)

    def deliver(self, f, source_values: np.ndarray) -> np.ndarray:
        """Per target neuron: sum over its synapses of the source's value (spike counts -> synaptic ops)."""
        with torch.no_grad():
            return self._forward(f, torch.as_tensor(np.asarray(source_values, dtype=np.float64))).numpy()

    def pull(self, f, target_values: np.ndarray) -> np.ndarray:
        """Per source neuron: sum over its synapses of the target's value (ones -> fan-out). Integer values
        (counts, 0/1 masks) are pulled in float32, exact below 2**24 and several times faster."""
        values = np.asarray(target_values)
        shape = (self.merged[f.syn.name][0] if f.syn.name in self.merged else self.masks[f.syn.name]).shape
        integer = np.array_equal(values, np.round(values)) and np.abs(values).sum() * max(
            1, int(np.prod(shape[1:]))) < (1 << 24)
        if f.syn.name in self.merged:
            t = torch.as_tensor(values, dtype=torch.float32 if integer else torch.float64)
            return self._merged_back(f, t.reshape(1, -1)).reshape(-1).double().numpy()
        mask = (self.masks32 if integer else self.masks)[f.syn.name]
        t = torch.as_tensor(values, dtype=mask.dtype)
        with torch.no_grad():
            if f.conv is None:
                return (mask.T @ t).double().numpy()
            c = f.conv  # the transposed convolution: the gradient of conv2d with respect to its input
            out = torch.nn.grad.conv2d_input((1, *self.plan.shapes[f.syn.src]), mask,
                                             t.reshape(1, *self.out_shapes[f.syn.name]), c.stride, c.padding,
                                             c.dilation, c.groups)
            return out.reshape(-1).double().numpy()

    def senders(self, f, idx) -> np.ndarray:
        """Per source neuron: does it have a synapse onto any of the target neurons ``idx``: the target neurons as
        one core (``feeds``), so a convolution's answer goes through the channels ``idx`` holds only (the mapper
        asks this for every candidate run of neurons)."""
        if f.conv is None or f.conv.groups != 1:
            mask = np.zeros(self.size(f.syn.dst))
            mask[idx] = 1
            return self.pull(f, mask) > 0
        return self._own_channels_batch(f, [np.asarray(idx)], push=False)[0]

    def _natural_per(self, f, push: bool) -> int:
        """Neurons of the asking side per channel that a kernel's taps are held by: a natural channel's every phase
        for merged taps, else one channel."""
        merged = self.merged.get(f.syn.name)
        c, h, w = self.plan.shapes[f.syn.src] if push else self.out_shapes[f.syn.name]
        g = None if merged is None else merged[0].geometry
        return h * w * (1 if g is None else (g.r_in if push else g.r_out) ** 2)

    def _through_own_channels(self, f, owner: np.ndarray, cores, push: bool):
        """For a convolution of one group, (positions in ``cores``, booleans (len(positions), neurons across the
        synapse)) batch by batch: for each core of the source (``push``) or of the target (``owner``: per neuron of
        that side, its core), which neurons across the synapse it has a synapse with. Each core's question goes
        through the channels it holds only (a core holds a few of a map's channels: the whole kernel once a core
        would take hours at the paper's width), and cores holding the same channels are asked in one batch (of
        at most ``BATCH`` cores: the answers for all cores at once are cores x neurons)."""
        per = self._natural_per(f, push)
        order = np.argsort(owner, kind="stable")
        ranked = owner[order]
        cores = np.asarray(cores)
        lo, hi = np.searchsorted(ranked, cores, "left"), np.searchsorted(ranked, cores, "right")
        groups: dict = {}
        for k in range(len(cores)):
            idx = order[lo[k]:hi[k]]
            if len(idx):
                groups.setdefault(np.unique(idx // per).tobytes(), []).append(k)
        empty = [k for k in range(len(cores)) if hi[k] == lo[k]]
        if empty:
            yield empty, np.zeros((len(empty), self.size(f.syn.dst if push else f.syn.src)), dtype=bool)
        for members in groups.values():
            for a in range(0, len(members), BATCH):
                batch = members[a:a + BATCH]
                yield batch, self._own_channels_batch(f, [order[lo[k]:hi[k]] for k in batch], push)

    def _own_channels_batch(self, f, runs: list, push: bool) -> np.ndarray:
        """(len(runs), neurons across the synapse) booleans for neuron sets ``runs`` of the asking side that hold
        the same channels: one convolution through those channels' part of the kernel. A run that holds every one
        of those channels at each position it holds (a core of whole columns, the usual case) is asked through the
        OR of their kernels instead, over a one-channel map of its positions: the same answer (a 0/1 pattern
        reaches a neuron iff some tap of some held channel does), at 1 / channels of the work."""
        _c, h, w = self.plan.shapes[f.syn.src] if push else self.out_shapes[f.syn.name]
        r2 = self._natural_per(f, push) // (h * w)
        natural = np.unique(runs[0] // (h * w * r2))
        whole = [len(idx) == len(natural) * len(np.unique(idx % (h * w * r2))) for idx in runs]
        out = np.zeros((len(runs), self.size(f.syn.dst if push else f.syn.src)), dtype=bool)
        for product in (True, False):
            pick = [j for j, p in enumerate(runs) if whole[j] == product]
            if pick:
                out[pick] = self._through_kernel(f, [runs[j] for j in pick], push, natural, (h, w), r2, product)
        return out

    def _through_kernel(self, f, runs: list, push: bool, natural: np.ndarray, hw: tuple, r2: int,
                        product: bool) -> np.ndarray:
        """``_own_channels_batch`` for runs that all are (``product``) or all are not whole columns of the channels
        ``natural``; ``hw``: the asking side's map size, ``r2``: phases per natural channel."""
        merged = self.merged.get(f.syn.name)
        g = None if merged is None else merged[0].geometry
        h, w = hw
        per = h * w
        chans = np.arange(r2) if product else (natural[:, None] * r2 + np.arange(r2)).reshape(-1)
        t = np.zeros((len(runs), len(chans), per), dtype=np.float32)
        for j, idx in enumerate(runs):
            t[j, (idx % (per * r2)) // per if product else np.searchsorted(chans, idx // per), idx % per] = 1
        t = torch.from_numpy(t.reshape(len(runs), len(chans), h, w))
        key = ("or-kernel", f.syn.name, push, natural.tobytes()) if product else None
        kernel = self.memo.get(key)
        if kernel is None:
            if merged is not None:
                values = merged[0].values[:, natural] if push else merged[0].values[natural]
                if product:
                    values = values.any(axis=1 if push else 0, keepdims=True).astype(np.float64)
                kernel = MergedConv.of(MergedKernel(values, g), torch.float32)
            elif not product:
                kernel = self.masks32[f.syn.name][:, chans] if push else self.masks32[f.syn.name][chans]
            elif push:
                kernel = self.masks32[f.syn.name][:, natural].amax(1, keepdim=True)
            else:
                kernel = self.masks32[f.syn.name][natural].amax(0, keepdim=True)
            if key is not None:
                self.memo[key] = kernel
        with torch.no_grad():
            if merged is not None:
                x = kernel(t) if push else kernel.transpose(t, self.plan.shapes[f.syn.src])
            elif push:
                cv = f.conv
                x = torch.nn.functional.conv2d(t, kernel, None, cv.stride, cv.padding, cv.dilation, 1)
            else:
                cv = f.conv
                x = torch.nn.grad.conv2d_input((len(runs), *self.plan.shapes[f.syn.src]), kernel, t, cv.stride,
                                               cv.padding, cv.dilation, 1)
        return x.reshape(len(runs), -1).numpy() > 0

    def feeds(self, f, owner: np.ndarray, cores: list):
        """(core, booleans per source neuron) for each of ``cores`` (in no set order): which source neurons have a
        synapse onto that target core, given ``owner`` (per target neuron, its core). Per core through its own
        channels for a convolution, else batched pulls; yielded batch by batch, since the answers for all cores at
        once are cores x neurons (the mapper asks this for every synapse layer and every budget it tries)."""
        cores = list(cores)
        if f.conv is not None and f.conv.groups == 1:  # merged kernels among them
            for positions, sends in self._through_own_channels(f, owner, cores, push=False):
                yield from zip((cores[k] for k in positions), sends, strict=True)
            return
        mask = self.masks32[f.syn.name]
        for a in range(0, len(cores), BATCH):
            batch = cores[a:a + BATCH]
            t = torch.as_tensor(np.stack([owner == c for c in batch]), dtype=mask.dtype)  # (K, targets), 0/1
            with torch.no_grad():
                if f.conv is None:
                    out = (t @ mask).numpy() > 0
                else:
                    c = f.conv
                    out = torch.nn.grad.conv2d_input((len(batch), *self.plan.shapes[f.syn.src]), mask,
                                                     t.reshape(len(batch), *self.out_shapes[f.syn.name]), c.stride,
                                                     c.padding, c.dilation, c.groups)
                    out = out.reshape(len(batch), -1).numpy() > 0
            yield from zip(batch, out, strict=True)

    def reaches(self, f, owner: np.ndarray, cores) -> np.ndarray:
        """(target neurons, len(cores)) booleans: which of the source's cores (``owner``: per source neuron, its
        core) have a synapse onto each target neuron: per core through its own channels for a convolution, else
        one batched push for all cores."""
        if f.conv is not None and f.conv.groups == 1:  # merged kernels among them
            out = np.zeros((len(cores), self.size(f.syn.dst)), dtype=bool)
            for positions, reach in self._through_own_channels(f, owner, cores, push=True):
                out[positions] = reach
            return out.T
        mask = self.masks32[f.syn.name]
        t = torch.as_tensor(np.stack([owner == c for c in cores]), dtype=mask.dtype)  # (K, sources), 0/1
        with torch.no_grad():
            if f.conv is None:
                return (mask @ t.T).numpy() > 0
            c = f.conv
            out = torch.nn.functional.conv2d(t.reshape(len(cores), *self.plan.shapes[f.syn.src]), mask, None,
                                             c.stride, c.padding, c.dilation, c.groups)
            return out.reshape(len(cores), -1).T.numpy() > 0

    def shares_kernel(self, f) -> bool:
        """A convolution whose kernel taps each serve several target positions, so a chip stores it once per core
        as a kernel. One from or onto a 1 x 1 map (a dense layer written as a convolution: the SDID's feedback)
        uses every tap at one position only: stored as a kernel it would cost every core its whole weight
        matrix for its channels; a chip stores it as the matrix it is (``matrix``)."""
        if f.conv is None:
            return False
        if f.syn.name in self.merged:
            return True
        return tuple(self.plan.shapes[f.syn.src][1:]) != (1, 1) and tuple(self.out_shapes[f.syn.name][1:]) != (1, 1)

    def matrix(self, f) -> np.ndarray:
        """(targets, sources) booleans: which source neurons have a synapse onto which target neuron, for a synapse
        that does not share a kernel (a dense one, or a convolution from or onto a 1 x 1 map). Kept: the mapper asks
        for it at every budget it tries."""
        key = ("matrix", f.syn.name)
        if key not in self.memo:
            self.memo[key] = self._matrix(f)
        return self.memo[key]

    def _matrix(self, f) -> np.ndarray:
        mask = self.masks32[f.syn.name]
        if f.conv is None:
            return mask.numpy() != 0
        n, c = self.size(f.syn.src), f.conv
        out = np.empty((self.size(f.syn.dst), n), dtype=bool)
        for a in range(0, n, BATCH):  # each source neuron alone through the kernel, BATCH at a time
            k = min(BATCH, n - a)
            one_hot = torch.zeros(k, n, dtype=mask.dtype)
            one_hot[torch.arange(k), torch.arange(a, a + k)] = 1
            with torch.no_grad():
                hit = torch.nn.functional.conv2d(one_hot.reshape(k, *self.plan.shapes[f.syn.src]), mask, None,
                                                 c.stride, c.padding, c.dilation, c.groups)
            out[:, a:a + k] = hit.reshape(k, -1).T.numpy() != 0
        return out

    def synapses(self, f) -> int:
        """Number of synapses (nonzero weights, expanded over a convolution's positions)."""
        return int(round(self.deliver(f, np.ones(self.size(f.syn.src))).sum()))

    def fan_in(self, name: str) -> np.ndarray:
        """Per neuron of population ``name``: synapses arriving at it (all incoming weight nodes)."""
        out = np.zeros(self.size(name))
        for f in self.folded.incoming(name):
            out += self.deliver(f, np.ones(self.size(f.syn.src)))
        return out

    def outgoing(self, name: str) -> list:
        return [f for f in self.folded.synapses if f.syn.src == name]
