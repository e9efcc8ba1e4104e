"""spikediff: spiking diffusion models from snnTorch training to Lava deployment."""

__version__ = "0.1.0"


class SpikediffError(Exception):
    """An error whose message is meant for the user as it stands (no traceback needed)."""
