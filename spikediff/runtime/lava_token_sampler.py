"""The Spiking-Diffusion sampler on Lava: the absorbing-diffusion loop inside one Lava run (SDID network
plus a ``TokenSampler`` process), then the token decoder in a second run.

``TokenSampler`` is the host side of the unmasking loop as a Lava process, like ``DDIMSampler``: in each
evaluation slot of the ``Pipeline`` it sends the one-hot grid and masked-fraction planes of that slot's
image, adds up the readout state (the logits) over the T steps, and unmasks that image's scheduled cells
with ``absorbing.unmask_step`` and the run's pre-drawn random numbers. The same numpy functions run in
PyTorch's sampler and in the fixed-point simulator, so float Lava equals PyTorch and fixed-point Lava
equals the simulator, token for token.
"""

from __future__ import annotations

from .. import lava_compat

lava_compat.import_lava()

import numpy as np  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from ..diffusion.absorbing import unmask_step  # noqa: E402
from ..export.nir_to_lava import from_lava_layout, to_lava_layout  # noqa: E402
from ..models.token_denoiser import token_input  # noqa: E402
from .lava_processes import FixedHostInput, FloatHostInput, PipelinedHostModel, host_ports  # noqa: E402


class TokenSampler(AbstractProcess):
    """Feeds a ``Pipeline`` of SDID evaluations and unmasks tokens from their logits; ``tokens`` (N, L) holds
    the grids (mask id where still masked) and, when the run ends, the sampled tokens."""

    def __init__(self, *, pipeline, host: dict, draws, counts: np.ndarray, input_shape_lava: tuple,
                 readout_shape_lava: tuple, readout_latency: int, input_scale: int = 1, readout_scale: int = 1,
                 name: str | None = None):
        super().__init__(pipeline=pipeline, host=host, draws=draws, counts=counts,
                         readout_latency=readout_latency, input_scale=input_scale, readout_scale=readout_scale,
                         name=name)
        n, length = draws.order.shape
        host_ports(self, input_shape_lava, readout_shape_lava)
        self.tokens = Var(shape=(n, length), init=np.full((n, length), host["codebook_size"]))


class _TokenSamplerModel(PipelinedHostModel):
    def host_input(self, image: int, step: int) -> np.ndarray:
        p, h = self.proc_params, self.proc_params["host"]
        length = self.tokens.shape[1]
        grid = self.tokens[image].astype(np.int64).reshape(1, h["grid"], h["grid"])
        x = token_input(grid, p["counts"][step] / length, h["codebook_size"], h["time_features"],
                        h["max_period"])[0].astype(np.float64)
        return to_lava_layout(x, x.shape)

    def finish(self, image: int, step: int, mean: np.ndarray) -> None:
        p, h = self.proc_params, self.proc_params["host"]
        length = self.tokens.shape[1]
        logits = from_lava_layout(mean, h["readout_shape"], h["readout_perm"]).reshape(1, h["codebook_size"], length)
        tokens = unmask_step(self.tokens[image:image + 1].astype(np.int64), logits, step, p["counts"],
                             p["draws"][image:image + 1], h["temperature"])
        self.tokens[image] = tokens[0]


@implements(proc=TokenSampler, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyTokenSamplerFloat(FloatHostInput, _TokenSamplerModel):
    tokens: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=TokenSampler, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyTokenSamplerFixed(FixedHostInput, _TokenSamplerModel):
    tokens: np.ndarray = LavaPyType(np.ndarray, float)
