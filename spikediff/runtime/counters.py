"""Activity counters of a Lava sampling run, per population and per denoising step, as plain JSON.

Counts are what the simulator did, not estimates: spikes from the Lava run's counters; synaptic
operations = spikes x fan-out (targets per spike, averaged over a strided conv's positions); neuron
updates = neurons x Lava steps (every neuron is updated every step on Loihi, spiking or not); input
messages = graded input values sent by the host (the input is on for T steps per evaluation).
"""

from __future__ import annotations

import numpy as np


def counters_report(result: dict) -> dict:
    """The JSON report of a ``run.sample_lava`` result; spikes outside any evaluation are shared over the images.
    A final network (a decoder, one pass per image) is reported under its role (``decoder``)."""
    net, pipe, counts = result["network"], result["pipeline"], result["counters"]
    n_images, num_inference_steps = pipe.images, pipe.steps
    lava_steps = pipe.lava_steps / n_images
    input_values = int(np.prod(net.input_shape_lava))
    pops = {}
    for name, (_proc, neurons) in sorted(net.populations.items(), key=lambda kv: (net.latency[kv[0]], kv[0])):
        active, idle = counts[name]["active"], counts[name]["idle"]
        spikes = (active.sum() + idle) / n_images
        fanout = net.synapse_fanout.get(name, 0)
        pops[name] = {
            "neurons": int(neurons),
            "latency": int(net.latency[name]),
            "spikes_per_image": float(spikes),
            "spikes_in_active_steps_per_image": float(active.sum() / n_images),
            "spikes_per_denoising_step": active.mean(0).tolist(),  # active steps, mean over images
            "fanout": int(fanout),
            "synaptic_ops_per_image": float(spikes * fanout),
            "neuron_updates_per_image": float(neurons * lava_steps),
        }
    final = {}
    fnet = result.get("final_network")
    if fnet is not None:
        for name, c in result["final_counters"].items():
            spikes = float(np.mean(c))
            fanout = fnet.synapse_fanout.get(name, 0)
            final[name] = {"neurons": int(fnet.populations[name][1]), "spikes_per_image": spikes, "fanout": int(fanout),
                           "synaptic_ops_per_image": spikes * fanout}
    return {
        "backend": f"lava: {result['target']}",
        **({"decoder": final} if final else {}),
        "images": n_images,
        "denoising_steps": num_inference_steps,
        "snn_steps": net.num_steps,
        "window": net.window,
        "period": net.period,
        "images_in_flight": pipe.lanes,
        "lava_steps": pipe.lava_steps,
        "lava_steps_per_image": lava_steps,
        "input_messages_per_image": input_values * net.num_steps * num_inference_steps,
        "populations": pops,
        "totals_per_image": {
            "spikes": sum(p["spikes_per_image"] for p in pops.values()),
            "synaptic_ops": sum(p["synaptic_ops_per_image"] for p in pops.values()),
            "neuron_updates": sum(p["neuron_updates_per_image"] for p in pops.values()),
        },
    }
