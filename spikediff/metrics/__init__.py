"""Sample-quality measures."""

from .digit_probe import digit_probe_score, fit_digit_probe

__all__ = ["digit_probe_score", "fit_digit_probe"]
