"""Training spiking denoisers with surrogate gradients (snnTorch), on CPU or CUDA."""

from .trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
