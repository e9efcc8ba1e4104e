"""snnTorch neurons configured to match Lava's LIF process model exactly.

Lava's floating-point LIF does, every time step:
    u = u * (1 - du) + a_in
    v = v * (1 - dv) + u + bias
    spike = v > vth;  v = 0 where spiked (hard reset, in the same step).

snnTorch's ``Leaky`` with ``reset_mechanism="zero"`` and ``reset_delay=False`` computes
``mem = beta * mem + input``, spikes where ``mem - threshold > 0`` and zeroes ``mem`` in the same step.
With Lava's ``du = 1`` (no synaptic-current memory) ``u = a_in``, so the two are the same model with
``beta = 1 - dv``, ``threshold = vth`` and the layer's bias moved into ``bias``. Hidden layers use this.

Decays are dyadic fractions (0.5, 0.75, ...) so that ``1 - (1 - beta)`` is exact in floating point and
``dv * 4096`` is an integer for Lava's 12-bit fixed-point decay.
"""

from __future__ import annotations

import snntorch as snn
from snntorch import surrogate

from .. import SpikediffError


def check_dyadic(name: str, value: float, bits: int = 12) -> None:
    scaled = value * (1 << bits)
    if not (0.0 <= value <= 1.0) or scaled != int(scaled):
        raise SpikediffError(
            f"{name}={value} must be in [0, 1] and a multiple of 1/{1 << bits} so that Lava's decays are exact"
        )


def lava_lif(beta: float, threshold: float, surrogate_slope: float = 2.0) -> snn.Leaky:
    """A LIF layer with Lava's hard, same-step reset (see module docstring)."""
    check_dyadic("beta", beta)
    return snn.Leaky(
        beta=beta,
        threshold=threshold,
        spike_grad=surrogate.atan(alpha=surrogate_slope),
        reset_mechanism="zero",
        reset_delay=False,
        init_hidden=False,
    )
