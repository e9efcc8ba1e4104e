"""What every model config shares: checks of the neuron options, and a plain-dict form for checkpoints."""

from __future__ import annotations

from dataclasses import asdict

from .. import SpikediffError
from .neurons import check_dyadic


class ModelConfig:
    """Mixin for the model dataclasses. ``positive`` names the options that must be positive integers;
    ``beta``, ``readout_alpha``, ``threshold`` and (where present) ``time_features`` are checked too."""

    positive: tuple = ()

    def validate(self):
        for name in self.positive:
            if int(getattr(self, name)) < 1:
                raise SpikediffError(f"model option {name}={getattr(self, name)} must be a positive integer")
        tf = getattr(self, "time_features", None)
        if tf is not None and (tf < 2 or tf % 2):
            raise SpikediffError(f"time_features={tf} must be an even number >= 2")
        if self.threshold <= 0:
            raise SpikediffError(f"threshold={self.threshold} must be positive")
        check_dyadic("beta", self.beta)
        check_dyadic("readout_alpha", self.readout_alpha)
        self.check()
        return self

    def check(self) -> None:
        """Model-specific checks."""

    def to_dict(self) -> dict:
        return asdict(self)

    def ignored(self) -> tuple:
        """Options this configuration does not use (e.g. a switched-off part's settings)."""
        return ()

    def effective(self) -> dict:
        """The options that shape the model: two configs with equal ``effective()`` build the same network,
        so a run may resume across a change of the others."""
        return {k: v for k, v in self.to_dict().items() if k not in self.ignored()}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise SpikediffError(f"unknown {cls.__name__} options in checkpoint: {sorted(unknown)} "
                                 f"(a checkpoint from another spikediff version?)")
        return cls(**d).validate()
