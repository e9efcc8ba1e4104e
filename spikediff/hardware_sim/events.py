"""Event counts per generated image (or per inference of any network), from a bit-exact simulator run: what a
chip would do, not estimates.

- spikes per neuron (the simulator's counts);
- synaptic ops per target neuron: each spike reaches every synapse (nonzero integer weight) of its source,
  so the count is the spikes pushed through the 0/1 connectivity (``connectivity.deliver``);
- graded input: every nonzero host value is a graded spike into the first layers, at every SNN step (one
  host message per value and step: ``input_messages``, derived from the same counts);
- neuron updates: every neuron is updated at every Lava step; "active" when it has input or a nonzero
  state (the simulator counts these), "inactive" otherwise, including the Lava steps in which a layer
  waits for or drains the pipeline (``runtime.pipeline``);
- the ANN twin: the same layers as a ReLU network, run once per denoising step, counted in MACs of every
  nonzero float weight (a dense layer's every weight; a derived space-to-depth kernel's structural zeros,
  ``models.s2d``, are no MACs of the natural network it equals, and counting them inflated a U-Net's twin).
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
    input_messages: float = 0.0  # nonzero graded host values sent per image (one message each, per SNN step)

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
                "lava_steps_single_image": self.lava_steps_single_image, "input_messages": self.input_messages,
                "populations": pops, "totals": self.totals()}


def lava_steps(dep, images: int, evaluations: int) -> tuple:
    """(Lava steps per item when ``images`` items of ``evaluations`` evaluations each are pipelined, Lava steps of
    one item alone): the schedule the Lava runtime runs (``runtime.pipeline``)."""
    from ..export.pipeline import Pipeline

    t = dep.timing
    many = Pipeline(images, evaluations, t.num_steps, t.period, t.window)
    one = Pipeline(1, evaluations, t.num_steps, t.period, t.window)
    return many.lava_steps / images, one.lava_steps


def count_events(part: dict, conn: Connectivity | None = None) -> Events:
    """``part``: one network's events from a simulator run (``sampler.sample_sim``'s ``parts[role]``, or
    ``run_graph``'s): its ``deployment``, ``items``, ``evaluations`` per item, ``counters``, ``neuron_spikes``,
    ``active_updates`` and ``input_values``."""
    from ..export.plan import CONST

    dep = part["deployment"]
    folded, fx = dep.folded, dep.fixed
    p = folded.plan
    conn = conn or Connectivity(folded, fx)
    twin = Connectivity(folded, None)  # the ANN twin's MACs: every nonzero float weight
    n, steps, t = int(part["items"]), int(part["evaluations"]), dep.num_steps
    per_image = {k: v / n for k, v in part["neuron_spikes"].items()}
    per_image[CONST] = np.full(1, float(steps * t))  # the constant source fires at every step
    neurons = {k: conn.size(k) for k in p.populations}
    synops = {k: np.zeros(neurons[k]) for k in p.populations}
    input_synops = {k: np.zeros(neurons[k]) for k in p.populations}
    ann = {k: 0.0 for k in p.populations}
    input_macs = 0.0
    offsets, at = {}, 0
    for name, shape in p.inputs.items():
        size = int(np.prod(shape))
        offsets[name] = slice(at, at + size)
        at += size
    for f in folded.synapses:
        macs = twin.synapses(f)
        if f.syn.src != f.syn.dst:  # the twin is one pass: no recurrent synapses (as export.onnx_export)
            ann[f.syn.dst] += macs
        if f.syn.src in p.inputs:
            input_synops[f.syn.dst] += conn.deliver(f, part["input_values"][offsets[f.syn.src]] / n)
            input_macs += macs
        else:
            synops[f.syn.dst] += conn.deliver(f, per_image[f.syn.src])
    many, one = lava_steps(dep, n, steps)
    return Events(
        images=n, denoising_steps=steps, num_steps=t, lava_steps_per_image=many, lava_steps_single_image=one,
        neurons=neurons, spikes={k: v for k, v in per_image.items() if k != CONST}, synops=synops,
        input_synops=input_synops, active_updates={k: part["active_updates"][k] / n for k in p.populations},
        spikes_per_step={k: c["active"].mean(0) for k, c in part["counters"].items()},
        ann_macs_per_evaluation=ann, input_macs_per_evaluation=input_macs,
        input_messages=float(np.asarray(part["input_values"]).sum()) / n)
