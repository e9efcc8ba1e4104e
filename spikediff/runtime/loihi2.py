"""Running the hardware form on a Loihi 2 system, the way lava-dl's PilotNet tutorials do (read, not run: no
chip is reachable from here, so nothing in this module has run on one).

- The run configuration is ``Loihi2HwCfg`` with no tag and an exception map that gives every host-side
  process its fixed-point Python model; Lava places every process that has a Loihi 2 model (LIF, LIFReset,
  Dense, DelayDense, DelaySparse, Conv, netx blocks) on the neurocores.
- The host is chosen by the environment: ``SPIKEDIFF_LOIHI_PARTITION`` (a SLURM partition, e.g. on the
  Intel Neuromorphic Research Cloud) or ``SPIKEDIFF_LOIHI_HOST`` (an Oheo Gulch / Kapoho Point host address),
  else Lava's own defaults.
- Host and chip meet through ``embedded_io`` adapters: the host input through ``PyToNxAdapter`` (graded,
  24 bits), the readout's sum through ``embedded_io.state.Read`` at the pipeline's period, where the CPU path
  uses ``SumReader``; the CPU path's spike counters are left out, and ``loihi2_profiler`` measures power, time
  and activity instead (``Profilers``).
"""

from __future__ import annotations

import os

from .. import SpikediffError


def select_host() -> str:
    """Point Lava at a Loihi 2 host from the environment; returns what was chosen, for people."""
    from lava.utils import loihi

    partition, host = os.environ.get("SPIKEDIFF_LOIHI_PARTITION"), os.environ.get("SPIKEDIFF_LOIHI_HOST")
    if partition and host:
        raise SpikediffError("set SPIKEDIFF_LOIHI_PARTITION (SLURM) or SPIKEDIFF_LOIHI_HOST (ethernet), not both")
    if partition:
        loihi.use_slurm_host(partition=partition)
        return f"SLURM partition {partition}"
    if host:
        loihi.use_ethernet_host(host_address=host)
        return f"ethernet host {host}"
    return "Lava's default Loihi 2 host"


def exception_map() -> dict:
    """The host-side processes' fixed-point Python models (they have no chip model)."""
    from . import lava_processes as lp

    return {lp.HostLoop: lp.PyHostLoopFixed, lp.SumReader: lp.PySumReaderFixed,
            lp.GradedDelay: lp.PyGradedDelayFixed, lp.SpikeDelay: lp.PySpikeDelayFixed,
            lp.Readout: lp.PyReadoutFixed, lp.LIFClear: lp.PyLIFClearBitAcc,
            lp.SpikeCounter: lp.PySpikeCounterFixed}


class Profilers:
    """``loihi2_profiler`` power, execution time and activity for one run of ``num_steps`` steps."""

    def __init__(self, num_steps: int):
        from lava.utils import loihi2_profiler

        self.power = loihi2_profiler.Loihi2Power(num_steps=num_steps)
        self.time = loihi2_profiler.Loihi2ExecutionTime()
        self.activity = loihi2_profiler.Loihi2Activity()

    @property
    def callbacks(self) -> list:
        return [self.power, self.time, self.activity]

    def summary(self, images: int, lava_steps: int, chips: int = 1) -> dict:
        """Energy and time per image in the units of ``spikediff report`` (J, s), static power per chip as the
        PilotNet benchmark compensates for a board's idle chips."""
        import numpy as np

        step_s = float(self.time.avg_time_per_step) * 1e-6
        total_w = float(np.mean(self.power.total_power))
        static_w = float(self.power.static_total_power)
        seconds = step_s * lava_steps
        return {"time_per_lava_step_s": step_s, "time_per_image_s": seconds / images,
                "total_power_W": total_w, "static_power_W": static_w, "chips": chips,
                "energy_per_image_J": total_w * seconds / images,
                "dynamic_energy_per_image_J": (total_w - static_w) * seconds / images,
                "synaptic_ops": float(np.sum(self.activity.syn_ops)),
                "neuron_updates": float(np.sum(self.activity.dendrite_updates)),
                "spikes_out": float(np.sum(self.activity.axon_out))}


def hardware_run_config(profilers: Profilers | None = None):
    from lava.magma.core.run_configs import Loihi2HwCfg

    kwargs = {"exception_proc_model_map": exception_map()}
    if profilers is not None:
        kwargs["callback_fxs"] = profilers.callbacks
    return Loihi2HwCfg(**kwargs)


def input_adapter(shape: tuple):
    """Host -> chip for the graded host input (24-bit messages)."""
    from lava.proc import embedded_io as eio

    return eio.spike.PyToNxAdapter(shape=shape, num_message_bits=24)


def state_reader(var, interval: int, offset: int):
    """Chip -> host: a neuron population's voltage, read every ``interval`` steps at ``offset``."""
    from lava.proc import embedded_io as eio

    reader = eio.state.Read(shape=var.shape, interval=interval, offset=offset)
    reader.connect_var(var)
    return reader
