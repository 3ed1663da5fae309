"""Ready-made network architectures."""

from __future__ import annotations

import numpy as np

from fastcnn._validation import check_int, check_pair
from fastcnn.init import as_generator
from fastcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, Normalize, ReLU
from fastcnn.models import Sequential


def lenet(
    in_channels: int = 1,
    image_size: int | tuple[int, int] = 28,
    num_classes: int = 10,
    *,
    channels: tuple[int, int] = (8, 16),
    hidden: int = 64,
    normalize: tuple[float, float] | None = None,
    dtype: type | np.dtype = np.float32,
    rng: int | np.random.Generator | None = None,
) -> Sequential:
    """Build the small LeNet-style CNN that ``fastcnn train`` trains.

    [normalize ->] conv 3x3 (padding 1) -> ReLU -> max-pool 2 -> conv 3x3
    (padding 1) -> ReLU -> max-pool 2 -> flatten -> dense -> ReLU -> dense (logits).

    Parameters
    ----------
    in_channels : int
        Channels of the input images (1 for MNIST).
    image_size : int or (int, int)
        Height and width of the input images; each a positive multiple of 4.
    num_classes : int
        Number of output logits.
    channels : int or (int, int)
        Output channels of the two convolutions.
    hidden : int
        Width of the hidden dense layer.
    normalize : (float, float), optional
        ``(mean, std)`` of the training data: a :class:`~fastcnn.layers.Normalize`
        layer then standardises the input inside the model.
    dtype : numpy dtype
        float32 (default) or float64.
    rng : int, numpy.random.Generator or None
        Seed or generator for the weight initialisation.

    Returns
    -------
    Sequential
        The untrained model, taking ``(N, in_channels, H, W)`` and returning
        ``(N, num_classes)`` logits.
    """
    in_channels = check_int(in_channels, "in_channels", minimum=1)
    h, w = check_pair(image_size, "image_size", minimum=4)
    if h % 4 or w % 4:
        raise ValueError(f"image_size must be multiples of 4, got {(h, w)}")
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    c1, c2 = check_pair(channels, "channels", minimum=1)
    hidden = check_int(hidden, "hidden", minimum=1)
    rng = as_generator(rng)
    first = []
    if normalize is not None:
        if not isinstance(normalize, (tuple, list)):
            raise TypeError(
                "normalize must be a pair (mean, std) or None, got "
                f"{type(normalize).__name__} {normalize!r:.80}"
            )
        if len(normalize) != 2:
            raise ValueError(
                f"normalize must be a pair (mean, std), got {len(normalize)} values"
            )
        first = [Normalize(*normalize)]
    return Sequential(
        [
            *first,
            Conv2D(in_channels, c1, 3, padding=1, dtype=dtype, rng=rng),
            ReLU(),
            MaxPool2D(2),
            Conv2D(c1, c2, 3, padding=1, dtype=dtype, rng=rng),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(c2 * (h // 4) * (w // 4), hidden, dtype=dtype, rng=rng),
            ReLU(),
            Dense(hidden, num_classes, dtype=dtype, rng=rng),
        ]
    )
