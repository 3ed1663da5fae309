"""fastcnn: Numba-accelerated convolutional neural networks for the CPU."""

from fastcnn._config import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["__version__", "get_num_threads", "set_num_threads"]
