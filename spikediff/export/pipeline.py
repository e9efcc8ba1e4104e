"""Which image and denoising step each network evaluation carries when several images share one Lava run.

A feedforward network on Lava is a pipeline: a layer at latency L works on an evaluation's T steps at
Lava steps L+1 .. L+T and is free again afterwards, so a new evaluation can start every T Lava steps
(the ``period``) while earlier ones still travel to the readout. An image's next denoising step needs
its previous readout, which ends ``window`` = latency(readout) + T steps after its input began; so
``cycle`` = ceil(window / period) images take turns (lanes), one evaluation each per cycle. A graph
with recurrent synapses has period T + 1: its looped populations are cleared in the extra step
(``export.deployment``). Pure Python: the Lava host process, the counters, the cost model and the tests share it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pipeline:
    images: int
    steps: int  # denoising steps per image
    num_steps: int  # T, SNN steps per evaluation
    period: int  # Lava steps between the starts of consecutive evaluation slots
    window: int  # Lava steps from an evaluation's first input to its last readout step

    def __post_init__(self):
        if min(self.images, self.steps, self.num_steps) < 1 or not self.num_steps <= self.period <= self.window:
            raise ValueError(f"inconsistent pipeline {self}")

    @property
    def cycle(self) -> int:
        """Slots between two evaluations of the same image."""
        return -(-self.window // self.period)

    @property
    def lanes(self) -> int:
        """Images in flight at once."""
        return min(self.cycle, self.images)

    @property
    def slots(self) -> int:
        rounds = -(-self.images // self.lanes)
        last_round_lanes = self.images - (rounds - 1) * self.lanes
        return ((rounds - 1) * self.steps + self.steps - 1) * self.cycle + last_round_lanes

    @property
    def lava_steps(self) -> int:
        """Lava steps until the last evaluation's readout is complete."""
        return (self.slots - 1) * self.period + self.window

    def job(self, slot: int) -> tuple | None:
        """(image, denoising step) evaluated in ``slot``, or None for an idle slot."""
        if not 0 <= slot < self.slots:
            return None
        lane, turn = slot % self.cycle, slot // self.cycle
        rnd, step = divmod(turn, self.steps)
        image = rnd * self.lanes + lane
        return (image, step) if lane < self.lanes and image < self.images else None

    def phase(self, time_step: int, latency: int) -> tuple | None:
        """(slot, SNN step k) that a population at ``latency`` computes at Lava ``time_step`` (from 1), if any."""
        local = time_step - 1 - latency
        if local < 0:
            return None
        slot, k = divmod(local, self.period)
        return (slot, k) if k < self.num_steps and self.job(slot) is not None else None
