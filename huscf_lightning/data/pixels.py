"""Pixel scaling: every domain's images end as float32 (N, 1, 28, 28) in [-1, 1], the generator's Tanh range."""

from __future__ import annotations

import torch
from torch import Tensor

IMAGE_SIZE = 28


def pixels_to_unit_range(images: Tensor, max_value: float) -> Tensor:
    """Scale pixel values in [0, max_value] to float32 (N, 1, 28, 28) in [-1, 1]."""
    images = images.to(torch.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return images.mul(2.0 / max_value).sub_(1.0)
