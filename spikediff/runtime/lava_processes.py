"""Lava processes that Lava's library lacks: a spike delay line and a readout that sends its state.

Importing this module imports Lava (through ``lava_compat``); the rest of spikediff imports it only
when it builds a Lava network. Lava finds the process models because they live in the same module.
"""

from __future__ import annotations

from .. import lava_compat

lava_compat.import_lava()

import numpy as np  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class SpikeDelay(AbstractProcess):
    """Passes spikes on ``delay`` steps later (what Loihi 2 does with synaptic delays).

    Used to align skip paths: every Lava synapse layer adds one step, so a short path that meets a
    long one must wait for it.
    """

    def __init__(self, *, shape: tuple, delay: int, name: str | None = None):
        super().__init__(shape=shape, delay=delay, name=name)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.buffer = Var(shape=(delay, *shape), init=np.zeros((delay, *shape)))

@implements(proc=SpikeDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeDelayFloat(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    buffer: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        slot = self.time_step % self.buffer.shape[0]
        self.s_out.send(self.buffer[slot].copy())  # arrived `delay` steps ago
        self.buffer[slot] = self.s_in.recv()

class Readout(AbstractProcess):
    """Non-spiking CUBA readout (NIR LI / CubaLI) that sends its state every step.

    ``u = u (1 - du) + a_in``; ``v = v (1 - dv) + u + bias``; both are zeroed at the steps where
    ``time_step % reset_interval == reset_offset``, before the update, as Lava's ``LIFReset`` does.
    """

    def __init__(self, *, shape: tuple, du: float, dv: float, bias, reset_interval: int, reset_offset: int,
                 name: str | None = None):
        super().__init__(shape=shape, du=du, dv=dv, reset_interval=reset_interval, reset_offset=reset_offset,
                         name=name)
        self.a_in = InPort(shape=shape)
        self.v_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.bias = Var(shape=shape, init=np.broadcast_to(bias, shape).copy())

@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyReadoutFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        a_in = self.a_in.recv()
        p = self.proc_params
        if self.time_step % p["reset_interval"] == p["reset_offset"] % p["reset_interval"]:
            self.u[:] = 0
            self.v[:] = 0
        self.u[:] = self.u * (1 - p["du"]) + a_in
        self.v[:] = self.v * (1 - p["dv"]) + self.u + self.bias
        self.v_out.send(self.v.copy())



def _phase(time_step: int, p: dict, latency: int) -> tuple:
    """(window, step within it, whether a population at ``latency`` is in its T active steps) of a Lava step."""
    window, k = divmod(time_step - 1, p["window"])
    return window, k, latency <= k < latency + p["num_steps"]


class SpikeCounter(AbstractProcess):
    """Counts one population's spikes per network evaluation (window), in and outside its T active steps.

    ``active`` counts the steps that carry the model's computation; ``total`` also counts what the
    population does while it waits for or drains its input, which a chip pays for too.
    """

    def __init__(self, *, shape: tuple, windows: int, window: int, latency: int, num_steps: int,
                 name: str | None = None):
        super().__init__(shape=shape, window=window, latency=latency, num_steps=num_steps, name=name)
        self.s_in = InPort(shape=shape)
        self.active = Var(shape=(windows,), init=np.zeros(windows))
        self.total = Var(shape=(windows,), init=np.zeros(windows))


@implements(proc=SpikeCounter, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeCounterFloat(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    active: np.ndarray = LavaPyType(np.ndarray, float)
    total: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        p = self.proc_params
        count = float(np.count_nonzero(self.s_in.recv()))
        window, _k, active = _phase(self.time_step, p, p["latency"])
        if window < self.total.shape[0]:
            self.total[window] += count
            if active:
                self.active[window] += count


class DDIMSampler(AbstractProcess):
    """The host side of the denoising loop, as a Lava process: one network evaluation per window.

    At each window's first T steps it sends [x_t, time planes of t] as input currents; it adds up the
    readout state over the T steps the readout is active, decodes the mean into the model's output,
    applies the DDIM update and starts the next denoising step, then the next image. The finished
    images are in ``images`` when the run ends: no host round trip per step.
    """

    def __init__(self, *, noise: np.ndarray, num_inference_steps: int, input_shape_lava: tuple,
                 readout_shape_lava: tuple, decode: dict, schedule: dict, window: int, num_steps: int,
                 readout_latency: int, name: str | None = None):
        super().__init__(num_inference_steps=num_inference_steps, decode=decode, schedule=schedule, window=window,
                         num_steps=num_steps, readout_latency=readout_latency, name=name)
        self.s_out = OutPort(shape=input_shape_lava)
        self.a_in = InPort(shape=readout_shape_lava)
        self.x = Var(shape=noise.shape, init=noise.copy())
        self.images = Var(shape=noise.shape, init=np.zeros(noise.shape))
        self.acc = Var(shape=readout_shape_lava, init=np.zeros(readout_shape_lava))


@implements(proc=DDIMSampler, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDDIMSamplerFloat(PyLoihiProcessModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    x: np.ndarray = LavaPyType(np.ndarray, float)
    images: np.ndarray = LavaPyType(np.ndarray, float)
    acc: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        from ..diffusion.schedule import DDIMScheduler, NoiseSchedule
        from .decode import Decoder

        s = proc_params["schedule"]
        self.scheduler = DDIMScheduler(NoiseSchedule(s["num_train_timesteps"], s["prediction_type"]))
        self.scheduler.set_timesteps(proc_params["num_inference_steps"])
        self.decoder = Decoder(**proc_params["decode"])

    def run_spk(self):
        p = self.proc_params
        window, k, reading = _phase(self.time_step, p, p["readout_latency"])
        timesteps = self.scheduler.timesteps
        steps = len(timesteps)
        image, step = divmod(window, steps)
        done = image >= self.x.shape[0]
        t = int(timesteps[min(step, steps - 1)])
        if not done and k < p["num_steps"]:
            self.s_out.send(self.decoder.input(self.x[image], t))
        else:
            self.s_out.send(np.zeros(self.s_out.shape))
        v = self.a_in.recv()
        if done:
            return
        if reading:
            self.acc += v
        if k == p["readout_latency"] + p["num_steps"] - 1:
            pred = self.decoder.output(self.acc / p["num_steps"])
            self.acc[:] = 0
            self.x[image], _ = self.scheduler.step(pred, t, self.x[image])
            if step == steps - 1:
                self.images[image] = self.x[image].clip(-1, 1)
