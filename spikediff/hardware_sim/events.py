"""Event counts per generated image, from a bit-exact simulator run: what a chip would do, not estimates.

- spikes per neuron (the simulator's counts);
- synaptic ops per target neuron: each spike reaches every synapse (nonzero integer weight) of its source,
  so the count is the spikes pushed through the 0/1 connectivity (``connectivity.deliver``);
- graded input: every nonzero host value is a graded spike into the first layers, at every SNN step;
- neuron updates: every neuron is updated at every Lava step; "active" when it has input or a nonzero
  state (the simulator counts these), "inactive" otherwise, including the Lava steps in which a layer
  waits for or drains the pipeline (``runtime.pipeline``);
- the ANN twin: the same layers as a ReLU network, run once per denoising step, counted in dense MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .connectivity import Connectivity


@dataclass
class Events:
    images: int
    denoising_steps: int
    num_steps: int  # T
    lava_steps_per_image: float  # pipelined over ``images`` images
    lava_steps_single_image: int  # one image alone: its latency
    neurons: dict  # population -> neurons
    spikes: dict  # population -> (neurons,) per image
    synops: dict  # destination population -> (neurons,) synaptic ops from spiking sources, per image
    input_synops: dict  # destination population -> (neurons,) synaptic ops of graded host input, per image
    active_updates: dict  # population -> per image
    spikes_per_step: dict  # population -> (denoising steps,) mean spikes per image
    ann_macs_per_evaluation: dict  # destination population -> dense MACs of the ReLU twin, per evaluation
    input_macs_per_evaluation: float  # dense MACs of the synapses from the host input, per evaluation

    def updates(self, name: str) -> float:
        """All neuron updates of a population per image (active + inactive)."""
        return self.neurons[name] * self.lava_steps_per_image

    def totals(self) -> dict:
        return {
            "spikes": float(sum(s.sum() for s in self.spikes.values())),
            "synaptic_ops": float(sum(s.sum() for s in self.synops.values())),
            "input_synaptic_ops": float(sum(s.sum() for s in self.input_synops.values())),
            "neuron_updates": float(sum(self.updates(k) for k in self.neurons)),
            "active_neuron_updates": float(sum(self.active_updates.values())),
            "ann_twin_macs": float(sum(self.ann_macs_per_evaluation.values()) * self.denoising_steps),
        }

    def to_dict(self) -> dict:
        pops = {}
        for name in self.neurons:
            pops[name] = {
                "neurons": int(self.neurons[name]),
                "spikes": float(self.spikes[name].sum()) if name in self.spikes else 0.0,
                "synaptic_ops": float(self.synops[name].sum()),
                "input_synaptic_ops": float(self.input_synops[name].sum()),
                "neuron_updates": float(self.updates(name)),
                "active_neuron_updates": float(self.active_updates[name]),
                "firing_rate": float(self.spikes[name].sum() / (self.neurons[name] * self.num_steps * self.denoising_steps))
                if name in self.spikes else None,
                "ann_twin_macs": float(self.ann_macs_per_evaluation[name] * self.denoising_steps),
            }
        return {"per_image": True, "images": self.images, "denoising_steps": self.denoising_steps,
                "snn_steps": self.num_steps, "lava_steps_per_image": self.lava_steps_per_image,
                "lava_steps_single_image": self.lava_steps_single_image, "populations": pops,
                "totals": self.totals()}


def lava_steps(folded, num_steps: int, images: int, denoising_steps: int) -> tuple:
    """(Lava steps per image when ``images`` are pipelined, Lava steps of one image alone): the schedule
    ``sample_lava`` runs (``runtime.pipeline``)."""
    from ..export.nir_to_lava import timing
    from ..runtime.pipeline import Pipeline

    window, period = timing(folded.plan, num_steps)
    many = Pipeline(images, denoising_steps, num_steps, period, window)
    one = Pipeline(1, denoising_steps, num_steps, period, window)
    return many.lava_steps / images, one.lava_steps


def count_events(sim: dict, conn: Connectivity | None = None) -> Events:
    """``sim``: a ``fixed_sampler.sample_fixed`` result (it carries the folded graph and its fixed point)."""
    folded, fx = sim["folded"], sim["fixed_point"]
    p = folded.plan
    conn = conn or Connectivity(folded, fx)
    dense = Connectivity(folded, None, dense=True)
    n, steps, t = len(sim["images"]), int(sim["denoising_steps"]), int(sim["num_steps"])
    per_image = {k: v / n for k, v in sim["neuron_spikes"].items()}
    neurons = {k: conn.size(k) for k in p.populations}
    synops = {k: np.zeros(neurons[k]) for k in p.populations}
    input_synops = {k: np.zeros(neurons[k]) for k in p.populations}
    ann = {k: 0.0 for k in p.populations}
    input_macs = 0.0
    for f in folded.synapses:
        macs = dense.synapses(f)
        if f.syn.src != f.syn.dst:  # the twin is one pass: no recurrent synapses (as export.onnx_export)
            ann[f.syn.dst] += macs
        if f.syn.src == p.input:
            input_synops[f.syn.dst] += conn.deliver(f, sim["input_values"] / n)
            input_macs += macs
        else:
            synops[f.syn.dst] += conn.deliver(f, per_image[f.syn.src])
    many, one = lava_steps(folded, t, n, steps)
    return Events(
        images=n, denoising_steps=steps, num_steps=t, lava_steps_per_image=many, lava_steps_single_image=one,
        neurons=neurons, spikes=per_image, synops=synops, input_synops=input_synops,
        active_updates={k: sim["active_updates"][k] / n for k in p.populations},
        spikes_per_step={k: c["active"].mean(0) for k, c in sim["counters"].items()},
        ann_macs_per_evaluation=ann, input_macs_per_evaluation=input_macs)
