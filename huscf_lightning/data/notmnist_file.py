"""The NotMNIST file format: a ``torch.save``'d dict of image and label tensors, read and checked.

The file holds ``images``: uint8 0..255 or float 0..1, shape (N, 28, 28) or (N, 1, 28, 28);
``labels``: integer (N,) in 0..num_classes-1; optionally ``test_images`` and ``test_labels`` in
the same format. Anything else (a text file, an empty or truncated file, another pickle, other
keys) is a ``DomainError`` naming the file and what was expected.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from huscf_lightning.data.pixels import IMAGE_SIZE, pixels_to_unit_range
from huscf_lightning.data.registry import DomainError

EXPECTED = (
    "a dict of tensors {'images': uint8 (N, 28, 28), 'labels': int64 (N,)} (optionally 'test_images', "
    "'test_labels') written with torch.save"
)
# How a torch.save file starts: a zip archive's local header (the default since torch 1.6) or a
# pickle of protocol 2 or later (the legacy format).
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def read_notmnist_file(path: Path) -> Mapping[str, Any]:
    """The dict inside a NotMNIST ``.pt`` file, loaded with ``weights_only`` (no code runs)."""
    size = path.stat().st_size
    if size == 0:
        raise DomainError(f"NotMNIST file {path} is empty (0 bytes); it must hold {EXPECTED}, so write it again.")
    with path.open("rb") as handle:
        start = handle.read(8)
    if not start.startswith(TORCH_FILE_STARTS):
        raise DomainError(
            f"NotMNIST file {path} is not a torch.save file (neither the zip archive torch.save writes nor a "
            f"legacy pickle: {size} bytes starting {start!r}); it must hold {EXPECTED}."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
        raise DomainError(
            f"NotMNIST file {path} cannot be read as a torch.save file ({type(error).__name__}: {reason}); it is "
            f"truncated, corrupt or holds more than tensors. Write it again so that it holds {EXPECTED}."
        ) from error
    if not isinstance(content, Mapping) or not {"images", "labels"} <= set(content):
        found = f"a dict with keys {sorted(map(str, content))}" if isinstance(content, Mapping) else type(content).__name__
        raise DomainError(
            f"NotMNIST file {path} holds {found}; it must hold a dict with keys 'images' and 'labels' (and "
            f"optionally 'test_images', 'test_labels'): {EXPECTED}."
        )
    return content


def notmnist_images(path: Path, key: str, value: Any) -> Tensor:
    """Validate one image tensor of a NotMNIST file and scale it to [-1, 1]."""
    shape_ok = isinstance(value, Tensor) and (
        (value.dim() == 3 and tuple(value.shape[1:]) == (IMAGE_SIZE, IMAGE_SIZE))
        or (value.dim() == 4 and tuple(value.shape[1:]) == (1, IMAGE_SIZE, IMAGE_SIZE))
    )
    if not shape_ok:
        raise DomainError(
            f"{path}: {key!r} must be a tensor of shape (N, 28, 28) or (N, 1, 28, 28); got "
            f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}."
        )
    if value.dtype == torch.uint8:
        return pixels_to_unit_range(value, 255.0)
    if value.is_floating_point() and value.numel() and (value.min() < 0 or value.max() > 1):
        raise DomainError(
            f"{path}: float {key!r} must lie in [0, 1] (found {float(value.min()):.3g}..{float(value.max()):.3g}); "
            f"save uint8 pixels 0..255 or floats in [0, 1]."
        )
    if not value.is_floating_point():
        raise DomainError(f"{path}: {key!r} must be uint8 (0..255) or float (0..1); got {value.dtype}.")
    return pixels_to_unit_range(value, 1.0)


def notmnist_labels(path: Path, key: str, value: Any, count: int, num_classes: int) -> Tensor:
    """Validate one label tensor of a NotMNIST file: integers, one per image, in 0..num_classes-1."""
    if not isinstance(value, Tensor) or value.is_floating_point() or value.shape != (count,):
        raise DomainError(f"{path}: {key!r} must be an integer tensor of shape ({count},), one label per image.")
    labels = value.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DomainError(
            f"{path}: {key!r} holds labels outside 0..{num_classes - 1} (found {int(labels.min())}.."
            f"{int(labels.max())}); fix the labels or set the domain's num_classes option."
        )
    return labels
