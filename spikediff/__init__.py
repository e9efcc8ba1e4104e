"""spikediff: spiking diffusion models from snnTorch training to Lava deployment."""

__version__ = "0.1.0"


class SpikediffError(Exception):
    """An error whose message is meant for the user as it stands (no traceback needed)."""


class RunFailure(Exception):
    """The run, not its input, failed (a Lava worker killed or raising): the message is for the user as it stands,
    and the command exits with status 1, as for a machine that runs out of memory."""
