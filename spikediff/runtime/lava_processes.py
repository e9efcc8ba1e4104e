"""Lava processes that Lava's library lacks: a spike delay line, a LIF that clears itself between
evaluations, a readout that sends its state, spike counters and the DDIM sampler; each with a
``floating_pt`` and a ``fixed_pt`` model (Loihi integers).

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
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat  # noqa: E402
from lava.proc.lif.process import LIFReset  # noqa: E402


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


class _SpikeDelayModel(PyLoihiProcessModel):
    def run_spk(self):
        slot = self.time_step % self.buffer.shape[0]
        self.s_out.send(self.buffer[slot].copy())  # arrived `delay` steps ago
        self.buffer[slot] = self.s_in.recv()


@implements(proc=SpikeDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeDelayFloat(_SpikeDelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    buffer: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=SpikeDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeDelayFixed(_SpikeDelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, bool, precision=1)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    buffer: np.ndarray = LavaPyType(np.ndarray, bool, precision=1)


class LIFClear(LIFReset):
    """Lava's ``LIFReset`` whose reset step also drops that step's input and sends no spike.

    For a population with a recurrent synapse onto itself: cleared on the step before an evaluation's
    first input arrives, it has no spike in flight through its loop when that input comes, so every
    evaluation starts from rest as in the model. Otherwise Lava's own LIF dynamics, float and
    bit-accurate (the models below inherit them); on Loihi 2 a microcoded neuron does the same.
    """


class _ClearOnReset:
    def run_spk(self):
        if self.time_step % self.reset_interval == self.reset_offset:
            self.a_in.recv()
            self.u[:] = 0
            self.v[:] = 0
            self.s_out.send(np.zeros(self.v.shape, dtype=bool))
            return
        super().run_spk()


# The models inherit Lava's LIFReset models, their CPU resource and their tags (floating_pt; fixed_pt and
# bit_accurate_loihi); Lava's @implements refuses a subclass that still names its parent's process.
@implements(proc=LIFClear, protocol=LoihiProtocol)
class PyLIFClearFloat(_ClearOnReset, PyLifResetModelFloat):
    implements_process = None


@implements(proc=LIFClear, protocol=LoihiProtocol)
class PyLIFClearBitAcc(_ClearOnReset, PyLifResetModelBitAcc):
    implements_process = None


class Conv64(AbstractProcess):
    """A convolution synapse in float64 for the floating-point path (Lava's own float Conv computes in
    float32 through torch, so it rounds differently from a float64 reference). Same layout and the same
    one-step delay as Lava's Conv; the weight is in NIR's (C_out, C_in / groups, kH, kW) correlation form."""

    def __init__(self, *, weight: np.ndarray, input_shape: tuple, output_shape: tuple, stride: tuple,
                 padding: tuple, dilation: tuple, groups: int, name: str | None = None):
        super().__init__(stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation), groups=int(groups),
                         name=name)
        self.s_in = InPort(shape=input_shape)
        self.a_out = OutPort(shape=output_shape)
        self.weight = Var(shape=weight.shape, init=np.asarray(weight, dtype=np.float64))
        self.a_buf = Var(shape=output_shape, init=np.zeros(output_shape))


@implements(proc=Conv64, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyConv64Float(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    weight: np.ndarray = LavaPyType(np.ndarray, float)
    a_buf: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        import torch

        p = self.proc_params
        self.a_out.send(self.a_buf.copy())  # what arrived last step: one step of delay, as Lava's synapses
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(self.s_in.recv(), dtype=np.float64).transpose(2, 1, 0)))
        out = torch.nn.functional.conv2d(x[None], torch.from_numpy(self.weight), None, p["stride"], p["padding"],
                                         p["dilation"], p["groups"])[0]
        self.a_buf[:] = out.numpy().transpose(2, 1, 0)


class Readout(AbstractProcess):
    """Non-spiking CUBA readout (NIR LI / CubaLI) that sends its state every step.

    ``u = u (1 - du) + a_in``; ``v = v (1 - dv) + u + bias``; both are zeroed at the steps where
    ``time_step % reset_interval == reset_offset``, before the update, as Lava's ``LIFReset`` does. The
    fixed-point model is Lava's bit-accurate LIF arithmetic without the spike: 12-bit decays that truncate
    towards zero (du with Lava's offset of 1), ``a_in << 6``, ``bias << bias_exp``, u wraps and v
    saturates at 24 bits.
    """

    def __init__(self, *, shape: tuple, du, dv, bias, reset_interval: int, reset_offset: int, bias_exp=0,
                 name: str | None = None):
        super().__init__(shape=shape, du=du, dv=dv, reset_interval=reset_interval, reset_offset=reset_offset,
                         name=name)
        self.a_in = InPort(shape=shape)
        self.v_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.bias = Var(shape=shape, init=np.broadcast_to(bias, shape).copy())
        self.bias_exp = Var(shape=shape, init=np.broadcast_to(bias_exp, shape).copy())


class _ReadoutModel(PyLoihiProcessModel):
    def run_spk(self):
        a_in = self.a_in.recv()
        p = self.proc_params
        if self.time_step % p["reset_interval"] == p["reset_offset"] % p["reset_interval"]:
            self.u[:] = 0
            self.v[:] = 0
        self.update(a_in)
        self.v_out.send(self.v.copy())


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyReadoutFloat(_ReadoutModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)

    def update(self, a_in):
        p = self.proc_params
        self.u[:] = self.u * (1 - p["du"]) + a_in
        self.v[:] = self.v * (1 - p["dv"]) + self.u + self.bias


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyReadoutFixed(_ReadoutModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)

    def update(self, a_in):
        from ..hardware_sim.loihi_arith import cuba_update

        p = self.proc_params
        self.u[:], self.v[:] = cuba_update(self.u, self.v, a_in, p["du"], p["dv"], self.bias, self.bias_exp)


class SpikeCounter(AbstractProcess):
    """Counts one population's spikes per evaluation slot of a ``Pipeline``.

    ``active[slot]`` counts the T steps in which the population computes that slot's evaluation; ``idle``
    what it does at other times (waiting for its first input, during idle slots, draining), which a
    chip pays for too.
    """

    def __init__(self, *, shape: tuple, pipeline, latency: int, name: str | None = None):
        super().__init__(shape=shape, pipeline=pipeline, latency=latency, name=name)
        self.s_in = InPort(shape=shape)
        self.active = Var(shape=(pipeline.slots,), init=np.zeros(pipeline.slots))
        self.idle = Var(shape=(1,), init=np.zeros(1))


class _SpikeCounterModel(PyLoihiProcessModel):
    def run_spk(self):
        p = self.proc_params
        count = float(np.count_nonzero(self.s_in.recv()))
        at = p["pipeline"].phase(self.time_step, p["latency"])
        if at is None:
            self.idle[0] += count
        else:
            self.active[at[0]] += count


@implements(proc=SpikeCounter, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeCounterFloat(_SpikeCounterModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    active: np.ndarray = LavaPyType(np.ndarray, float)
    idle: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=SpikeCounter, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeCounterFixed(_SpikeCounterModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, bool, precision=1)
    active: np.ndarray = LavaPyType(np.ndarray, float)
    idle: np.ndarray = LavaPyType(np.ndarray, float)


def host_ports(proc, input_shape_lava: tuple, readout_shape_lava: tuple) -> None:
    """The ports and readout accumulator every pipelined host process has (``PipelinedHostModel``)."""
    proc.s_out = OutPort(shape=input_shape_lava)
    proc.a_in = InPort(shape=readout_shape_lava)
    proc.acc = Var(shape=readout_shape_lava, init=np.zeros(readout_shape_lava))


class PipelinedHostModel(PyLoihiProcessModel):
    """The host side of a ``Pipeline`` of evaluations (proc_params ``pipeline``, ``readout_latency``,
    ``readout_scale``): in each slot's T steps it sends ``host_input(image, step)`` (float, Lava layout),
    adds up the readout state over the T steps the readout computes that slot, and hands the mean (float
    units) to ``finish(image, step, mean)``. The DDIM and token samplers differ only in those two."""

    def host_input(self, image: int, step: int) -> np.ndarray:
        raise NotImplementedError

    def finish(self, image: int, step: int, mean: np.ndarray) -> None:
        raise NotImplementedError

    def run_spk(self):
        p = self.proc_params
        pipe = p["pipeline"]
        sending = pipe.phase(self.time_step, 0)
        if sending is not None:
            self.s_out.send(self.encode(self.host_input(*pipe.job(sending[0]))))
        else:
            self.s_out.send(np.zeros(self.s_out.shape))
        v = self.a_in.recv()
        reading = pipe.phase(self.time_step, p["readout_latency"])
        if reading is None:
            return
        self.acc += v
        if reading[1] == pipe.num_steps - 1:
            mean = self.acc / (pipe.num_steps * p["readout_scale"])
            self.acc[:] = 0
            self.finish(*pipe.job(reading[0]), mean)


class FloatHostInput:
    """Pipelined host models that send host input as it is and read the float readout state."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    acc: np.ndarray = LavaPyType(np.ndarray, float)

    def encode(self, x):
        return x


class FixedHostInput:
    """Pipelined host models that send host input as graded 24-bit integers (``proc_params["input_scale"]``)
    and read the integer readout state."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    acc: np.ndarray = LavaPyType(np.ndarray, float)

    def encode(self, x):
        from ..export.fixed_point import encode_input

        return encode_input(x, self.proc_params["input_scale"])


class DDIMSampler(AbstractProcess):
    """The host side of the denoising loop, as a Lava process: it feeds a ``Pipeline`` of evaluations.

    In the T steps of each evaluation slot it sends [x_t, time planes of t] of that slot's image as input
    currents; it adds up the readout state over the T steps the readout computes that evaluation,
    decodes the mean into the model's output and applies the DDIM update to that image. The finished
    images are in ``images`` when the run ends: no host round trip per step.
    """

    def __init__(self, *, noise: np.ndarray, pipeline, input_shape_lava: tuple, readout_shape_lava: tuple,
                 decode: dict, schedule: dict, readout_latency: int, input_scale: int = 1, readout_scale: int = 1,
                 name: str | None = None):
        super().__init__(pipeline=pipeline, decode=decode, schedule=schedule, readout_latency=readout_latency,
                         input_scale=input_scale, readout_scale=readout_scale, name=name)
        host_ports(self, input_shape_lava, readout_shape_lava)
        self.x = Var(shape=noise.shape, init=noise.copy())
        self.images = Var(shape=noise.shape, init=np.zeros(noise.shape))


class _DDIMSamplerModel(PipelinedHostModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        from ..diffusion.schedule import DDIMScheduler, NoiseSchedule
        from .decode import Decoder

        s = proc_params["schedule"]
        self.pipeline = proc_params["pipeline"]
        self.scheduler = DDIMScheduler(NoiseSchedule(s["num_train_timesteps"], s["prediction_type"]))
        self.scheduler.set_timesteps(self.pipeline.steps)
        self.decoder = Decoder(**proc_params["decode"])

    def host_input(self, image: int, step: int) -> np.ndarray:
        return self.decoder.input(self.x[image], int(self.scheduler.timesteps[step]))

    def finish(self, image: int, step: int, mean: np.ndarray) -> None:
        t = int(self.scheduler.timesteps[step])
        self.x[image], _ = self.scheduler.step(self.decoder.output(mean), t, self.x[image])
        if step == self.pipeline.steps - 1:
            self.images[image] = self.x[image].clip(-1, 1)


@implements(proc=DDIMSampler, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDDIMSamplerFloat(FloatHostInput, _DDIMSamplerModel):
    x: np.ndarray = LavaPyType(np.ndarray, float)
    images: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=DDIMSampler, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDDIMSamplerFixed(FixedHostInput, _DDIMSamplerModel):
    x: np.ndarray = LavaPyType(np.ndarray, float)
    images: np.ndarray = LavaPyType(np.ndarray, float)
