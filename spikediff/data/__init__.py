"""Real image datasets: MNIST, Fashion-MNIST and scikit-learn's bundled 8x8 digits."""

from .datasets import DATASETS, DatasetNotFoundError, data_root, load_images, to_model_range
from .fetch import fetch

__all__ = ["DATASETS", "DatasetNotFoundError", "data_root", "fetch", "load_images", "to_model_range"]
