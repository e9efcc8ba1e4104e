"""Lava processes that Lava's library lacks: a spike delay line, a LIF that clears itself between
evaluations, a float64 convolution, a readout that sends its state, spike counters and the host loop of
every sampler; each with a ``floating_pt`` and a ``fixed_pt`` model (Loihi integers).

Importing this module imports Lava (through ``lava_compat``); the rest of spikediff imports it only
when it builds a Lava network. Lava finds the process models because they live in the same module.
"""

from __future__ import annotations

from .. import lava_compat

lava_compat.import_lava()

import numpy as np  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort, PyRefPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort, RefPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.conv.models import PyConvModelFixed  # noqa: E402
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat  # noqa: E402
from lava.proc.lif.process import LIFReset  # noqa: E402


class SpikeDelay(AbstractProcess):
    """Passes spikes on ``delay`` steps later (what Loihi 2 does with synaptic delays).

    Used to align skip paths: every Lava synapse layer adds one step, so a short path that meets a
    long one must wait for it; and for NIR Delay nodes. With ``reset_interval``, the line is emptied at the
    steps where ``time_step % reset_interval == reset_offset`` before that step's spikes enter it: an
    evaluation then starts with nothing of the previous one (or of the steps before its first input) in
    flight, as a NIR delay starts from zeros.
    """

    def __init__(self, *, shape: tuple, delay: int, reset_interval: int = 0, reset_offset: int = 0,
                 name: str | None = None):
        super().__init__(shape=shape, delay=delay, reset_interval=reset_interval, reset_offset=reset_offset,
                         name=name)
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.buffer = Var(shape=(delay, *shape), init=np.zeros((delay, *shape)))


class _SpikeDelayModel(PyLoihiProcessModel):
    def run_spk(self):
        p = self.proc_params
        slot = self.time_step % self.buffer.shape[0]
        if p["reset_interval"] and self.time_step % p["reset_interval"] == p["reset_offset"]:
            self.buffer[:] = 0
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


class GradedDelay(SpikeDelay):
    """A ``SpikeDelay`` for graded values: the host input on its way to a layer deeper than the first (a
    synapse from the input into a population at latency L > 1 must see the input L - 1 steps late)."""


@implements(proc=GradedDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyGradedDelayFloat(_SpikeDelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    buffer: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=GradedDelay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGradedDelayFixed(_SpikeDelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    buffer: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)


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
    one-step delay as Lava's Conv; the weight is in NIR's (C_out, C_in / groups, kH, kW) correlation form.

    ``natural``: a synapse between space-to-depth layouts given by its natural kernel and geometry
    (``models.s2d.DerivedKernel``; stride, padding and groups are then the geometry's), computed the natural way:
    the same sums as its derived kernel without storing or multiplying the derived kernel's zeros."""

    def __init__(self, *, weight: np.ndarray, input_shape: tuple, output_shape: tuple, stride: tuple,
                 padding: tuple, dilation: tuple, groups: int, natural: dict | None = None, name: str | None = None):
        super().__init__(stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation), groups=int(groups),
                         natural=natural, name=name)
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
        if p["natural"] is not None:
            from ..export.natural_conv import NaturalConv

            out = NaturalConv(torch.from_numpy(self.weight), self._geometry())(x[None])[0]  # the Var, not a copy
        else:
            out = torch.nn.functional.conv2d(x[None], torch.from_numpy(self.weight), None, p["stride"], p["padding"],
                                             p["dilation"], p["groups"])[0]
        self.a_buf[:] = out.numpy().transpose(2, 1, 0)

    def _geometry(self):
        """The natural form's geometry, made (and checked) once per run rather than at every step."""
        if getattr(self, "_s2d", None) is None:
            from ..models.s2d import S2DGeometry

            self._s2d = S2DGeometry(**self.proc_params["natural"])
        return self._s2d


class PyConvFixedTorch(PyConvModelFixed):
    """Lava's fixed-point ``Conv`` (Loihi 2's form, unchanged) computed in one float64 torch call per step.

    Lava's own CPU model convolves every (output, input) channel pair with scipy in a Python loop (its torch
    path is switched off in ``lava.proc.conv.utils``), which takes minutes a step on the U-Net's space-to-depth
    maps with hundreds of channels. The sums here are the same integers: 8-bit weights times messages of at
    most 24 bits over at most a few thousand inputs stay far below 2**53, so float64 is exact; then the same
    24-bit wrap-around as Lava's model. ``session.run_config`` selects it for the CPU simulator in fixed point."""

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() <= 0:
            s_in = s_in.astype(bool)
        self.a_buf = self.clamp_precision(self._conv(s_in))

    def _conv(self, s_in: np.ndarray) -> np.ndarray:
        """Lava's layout is (x, y, channel) and its weight (out, kx, ky, in) in convolution (not correlation)
        order; torch wants (channel, y, x) and correlates, hence the transposes and the flipped kernel."""
        import torch

        # copies, not views: numpy calls a flipped axis of length 1 contiguous, torch refuses its negative stride
        w = torch.from_numpy(np.asarray(self.weight, dtype=np.float64)[:, ::-1, ::-1].transpose(0, 3, 2, 1).copy())
        x = torch.from_numpy(np.asarray(s_in, dtype=np.float64).transpose(2, 1, 0).copy())
        geometry = {key: tuple(int(v) for v in np.asarray(getattr(self, key))[::-1])
                    for key in ("stride", "padding", "dilation")}
        out = torch.nn.functional.conv2d(x[None], w, None, groups=int(self.groups[0]), **geometry)
        return out[0].numpy().transpose(2, 1, 0).astype(self.weight.dtype)


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
        from ..export.loihi_arith import cuba_update

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


class StepSpikeCounter(AbstractProcess):
    """A population's spike count at every Lava step, ``counts[time_step - 1]``: what ``run_windows`` reports,
    without sinking whole spike trains. Lava's ``Var.get`` sends a Var one element per message, so reading the
    trains of a million neurons took longer than running them; this reads one number per step."""

    def __init__(self, *, shape: tuple, steps: int, name: str | None = None):
        super().__init__(shape=shape, steps=steps, name=name)
        self.s_in = InPort(shape=shape)
        self.counts = Var(shape=(steps,), init=np.zeros(steps))


class _StepSpikeCounterModel(PyLoihiProcessModel):
    def run_spk(self):
        count = float(np.count_nonzero(self.s_in.recv()))
        if self.time_step <= self.counts.shape[0]:
            self.counts[self.time_step - 1] = count


@implements(proc=StepSpikeCounter, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyStepSpikeCounterFloat(_StepSpikeCounterModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    counts: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=StepSpikeCounter, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyStepSpikeCounterFixed(_StepSpikeCounterModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, bool, precision=1)
    counts: np.ndarray = LavaPyType(np.ndarray, float)


class HostLoop(AbstractProcess):
    """The host side of a sampler's denoising loop as one Lava process, for every kind of sampler: it feeds
    a ``Pipeline`` of network evaluations and runs the kind's ``HostProgram`` (``diffusion.kinds``).

    In the T steps of each evaluation slot it sends the program's input for that slot's image (Lava layout;
    graded integers in fixed point); it takes the readout's sum over the T steps the readout computes that
    evaluation and hands the mean (float units, NIR layout) to the program, which updates that image's
    state. The states are in ``state`` when the run ends: no host round trip per step.

    The readout arrives one of two ways (``sums``): in the hardware form (``runtime.build``) the readout is a
    neuron that sums its state itself and a ``SumReader`` sends that sum once per evaluation, one step after
    the readout's last step (on a chip: an ``embedded_io`` state read); otherwise a ``Readout`` process sends
    its state every step and the host adds it up.
    """

    def __init__(self, *, program, pipeline, state: np.ndarray, input_shape: tuple, readout_shape: tuple,
                 readout_perm, readout_latency: int, input_scale: int = 1, readout_scale: int = 1,
                 sums: bool = False, name: str | None = None):
        super().__init__(program=program, pipeline=pipeline, input_shape=tuple(input_shape),
                         readout_shape=tuple(readout_shape), readout_perm=readout_perm,
                         readout_latency=readout_latency, input_scale=input_scale, readout_scale=readout_scale,
                         sums=bool(sums), name=name)
        from ..export.layout import lava_shape

        self.s_out = OutPort(shape=lava_shape(input_shape))
        self.a_in = InPort(shape=lava_shape(readout_shape))
        self.acc = Var(shape=lava_shape(readout_shape), init=np.zeros(lava_shape(readout_shape)))
        flat = np.asarray(state, dtype=np.float64).reshape(len(state), -1)
        self.state = Var(shape=flat.shape, init=flat)


class _HostLoopModel(PyLoihiProcessModel):
    def _state(self, image: int) -> np.ndarray:
        p = self.proc_params
        return self.state[image:image + 1].reshape(1, *p["program"].state_shape)

    def run_spk(self):
        from ..export.layout import to_lava_layout

        p = self.proc_params
        pipe, program = p["pipeline"], p["program"]
        self._receive(self.a_in.recv())  # first: an image's next input may be due in this very step
        sending = pipe.phase(self.time_step, 0)
        if sending is not None:
            image, step = pipe.job(sending[0])
            x = program.inputs(self._state(image), np.array([image]), step)[0]
            self.s_out.send(self.encode(to_lava_layout(x, x.shape)))
        else:
            self.s_out.send(np.zeros(self.s_out.shape))

    def _receive(self, v) -> None:
        p = self.proc_params
        pipe = p["pipeline"]
        if p["sums"]:  # the sum of the evaluation whose last readout step was the previous one
            done = pipe.phase(self.time_step - 1, p["readout_latency"])
            if done is not None and done[1] == pipe.num_steps - 1:
                self._finish(done[0], np.asarray(v, dtype=np.float64))
            return
        reading = pipe.phase(self.time_step, p["readout_latency"])
        if reading is None:
            return
        self.acc += v
        if reading[1] == pipe.num_steps - 1:
            total = self.acc.copy()
            self.acc[:] = 0
            self._finish(reading[0], total)

    def _finish(self, slot: int, total: np.ndarray) -> None:
        from ..export.layout import from_lava_layout

        p = self.proc_params
        pipe, program = p["pipeline"], p["program"]
        mean = total / (pipe.num_steps * p["readout_scale"])
        image, step = pipe.job(slot)
        state = self._state(image).copy()
        readout = from_lava_layout(mean, p["readout_shape"], p["readout_perm"])
        program.update(state, np.array([image]), step, readout[None])
        self.state[image] = state.reshape(-1)


@implements(proc=HostLoop, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyHostLoopFloat(_HostLoopModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    acc: np.ndarray = LavaPyType(np.ndarray, float)
    state: np.ndarray = LavaPyType(np.ndarray, float)

    def encode(self, x):
        return x


@implements(proc=HostLoop, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyHostLoopFixed(_HostLoopModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    acc: np.ndarray = LavaPyType(np.ndarray, float)
    state: np.ndarray = LavaPyType(np.ndarray, float)

    def encode(self, x):
        from ..export.quantize import encode_input

        return encode_input(x, self.proc_params["input_scale"])


class SumReader(AbstractProcess):
    """Reads an on-chip readout's voltage (the sum of its state over an evaluation) after the readout's last step
    of each evaluation of a ``Pipeline`` and sends it on ``out`` in the next step (zeros in other steps); with
    ``pipeline=None``, after every step. The CPU stand-in for a chip's ``embedded_io.state.Read``, which reads a
    neuron's state at a fixed interval and offset (``runtime.build``'s hardware form)."""

    def __init__(self, *, var, pipeline=None, latency: int = 0, name: str | None = None):
        super().__init__(pipeline=pipeline, latency=latency, name=name)
        self.state = RefPort(shape=var.shape)
        self.state.connect_var(var)
        self.out = OutPort(shape=var.shape)
        self.held = Var(shape=var.shape, init=np.zeros(var.shape))


class _SumReaderModel(PyLoihiProcessModel):
    def run_spk(self):
        self.out.send(self.held.copy())
        self.held[:] = 0

    def post_guard(self):
        pipe = self.proc_params["pipeline"]
        if pipe is None:
            return True
        at = pipe.phase(self.time_step, self.proc_params["latency"])
        return at is not None and at[1] == pipe.num_steps - 1

    def run_post_mgmt(self):
        self.held[:] = self.state.read()


@implements(proc=SumReader, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySumReaderFloat(_SumReaderModel):
    state: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, float)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    held: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=SumReader, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySumReaderFixed(_SumReaderModel):
    state: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32, precision=24)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    held: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
